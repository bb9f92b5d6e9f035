//! The data path: work queues read after doorbells and posted to the
//! transport, consumer indices written back, completions written into the
//! clients' CQ rings.

use migros_proto::msg::Event;
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{
    AttrMask, Cqn, QpAttr, QpState, RecvWr, VerbsError, WcOpcode, WcStatus, WorkCompletion,
};

use super::protocol::error;
use super::Daemon;
use crate::registry::{Hold, Id, SessionId};
use crate::rings::{write_ci, Wq, WQ_BATCH};

impl Daemon {
    /// Moves completions from the transport into client rings; returns
    /// whether any was written.
    pub(super) fn write_completions(&mut self) -> bool {
        if self.dirty_cqs.is_empty() {
            return false;
        }
        self.mem.flush();
        let mut wrote = false;
        let dirty: Vec<Cqn> = self.dirty_cqs.iter().copied().collect();
        for cqn in dirty {
            let Some((holder, ring)) = self.reg.cq_mut(cqn) else {
                self.dirty_cqs.remove(&cqn);
                continue;
            };
            // A held session gets every CQ marked again when it resumes.
            if holder.hold != Hold::Running {
                self.dirty_cqs.remove(&cqn);
                continue;
            }
            self.wc_buf.clear();
            let _ = self.device.poll_cq(cqn, usize::MAX, &mut self.wc_buf);
            let limit = ring.backlog_limit();
            for wc in self.wc_buf.drain(..) {
                if ring.backlog.len() >= limit {
                    ring.overflows += 1;
                } else {
                    ring.backlog.push_back(wc);
                }
            }
            let mut n = 0;
            loop {
                match ring.write_backlog(&mut self.mem, holder.owner, &mut self.cqe_buf) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        tracing::warn!(cq = cqn, error = %e, "cannot write completions into the client's ring");
                        ring.backlog.clear();
                        break;
                    }
                }
            }
            let notify = if n > 0 && ring.armed {
                ring.armed = false;
                ring.channel
            } else {
                None
            };
            if ring.backlog.is_empty() {
                self.dirty_cqs.remove(&cqn);
            }
            if n > 0 {
                wrote = true;
            }
            if let Some(ch) = notify
                .and_then(|ch| self.reg.channel_mut(ch))
                .and_then(|(_, c)| c.conn)
            {
                if let Some(c) = self.conns.get_mut(&ch) {
                    let _ = c.send(&Event::Completion { cq: cqn });
                }
            }
        }
        wrote
    }

    /// Writes consumer indices back into control blocks.
    pub(super) fn write_cis(&mut self) {
        let dirty = std::mem::take(&mut self.ci_dirty);
        for wq in dirty {
            let Some((holder, ring, at)) = self.reg.work_queue_mut(wq) else {
                continue;
            };
            // A held session gets every index marked again when it resumes.
            if holder.hold != Hold::Running {
                continue;
            }
            let (owner, ci) = (holder.owner, ring.ci);
            if let Err(e) = write_ci(&mut self.mem, owner, at, ci) {
                tracing::debug!(error = %e, "cannot write a consumer index");
            }
        }
    }

    // ---- work queues ----

    /// Reads and posts what doorbells announced (of session `only`, or all).
    pub(super) fn pump_wqs(&mut self, only: Option<SessionId>) {
        if self.pending_wqs.is_empty() {
            return;
        }
        let wqs: Vec<Wq> = self.pending_wqs.iter().copied().collect();
        for wq in wqs {
            let sid = self.reg.work_queue_mut(wq).map(|(h, ..)| h.session);
            let Some(sid) = sid else {
                self.pending_wqs.remove(&wq);
                continue;
            };
            if only.is_some_and(|o| o != sid) {
                continue;
            }
            self.pending_wqs.remove(&wq);
            if !self.pump(wq) {
                self.blocked_wqs.insert(wq);
            }
        }
    }

    /// Posts the pending entries of one work queue; returns whether it is
    /// drained (false: the transport's queue is full, try again later).
    fn pump(&mut self, wq: Wq) -> bool {
        let mut buf = std::mem::take(&mut self.wq_buf);
        let drained = self.pump_with(wq, &mut buf);
        self.wq_buf = buf;
        drained
    }

    fn pump_with(&mut self, wq: Wq, buf: &mut Vec<u8>) -> bool {
        loop {
            let size = wq.entry_size();
            let Some((holder, ring, _)) = self.reg.work_queue_mut(wq) else {
                return true;
            };
            let (owner, ring) = (holder.owner, *ring);
            let n = match ring.read(&mut self.mem, owner, size, WQ_BATCH, buf) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(?wq, error = %e, "cannot read a work queue ring: disconnecting the client");
                    self.kill_session(holder.session);
                    return true;
                }
            };
            if n == 0 {
                return true;
            }
            let mut consumed = 0;
            let mut full = false;
            for k in 0..n as usize {
                let entry = &buf[k * size..(k + 1) * size];
                if !self.post_entry(wq, entry) {
                    full = true;
                    break;
                }
                consumed += 1;
            }
            if consumed > 0 {
                if let Some((_, r, _)) = self.reg.work_queue_mut(wq) {
                    r.ci = r.ci.wrapping_add(consumed);
                }
                self.ci_dirty.insert(wq);
            }
            if full {
                return false;
            }
        }
    }

    /// Posts one ring entry; false when the transport's queue is full.
    fn post_entry(&mut self, wq: Wq, entry: &[u8]) -> bool {
        let now = self.now;
        match wq {
            Wq::Sq(qpn) => {
                let mut e = [0u8; SQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let wr_id = ring::send_wr_id(&e);
                let wr = match ring::decode_send(&e) {
                    Ok(wr) => wr,
                    Err(err) => {
                        self.fail_wr(qpn, true, wr_id, WcOpcode::Send, &err.to_string());
                        return true;
                    }
                };
                let opcode = wr.opcode.wc_opcode();
                match self.device.post_send(now, qpn, wr) {
                    Ok(()) => true,
                    Err(VerbsError::QueueFull) => false,
                    Err(err) => {
                        self.fail_wr(qpn, true, wr_id, opcode, &err.to_string());
                        true
                    }
                }
            }
            Wq::Rq(qpn) => {
                let mut e = [0u8; RQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let wr_id = ring::recv_wr_id(&e);
                let wr: RecvWr = match ring::decode_recv(&e) {
                    Ok(wr) => wr,
                    Err(err) => {
                        self.fail_wr(qpn, false, wr_id, WcOpcode::Recv, &err.to_string());
                        return true;
                    }
                };
                match self.device.post_recv(qpn, wr) {
                    Ok(()) => true,
                    Err(VerbsError::QueueFull) => false,
                    Err(err) => {
                        self.fail_wr(qpn, false, wr_id, WcOpcode::Recv, &err.to_string());
                        true
                    }
                }
            }
            Wq::Srq(srq) => {
                let mut e = [0u8; RQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let Ok(wr) = ring::decode_recv(&e) else {
                    tracing::debug!(srq, "undecodable srq entry skipped");
                    return true;
                };
                !matches!(
                    self.device.post_srq_recv(srq, wr),
                    Err(VerbsError::QueueFull)
                )
            }
        }
    }

    /// A work request the transport refused: the QP goes to the error
    /// state (flushing what it holds, in order), then the WR completes with
    /// `LocQpOpErr`.
    fn fail_wr(&mut self, qpn: u32, send: bool, wr_id: u64, opcode: WcOpcode, why: &str) {
        tracing::info!(qpn, wr_id, why, "work request refused: qp moves to error");
        let Some((s, q)) = self.reg.qp(qpn) else {
            return;
        };
        let (sid, q) = (s.id(), q.clone());
        let cq = if send { q.send_cq } else { q.recv_cq };
        let attr = QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        };
        let _ = self.device.modify_qp(self.now, qpn, &attr, AttrMask::STATE);
        for c in [q.send_cq, q.recv_cq] {
            self.drain_cq_into_backlog(c);
        }
        if let Some((_, r)) = self.reg.cq_mut(cq) {
            let wc = WorkCompletion::new(wr_id, WcStatus::LocQpOpErr, opcode, qpn, 0);
            r.backlog.push_back(wc);
            self.dirty_cqs.insert(cq);
        }
        self.session_event(sid, Event::QpFatal { qpn });
    }

    fn drain_cq_into_backlog(&mut self, cq: u32) {
        let mut wcs = Vec::new();
        let _ = self.device.poll_cq(cq, usize::MAX, &mut wcs);
        if let Some((_, r)) = self.reg.cq_mut(cq) {
            r.backlog.extend(wcs);
            if !r.backlog.is_empty() {
                self.dirty_cqs.insert(cq);
            }
        }
    }

    /// Disconnects session `sid` (it broke the ring contract).
    fn kill_session(&mut self, sid: SessionId) {
        let Some(s) = self.reg.get(sid) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(&s.conn) {
            let _ = conn.send(&error(
                libc::EFAULT,
                "a ring of this session is not readable",
            ));
            conn.closing = true;
        }
        // Nothing more is read for it this turn.
        let reg = &self.reg;
        let others = |w: &Wq| {
            let id = match w {
                Wq::Sq(q) | Wq::Rq(q) => Id::Qp(*q),
                Wq::Srq(s) => Id::Srq(*s),
            };
            reg.holder_of(id).is_some_and(|h| h != sid)
        };
        self.pending_wqs.retain(others);
        self.blocked_wqs.retain(others);
    }
}
