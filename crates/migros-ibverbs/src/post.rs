//! The data path: C send and receive WR lists converted to migros WRs and
//! posted (`ops.post_send`, `ops.post_recv`, `ops.post_srq_recv`), with
//! `bad_wr` set as libibverbs sets it.

use migros_verbs::{
    Access, MwBind, PostError, QpType, RecvWr, SendData, SendFlags, SendWr, Sge, UdDest, WrOpcode,
};

use crate::ah::Ah;
use crate::context::Ctx;
use crate::qp::Qp;
use crate::srq::Srq;
use crate::sys::*;

/// The SGEs of a C work request.
///
/// # Safety
/// `list` must hold `n` SGEs (or `n` ≤ 0).
unsafe fn sges(list: *const ibv_sge, n: libc::c_int) -> Vec<Sge> {
    if n <= 0 || list.is_null() {
        return Vec::new();
    }
    // SAFETY: n entries (caller).
    unsafe { std::slice::from_raw_parts(list, n as usize) }
        .iter()
        .map(sge)
        .collect()
}

/// The migros form of a C scatter/gather entry.
pub(crate) fn sge(s: &ibv_sge) -> Sge {
    Sge {
        addr: s.addr,
        length: s.length,
        lkey: s.lkey,
    }
}

/// The migros form of a C memory window bind (`struct ibv_mw_bind_info`)
/// of window `mw` to its new rkey `new_rkey`.
///
/// # Safety
/// `mw` must be a live window and `info.mr` null or a live MR.
pub(crate) unsafe fn mw_bind(mw: *const ibv_mw, new_rkey: u32, info: &ibv_mw_bind_info) -> MwBind {
    MwBind {
        // SAFETY: a live window (caller).
        mw_rkey: unsafe { (*mw).rkey },
        new_rkey,
        // SAFETY: a live MR or none (caller).
        mr_lkey: if info.mr.is_null() {
            0
        } else {
            unsafe { (*info.mr).lkey }
        },
        addr: info.addr,
        length: info.length,
        access: Access(info.mw_access_flags),
    }
}

/// The migros form of one C send WR.
///
/// # Safety
/// `wr` must be a valid `ibv_send_wr` whose SGEs (and AH, for UD; window
/// and MR, for BIND_MW) are valid.
unsafe fn send_wr(wr: &ibv_send_wr, is_ud: bool) -> Option<SendWr> {
    // SAFETY: the union members are read according to the opcode (contract).
    let (rdma, atomic, imm) = unsafe { (wr.wr.rdma, wr.wr.atomic, wr.__bindgen_anon_1.imm_data) };
    let opcode = match wr.opcode {
        ibv_wr_opcode_IBV_WR_SEND => WrOpcode::Send,
        ibv_wr_opcode_IBV_WR_SEND_WITH_IMM => WrOpcode::SendWithImm {
            imm: u32::from_be(imm),
        },
        // SAFETY: invalidate_rkey is the union member of SEND_WITH_INV.
        ibv_wr_opcode_IBV_WR_SEND_WITH_INV => WrOpcode::SendWithInv {
            rkey: unsafe { wr.__bindgen_anon_1.invalidate_rkey },
        },
        ibv_wr_opcode_IBV_WR_RDMA_WRITE => WrOpcode::RdmaWrite {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
        },
        ibv_wr_opcode_IBV_WR_RDMA_WRITE_WITH_IMM => WrOpcode::RdmaWriteWithImm {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
            imm: u32::from_be(imm),
        },
        ibv_wr_opcode_IBV_WR_RDMA_READ => WrOpcode::RdmaRead {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
        },
        ibv_wr_opcode_IBV_WR_ATOMIC_CMP_AND_SWP => WrOpcode::AtomicCmpSwap {
            remote_addr: atomic.remote_addr,
            rkey: atomic.rkey,
            compare: atomic.compare_add,
            swap: atomic.swap,
        },
        ibv_wr_opcode_IBV_WR_ATOMIC_FETCH_AND_ADD => WrOpcode::AtomicFetchAdd {
            remote_addr: atomic.remote_addr,
            rkey: atomic.rkey,
            add: atomic.compare_add,
        },
        // SAFETY: invalidate_rkey is the union member of LOCAL_INV.
        ibv_wr_opcode_IBV_WR_LOCAL_INV => WrOpcode::LocalInv {
            rkey: unsafe { wr.__bindgen_anon_1.invalidate_rkey },
        },
        ibv_wr_opcode_IBV_WR_BIND_MW => {
            // SAFETY: bind_mw is the union member of BIND_MW; its window
            // and MR are live (contract).
            let b = unsafe { wr.__bindgen_anon_2.bind_mw };
            if b.mw.is_null() {
                return None;
            }
            // SAFETY: as above.
            WrOpcode::BindMw(unsafe { mw_bind(b.mw, b.rkey, &b.bind_info) })
        }
        // The 8 bytes come from the SGE list, the target from `wr.rdma`.
        ibv_wr_opcode_IBV_WR_ATOMIC_WRITE => WrOpcode::AtomicWrite {
            remote_addr: rdma.remote_addr,
            rkey: rdma.rkey,
        },
        _ => return None,
    };
    let flags = SendFlags(wr.send_flags & 0xf);
    // SAFETY: the SGE list holds num_sge entries (contract).
    let list = unsafe { sges(wr.sg_list, wr.num_sge) };
    let data = if flags.contains(SendFlags::INLINE) {
        let mut bytes = Vec::new();
        for s in &list {
            // SAFETY: inline data is read from the caller's memory at post
            // time, as libibverbs does (contract).
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(s.addr as *const u8, s.length as usize)
            });
        }
        SendData::Inline(bytes)
    } else {
        SendData::Sges(list)
    };
    // SAFETY: ud is the union member for UD QPs (and only read for them).
    let ud = unsafe { wr.wr.ud };
    let ud = (is_ud && !ud.ah.is_null()).then(|| UdDest {
        // SAFETY: a live AH (contract).
        addr: unsafe { (*ud.ah.cast::<Ah>()).addr },
        remote_qpn: ud.remote_qpn,
        remote_qkey: ud.remote_qkey,
    });
    Some(SendWr {
        wr_id: wr.wr_id,
        opcode,
        flags,
        data,
        ud,
    })
}

/// `ops.post_send`: the WRs before the first that fails are posted, and
/// `bad_wr` points at that one.
pub(crate) unsafe extern "C" fn post_send(
    qp: *mut ibv_qp,
    wr: *mut ibv_send_wr,
    bad_wr: *mut *mut ibv_send_wr,
) -> libc::c_int {
    if qp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live QP (contract).
    let q = unsafe { &*qp.cast::<Qp>() };
    // SAFETY: the QP's context is open (contract).
    if unsafe { Ctx::dead(q.qpx.qp_base.context) } {
        return fail(libc::EIO, wr, bad_wr);
    }
    let is_ud = q.inner.qp_type() == QpType::Ud;
    let mut wrs = Vec::new();
    let mut ptrs = Vec::new();
    let mut cur = wr;
    // A WR that does not convert ends the list: the ones before it are
    // posted, it is the bad one (EINVAL).
    let mut unconverted = None;
    while !cur.is_null() {
        // SAFETY: a valid WR list (contract).
        let w = unsafe { &*cur };
        // SAFETY: as above; UD fields only for UD QPs.
        match unsafe { send_wr(w, is_ud) } {
            Some(s) => {
                wrs.push(s);
                ptrs.push(cur);
            }
            None => {
                unconverted = Some(cur);
                break;
            }
        }
        cur = w.next;
    }
    posted(q.inner.post_send_counted(&wrs), &ptrs, unconverted, bad_wr)
}

/// The outcome of posting the WRs `ptrs` point to, followed by the one
/// `rest` points to (which could not be converted), through `bad_wr`.
fn posted<T>(
    result: Result<(), PostError>,
    ptrs: &[*mut T],
    rest: Option<*mut T>,
    bad_wr: *mut *mut T,
) -> libc::c_int {
    match (result, rest) {
        (Ok(()), None) => 0,
        (Ok(()), Some(bad)) => fail(libc::EINVAL, bad, bad_wr),
        (Err(e), _) => {
            let bad = ptrs.get(e.posted).copied().unwrap_or(std::ptr::null_mut());
            fail(e.error.errno(), bad, bad_wr)
        }
    }
}

/// Reports `bad` through `bad_wr` and returns `errno`.
fn fail<T>(errno: i32, bad: *mut T, bad_wr: *mut *mut T) -> libc::c_int {
    if !bad_wr.is_null() {
        // SAFETY: a writable out pointer (contract).
        unsafe { *bad_wr = bad };
    }
    errno
}

/// A C receive WR list in migros form: the WRs, where each one is, and
/// the first that cannot be converted (a negative `num_sge`), which ends it.
struct RecvList {
    wrs: Vec<RecvWr>,
    ptrs: Vec<*mut ibv_recv_wr>,
    bad: Option<*mut ibv_recv_wr>,
}

/// The migros forms of a C receive WR list.
///
/// # Safety
/// `wr` must be a valid list.
unsafe fn recv_wrs(wr: *mut ibv_recv_wr) -> RecvList {
    let mut list = RecvList {
        wrs: Vec::new(),
        ptrs: Vec::new(),
        bad: None,
    };
    let mut cur = wr;
    while !cur.is_null() {
        // SAFETY: a valid list (caller).
        let w = unsafe { &*cur };
        if w.num_sge < 0 {
            list.bad = Some(cur);
            break;
        }
        list.wrs.push(RecvWr {
            wr_id: w.wr_id,
            // SAFETY: num_sge entries (caller).
            sges: unsafe { sges(w.sg_list, w.num_sge) },
        });
        list.ptrs.push(cur);
        cur = w.next;
    }
    list
}

/// Converts the receive list `wr` and hands it to `post` unless `context`
/// is dead (EIO, nothing posted); `bad_wr` as for every post.
///
/// # Safety
/// `context` must be open and `wr` a valid list.
unsafe fn post_recv_list(
    context: *mut ibv_context,
    wr: *mut ibv_recv_wr,
    bad_wr: *mut *mut ibv_recv_wr,
    post: impl FnOnce(&[RecvWr]) -> Result<(), PostError>,
) -> libc::c_int {
    // SAFETY: a valid list (caller).
    let list = unsafe { recv_wrs(wr) };
    // SAFETY: an open context (caller).
    if unsafe { Ctx::dead(context) } {
        return fail(libc::EIO, wr, bad_wr);
    }
    posted(post(&list.wrs), &list.ptrs, list.bad, bad_wr)
}

/// `ops.post_recv`.
pub(crate) unsafe extern "C" fn post_recv(
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
    bad_wr: *mut *mut ibv_recv_wr,
) -> libc::c_int {
    if qp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live QP (contract).
    let q = unsafe { &*qp.cast::<Qp>() };
    // SAFETY: the QP's context is open and the list valid (contract).
    unsafe {
        post_recv_list(q.qpx.qp_base.context, wr, bad_wr, |wrs| {
            q.inner.post_recv_counted(wrs)
        })
    }
}

/// `ops.post_srq_recv`.
pub(crate) unsafe extern "C" fn post_srq_recv(
    srq: *mut ibv_srq,
    wr: *mut ibv_recv_wr,
    bad_wr: *mut *mut ibv_recv_wr,
) -> libc::c_int {
    if srq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live SRQ (contract).
    let s = unsafe { &*srq.cast::<Srq>() };
    // SAFETY: the SRQ's context is open and the list valid (contract).
    unsafe {
        post_recv_list(s.srq.context, wr, bad_wr, |wrs| {
            let result = s.inner.post_recv_counted(wrs);
            let n = result.as_ref().err().map_or(wrs.len(), |e| e.posted);
            s.track.post(wrs[..n].iter().map(|w| w.wr_id));
            result
        })
    }
}
