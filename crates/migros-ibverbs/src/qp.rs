//! Queue pairs, shared receive queues and address handles; `post_send`,
//! `post_recv` and `post_srq_recv` are reached through the ops table.

use std::net::IpAddr;
use std::sync::Arc;

use migros_verbs::{
    Access, AttrMask, Mtu, MwBind, PostError, Qp as VQp, QpAttr, QpCap, QpInitAttr, QpState,
    QpType, RecvWr, SendData, SendFlags, SendWr, Sge, Srq as VSrq, UdDest, WrOpcode,
};

use crate::context::{lock, Ctx};
use crate::cq::cq;
use crate::mr::pd;
use crate::srq::SrqTrack;
use crate::sys::*;
use crate::util::{addr_of, gid_of, null_errno, set_errno};

/// What a QP pointer points to (`ibv_qp_ex` starts with `ibv_qp`).
#[repr(C)]
pub(crate) struct Qp {
    pub qpx: ibv_qp_ex,
    pub inner: VQp,
    init: ibv_qp_init_attr,
    /// The `ibv_wr_*` batch being built.
    pub batch: std::sync::Mutex<crate::qpx::Batch>,
}

/// What an SRQ pointer points to.
#[repr(C)]
struct Srq {
    srq: ibv_srq,
    inner: VSrq,
    /// Posted receives not yet completed (flushed if the daemon dies).
    track: Arc<SrqTrack>,
}

/// What an AH pointer points to.
#[repr(C)]
pub(crate) struct Ah {
    ah: ibv_ah,
    pub addr: IpAddr,
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_qp(
    pd: *mut ibv_pd,
    attr: *mut ibv_qp_init_attr,
) -> *mut ibv_qp {
    if pd.is_null() || attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: live PD, CQs and SRQ, readable and writable attr (contract).
    let (p, a) = unsafe { (self::pd(pd), &mut *attr) };
    if a.send_cq.is_null() || a.recv_cq.is_null() {
        return null_errno(libc::EINVAL);
    }
    let qp_type = match a.qp_type {
        ibv_qp_type_IBV_QPT_RC => QpType::Rc,
        ibv_qp_type_IBV_QPT_UC => QpType::Uc,
        ibv_qp_type_IBV_QPT_UD => QpType::Ud,
        _ => return null_errno(libc::EOPNOTSUPP),
    };
    // SAFETY: live CQs and SRQ (contract).
    let (send_cq, recv_cq) = unsafe { (&cq(a.send_cq).inner, &cq(a.recv_cq).inner) };
    let srq = (!a.srq.is_null()).then(|| unsafe { &(*a.srq.cast::<Srq>()).inner });
    let init = QpInitAttr {
        qp_type,
        send_cq,
        recv_cq,
        srq,
        cap: rxe_send_cap(QpCap {
            max_send_wr: a.cap.max_send_wr.max(1),
            max_recv_wr: a.cap.max_recv_wr.max(1),
            max_send_sge: a.cap.max_send_sge.max(1),
            max_recv_sge: a.cap.max_recv_sge.max(1),
            max_inline_data: a.cap.max_inline_data,
        }),
        sq_sig_all: a.sq_sig_all != 0,
    };
    let inner = match p.inner.create_qp(&init) {
        Ok(q) => q,
        Err(e) => return null_errno(e.errno()),
    };
    let cap = inner.cap();
    a.cap = ibv_qp_cap {
        max_send_wr: cap.max_send_wr,
        max_recv_wr: cap.max_recv_wr,
        max_send_sge: cap.max_send_sge,
        max_recv_sge: cap.max_recv_sge,
        max_inline_data: cap.max_inline_data,
    };
    // SAFETY: all-zero is a valid ibv_qp_ex (pointers, integers, `None`
    // ops, zero-initialised pthread objects).
    let mut qpx: ibv_qp_ex = unsafe { core::mem::zeroed() };
    let q = &mut qpx.qp_base;
    // SAFETY: reading the PD block's own field.
    q.context = unsafe { (*pd).context };
    q.qp_context = a.qp_context;
    q.pd = pd;
    q.send_cq = a.send_cq;
    q.recv_cq = a.recv_cq;
    q.srq = a.srq;
    q.handle = inner.qpn;
    q.qp_num = inner.qpn;
    q.state = ibv_qp_state_IBV_QPS_RESET;
    q.qp_type = a.qp_type;
    crate::qpx::set_ops(&mut qpx);
    if !a.srq.is_null() {
        // SAFETY: live context, SRQ and CQ (contract).
        unsafe {
            let track = &(*a.srq.cast::<Srq>()).track;
            Ctx::from_ibv((*pd).context)
                .srq_qps
                .attach(inner.qpn, (*a.recv_cq).handle, track);
        }
    }
    let qpn = inner.qpn;
    let block = Box::into_raw(Box::new(Qp {
        qpx,
        inner,
        init: *a,
        batch: Default::default(),
    }));
    // SAFETY: the PD's context is open (contract).
    lock(&unsafe { Ctx::from_ibv((*pd).context) }.qps).insert(qpn, block as usize);
    block.cast()
}

#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_qp(qp: *mut ibv_qp) -> libc::c_int {
    if qp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in ibv_create_qp, released once.
    let block = unsafe { Box::from_raw(qp.cast::<Qp>()) };
    let q = &block.qpx.qp_base;
    // SAFETY: the QP's context is open (contract).
    let ctx = unsafe { Ctx::from_ibv(q.context) };
    if !q.srq.is_null() {
        ctx.srq_qps.detach(q.qp_num);
    }
    // Under the registry's lock: an async event being delivered either
    // names the QP while it lives or does not find it.
    let mut qps = lock(&ctx.qps);
    qps.remove(&q.qp_num);
    drop(block);
    drop(qps);
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_qp_to_qp_ex(qp: *mut ibv_qp) -> *mut ibv_qp_ex {
    // `qp_base` is the block's first field.
    qp.cast()
}

fn qp_state(s: ibv_qp_state) -> Option<QpState> {
    Some(match s {
        ibv_qp_state_IBV_QPS_RESET => QpState::Reset,
        ibv_qp_state_IBV_QPS_INIT => QpState::Init,
        ibv_qp_state_IBV_QPS_RTR => QpState::Rtr,
        ibv_qp_state_IBV_QPS_RTS => QpState::Rts,
        ibv_qp_state_IBV_QPS_SQD => QpState::Sqd,
        ibv_qp_state_IBV_QPS_SQE => QpState::Sqe,
        ibv_qp_state_IBV_QPS_ERR => QpState::Err,
        _ => return None,
    })
}

/// Send capabilities as rxe grants them (`rxe_qp_init_req`): a send WQE
/// holds the larger of the SGEs and the inline data, and both limits grow
/// to fill it (16 bytes an SGE). Programs rely on it: rdma_xclient posts
/// 16 inline bytes on a QP made with `max_inline_data` 0 and one SGE.
/// Requests over the device's limits are left for the daemon to refuse.
fn rxe_send_cap(c: QpCap) -> QpCap {
    const SGE: u32 = 16;
    if c.max_send_sge as usize > migros_proto::ring::MAX_SEND_SGE
        || c.max_inline_data as usize > migros_proto::ring::MAX_INLINE
    {
        return c;
    }
    let wqe = (c.max_send_sge * SGE).max(c.max_inline_data);
    QpCap {
        max_send_sge: (wqe / SGE).min(migros_proto::ring::MAX_SEND_SGE as u32),
        max_inline_data: wqe.min(migros_proto::ring::MAX_INLINE as u32),
        ..c
    }
}

/// The migros attributes of a C `ibv_qp_attr` (only masked fields matter).
fn qp_attr(a: &ibv_qp_attr, mask: u32) -> Option<QpAttr> {
    let state_mask = ibv_qp_attr_mask_IBV_QP_STATE | ibv_qp_attr_mask_IBV_QP_CUR_STATE;
    let mut out = QpAttr {
        qp_state: if mask & state_mask != 0 {
            qp_state(a.qp_state)?
        } else {
            QpState::Reset
        },
        cur_qp_state: qp_state(a.cur_qp_state).unwrap_or(QpState::Reset),
        qkey: a.qkey,
        rq_psn: a.rq_psn,
        sq_psn: a.sq_psn,
        dest_qp_num: a.dest_qp_num,
        qp_access_flags: Access(a.qp_access_flags),
        cap: QpCap {
            max_send_wr: a.cap.max_send_wr,
            max_recv_wr: a.cap.max_recv_wr,
            max_send_sge: a.cap.max_send_sge,
            max_recv_sge: a.cap.max_recv_sge,
            max_inline_data: a.cap.max_inline_data,
        },
        pkey_index: a.pkey_index,
        port_num: a.port_num,
        max_rd_atomic: a.max_rd_atomic,
        max_dest_rd_atomic: a.max_dest_rd_atomic,
        min_rnr_timer: a.min_rnr_timer,
        timeout: a.timeout,
        retry_cnt: a.retry_cnt,
        rnr_retry: a.rnr_retry,
        ..QpAttr::default()
    };
    if mask & ibv_qp_attr_mask_IBV_QP_PATH_MTU != 0 {
        out.path_mtu = Mtu::from_ib(a.path_mtu as u8)?;
    }
    if mask & ibv_qp_attr_mask_IBV_QP_AV != 0 && a.ah_attr.is_global != 0 {
        out.dest_addr = Some(addr_of(&a.ah_attr.grh.dgid));
    }
    Some(out)
}

#[no_mangle]
pub unsafe extern "C" fn ibv_modify_qp(
    qp: *mut ibv_qp,
    attr: *mut ibv_qp_attr,
    attr_mask: libc::c_int,
) -> libc::c_int {
    if qp.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live QP and readable attr (contract).
    let (q, a) = unsafe { (&mut *qp.cast::<Qp>(), &*attr) };
    let mask = attr_mask as u32;
    let Some(rust) = qp_attr(a, mask) else {
        return libc::EINVAL;
    };
    match q.inner.modify(&rust, AttrMask(mask & 0x1f_ffff)) {
        Ok(()) => {
            if mask & ibv_qp_attr_mask_IBV_QP_STATE != 0 {
                q.qpx.qp_base.state = a.qp_state;
            }
            0
        }
        Err(e) => e.errno(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_query_qp(
    qp: *mut ibv_qp,
    attr: *mut ibv_qp_attr,
    _attr_mask: libc::c_int,
    init_attr: *mut ibv_qp_init_attr,
) -> libc::c_int {
    if qp.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live QP (contract).
    let q = unsafe { &*qp.cast::<Qp>() };
    let r = match q.inner.query() {
        Ok(r) => r,
        Err(e) => return e.errno(),
    };
    // SAFETY: all-zero is a valid ibv_qp_attr (integers and a GID union).
    let mut a: ibv_qp_attr = unsafe { core::mem::zeroed() };
    a.qp_state = r.qp_state as u32;
    a.cur_qp_state = r.cur_qp_state as u32;
    a.path_mtu = r.path_mtu as u32;
    a.qkey = r.qkey;
    a.rq_psn = r.rq_psn;
    a.sq_psn = r.sq_psn;
    a.dest_qp_num = r.dest_qp_num;
    a.qp_access_flags = r.qp_access_flags.0;
    let cap = q.inner.cap();
    a.cap = ibv_qp_cap {
        max_send_wr: cap.max_send_wr,
        max_recv_wr: cap.max_recv_wr,
        max_send_sge: cap.max_send_sge,
        max_recv_sge: cap.max_recv_sge,
        max_inline_data: cap.max_inline_data,
    };
    if let Some(addr) = r.dest_addr {
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.dgid = gid_of(addr);
        a.ah_attr.grh.hop_limit = 0xff;
        a.ah_attr.port_num = 1;
    }
    a.pkey_index = r.pkey_index;
    a.port_num = r.port_num;
    a.max_rd_atomic = r.max_rd_atomic;
    a.max_dest_rd_atomic = r.max_dest_rd_atomic;
    a.min_rnr_timer = r.min_rnr_timer;
    a.timeout = r.timeout;
    a.retry_cnt = r.retry_cnt;
    a.rnr_retry = r.rnr_retry;
    a.sq_draining = r.sq_draining as u8;
    // SAFETY: writable out parameters and the QP's own field (contract).
    unsafe {
        // As libibverbs: the program's `qp->state` follows what it queried.
        (*qp).state = a.qp_state;
        *attr = a;
        if !init_attr.is_null() {
            *init_attr = q.init;
            (*init_attr).cap = a.cap;
        }
    }
    0
}

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
        .map(|s| Sge {
            addr: s.addr,
            length: s.length,
            lkey: s.lkey,
        })
        .collect()
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

/// `ops.post_recv`.
pub(crate) unsafe extern "C" fn post_recv(
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
    bad_wr: *mut *mut ibv_recv_wr,
) -> libc::c_int {
    if qp.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live QP and a valid list (contract).
    let (q, list) = unsafe { (&*qp.cast::<Qp>(), recv_wrs(wr)) };
    // SAFETY: the QP's context is open (contract).
    if unsafe { Ctx::dead(q.qpx.qp_base.context) } {
        return fail(libc::EIO, wr, bad_wr);
    }
    let result = q.inner.post_recv_counted(&list.wrs);
    posted(result, &list.ptrs, list.bad, bad_wr)
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
    // SAFETY: live SRQ and a valid list (contract).
    let (s, list) = unsafe { (&*srq.cast::<Srq>(), recv_wrs(wr)) };
    // SAFETY: the SRQ's context is open (contract).
    if unsafe { Ctx::dead(s.srq.context) } {
        return fail(libc::EIO, wr, bad_wr);
    }
    let result = s.inner.post_recv_counted(&list.wrs);
    let n = result.as_ref().err().map_or(list.wrs.len(), |e| e.posted);
    s.track.post(list.wrs[..n].iter().map(|w| w.wr_id));
    posted(result, &list.ptrs, list.bad, bad_wr)
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_srq(
    pd: *mut ibv_pd,
    attr: *mut ibv_srq_init_attr,
) -> *mut ibv_srq {
    if pd.is_null() || attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: live PD, readable and writable attr (contract).
    let (p, a) = unsafe { (self::pd(pd), &mut *attr) };
    let inner = match p.inner.create_srq(
        a.attr.max_wr.max(1),
        a.attr.max_sge.max(1),
        a.attr.srq_limit,
    ) {
        Ok(s) => s,
        Err(e) => return null_errno(e.errno()),
    };
    a.attr.max_wr = inner.entries();
    // SAFETY: all-zero is a valid ibv_srq (pointers, integers, pthread objects).
    let mut srq: ibv_srq = unsafe { core::mem::zeroed() };
    // SAFETY: reading the PD block's own field.
    srq.context = unsafe { (*pd).context };
    srq.srq_context = a.srq_context;
    srq.pd = pd;
    srq.handle = inner.handle;
    let track = SrqTrack::new(inner.entries());
    let handle = inner.handle;
    let block = Box::into_raw(Box::new(Srq { srq, inner, track }));
    // SAFETY: the PD's context is open (contract).
    lock(&unsafe { Ctx::from_ibv((*pd).context) }.srqs).insert(handle, block as usize);
    block.cast()
}

/// `verbs_context.create_srq_ex`, reached for what `ibv_create_srq_ex`
/// does not hand to `ibv_create_srq` itself: a basic SRQ with a CQ or an
/// XRC domain named (both ignored, as the kernel ignores them for basic
/// SRQs) is created; XRC and tag-matching SRQs are not supported
/// (EOPNOTSUPP, as rxe); unknown mask bits or no PD are EINVAL.
pub(crate) unsafe extern "C" fn create_srq_ex(
    _context: *mut ibv_context,
    attr: *mut ibv_srq_init_attr_ex,
) -> *mut ibv_srq {
    if attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: a readable attr (contract).
    let a = unsafe { &mut *attr };
    let known = ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE
        | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD
        | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_XRCD
        | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_CQ
        | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TM;
    if a.comp_mask & !known != 0 {
        return null_errno(libc::EINVAL);
    }
    let basic = a.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE == 0
        || a.srq_type == ibv_srq_type_IBV_SRQT_BASIC;
    if !basic {
        return null_errno(libc::EOPNOTSUPP);
    }
    if a.comp_mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD == 0 || a.pd.is_null() {
        return null_errno(libc::EINVAL);
    }
    let mut plain = ibv_srq_init_attr {
        srq_context: a.srq_context,
        attr: a.attr,
    };
    // SAFETY: a live PD (contract).
    let srq = unsafe { ibv_create_srq(a.pd, &mut plain) };
    a.attr = plain.attr;
    srq
}

/// `ibv_modify_srq`: `IBV_SRQ_MAX_WR` resizes the SRQ (never below what
/// it holds or below the limit), `IBV_SRQ_LIMIT` arms the limit event (at
/// most the SRQ's size); both checked before either applies (EINVAL, as
/// rxe's `rxe_srq_chk_attr`).
#[no_mangle]
pub unsafe extern "C" fn ibv_modify_srq(
    srq: *mut ibv_srq,
    attr: *mut ibv_srq_attr,
    mask: libc::c_int,
) -> libc::c_int {
    if srq.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    let mask = mask as u32;
    let known = ibv_srq_attr_mask_IBV_SRQ_MAX_WR | ibv_srq_attr_mask_IBV_SRQ_LIMIT;
    if mask & !known != 0 {
        return libc::EINVAL;
    }
    // SAFETY: live SRQ and attr (contract).
    let (s, a) = unsafe { (&*srq.cast::<Srq>(), &mut *attr) };
    let max_wr = (mask & ibv_srq_attr_mask_IBV_SRQ_MAX_WR != 0).then_some(a.max_wr);
    let limit = (mask & ibv_srq_attr_mask_IBV_SRQ_LIMIT != 0).then_some(a.srq_limit);
    if max_wr == Some(0) {
        return libc::EINVAL;
    }
    match s.inner.modify(max_wr, limit) {
        Ok(()) => {
            if max_wr.is_some() {
                a.max_wr = s.inner.entries();
                s.track.resize(s.inner.entries());
            }
            0
        }
        Err(e) => e.errno(),
    }
}

/// `ibv_query_srq`: its size, SGEs and armed limit (0 once the limit
/// event fired).
#[no_mangle]
pub unsafe extern "C" fn ibv_query_srq(srq: *mut ibv_srq, attr: *mut ibv_srq_attr) -> libc::c_int {
    if srq.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live SRQ (contract).
    let s = unsafe { &*srq.cast::<Srq>() };
    match s.inner.query() {
        Ok((max_wr, limit)) => {
            // SAFETY: a writable attr (contract).
            unsafe {
                *attr = ibv_srq_attr {
                    max_wr,
                    max_sge: s.inner.max_sge(),
                    srq_limit: limit,
                };
            }
            0
        }
        Err(e) => e.errno(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_srq(srq: *mut ibv_srq) -> libc::c_int {
    if srq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in ibv_create_srq, released once.
    let block = unsafe { Box::from_raw(srq.cast::<Srq>()) };
    // SAFETY: the SRQ's context is open (contract).
    let ctx = unsafe { Ctx::from_ibv(block.srq.context) };
    let mut srqs = lock(&ctx.srqs);
    srqs.remove(&block.srq.handle);
    drop(block);
    drop(srqs);
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_ah(pd: *mut ibv_pd, attr: *mut ibv_ah_attr) -> *mut ibv_ah {
    if pd.is_null() || attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: readable attr (contract).
    let a = unsafe { &*attr };
    // As the kernel's rdma_check_ah_attr: the port must exist and RoCE
    // needs the GRH (the destination is its GID, the source its
    // sgid_index, which must name a GID the device has).
    if a.is_global == 0 || a.port_num != 1 {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: the PD's context is open (contract).
    if let Err(e) = unsafe { crate::device::gid_entry((*pd).context, 1, a.grh.sgid_index.into()) } {
        return null_errno(e);
    }
    let ah = ibv_ah {
        // SAFETY: reading the PD block's own field.
        context: unsafe { (*pd).context },
        pd,
        handle: 0,
    };
    Box::into_raw(Box::new(Ah {
        ah,
        addr: addr_of(&a.grh.dgid),
    }))
    .cast()
}

#[no_mangle]
pub unsafe extern "C" fn ibv_init_ah_from_wc(
    _context: *mut ibv_context,
    port_num: u8,
    wc: *mut ibv_wc,
    grh: *mut ibv_grh,
    ah_attr: *mut ibv_ah_attr,
) -> libc::c_int {
    if wc.is_null() || grh.is_null() || ah_attr.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: readable wc and GRH (the first 40 bytes of the receive
    // buffer), writable ah_attr (contract).
    unsafe {
        if (*wc).wc_flags & ibv_wc_flags_IBV_WC_GRH == 0 {
            set_errno(libc::ENOENT);
            return -1;
        }
        // RoCE v2 over IPv4 puts the IPv4 header in the last 20 bytes.
        let raw = std::slice::from_raw_parts(grh.cast::<u8>(), 40);
        let src = if raw[20] >> 4 == 4 {
            gid_of(IpAddr::from([raw[32], raw[33], raw[34], raw[35]]))
        } else {
            (*grh).sgid
        };
        *ah_attr = core::mem::zeroed();
        (*ah_attr).is_global = 1;
        (*ah_attr).grh.dgid = src;
        (*ah_attr).grh.hop_limit = 0xff;
        (*ah_attr).port_num = port_num;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_ah_from_wc(
    pd: *mut ibv_pd,
    wc: *mut ibv_wc,
    grh: *mut ibv_grh,
    port_num: u8,
) -> *mut ibv_ah {
    // SAFETY: all-zero is a valid ibv_ah_attr.
    let mut attr: ibv_ah_attr = unsafe { core::mem::zeroed() };
    // SAFETY: same contract, PD's context.
    unsafe {
        if pd.is_null() || ibv_init_ah_from_wc((*pd).context, port_num, wc, grh, &mut attr) != 0 {
            return std::ptr::null_mut();
        }
        ibv_create_ah(pd, &mut attr)
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_ah(ah: *mut ibv_ah) -> libc::c_int {
    if ah.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in ibv_create_ah, released once.
    drop(unsafe { Box::from_raw(ah.cast::<Ah>()) });
    0
}
