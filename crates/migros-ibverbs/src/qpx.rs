//! Extended QPs (`verbs_context.create_qp_ex`) and the `ibv_wr_*` post
//! API reached through `ibv_qp_ex`: `wr_start` opens a batch, each
//! `wr_<opcode>` starts a work request (with the `wr_id` and `wr_flags`
//! the program wrote into the `ibv_qp_ex`), the `wr_set_*` calls fill in
//! its data or UD destination, and `wr_complete` posts the batch (or
//! returns the first error seen while building it); `wr_abort` drops it.

use migros_verbs::{Error, SendData, SendFlags, SendWr, Sge, UdDest, WrOpcode};

use crate::ah::Ah;
use crate::context::{lock, Ctx};
use crate::qp::{ibv_create_qp, Qp};
use crate::sys::*;
use crate::util::null_errno;

/// The `send_ops_flags` this library implements.
const SUPPORTED_SEND_OPS: u64 = (ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_RDMA_WRITE
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_SEND
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_SEND_WITH_IMM
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_RDMA_READ
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_SEND_WITH_INV
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_LOCAL_INV
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_BIND_MW
    | ibv_qp_create_send_ops_flags_IBV_QP_EX_WITH_ATOMIC_WRITE)
    as u64;

/// The work requests between `wr_start` and `wr_complete`.
#[derive(Default)]
pub(crate) struct Batch {
    wrs: Vec<SendWr>,
    /// The first error while building (reported by `wr_complete`).
    error: Option<i32>,
}

/// `verbs_context.create_qp_ex`: the legacy attributes (a prefix of the
/// extended ones) go to `ibv_create_qp`.
pub(crate) unsafe extern "C" fn create_qp_ex(
    _context: *mut ibv_context,
    attr: *mut ibv_qp_init_attr_ex,
) -> *mut ibv_qp {
    if attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: a readable attr (contract).
    let a = unsafe { &*attr };
    let known = ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD
        | ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_CREATE_FLAGS
        | ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
    if a.comp_mask & ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD == 0 || a.pd.is_null() {
        return null_errno(libc::EINVAL);
    }
    let create_flags = a.comp_mask & ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_CREATE_FLAGS != 0
        && a.create_flags != 0;
    let ops = if a.comp_mask & ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_SEND_OPS_FLAGS != 0 {
        a.send_ops_flags
    } else {
        0
    };
    if a.comp_mask & !known != 0 || create_flags || ops & !SUPPORTED_SEND_OPS != 0 {
        return null_errno(libc::EOPNOTSUPP);
    }
    // SAFETY: ibv_qp_init_attr is the prefix of ibv_qp_init_attr_ex
    // (rdma-core's own ibv_create_qp_ex makes the same cast).
    unsafe { ibv_create_qp(a.pd, attr.cast()) }
}

/// Sets the `ibv_wr_*` ops of a new QP.
pub(crate) fn set_ops(q: &mut ibv_qp_ex) {
    q.wr_start = Some(wr_start);
    q.wr_complete = Some(wr_complete);
    q.wr_abort = Some(wr_abort);
    q.wr_send = Some(wr_send);
    q.wr_send_imm = Some(wr_send_imm);
    q.wr_send_inv = Some(wr_send_inv);
    q.wr_rdma_write = Some(wr_rdma_write);
    q.wr_rdma_write_imm = Some(wr_rdma_write_imm);
    q.wr_rdma_read = Some(wr_rdma_read);
    q.wr_atomic_cmp_swp = Some(wr_atomic_cmp_swp);
    q.wr_atomic_fetch_add = Some(wr_atomic_fetch_add);
    q.wr_local_inv = Some(wr_local_inv);
    q.wr_bind_mw = Some(wr_bind_mw);
    q.wr_atomic_write = Some(wr_atomic_write);
    q.wr_set_sge = Some(wr_set_sge);
    q.wr_set_sge_list = Some(wr_set_sge_list);
    q.wr_set_inline_data = Some(wr_set_inline_data);
    q.wr_set_inline_data_list = Some(wr_set_inline_data_list);
    q.wr_set_ud_addr = Some(wr_set_ud_addr);
}

/// Runs `f` on the QP's batch.
///
/// # Safety
/// `qp` must be a live QP of this library.
unsafe fn batch<T>(qp: *mut ibv_qp_ex, f: impl FnOnce(&mut Batch) -> T) -> T {
    // SAFETY: a live QP block (caller); only its `batch` field is borrowed.
    let b = unsafe { &(*qp.cast::<Qp>()).batch };
    f(&mut lock(b))
}

/// Starts a work request with the program's `wr_id` and `wr_flags`.
///
/// # Safety
/// `qp` must be a live QP of this library.
unsafe fn push(qp: *mut ibv_qp_ex, opcode: WrOpcode) {
    if qp.is_null() {
        return;
    }
    // SAFETY: the C fields of a live QP (caller).
    let (wr_id, flags) = unsafe { ((*qp).wr_id, (*qp).wr_flags) };
    // SAFETY: as above.
    unsafe {
        batch(qp, |b| {
            b.wrs.push(SendWr {
                wr_id,
                opcode,
                flags: SendFlags(flags & 0xf),
                data: SendData::Sges(Vec::new()),
                ud: None,
            })
        })
    }
}

/// Changes the last work request (an error if `wr_<opcode>` was not called).
///
/// # Safety
/// `qp` must be a live QP of this library.
unsafe fn last(qp: *mut ibv_qp_ex, f: impl FnOnce(&mut SendWr)) {
    if qp.is_null() {
        return;
    }
    // SAFETY: a live QP (caller).
    unsafe {
        batch(qp, |b| match b.wrs.last_mut() {
            Some(w) => f(w),
            None => {
                b.error.get_or_insert(libc::EINVAL);
            }
        })
    }
}

unsafe extern "C" fn wr_start(qp: *mut ibv_qp_ex) {
    if qp.is_null() {
        return;
    }
    // SAFETY: a live QP (contract).
    unsafe { batch(qp, |b| *b = Batch::default()) }
}

unsafe extern "C" fn wr_complete(qp: *mut ibv_qp_ex) -> libc::c_int {
    if qp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live QP (contract).
    let b = unsafe { batch(qp, std::mem::take) };
    if let Some(e) = b.error {
        return e;
    }
    // SAFETY: the QP's context is open (contract).
    if unsafe { Ctx::dead((*qp).qp_base.context) } {
        return libc::EIO;
    }
    // All or nothing, as rxe's wr_complete; a full queue is ENOSPC there.
    // SAFETY: a live QP block (contract).
    match unsafe { &(*qp.cast::<Qp>()).inner }.post_send_all(&b.wrs) {
        Ok(()) => 0,
        Err(Error::QueueFull) => libc::ENOSPC,
        Err(e) => e.errno(),
    }
}

unsafe extern "C" fn wr_abort(qp: *mut ibv_qp_ex) {
    if qp.is_null() {
        return;
    }
    // SAFETY: a live QP (contract).
    unsafe { batch(qp, |b| *b = Batch::default()) }
}

unsafe extern "C" fn wr_send(qp: *mut ibv_qp_ex) {
    // SAFETY: a live QP (contract).
    unsafe { push(qp, WrOpcode::Send) }
}

unsafe extern "C" fn wr_send_imm(qp: *mut ibv_qp_ex, imm_data: __be32) {
    let imm = u32::from_be(imm_data);
    // SAFETY: a live QP (contract).
    unsafe { push(qp, WrOpcode::SendWithImm { imm }) }
}

unsafe extern "C" fn wr_send_inv(qp: *mut ibv_qp_ex, rkey: u32) {
    // SAFETY: a live QP (contract).
    unsafe { push(qp, WrOpcode::SendWithInv { rkey }) }
}

unsafe extern "C" fn wr_rdma_write(qp: *mut ibv_qp_ex, rkey: u32, remote_addr: u64) {
    // SAFETY: a live QP (contract).
    unsafe { push(qp, WrOpcode::RdmaWrite { remote_addr, rkey }) }
}

unsafe extern "C" fn wr_rdma_write_imm(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    imm_data: __be32,
) {
    let imm = u32::from_be(imm_data);
    // SAFETY: a live QP (contract).
    unsafe {
        push(
            qp,
            WrOpcode::RdmaWriteWithImm {
                remote_addr,
                rkey,
                imm,
            },
        )
    }
}

unsafe extern "C" fn wr_rdma_read(qp: *mut ibv_qp_ex, rkey: u32, remote_addr: u64) {
    // SAFETY: a live QP (contract).
    unsafe { push(qp, WrOpcode::RdmaRead { remote_addr, rkey }) }
}

unsafe extern "C" fn wr_atomic_cmp_swp(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    compare: u64,
    swap: u64,
) {
    let op = WrOpcode::AtomicCmpSwap {
        remote_addr,
        rkey,
        compare,
        swap,
    };
    // SAFETY: a live QP (contract).
    unsafe { push(qp, op) }
}

unsafe extern "C" fn wr_atomic_fetch_add(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    add: u64,
) {
    let op = WrOpcode::AtomicFetchAdd {
        remote_addr,
        rkey,
        add,
    };
    // SAFETY: a live QP (contract).
    unsafe { push(qp, op) }
}

unsafe extern "C" fn wr_local_inv(qp: *mut ibv_qp_ex, invalidate_rkey: u32) {
    let op = WrOpcode::LocalInv {
        rkey: invalidate_rkey,
    };
    // SAFETY: a live QP (contract).
    unsafe { push(qp, op) }
}

unsafe extern "C" fn wr_bind_mw(
    qp: *mut ibv_qp_ex,
    mw: *mut ibv_mw,
    rkey: u32,
    bind_info: *const ibv_mw_bind_info,
) {
    if mw.is_null() || bind_info.is_null() {
        // SAFETY: a live QP (contract).
        unsafe { batch_error(qp, libc::EINVAL) };
        return;
    }
    // SAFETY: a live window and bind info with a live MR or none (contract).
    let bind = unsafe { crate::post::mw_bind(mw, rkey, &*bind_info) };
    // SAFETY: a live QP (contract).
    unsafe { push(qp, WrOpcode::BindMw(bind)) }
}

/// ATOMIC WRITE of the 8 bytes at `atomic_wr` (copied now).
unsafe extern "C" fn wr_atomic_write(
    qp: *mut ibv_qp_ex,
    rkey: u32,
    remote_addr: u64,
    atomic_wr: *const libc::c_void,
) {
    // SAFETY: 8 readable bytes (contract).
    let value = unsafe { bytes(atomic_wr, 8) };
    if value.len() != 8 {
        // SAFETY: a live QP (contract).
        unsafe { batch_error(qp, libc::EINVAL) };
        return;
    }
    // SAFETY: a live QP (contract).
    unsafe {
        push(qp, WrOpcode::AtomicWrite { remote_addr, rkey });
        last(qp, |w| w.data = SendData::Inline(value));
    }
}

/// Records an error the batch's `wr_complete` reports.
///
/// # Safety
/// `qp` must be a live QP of this library.
unsafe fn batch_error(qp: *mut ibv_qp_ex, errno: i32) {
    if qp.is_null() {
        return;
    }
    // SAFETY: a live QP (caller).
    unsafe {
        batch(qp, |b| {
            b.error.get_or_insert(errno);
        })
    }
}

unsafe extern "C" fn wr_set_sge(qp: *mut ibv_qp_ex, lkey: u32, addr: u64, length: u32) {
    let sge = Sge { addr, length, lkey };
    // SAFETY: a live QP (contract).
    unsafe { last(qp, |w| w.data = SendData::Sges(vec![sge])) }
}

unsafe extern "C" fn wr_set_sge_list(qp: *mut ibv_qp_ex, num_sge: usize, sg_list: *const ibv_sge) {
    let list = if num_sge == 0 || sg_list.is_null() {
        Vec::new()
    } else {
        // SAFETY: the caller's list holds num_sge entries (contract).
        unsafe { std::slice::from_raw_parts(sg_list, num_sge) }
            .iter()
            .map(crate::post::sge)
            .collect()
    };
    // SAFETY: a live QP (contract).
    unsafe { last(qp, |w| w.data = SendData::Sges(list)) }
}

/// The bytes of a caller's buffer (copied now, as inline data is).
///
/// # Safety
/// `addr` must be readable for `length` bytes (or `length` 0).
unsafe fn bytes(addr: *const libc::c_void, length: usize) -> Vec<u8> {
    if length == 0 || addr.is_null() {
        return Vec::new();
    }
    // SAFETY: readable (caller).
    unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), length) }.to_vec()
}

unsafe extern "C" fn wr_set_inline_data(
    qp: *mut ibv_qp_ex,
    addr: *mut libc::c_void,
    length: usize,
) {
    // SAFETY: readable buffer (contract).
    let data = unsafe { bytes(addr, length) };
    // SAFETY: a live QP (contract).
    unsafe {
        last(qp, |w| {
            w.flags = SendFlags(w.flags.0 | SendFlags::INLINE.0);
            w.data = SendData::Inline(data);
        })
    }
}

unsafe extern "C" fn wr_set_inline_data_list(
    qp: *mut ibv_qp_ex,
    num_buf: usize,
    buf_list: *const ibv_data_buf,
) {
    let mut data = Vec::new();
    if num_buf > 0 && !buf_list.is_null() {
        // SAFETY: the caller's list holds num_buf readable buffers (contract).
        for b in unsafe { std::slice::from_raw_parts(buf_list, num_buf) } {
            // SAFETY: as above.
            data.extend(unsafe { bytes(b.addr, b.length) });
        }
    }
    // SAFETY: a live QP (contract).
    unsafe {
        last(qp, |w| {
            w.flags = SendFlags(w.flags.0 | SendFlags::INLINE.0);
            w.data = SendData::Inline(data);
        })
    }
}

unsafe extern "C" fn wr_set_ud_addr(
    qp: *mut ibv_qp_ex,
    ah: *mut ibv_ah,
    remote_qpn: u32,
    remote_qkey: u32,
) {
    if qp.is_null() {
        return;
    }
    if ah.is_null() {
        // SAFETY: a live QP (contract).
        unsafe { batch_error(qp, libc::EINVAL) };
        return;
    }
    // SAFETY: a live AH of this library (contract).
    let addr = unsafe { (*ah.cast::<Ah>()).addr };
    // SAFETY: a live QP (contract).
    unsafe {
        last(qp, |w| {
            w.ud = Some(UdDest {
                addr,
                remote_qpn,
                remote_qkey,
            })
        })
    }
}
