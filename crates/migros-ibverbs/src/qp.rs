//! Queue pairs: create, destroy, modify, query, and their attributes in
//! C and migros form (posting is in `post`).

use migros_verbs::{Access, AttrMask, Mtu, Qp as VQp, QpAttr, QpCap, QpInitAttr, QpState, QpType};

use crate::context::{lock, Ctx};
use crate::cq::cq;
use crate::mr::pd;
use crate::srq::Srq;
use crate::sys::*;
use crate::util::{addr_of, gid_of, null_errno};

/// What a QP pointer points to (`ibv_qp_ex` starts with `ibv_qp`).
#[repr(C)]
pub(crate) struct Qp {
    pub qpx: ibv_qp_ex,
    pub inner: VQp,
    init: ibv_qp_init_attr,
    /// The `ibv_wr_*` batch being built.
    pub batch: std::sync::Mutex<crate::qpx::Batch>,
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
    a.cap = ibv_cap(inner.cap());
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
    if mask & ibv_qp_attr_mask_IBV_QP_AV != 0 && a.ah_attr.is_global != 0 {
        // The source GID must be one the device sends from (see `device`).
        // SAFETY: a live QP's context is open.
        let sgid = unsafe {
            crate::device::source_gid(q.qpx.qp_base.context, a.ah_attr.grh.sgid_index.into())
        };
        if let Err(e) = sgid {
            return e;
        }
    }
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
    a.cap = ibv_cap(q.inner.cap());
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

/// A QP's capacities as `struct ibv_qp_cap`.
fn ibv_cap(cap: QpCap) -> ibv_qp_cap {
    ibv_qp_cap {
        max_send_wr: cap.max_send_wr,
        max_recv_wr: cap.max_recv_wr,
        max_send_sge: cap.max_send_sge,
        max_recv_sge: cap.max_recv_sge,
        max_inline_data: cap.max_inline_data,
    }
}
