//! QPs and SRQs on ids, and endpoints (`rdma_create_ep`): the calls of
//! librdmacm that create verbs objects through libibverbs for the
//! application.

use migros_proto::cm::PortSpace;

use crate::id::{self, block};
use crate::qp;
use crate::sys::*;
use crate::util::{fail, from_sockaddr, lock, ret};

#[no_mangle]
pub unsafe extern "C" fn rdma_create_qp_ex(
    id: *mut rdma_cm_id,
    attr: *mut ibv_qp_init_attr_ex,
) -> libc::c_int {
    if id.is_null() || attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and valid attributes (contract).
    unsafe {
        let b = block(id);
        if !b.id.qp.is_null() {
            return fail(libc::EINVAL);
        }
        if b.id.verbs.is_null() {
            return fail(libc::EINVAL);
        }
        let a = &mut *attr;
        if a.comp_mask & ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD == 0 || a.pd.is_null() {
            a.comp_mask |= ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD;
            a.pd = b.id.pd;
        } else if (*a.pd).context != b.id.verbs {
            return fail(libc::EINVAL);
        }
        if (!b.id.recv_cq.is_null() && !a.recv_cq.is_null() && b.id.recv_cq != a.recv_cq)
            || (!b.id.send_cq.is_null() && !a.send_cq.is_null() && b.id.send_cq != a.send_cq)
        {
            return fail(libc::EINVAL);
        }
        let send = if !a.send_cq.is_null() || !b.id.send_cq.is_null() {
            0
        } else {
            a.cap.max_send_wr
        };
        let recv = if !a.recv_cq.is_null() || !b.id.recv_cq.is_null() {
            0
        } else {
            a.cap.max_recv_wr
        };
        if let Err(e) = qp::create_cqs(&mut b.id, send, recv) {
            return fail(e);
        }
        if a.send_cq.is_null() {
            a.send_cq = b.id.send_cq;
        }
        if a.recv_cq.is_null() {
            a.recv_cq = b.id.recv_cq;
        }
        if !b.id.srq.is_null() && a.srq.is_null() {
            a.srq = b.id.srq;
        }
        let q = qp::create_qp_ex(b.id.verbs, attr);
        if q.is_null() {
            let e = crate::util::errno().max(1);
            qp::destroy_cqs(&mut b.id);
            return fail(e);
        }
        if let Err(e) = qp::init_new(b, q) {
            ibv_destroy_qp(q);
            qp::destroy_cqs(&mut b.id);
            return fail(e);
        }
        b.id.pd = (*q).pd;
        b.id.qp = q;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_create_qp(
    id: *mut rdma_cm_id,
    pd: *mut ibv_pd,
    qp_init_attr: *mut ibv_qp_init_attr,
) -> libc::c_int {
    if id.is_null() || qp_init_attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: valid attributes (contract); the extended struct starts
    // with the plain one.
    unsafe {
        let mut ex: ibv_qp_init_attr_ex = core::mem::zeroed();
        core::ptr::copy_nonoverlapping(
            qp_init_attr.cast::<u8>(),
            (&mut ex as *mut ibv_qp_init_attr_ex).cast::<u8>(),
            core::mem::size_of::<ibv_qp_init_attr>(),
        );
        ex.comp_mask = ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD;
        ex.pd = if pd.is_null() { (*id).pd } else { pd };
        let r = rdma_create_qp_ex(id, &mut ex);
        core::ptr::copy_nonoverlapping(
            (&ex as *const ibv_qp_init_attr_ex).cast::<u8>(),
            qp_init_attr.cast::<u8>(),
            core::mem::size_of::<ibv_qp_init_attr>(),
        );
        r
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_qp(id: *mut rdma_cm_id) {
    if id.is_null() {
        return;
    }
    // SAFETY: a live id (contract).
    unsafe {
        let b = block(id);
        if !b.id.qp.is_null() {
            ibv_destroy_qp(b.id.qp);
        }
        b.id.qp = core::ptr::null_mut();
        qp::destroy_cqs(&mut b.id);
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_create_srq_ex(
    id: *mut rdma_cm_id,
    attr: *mut ibv_srq_init_attr_ex,
) -> libc::c_int {
    if id.is_null() || attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and valid attributes (contract).
    unsafe {
        let b = block(id);
        let a = &mut *attr;
        if a.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE == 0 {
            return fail(libc::EINVAL);
        }
        if a.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD == 0 || a.pd.is_null() {
            a.pd = b.id.pd;
            a.comp_mask |= ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD;
        }
        if a.srq_type == ibv_srq_type_IBV_SRQT_XRC {
            // No XRC on migros devices (librdmacm would make an XRC domain).
            return fail(libc::EOPNOTSUPP);
        }
        let srq = qp::create_srq_ex(b.id.verbs, attr);
        if srq.is_null() {
            let e = crate::util::errno().max(1);
            qp::destroy_cqs(&mut b.id);
            return fail(e);
        }
        if b.id.pd.is_null() {
            b.id.pd = a.pd;
        }
        b.id.srq = srq;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_create_srq(
    id: *mut rdma_cm_id,
    pd: *mut ibv_pd,
    attr: *mut ibv_srq_init_attr,
) -> libc::c_int {
    if id.is_null() || attr.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: valid attributes (contract); the extended struct starts
    // with the plain one.
    unsafe {
        let mut ex: ibv_srq_init_attr_ex = core::mem::zeroed();
        core::ptr::copy_nonoverlapping(
            attr.cast::<u8>(),
            (&mut ex as *mut ibv_srq_init_attr_ex).cast::<u8>(),
            core::mem::size_of::<ibv_srq_init_attr>(),
        );
        ex.comp_mask = ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE
            | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD;
        ex.srq_type = if (*id).qp_type == ibv_qp_type_IBV_QPT_XRC_RECV {
            ibv_srq_type_IBV_SRQT_XRC
        } else {
            ibv_srq_type_IBV_SRQT_BASIC
        };
        ex.pd = pd;
        let r = rdma_create_srq_ex(id, &mut ex);
        core::ptr::copy_nonoverlapping(
            (&ex as *const ibv_srq_init_attr_ex).cast::<u8>(),
            attr.cast::<u8>(),
            core::mem::size_of::<ibv_srq_init_attr>(),
        );
        r
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_srq(id: *mut rdma_cm_id) {
    if id.is_null() {
        return;
    }
    // SAFETY: a live id (contract).
    unsafe {
        let b = block(id);
        if !b.id.srq.is_null() {
            ibv_destroy_srq(b.id.srq);
        }
        b.id.srq = core::ptr::null_mut();
        qp::destroy_cqs(&mut b.id);
    }
}

const RAI_PASSIVE: i32 = 1;

#[no_mangle]
pub unsafe extern "C" fn rdma_create_ep(
    id: *mut *mut rdma_cm_id,
    res: *mut rdma_addrinfo,
    pd: *mut ibv_pd,
    qp_init_attr: *mut ibv_qp_init_attr,
) -> libc::c_int {
    if id.is_null() || res.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: valid pointers (contract).
    unsafe {
        let res = &*res;
        let Some(ps) = PortSpace::from_raw(res.ai_port_space as u32) else {
            return fail(libc::EINVAL);
        };
        let mut cm_id: *mut rdma_cm_id = core::ptr::null_mut();
        if id::create_with_type(&mut cm_id, ps, res.ai_qp_type as ibv_qp_type) != 0 {
            return -1;
        }
        let r = ep_setup(cm_id, res, pd, qp_init_attr);
        if let Err(e) = r {
            rdma_destroy_ep(cm_id);
            return fail(e);
        }
        *id = cm_id;
    }
    0
}

/// The part of `rdma_create_ep` after the id exists.
///
/// # Safety
/// `cm_id` is live; the other pointers valid or NULL.
unsafe fn ep_setup(
    cm_id: *mut rdma_cm_id,
    res: &rdma_addrinfo,
    pd: *mut ibv_pd,
    qp_init_attr: *mut ibv_qp_init_attr,
) -> Result<(), i32> {
    // SAFETY: caller's contract.
    unsafe {
        let b = block(cm_id);
        if res.ai_flags & RAI_PASSIVE != 0 {
            if id::rdma_bind_addr(cm_id, res.ai_src_addr) != 0 {
                return Err(crate::util::errno());
            }
            if !pd.is_null() {
                b.id.pd = pd;
            }
            if !qp_init_attr.is_null() {
                let mut a = *qp_init_attr;
                a.qp_type = res.ai_qp_type as ibv_qp_type;
                lock(&b.p).qp_init_attr = Some(a);
            }
            return Ok(());
        }
        if from_sockaddr(res.ai_dst_addr).is_none() {
            return Err(libc::EINVAL);
        }
        if id::rdma_resolve_addr(cm_id, res.ai_src_addr, res.ai_dst_addr, 2000) != 0 {
            return Err(crate::util::errno());
        }
        if id::rdma_resolve_route(cm_id, 2000) != 0 {
            return Err(crate::util::errno());
        }
        if !qp_init_attr.is_null() {
            (*qp_init_attr).qp_type = res.ai_qp_type as ibv_qp_type;
            if rdma_create_qp(cm_id, pd, qp_init_attr) != 0 {
                return Err(crate::util::errno());
            }
        }
        if res.ai_connect_len > 0 && !res.ai_connect.is_null() {
            let pd = std::slice::from_raw_parts(res.ai_connect.cast::<u8>(), res.ai_connect_len);
            lock(&b.p).connect_pd = pd.to_vec();
        }
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_ep(id: *mut rdma_cm_id) {
    if id.is_null() {
        return;
    }
    // SAFETY: a live id (contract).
    unsafe {
        if !(*id).qp.is_null() {
            rdma_destroy_qp(id);
        }
        if !(*id).srq.is_null() {
            rdma_destroy_srq(id);
        }
        id::rdma_destroy_id(id);
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_get_request(
    listen: *mut rdma_cm_id,
    id: *mut *mut rdma_cm_id,
) -> libc::c_int {
    if listen.is_null() || id.is_null() {
        return fail(libc::EINVAL);
    }
    ret(crate::event::get_request(listen).map(|n| {
        // SAFETY: `id` checked non-null.
        unsafe { *id = n };
    }))
}
