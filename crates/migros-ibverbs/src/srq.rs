//! Receives posted to shared receive queues, flushed when the daemon dies.
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
