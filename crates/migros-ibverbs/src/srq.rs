//! Shared receive queues: the verbs (create, modify, query, destroy) and
//! the receives posted to them, flushed when the daemon dies.
//!
//! migros-verbs flushes the receive queue of a QP (`WrFlushErr`
//! completions on its receive CQ once the connection is lost) but does
//! not track receives posted to an SRQ. This module does, for the C
//! library: `post_srq_recv` records each WR id, a receive completion of a
//! QP attached to the SRQ drops the one it names, and on a dead context a
//! CQ polled empty hands out, once, a `IBV_WC_WR_FLUSH_ERR` receive
//! completion for every receive still recorded on each SRQ that one of its
//! QPs takes receives from (the QP with the lowest number among them
//! names the completions), after the QPs' own flushes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use migros_proto::verbs::{Cqn, Qpn, WcOpcode, WcStatus, WorkCompletion};

use crate::context::lock;

use migros_verbs::Srq as VSrq;

use crate::context::Ctx;
use crate::mr::pd;
use crate::sys::*;
use crate::util::null_errno;

/// The receives of one SRQ not yet accounted for by a completion.
pub(crate) struct SrqTrack {
    /// The SRQ's depth: no more receives than this are outstanding, so
    /// older records have completed (changes when the SRQ is resized).
    cap: AtomicUsize,
    pending: Mutex<VecDeque<u64>>,
}

impl SrqTrack {
    pub fn new(cap: u32) -> Arc<SrqTrack> {
        Arc::new(SrqTrack {
            cap: AtomicUsize::new(cap.max(1) as usize),
            pending: Mutex::default(),
        })
    }

    /// Records posted receives.
    pub fn post(&self, wr_ids: impl Iterator<Item = u64>) {
        let mut q = lock(&self.pending);
        q.extend(wr_ids);
        while q.len() > self.cap.load(Ordering::Relaxed) {
            q.pop_front();
        }
    }

    /// The SRQ now holds `cap` receives.
    pub fn resize(&self, cap: u32) {
        self.cap.store(cap.max(1) as usize, Ordering::Relaxed);
    }

    /// Drops the receive a completion names (QPs consume an SRQ in posting
    /// order, but their completions may be polled in any order).
    fn complete(&self, wr_id: u64) {
        let mut q = lock(&self.pending);
        if let Some(at) = q.iter().position(|&id| id == wr_id) {
            q.remove(at);
        }
    }
}

/// The QPs that take their receives from an SRQ, per context.
#[derive(Default)]
pub(crate) struct SrqQps {
    /// How many entries `qps` has: polling skips the lock when none.
    count: AtomicUsize,
    /// QP number → (its receive CQ, its SRQ).
    qps: Mutex<BTreeMap<Qpn, (Cqn, Arc<SrqTrack>)>>,
}

impl SrqQps {
    pub fn attach(&self, qpn: Qpn, recv_cq: Cqn, srq: &Arc<SrqTrack>) {
        let mut qps = lock(&self.qps);
        qps.insert(qpn, (recv_cq, srq.clone()));
        self.count.store(qps.len(), Ordering::Relaxed);
    }

    pub fn detach(&self, qpn: Qpn) {
        let mut qps = lock(&self.qps);
        qps.remove(&qpn);
        self.count.store(qps.len(), Ordering::Relaxed);
    }

    /// Drops the SRQ receives that polled completions account for.
    pub fn account(&self, wcs: &[WorkCompletion]) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let qps = lock(&self.qps);
        for wc in wcs {
            if matches!(wc.opcode, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm) {
                if let Some((_, srq)) = qps.get(&wc.qp_num) {
                    srq.complete(wc.wr_id);
                }
            }
        }
    }

    /// Appends up to `max` flush completions of the SRQs whose QPs report
    /// receives to `cq`; returns how many.
    pub fn flush(&self, cq: Cqn, out: &mut Vec<WorkCompletion>, max: usize) -> usize {
        if self.count.load(Ordering::Relaxed) == 0 || max == 0 {
            return 0;
        }
        let qps = lock(&self.qps);
        let mut n = 0;
        for (&qpn, (recv_cq, srq)) in qps.iter() {
            if *recv_cq != cq {
                continue;
            }
            let mut q = lock(&srq.pending);
            while n < max {
                let Some(wr_id) = q.pop_front() else { break };
                out.push(WorkCompletion::new(
                    wr_id,
                    WcStatus::WrFlushErr,
                    WcOpcode::Recv,
                    qpn,
                    0,
                ));
                n += 1;
            }
        }
        n
    }
}

/// What an SRQ pointer points to.
#[repr(C)]
pub(crate) struct Srq {
    pub srq: ibv_srq,
    pub inner: VSrq,
    /// Posted receives not yet completed (flushed if the daemon dies).
    pub track: Arc<SrqTrack>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(qpn: Qpn, wr_id: u64) -> WorkCompletion {
        WorkCompletion::new(wr_id, WcStatus::Success, WcOpcode::Recv, qpn, 8)
    }

    #[test]
    fn completed_receives_are_not_flushed_and_each_flushes_once() {
        let s = SrqTrack::new(4);
        let qps = SrqQps::default();
        qps.attach(7, 1, &s);
        qps.attach(5, 1, &s);
        qps.attach(9, 2, &s);
        s.post([1, 2, 3, 4, 5].into_iter()); // depth 4: 1 is gone
        qps.account(&[recv(9, 3), recv(7, 2)]);
        let mut out = Vec::new();
        assert_eq!(qps.flush(1, &mut out, 1), 1);
        assert_eq!(qps.flush(1, &mut out, 8), 1);
        let got: Vec<_> = out.iter().map(|w| (w.wr_id, w.qp_num)).collect();
        // Posting order, named by the lowest QP number on CQ 1.
        assert_eq!(got, [(4, 5), (5, 5)]);
        assert!(out.iter().all(|w| w.status == WcStatus::WrFlushErr));
        assert_eq!(qps.flush(1, &mut out, 8), 0);
        assert_eq!(qps.flush(2, &mut out, 8), 0);
        qps.detach(5);
        qps.detach(7);
        qps.detach(9);
        assert_eq!(qps.flush(1, &mut out, 8), 0);
    }
}
