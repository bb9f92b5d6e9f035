//! Extended CQs (`verbs_context.create_cq_ex`): the `ibv_cq_ex` polling
//! ops (`ibv_start_poll`, `ibv_next_poll`, `ibv_end_poll`, `ibv_wc_read_*`).
//!
//! Every CQ this library makes carries these ops, so a CQ from
//! `ibv_create_cq` can be polled the same way. The completion timestamp
//! is the `CLOCK_MONOTONIC` time in nanoseconds at which the library took
//! the completion from its ring (there is no hardware clock); the device
//! reports a 1 GHz clock (`hca_core_clock` 1 000 000 kHz) and a full
//! 64-bit mask.

use migros_verbs::WorkCompletion;

use crate::context::lock;
use crate::cq::{ibv_create_cq, to_ibv_wc, Cq};
use crate::sys::*;
use crate::util::null_errno;

/// The `wc_flags` of `ibv_cq_init_attr_ex` this library can fill.
const SUPPORTED_WC_FLAGS: u64 = (ibv_create_cq_wc_flags_IBV_WC_EX_WITH_BYTE_LEN
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_IMM
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_QP_NUM
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_SRC_QP
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_SLID
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_SL
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_DLID_PATH_BITS
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_COMPLETION_TIMESTAMP
    | ibv_create_cq_wc_flags_IBV_WC_EX_WITH_COMPLETION_TIMESTAMP_WALLCLOCK)
    as u64;

/// The completion between `start_poll`/`next_poll` and the next call.
pub(crate) struct Current {
    wc: WorkCompletion,
    /// CLOCK_MONOTONIC, ns, when it was taken from the ring.
    ts: u64,
    /// CLOCK_REALTIME, ns.
    wallclock: u64,
}

/// `verbs_context.create_cq_ex`.
pub(crate) unsafe extern "C" fn create_cq_ex(
    context: *mut ibv_context,
    attr: *mut ibv_cq_init_attr_ex,
) -> *mut ibv_cq_ex {
    if context.is_null() || attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: a readable attr (contract).
    let a = unsafe { &*attr };
    if a.wc_flags & !SUPPORTED_WC_FLAGS != 0 || a.comp_mask & !1 != 0 || a.flags != 0 {
        return null_errno(libc::EOPNOTSUPP);
    }
    if a.cqe == 0 || a.cqe > i32::MAX as u32 || a.comp_vector > i32::MAX as u32 {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: same contract as ibv_create_cq.
    let cq = unsafe {
        ibv_create_cq(
            context,
            a.cqe as libc::c_int,
            a.cq_context,
            a.channel,
            a.comp_vector as libc::c_int,
        )
    };
    cq.cast()
}

/// Sets the polling ops of a new CQ.
pub(crate) fn set_ops(cq: &mut ibv_cq_ex) {
    cq.start_poll = Some(start_poll);
    cq.next_poll = Some(next_poll);
    cq.end_poll = Some(end_poll);
    cq.read_opcode = Some(read_opcode);
    cq.read_vendor_err = Some(read_vendor_err);
    cq.read_byte_len = Some(read_byte_len);
    cq.read_imm_data = Some(read_imm_data);
    cq.read_qp_num = Some(read_qp_num);
    cq.read_src_qp = Some(read_src_qp);
    cq.read_wc_flags = Some(read_wc_flags);
    cq.read_slid = Some(read_slid);
    cq.read_sl = Some(read_sl);
    cq.read_dlid_path_bits = Some(read_dlid_path_bits);
    cq.read_completion_ts = Some(read_completion_ts);
    cq.read_completion_wallclock_ns = Some(read_completion_wallclock_ns);
}

fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a writable timespec.
    unsafe { libc::clock_gettime(clock, &mut t) };
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// Takes the next completion into the CQ's `status`/`wr_id`; ENOENT if
/// the ring is empty.
///
/// # Safety
/// `cq` must be a live CQ of this library.
unsafe fn advance(cq: *mut ibv_cq_ex) -> libc::c_int {
    if cq.is_null() {
        return libc::EINVAL;
    }
    let block = cq.cast::<Cq>();
    // SAFETY: a live CQ block (caller); only the `inner` and `current`
    // fields are borrowed, the C fields are written through `cq`.
    let (inner, current) = unsafe { (&(*block).inner, &(*block).current) };
    let mut out = Vec::with_capacity(1);
    // SAFETY: the CQ's context is open (caller).
    match unsafe { crate::cq::take(inner, (*cq).context, &mut out, 1) } {
        Ok((1, _)) => {}
        Ok(_) => {
            *lock(current) = None;
            return libc::ENOENT;
        }
        Err(e) => return e.errno(),
    }
    let Some(wc) = out.pop() else {
        return libc::ENOENT;
    };
    // SAFETY: the C fields of the live CQ (caller).
    unsafe {
        (*cq).status = wc.status as ibv_wc_status;
        (*cq).wr_id = wc.wr_id;
    }
    *lock(current) = Some(Current {
        wc,
        ts: now_ns(libc::CLOCK_MONOTONIC),
        wallclock: now_ns(libc::CLOCK_REALTIME),
    });
    0
}

unsafe extern "C" fn start_poll(cq: *mut ibv_cq_ex, _attr: *mut ibv_poll_cq_attr) -> libc::c_int {
    // SAFETY: a live CQ (contract).
    unsafe { advance(cq) }
}

unsafe extern "C" fn next_poll(cq: *mut ibv_cq_ex) -> libc::c_int {
    // SAFETY: a live CQ (contract).
    unsafe { advance(cq) }
}

unsafe extern "C" fn end_poll(cq: *mut ibv_cq_ex) {
    if cq.is_null() {
        return;
    }
    // SAFETY: a live CQ block (contract).
    *lock(unsafe { &(*cq.cast::<Cq>()).current }) = None;
}

/// A value of the current completion (the default if there is none).
///
/// # Safety
/// `cq` must be a live CQ of this library.
unsafe fn with<T: Default>(cq: *mut ibv_cq_ex, f: impl FnOnce(&Current) -> T) -> T {
    if cq.is_null() {
        return T::default();
    }
    // SAFETY: a live CQ block (caller).
    lock(unsafe { &(*cq.cast::<Cq>()).current })
        .as_ref()
        .map(f)
        .unwrap_or_default()
}

unsafe extern "C" fn read_opcode(cq: *mut ibv_cq_ex) -> ibv_wc_opcode {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| c.wc.opcode as ibv_wc_opcode) }
}

unsafe extern "C" fn read_vendor_err(_cq: *mut ibv_cq_ex) -> u32 {
    0
}

unsafe extern "C" fn read_byte_len(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| c.wc.byte_len) }
}

unsafe extern "C" fn read_imm_data(cq: *mut ibv_cq_ex) -> __be32 {
    // SAFETY: a live CQ (contract); the C form has the immediate in
    // network order, or the invalidated rkey.
    unsafe { with(cq, |c| to_ibv_wc(&c.wc).__bindgen_anon_1.imm_data) }
}

unsafe extern "C" fn read_qp_num(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| c.wc.qp_num) }
}

unsafe extern "C" fn read_src_qp(cq: *mut ibv_cq_ex) -> u32 {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| c.wc.src_qp) }
}

unsafe extern "C" fn read_wc_flags(cq: *mut ibv_cq_ex) -> libc::c_uint {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| to_ibv_wc(&c.wc).wc_flags) }
}

unsafe extern "C" fn read_slid(_cq: *mut ibv_cq_ex) -> u32 {
    0
}

unsafe extern "C" fn read_sl(cq: *mut ibv_cq_ex) -> u8 {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| crate::cq::sl_of(&c.wc)) }
}

unsafe extern "C" fn read_dlid_path_bits(_cq: *mut ibv_cq_ex) -> u8 {
    0
}

unsafe extern "C" fn read_completion_ts(cq: *mut ibv_cq_ex) -> u64 {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| c.ts) }
}

unsafe extern "C" fn read_completion_wallclock_ns(cq: *mut ibv_cq_ex) -> u64 {
    // SAFETY: a live CQ (contract).
    unsafe { with(cq, |c| c.wallclock) }
}
