//! The requester: turns send WRs into request packets (segmentation by path
//! MTU, PSN assignment, READ/atomic depth, fences, the send window) and
//! rewinds for go-back-N retransmission. What comes back is the completer's
//! job; how many packets may be unacknowledged is the [`Window`]'s.
//!
//! BIND_MW and LOCAL_INV send nothing: the requester executes them when
//! the send cursor reaches them (`local_ops`, rxe's `rxe_do_local_ops`),
//! after everything before them has completed if they are fenced, and
//! they complete in order like any WR.
//!
//! `packets` builds each request packet (UD datagrams, a connected WR's
//! segments).

use std::collections::VecDeque;
use std::net::IpAddr;

use migros_wire::Psn;
use serde::{Deserialize, Serialize};

use crate::dma::{self};
use crate::error::VerbsError;
use crate::qp::{Env, Failure, Qp};
use crate::time::Instant;
use crate::window::Window;
use migros_proto::verbs::*;

mod packets;

/// A request asks for an ACK at least this often within a long message.
const ACK_REQ_EVERY: u32 = 32;

/// A posted send WR and its progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SendWqe {
    pub wr: SendWr,
    /// Message length in bytes.
    pub len: u64,
    /// PSN of its first packet, valid once sent.
    pub first_psn: Psn,
    /// PSNs the message consumes (READ: one per response packet).
    pub npkts: u32,
    /// The first packet went out at least once.
    pub sent: bool,
    /// READ: response bytes already placed.
    pub read_done: u64,
    /// Failed locally (bad lkey, short SGE list): completes with this status
    /// once it is the oldest WR.
    pub local_error: Option<WcStatus>,
}

impl SendWqe {
    /// READs, atomics and ATOMIC WRITEs: answered by a response of their
    /// own, and bounded by `max_rd_atomic`.
    pub fn is_read_or_atomic(&self) -> bool {
        matches!(
            self.wr.opcode,
            WrOpcode::RdmaRead { .. }
                | WrOpcode::AtomicCmpSwap { .. }
                | WrOpcode::AtomicFetchAdd { .. }
                | WrOpcode::AtomicWrite { .. }
        )
    }

    /// BIND_MW and LOCAL_INV: executed by the requester, no packet.
    pub fn is_local(&self) -> bool {
        self.wr.opcode.is_local()
    }

    pub fn last_psn(&self) -> Psn {
        self.first_psn.add(self.npkts.saturating_sub(1))
    }

    /// Whether `psn` falls in this message's PSN range (a local operation
    /// has none).
    pub fn covers(&self, psn: Psn) -> bool {
        !self.is_local() && psn.distance(self.first_psn) >= 0 && psn.distance(self.last_psn()) <= 0
    }
}

/// Send-side state of a QP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Requester {
    /// Posted WRs not yet completed, oldest first.
    pub sq: VecDeque<SendWqe>,
    /// Index in `sq` of the WR being sent.
    pub next_idx: usize,
    /// Bytes of that WR already sent.
    pub next_off: u64,
    /// PSN of the next packet.
    pub next_psn: Psn,
    /// Oldest unacknowledged PSN.
    pub una: Psn,
    /// READ/atomic requests sent and not completed.
    pub rd_atomic_outstanding: u32,
    pub retry_left: u8,
    pub rnr_left: u8,
    /// PSN the last go-back-N rewound to, so one loss rewinds once.
    pub rewound_at: Option<Psn>,
    /// One past the highest PSN sent when we last rewound: responses below
    /// it may be stale, so gaps there do not trigger another rewind.
    pub retry_fence: Option<Psn>,
    pub since_ack_req: u32,
    /// One past the highest PSN ever sent: packets below it are retransmissions.
    pub high_psn: Psn,
    /// How many PSNs may be unacknowledged (RC), shrunk after a loss.
    #[serde(flatten)]
    pub window: Window,
    /// After a resume: the first PSN the partner lacks (it has every
    /// request before it, as its RESUME or its answer to ours said).
    /// Going back, the requester skips the packets before it but for
    /// READs and atomics still owed their responses, which it asks again;
    /// when one of those completes, what follows it up to here counts as
    /// acknowledged. Not in the image: a QP that moves again meanwhile
    /// resends those packets instead (go-back-N).
    #[serde(skip)]
    pub told: Option<Psn>,
}

impl Requester {
    /// Forgets all progress; the next packet carries `psn`.
    pub fn reset_cursor(&mut self, psn: Psn) {
        self.next_idx = 0;
        self.next_off = 0;
        self.next_psn = psn;
        self.una = psn;
        self.high_psn = psn;
        self.rd_atomic_outstanding = 0;
        self.rewound_at = None;
        self.retry_fence = None;
        self.told = None;
        self.window.reset();
    }

    /// Whether any request is in flight (sent, not completed).
    pub fn outstanding(&self) -> bool {
        self.next_idx > 0 || self.next_off > 0
    }
}

/// PSNs a message of `len` bytes uses at this MTU.
pub(crate) fn packets_for(len: u64, mtu: u64) -> u32 {
    u32::try_from(len.div_ceil(mtu).max(1)).unwrap_or(u32::MAX)
}

impl Qp {
    /// Validates and queues a send WR.
    pub fn post_send(&mut self, wr: SendWr, env: &mut Env) -> Result<(), VerbsError> {
        let len = self.check_send_wr(&wr)?;
        if self.req.sq.len() >= self.init.cap.max_send_wr as usize {
            return Err(VerbsError::QueueFull);
        }
        match self.state() {
            QpState::Rts | QpState::Sqd => {}
            QpState::Err | QpState::Sqe => {
                // Verbs: a WR posted to a QP in error (or, IBA 10.3.1,
                // send queue error) completes with a flush error.
                let wc = self.send_wc(&wr, WcStatus::WrFlushErr, 0);
                env.objs.complete(self.init.send_cq, wc);
                return Ok(());
            }
            state => {
                return Err(VerbsError::WrongState {
                    qpn: self.qpn(),
                    state,
                })
            }
        }
        self.req.sq.push_back(SendWqe {
            wr,
            len,
            first_psn: self.req.next_psn,
            npkts: 0,
            sent: false,
            read_done: 0,
            local_error: None,
        });
        Ok(())
    }

    /// What `post_send` checks of a WR whatever the QP's state: an opcode
    /// this QP type has, SGE and inline limits, atomic operands, the
    /// length (returned), a UD address handle within the path MTU. A
    /// restored image's send queue passes the same checks.
    pub fn check_send_wr(&self, wr: &SendWr) -> Result<u64, VerbsError> {
        let qp_type = self.qp_type();
        let allowed = match wr.opcode {
            WrOpcode::Send | WrOpcode::SendWithImm { .. } => true,
            WrOpcode::RdmaWrite { .. }
            | WrOpcode::RdmaWriteWithImm { .. }
            | WrOpcode::LocalInv { .. }
            | WrOpcode::BindMw(_) => qp_type != QpType::Ud,
            WrOpcode::SendWithInv { .. }
            | WrOpcode::RdmaRead { .. }
            | WrOpcode::AtomicCmpSwap { .. }
            | WrOpcode::AtomicFetchAdd { .. }
            | WrOpcode::AtomicWrite { .. } => qp_type == QpType::Rc,
        };
        if !allowed {
            return Err(VerbsError::InvalidArgument(format!(
                "{:?} is not supported on {qp_type:?} qps",
                wr.opcode
            )));
        }
        let len = match &wr.data {
            SendData::Sges(sges) => {
                if sges.len() > self.init.cap.max_send_sge.max(1) as usize {
                    return Err(VerbsError::InvalidArgument(format!(
                        "{} sges exceed max_send_sge {}",
                        sges.len(),
                        self.init.cap.max_send_sge
                    )));
                }
                dma::sge_total(sges)
            }
            SendData::Inline(data) => {
                // An ATOMIC WRITE carries its 8 bytes in the WR whatever
                // the QP's inline size (ibv_wr_atomic_write).
                let atomic_write = matches!(wr.opcode, WrOpcode::AtomicWrite { .. });
                if !atomic_write && data.len() > self.init.cap.max_inline_data as usize {
                    return Err(VerbsError::InvalidArgument(format!(
                        "{} inline bytes exceed max_inline_data {}",
                        data.len(),
                        self.init.cap.max_inline_data
                    )));
                }
                if matches!(
                    wr.opcode,
                    WrOpcode::RdmaRead { .. }
                        | WrOpcode::AtomicCmpSwap { .. }
                        | WrOpcode::AtomicFetchAdd { .. }
                ) {
                    return Err(VerbsError::InvalidArgument(
                        "inline data on a read or atomic".into(),
                    ));
                }
                data.len() as u64
            }
        };
        let len = match wr.opcode {
            WrOpcode::AtomicCmpSwap { remote_addr, .. }
            | WrOpcode::AtomicFetchAdd { remote_addr, .. } => {
                if len < 8 || remote_addr % 8 != 0 {
                    return Err(VerbsError::InvalidArgument(
                        "an atomic needs an 8-byte local buffer and an 8-byte aligned remote address".into(),
                    ));
                }
                8
            }
            WrOpcode::AtomicWrite { .. } if len != 8 => {
                return Err(VerbsError::InvalidArgument(
                    "an atomic write carries exactly 8 bytes".into(),
                ));
            }
            WrOpcode::LocalInv { .. } | WrOpcode::BindMw(_) if len != 0 => {
                return Err(VerbsError::InvalidArgument(
                    "a bind or local invalidate carries no data".into(),
                ));
            }
            _ => len,
        };
        if len > u64::from(u32::MAX) {
            return Err(VerbsError::InvalidArgument(
                "message longer than 2^32-1 bytes".into(),
            ));
        }
        if qp_type == QpType::Ud {
            let Some(ud) = wr.ud else {
                return Err(VerbsError::InvalidArgument(
                    "a ud send needs an address handle".into(),
                ));
            };
            if ud.remote_qpn > MAX_QPN {
                return Err(VerbsError::InvalidArgument(format!(
                    "remote qpn {:#x} exceeds 24 bits",
                    ud.remote_qpn
                )));
            }
            if len > self.mtu() {
                return Err(VerbsError::InvalidArgument(format!(
                    "ud message of {len} bytes exceeds the path mtu {}",
                    self.mtu()
                )));
            }
        }
        Ok(len)
    }

    /// Whether the requester could emit a packet now.
    pub fn wants_to_send(&self) -> bool {
        // SQD finishes the message in progress and starts no other.
        let may_send = match self.state() {
            QpState::Rts => true,
            QpState::Sqd => self.req.next_off > 0,
            _ => false,
        };
        may_send
            && self.mig() == MigrationState::Running
            && self.timers.rnr.is_none()
            && self
                .req
                .sq
                .get(self.req.next_idx)
                .is_some_and(|w| w.local_error.is_none())
    }

    /// Builds the next request packet into `buf`, returning its destination.
    pub fn next_request(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Option<IpAddr> {
        if !self.wants_to_send() {
            return None;
        }
        self.skip_delivered();
        self.run_local_ops(env);
        let next = self.req.sq.get(self.req.next_idx);
        if !self.wants_to_send() || next.is_some_and(|w| w.is_local()) {
            // Nothing, or a fenced local operation waiting for completions.
            return None;
        }
        let in_flight = self.req.next_psn.distance(self.req.una);
        if self.qp_type() == QpType::Rc && !self.req.window.has_room(in_flight, self.mtu()) {
            return None;
        }
        let idx = self.req.next_idx;
        let wqe = &self.req.sq[idx];
        if self.req.next_off == 0 && !wqe.sent {
            let fenced =
                wqe.wr.flags.contains(SendFlags::FENCE) && self.req.rd_atomic_outstanding > 0;
            let too_deep = wqe.is_read_or_atomic()
                && self.req.rd_atomic_outstanding >= u32::from(self.attr.max_rd_atomic.max(1));
            if fenced || too_deep {
                return None;
            }
        }
        let result = match self.qp_type() {
            QpType::Ud => self.build_ud(now, env, buf),
            QpType::Rc | QpType::Uc => self.build_connected(now, env, buf),
        };
        match result {
            Ok(dst) => {
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += buf.len() as u64;
                Some(dst)
            }
            Err(status) => {
                self.fail_wqe(idx, status, env);
                None
            }
        }
    }

    /// Completes WR `idx` (and, for RC, everything queued) after a local error.
    pub(crate) fn fail_wqe(&mut self, idx: usize, status: WcStatus, env: &mut Env) {
        if self.qp_type() != QpType::Rc {
            // UD and UC: earlier WRs have completed already. This one fails,
            // the rest are flushed and the QP goes to SQE (the receive side
            // keeps working).
            if let Some(wqe) = self.req.sq.remove(idx) {
                let wc = self.send_wc(&wqe.wr, status, 0);
                env.objs.complete(self.init.send_cq, wc);
            }
            while let Some(wqe) = self.req.sq.pop_front() {
                let wc = self.send_wc(&wqe.wr, WcStatus::WrFlushErr, 0);
                env.objs.complete(self.init.send_cq, wc);
            }
            self.req.reset_cursor(self.req.next_psn);
            // The completion reports the error: no asynchronous event.
            self.attr.qp_state = QpState::Sqe;
            return;
        }
        // RC completes in order: the error is reported when every earlier
        // WR has completed; nothing after it is sent.
        self.req.sq[idx].local_error = Some(status);
        self.req.next_off = 0;
        self.complete_local_error_at_head(env);
    }

    /// In SQD, raises `SqDrained` once nothing is in flight any more.
    pub fn check_drained(&mut self, env: &mut Env) {
        if self.state() == QpState::Sqd && self.attr.sq_draining && !self.req.outstanding() {
            self.attr.sq_draining = false;
            env.objs
                .events
                .push_back(DeviceEvent::SqDrained { qpn: self.qpn() });
        }
    }

    /// Completes what waits at the head of the send queue without an
    /// answer from the responder: executed local operations, in order,
    /// then a WR that failed locally (with its error; the QP moves to ERR).
    pub fn complete_local_error_at_head(&mut self, env: &mut Env) {
        while self.req.sq.front().is_some_and(|w| w.is_local() && w.sent) {
            self.complete_head(WcStatus::Success, env);
        }
        let Some(status) = self.req.sq.front().and_then(|w| w.local_error) else {
            return;
        };
        if let Some(wqe) = self.req.sq.pop_front() {
            let wc = self.send_wc(&wqe.wr, status, 0);
            env.objs.complete(self.init.send_cq, wc);
        }
        self.enter_error(Failure::Completed, env);
    }

    /// Moves the send cursor past request packets the partner already has
    /// (those before `req.told`), stopping at a READ or atomic still owed
    /// its response, which is sent again.
    fn skip_delivered(&mut self) {
        let Some(told) = self.req.told else {
            return;
        };
        let mtu = self.mtu();
        while self.req.next_psn.distance(told) < 0 {
            let Some(w) = self.req.sq.get(self.req.next_idx) else {
                break;
            };
            if !w.sent || w.is_local() || w.is_read_or_atomic() {
                break;
            }
            if told.distance(w.last_psn()) > 0 {
                // The whole message arrived.
                self.req.next_psn = w.last_psn().add(1);
                self.req.next_idx += 1;
                self.req.next_off = 0;
            } else {
                // It arrived up to `told`: go on from there.
                let k = told.distance(w.first_psn).max(0) as u64;
                self.req.next_off = k * mtu;
                self.req.next_psn = told;
            }
        }
    }

    /// Go-back-N: the next packet sent is the one carrying `psn`.
    pub fn rewind(&mut self, psn: Psn) {
        let mtu = self.mtu();
        let Some(idx) = self
            .req
            .sq
            .iter()
            .take(self.req.next_idx + 1)
            .position(|w| w.sent && w.covers(psn))
        else {
            return;
        };
        let wqe = &self.req.sq[idx];
        let (off, at) = match wqe.wr.opcode {
            WrOpcode::RdmaRead { .. } => {
                let done = wqe.read_done;
                (0, wqe.first_psn.add(packets_done(done, mtu)))
            }
            WrOpcode::AtomicCmpSwap { .. }
            | WrOpcode::AtomicFetchAdd { .. }
            | WrOpcode::AtomicWrite { .. } => (0, wqe.first_psn),
            _ => {
                let k = psn.distance(wqe.first_psn) as u64;
                (k * mtu, psn)
            }
        };
        self.req.next_idx = idx;
        self.req.next_off = off;
        self.req.next_psn = at;
        self.req.since_ack_req = 0;
    }
}

fn packets_done(bytes: u64, mtu: u64) -> u32 {
    u32::try_from(bytes / mtu).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
