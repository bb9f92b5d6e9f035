//! What an application sets or asks on an id besides connecting:
//! `rdma_set_option` (TOS, address reuse, IPv6-only, ACK timeout, an IB
//! path), `rdma_init_qp_attr` (the attributes librdmacm would move a QP
//! with) and ECE (not negotiated: what is set is kept, nothing comes
//! from the peer).

use super::addr::resolve_route;
use super::{block, St};
use crate::qp;
use crate::sys::*;
use crate::util::{fail, lock, ret};

const RDMA_OPTION_ID: i32 = 0;
const RDMA_OPTION_IB: i32 = 1;
const RDMA_OPTION_ID_TOS: i32 = 0;
const RDMA_OPTION_ID_REUSEADDR: i32 = 1;
const RDMA_OPTION_ID_AFONLY: i32 = 2;
const RDMA_OPTION_ID_ACK_TIMEOUT: i32 = 3;
const RDMA_OPTION_IB_PATH: i32 = 1;

#[no_mangle]
pub unsafe extern "C" fn rdma_set_option(
    id: *mut rdma_cm_id,
    level: libc::c_int,
    optname: libc::c_int,
    optval: *mut libc::c_void,
    optlen: usize,
) -> libc::c_int {
    if id.is_null() || optval.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    // SAFETY: `optval` holds `optlen` bytes (contract); sizes checked first.
    let read_u8 = || (optlen == 1).then(|| unsafe { *optval.cast::<u8>() });
    let read_int = || {
        (optlen == core::mem::size_of::<libc::c_int>())
            .then(|| unsafe { optval.cast::<libc::c_int>().read_unaligned() })
    };
    match (level, optname) {
        (RDMA_OPTION_ID, RDMA_OPTION_ID_TOS) => match read_u8() {
            Some(v) => {
                lock(&b.p).tos = Some(v);
                0
            }
            None => fail(libc::EINVAL),
        },
        (RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR) => match read_int() {
            Some(v) => {
                let mut p = lock(&b.p);
                if (v != 0 && p.st != St::Listen) || p.st == St::Idle {
                    p.reuse = v != 0;
                    0
                } else {
                    fail(libc::EINVAL)
                }
            }
            None => fail(libc::EINVAL),
        },
        (RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY) => match read_int() {
            Some(v) => {
                let mut p = lock(&b.p);
                if p.st == St::Idle {
                    p.afonly = v != 0;
                    0
                } else {
                    fail(libc::EINVAL)
                }
            }
            None => fail(libc::EINVAL),
        },
        (RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT) => match read_u8() {
            Some(v) if b.id.qp_type == ibv_qp_type_IBV_QPT_RC => {
                lock(&b.p).ack_timeout = Some(v);
                0
            }
            _ => fail(libc::EINVAL),
        },
        (RDMA_OPTION_IB, RDMA_OPTION_IB_PATH) => {
            let each = core::mem::size_of::<ibv_path_data>();
            if optlen == 0 || !optlen.is_multiple_of(each) {
                return fail(libc::EINVAL);
            }
            // The path the application gives: the route is ours (RoCE),
            // the option completes route resolution as the kernel does.
            ret(resolve_route(b))
        }
        (RDMA_OPTION_ID | RDMA_OPTION_IB, _) => fail(libc::ENOSYS),
        _ => fail(libc::ENOSYS),
    }
}

// ---- QP attributes ----

#[no_mangle]
pub unsafe extern "C" fn rdma_init_qp_attr(
    id: *mut rdma_cm_id,
    qp_attr: *mut ibv_qp_attr,
    qp_attr_mask: *mut libc::c_int,
) -> libc::c_int {
    if id.is_null() || qp_attr.is_null() || qp_attr_mask.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and valid out-pointers (contract).
    unsafe {
        let b = block(id);
        let p = lock(&b.p);
        if p.dev.is_none() {
            return fail(libc::EINVAL);
        }
        match qp::init_attr(&p, b.id.qp_type, (*qp_attr).qp_state) {
            Ok((mut a, mask)) => {
                if (*qp_attr).qp_state == ibv_qp_state_IBV_QPS_RTR && p.responder_resources > 0 {
                    a.max_dest_rd_atomic = a.max_dest_rd_atomic.min(p.responder_resources);
                }
                *qp_attr = a;
                *qp_attr_mask = mask;
                0
            }
            Err(e) => fail(e),
        }
    }
}

// ---- ECE (enhanced connection establishment): not negotiated ----

#[no_mangle]
pub unsafe extern "C" fn rdma_set_local_ece(id: *mut rdma_cm_id, ece: *mut ibv_ece) -> libc::c_int {
    // SAFETY: NULL or valid pointers (contract).
    unsafe {
        if id.is_null() || ece.is_null() || !(*id).qp.is_null() {
            return fail(libc::EINVAL);
        }
        if (*ece).vendor_id == 0 || (*ece).comp_mask != 0 {
            return fail(libc::EINVAL);
        }
        lock(&block(id).p).local_ece = ((*ece).vendor_id, (*ece).options);
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_get_remote_ece(
    id: *mut rdma_cm_id,
    ece: *mut ibv_ece,
) -> libc::c_int {
    // SAFETY: NULL or valid pointers (contract).
    unsafe {
        if id.is_null() || ece.is_null() || !(*id).qp.is_null() {
            return fail(libc::EINVAL);
        }
        let (v, o) = lock(&block(id).p).remote_ece;
        (*ece).vendor_id = v;
        (*ece).options = o;
        (*ece).comp_mask = 0;
    }
    0
}
