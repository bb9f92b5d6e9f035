//! Work requests not yet accounted for by a completion, per QP, and the
//! flush completions that stand in for them once the daemon is gone.
//!
//! Posting records each WR (send WRs with whether they are signalled);
//! polling a CQ drops the ones its completions account for: a send
//! completion also accounts for the unsignalled WRs posted before it
//! (verbs semantics), a receive completion for the WR it names. When the
//! context knows its connection is lost, a CQ whose ring is empty hands
//! out, once, a `WrFlushErr` completion for every WR still recorded on
//! the QPs it serves (QPs by number, each queue in posting order), then
//! nothing more. Receives posted to an SRQ are not tracked here: the C
//! library (migros-ibverbs, its `srq` module) records and flushes them
//! itself; doing it here would need `Srq::post_recv` to record them and
//! `Qp::create` to tie an SRQ's record to the QP's receive CQ.

use std::collections::VecDeque;
use std::sync::Mutex;

use migros_proto::verbs::{Cqn, Qpn, WcOpcode, WcStatus, WorkCompletion};

use crate::conn::lock;

/// The outstanding WRs of one QP.
pub(crate) struct WrTrack {
    pub(crate) qpn: Qpn,
    pub(crate) send_cq: Cqn,
    /// `None` when receives come from an SRQ.
    pub(crate) recv_cq: Option<Cqn>,
    /// Bounds of the queues: by verbs rules no more WRs than the queue's
    /// depth are outstanding, so older ones have completed.
    send_cap: usize,
    recv_cap: usize,
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    /// `(wr_id, signalled)` in posting order.
    send: VecDeque<(u64, bool)>,
    recv: VecDeque<u64>,
}

impl WrTrack {
    pub(crate) fn new(
        qpn: Qpn,
        send_cq: Cqn,
        recv_cq: Option<Cqn>,
        send_cap: u32,
        recv_cap: u32,
    ) -> WrTrack {
        WrTrack {
            qpn,
            send_cq,
            recv_cq,
            send_cap: send_cap as usize,
            recv_cap: recv_cap as usize,
            queues: Mutex::default(),
        }
    }

    /// Records posted send WRs; returns how many of the earlier ones are
    /// still recorded (for [`WrTrack::unpost_send`]).
    pub(crate) fn post_send(&self, wrs: impl Iterator<Item = (u64, bool)>) -> usize {
        let mut q = lock(&self.queues);
        let before = q.send.len();
        q.send.extend(wrs);
        let mut kept = before;
        while q.send.len() > self.send_cap {
            q.send.pop_front();
            kept = kept.saturating_sub(1);
        }
        kept
    }

    /// Forgets the send WRs recorded after `len` (their doorbell failed).
    pub(crate) fn unpost_send(&self, len: usize) {
        lock(&self.queues).send.truncate(len);
    }

    pub(crate) fn post_recv(&self, wrs: impl Iterator<Item = u64>) -> usize {
        let mut q = lock(&self.queues);
        let before = q.recv.len();
        q.recv.extend(wrs);
        let mut kept = before;
        while q.recv.len() > self.recv_cap {
            q.recv.pop_front();
            kept = kept.saturating_sub(1);
        }
        kept
    }

    pub(crate) fn unpost_recv(&self, len: usize) {
        lock(&self.queues).recv.truncate(len);
    }

    /// Drops the WRs that completion `wc` of this QP accounts for.
    pub(crate) fn complete(&self, wc: &WorkCompletion) {
        let mut q = lock(&self.queues);
        if is_recv(wc.opcode) {
            if let Some(at) = q.recv.iter().position(|&id| id == wc.wr_id) {
                q.recv.drain(..=at);
            }
        } else {
            let errored = wc.status != WcStatus::Success;
            if let Some(at) = q
                .send
                .iter()
                .position(|&(id, signalled)| id == wc.wr_id && (signalled || errored))
            {
                q.send.drain(..=at);
            }
        }
    }

    /// Takes the flush completions of the queues that report to `cq`.
    pub(crate) fn flush_into(&self, cq: Cqn, out: &mut VecDeque<WorkCompletion>) {
        let mut q = lock(&self.queues);
        if self.send_cq == cq {
            for (wr_id, _) in q.send.drain(..) {
                out.push_back(flushed(wr_id, WcOpcode::Send, self.qpn));
            }
        }
        if self.recv_cq == Some(cq) {
            for wr_id in q.recv.drain(..) {
                out.push_back(flushed(wr_id, WcOpcode::Recv, self.qpn));
            }
        }
    }
}

fn is_recv(op: WcOpcode) -> bool {
    matches!(op, WcOpcode::Recv | WcOpcode::RecvRdmaWithImm)
}

fn flushed(wr_id: u64, opcode: WcOpcode, qpn: Qpn) -> WorkCompletion {
    WorkCompletion::new(wr_id, WcStatus::WrFlushErr, opcode, qpn, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wc(wr_id: u64, opcode: WcOpcode) -> WorkCompletion {
        WorkCompletion::new(wr_id, WcStatus::Success, opcode, 3, 0)
    }

    #[test]
    fn completions_account_for_earlier_unsignalled_wrs() {
        let t = WrTrack::new(3, 1, Some(2), 8, 8);
        t.post_send([(1, false), (1, true), (2, false), (3, true), (4, false)].into_iter());
        t.post_recv([10, 11, 12].into_iter());
        t.complete(&wc(1, WcOpcode::Send));
        t.complete(&wc(10, WcOpcode::Recv));
        let mut out = VecDeque::new();
        t.flush_into(1, &mut out);
        let ids: Vec<_> = out.iter().map(|w| (w.wr_id, w.opcode)).collect();
        assert_eq!(
            ids,
            [
                (2, WcOpcode::Send),
                (3, WcOpcode::Send),
                (4, WcOpcode::Send)
            ]
        );
        out.clear();
        t.flush_into(2, &mut out);
        let ids: Vec<_> = out.iter().map(|w| w.wr_id).collect();
        assert_eq!(ids, [11, 12]);
        assert!(out
            .iter()
            .all(|w| w.status == WcStatus::WrFlushErr && w.qp_num == 3));
        out.clear();
        t.flush_into(1, &mut out);
        t.flush_into(2, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn queues_are_bounded_and_failed_posts_forgotten() {
        let t = WrTrack::new(3, 1, None, 2, 2);
        t.post_send([(1, true), (2, true)].into_iter());
        let before = t.post_send([(3, true)].into_iter());
        assert_eq!(before, 1);
        t.unpost_send(before);
        let mut out = VecDeque::new();
        t.flush_into(1, &mut out);
        assert_eq!(out.iter().map(|w| w.wr_id).collect::<Vec<_>>(), [2]);
    }
}
