//! The data path: work queues read after doorbells and posted to the
//! transport, consumer indices written back, completions written into the
//! clients' CQ rings.

use migros_proto::msg::Event;
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{
    AttrMask, Cqn, QpAttr, QpState, RecvWr, VerbsError, WcOpcode, WcStatus, WorkCompletion,
};

use super::protocol::error;
use super::{Daemon, Wq};
use crate::rings::{write_ci, WQ_BATCH};
use crate::session::Hold;

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
            let Some(ring) = self.cqs.get_mut(&cqn) else {
                self.dirty_cqs.remove(&cqn);
                continue;
            };
            // A held session gets every CQ marked again when it resumes.
            if self
                .sessions
                .get(&ring.session)
                .is_some_and(|s| s.hold != Hold::Running)
            {
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
                match ring.write_backlog(&mut self.mem, &mut self.cqe_buf) {
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
                .and_then(|ch| self.channels.get(&ch))
                .and_then(|c| c.conn)
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
            let (sid, owner, at, ci) = match wq {
                Wq::Sq(q) => match self.qps.get(&q) {
                    Some(r) => (
                        r.session,
                        r.owner,
                        r.ctrl + migros_proto::ring::QP_CTRL_SQ_CI,
                        r.sq.ci,
                    ),
                    None => continue,
                },
                Wq::Rq(q) => match self.qps.get(&q).and_then(|r| r.rq.map(|rq| (r, rq))) {
                    Some((r, rq)) => (
                        r.session,
                        r.owner,
                        r.ctrl + migros_proto::ring::QP_CTRL_RQ_CI,
                        rq.ci,
                    ),
                    None => continue,
                },
                Wq::Srq(s) => match self.srqs.get(&s) {
                    Some(r) => (
                        r.session,
                        r.owner,
                        r.ctrl + migros_proto::ring::SRQ_CTRL_CI,
                        r.rq.ci,
                    ),
                    None => continue,
                },
            };
            // A held session gets every index marked again when it resumes.
            if self.memory_held(sid) {
                continue;
            }
            if let Err(e) = write_ci(&mut self.mem, owner, at, ci) {
                tracing::debug!(error = %e, "cannot write a consumer index");
            }
        }
    }

    // ---- work queues ----

    /// Reads and posts what doorbells announced (of session `only`, or all).
    pub(crate) fn pump_wqs(&mut self, only: Option<u64>) {
        if self.pending_wqs.is_empty() {
            return;
        }
        let wqs: Vec<Wq> = self.pending_wqs.iter().copied().collect();
        for wq in wqs {
            let sid = match wq {
                Wq::Sq(q) | Wq::Rq(q) => self.qps.get(&q).map(|r| r.session),
                Wq::Srq(s) => self.srqs.get(&s).map(|r| r.session),
            };
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
            let (owner, ring, size) = match wq {
                Wq::Sq(q) => match self.qps.get(&q) {
                    Some(r) => (r.owner, r.sq, SQ_WQE_SIZE),
                    None => return true,
                },
                Wq::Rq(q) => match self.qps.get(&q).and_then(|r| r.rq.map(|rq| (r.owner, rq))) {
                    Some((o, rq)) => (o, rq, RQ_WQE_SIZE),
                    None => return true,
                },
                Wq::Srq(s) => match self.srqs.get(&s) {
                    Some(r) => (r.owner, r.rq, RQ_WQE_SIZE),
                    None => return true,
                },
            };
            let n = match ring.read(&mut self.mem, owner, size, WQ_BATCH, buf) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(?wq, error = %e, "cannot read a work queue ring: disconnecting the client");
                    self.kill_owner_session(owner);
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
                let ring = match wq {
                    Wq::Sq(q) => self.qps.get_mut(&q).map(|r| &mut r.sq),
                    Wq::Rq(q) => self.qps.get_mut(&q).and_then(|r| r.rq.as_mut()),
                    Wq::Srq(s) => self.srqs.get_mut(&s).map(|r| &mut r.rq),
                };
                if let Some(r) = ring {
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
        let Some(q) = self.qps.get(&qpn) else {
            return;
        };
        let cq = if send { q.send_cq } else { q.recv_cq };
        let attr = QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        };
        let _ = self.device.modify_qp(self.now, qpn, &attr, AttrMask::STATE);
        for c in [q.send_cq, q.recv_cq] {
            self.drain_cq_into_backlog(c);
        }
        if let Some(r) = self.cqs.get_mut(&cq) {
            let wc = WorkCompletion::new(wr_id, WcStatus::LocQpOpErr, opcode, qpn, 0);
            r.backlog.push_back(wc);
            self.dirty_cqs.insert(cq);
        }
        if let Some(sid) = self.qps.get(&qpn).map(|q| q.session) {
            self.session_event(sid, Event::QpFatal { qpn });
        }
    }

    fn drain_cq_into_backlog(&mut self, cq: u32) {
        let mut wcs = Vec::new();
        let _ = self.device.poll_cq(cq, usize::MAX, &mut wcs);
        if let Some(r) = self.cqs.get_mut(&cq) {
            r.backlog.extend(wcs);
            if !r.backlog.is_empty() {
                self.dirty_cqs.insert(cq);
            }
        }
    }

    /// Disconnects the session of `owner` (it broke the ring contract).
    fn kill_owner_session(&mut self, owner: u64) {
        if let Some(conn) = self
            .owners
            .get(&owner)
            .and_then(|sid| self.sessions.get(sid))
            .map(|s| s.conn)
            .and_then(|t| self.conns.get_mut(&t))
        {
            let _ = conn.send(&error(
                libc::EFAULT,
                "a ring of this session is not readable",
            ));
            conn.closing = true;
        }
        // Nothing more is read for it this turn.
        let qps = &self.qps;
        let srqs = &self.srqs;
        let others = |w: &Wq| match w {
            Wq::Sq(q) | Wq::Rq(q) => qps.get(q).is_some_and(|r| r.owner != owner),
            Wq::Srq(s) => srqs.get(s).is_some_and(|r| r.owner != owner),
        };
        self.pending_wqs.retain(others);
        self.blocked_wqs.retain(others);
    }
}
