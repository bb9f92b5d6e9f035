//! The requester: turns send WRs into request packets (segmentation by path
//! MTU, PSN assignment, READ/atomic depth, fences, the send window) and
//! rewinds for go-back-N retransmission. What comes back is the completer's
//! job; how many packets may be unacknowledged is the [`Window`]'s.

use std::collections::VecDeque;
use std::net::IpAddr;

use migros_wire::{AtomicEth, Bth, Deth, Headers, Opcode, Psn, Reth};
use serde::{Deserialize, Serialize};

use crate::dma::{self, DmaError};
use crate::error::VerbsError;
use crate::packet_builder::{new_bth, PacketBuilder, Route};
use crate::qp::{Env, Qp, MAX_UD_PEERS};
use crate::time::Instant;
use crate::window::Window;
use migros_proto::verbs::*;

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
    pub fn is_read_or_atomic(&self) -> bool {
        matches!(
            self.wr.opcode,
            WrOpcode::RdmaRead { .. }
                | WrOpcode::AtomicCmpSwap { .. }
                | WrOpcode::AtomicFetchAdd { .. }
        )
    }

    pub fn last_psn(&self) -> Psn {
        self.first_psn.add(self.npkts.saturating_sub(1))
    }

    /// Whether `psn` falls in this message's PSN range.
    pub fn covers(&self, psn: Psn) -> bool {
        psn.distance(self.first_psn) >= 0 && psn.distance(self.last_psn()) <= 0
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
        let qp_type = self.qp_type();
        let allowed = match wr.opcode {
            WrOpcode::Send | WrOpcode::SendWithImm { .. } => true,
            WrOpcode::RdmaWrite { .. } | WrOpcode::RdmaWriteWithImm { .. } => qp_type != QpType::Ud,
            WrOpcode::SendWithInv { .. }
            | WrOpcode::RdmaRead { .. }
            | WrOpcode::AtomicCmpSwap { .. }
            | WrOpcode::AtomicFetchAdd { .. } => qp_type == QpType::Rc,
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
                if data.len() > self.init.cap.max_inline_data as usize {
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
        if self.req.sq.len() >= self.init.cap.max_send_wr as usize {
            return Err(VerbsError::QueueFull);
        }
        match self.state() {
            QpState::Rts | QpState::Sqd => {}
            QpState::Err => {
                // Verbs: a WR posted to a QP in error completes with a flush error.
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
            QpType::Ud => self.build_ud(env, buf),
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
    fn fail_wqe(&mut self, idx: usize, status: WcStatus, env: &mut Env) {
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
            self.attr.qp_state = QpState::Sqe;
            env.objs
                .events
                .push_back(DeviceEvent::QpError { qpn: self.qpn() });
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

    /// If the oldest WR failed locally, completes it with its error and
    /// moves the QP to ERR.
    pub fn complete_local_error_at_head(&mut self, env: &mut Env) {
        let Some(status) = self.req.sq.front().and_then(|w| w.local_error) else {
            return;
        };
        if let Some(wqe) = self.req.sq.pop_front() {
            let wc = self.send_wc(&wqe.wr, status, 0);
            env.objs.complete(self.init.send_cq, wc);
        }
        self.enter_error(env);
    }

    /// Builds the UD datagram of the oldest WR and completes it. Errors
    /// with the status the WR fails with.
    fn build_ud(&mut self, env: &mut Env, buf: &mut Vec<u8>) -> Result<IpAddr, WcStatus> {
        let idx = self.req.next_idx;
        let wqe = &self.req.sq[idx];
        // post_send refuses a UD WR without a destination; an image could
        // still hold one.
        let ud = wqe.wr.ud.ok_or(WcStatus::LocQpOpErr)?;
        let dst = env
            .objs
            .ud_redirects
            .get(&ud.remote_qpn)
            .copied()
            .unwrap_or(ud.addr);
        let qkey = if ud.remote_qkey & 0x8000_0000 != 0 {
            self.attr.qkey
        } else {
            ud.remote_qkey
        };
        let (opcode, imm) = match wqe.wr.opcode {
            WrOpcode::SendWithImm { imm } => (Opcode::UD_SEND_ONLY_WITH_IMMEDIATE, Some(imm)),
            _ => (Opcode::UD_SEND_ONLY, None),
        };
        let psn = self.req.next_psn;
        let mut bth = new_bth(opcode, ud.remote_qpn, psn);
        bth.solicited = wqe.wr.flags.contains(SendFlags::SOLICITED);
        let mut headers = Headers::new(bth);
        headers.deth = Some(Deth {
            qkey,
            src_qpn: self.qpn(),
        });
        headers.immdt = imm;
        let mut packet = PacketBuilder::new(buf, &headers, wqe.len as usize)
            .map_err(|_| WcStatus::LocQpOpErr)?;
        fill_payload(env, self.init.pd, &wqe.wr.data, 0, packet.payload_mut())
            .map_err(DmaError::status)?;
        packet.finish(Route::new(env.config, dst));
        self.req.next_psn = psn.add(1);
        if self.ud_peers.len() < MAX_UD_PEERS {
            self.ud_peers.insert((dst, ud.remote_qpn));
        }
        // UD completes as soon as the packet is on its way.
        if let Some(wqe) = self.req.sq.remove(idx) {
            if self.init.sq_sig_all || wqe.wr.flags.contains(SendFlags::SIGNALED) {
                let wc = self.send_wc(&wqe.wr, WcStatus::Success, wqe.len as u32);
                env.objs.complete(self.init.send_cq, wc);
            }
        }
        Ok(dst)
    }

    /// Builds the next RC or UC request packet of the WR being sent.
    /// Errors with the status the WR fails with.
    fn build_connected(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Result<IpAddr, WcStatus> {
        let mtu = self.mtu();
        let idx = self.req.next_idx;
        let off = self.req.next_off;
        let psn = self.req.next_psn;
        let dst = self.attr.dest_addr.unwrap_or(env.config.addr);
        let is_rc = self.qp_type() == QpType::Rc;
        let wqe = &mut self.req.sq[idx];
        if !wqe.sent {
            // First transmission: the message takes its PSNs. A resend
            // (go-back-N) keeps them.
            wqe.first_psn = psn;
            wqe.npkts = packets_for(wqe.len, mtu);
            if wqe.is_read_or_atomic() {
                self.req.rd_atomic_outstanding += 1;
            }
            wqe.sent = true;
        }
        let bth = new_bth(Opcode::RC_SEND_ONLY, self.attr.dest_qp_num, psn);
        let mut seg = Segment::of(wqe, off, mtu, is_rc, bth);
        self.req.since_ack_req += 1;
        // The last packet the window lets out asks for an ACK, or the
        // requester could wait for one the responder never sends.
        let after = psn.add(seg.psns).distance(self.req.una);
        let fills_window = !self.req.window.has_room(after, mtu);
        if is_rc && (seg.finished || fills_window || self.req.since_ack_req >= ACK_REQ_EVERY) {
            seg.headers.bth.ack_req = true;
            self.req.since_ack_req = 0;
        }
        let mut packet = PacketBuilder::new(buf, &seg.headers, seg.payload_len)
            .map_err(|_| WcStatus::LocQpOpErr)?;
        let data = &self.req.sq[idx].wr.data;
        fill_payload(env, self.init.pd, data, off, packet.payload_mut())
            .map_err(DmaError::status)?;
        packet.finish(Route::new(env.config, dst));
        if psn.distance(self.req.high_psn) < 0 {
            self.counters.retransmits += 1;
            env.objs.counters.retransmits += 1;
        }
        self.req.next_psn = psn.add(seg.psns);
        if self.req.next_psn.distance(self.req.high_psn) > 0 {
            self.req.high_psn = self.req.next_psn;
        }
        if seg.finished {
            self.req.next_off = 0;
            self.req.next_idx += 1;
        } else {
            self.req.next_off = off + seg.payload_len as u64;
        }
        if is_rc {
            if self.timers.retransmit.is_none() {
                self.timers.retransmit = self.ack_timeout().map(|t| now + t);
            }
        } else if seg.finished {
            // UC: a message is complete once its last packet is sent.
            self.req.next_idx -= 1;
            if let Some(wqe) = self.req.sq.remove(idx) {
                if self.init.sq_sig_all || wqe.wr.flags.contains(SendFlags::SIGNALED) {
                    let wc = self.send_wc(&wqe.wr, WcStatus::Success, wqe.len as u32);
                    env.objs.complete(self.init.send_cq, wc);
                }
            }
            self.req.una = self.req.next_psn;
        }
        Ok(dst)
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
            WrOpcode::AtomicCmpSwap { .. } | WrOpcode::AtomicFetchAdd { .. } => (0, wqe.first_psn),
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

/// The next request packet of a connected WR: its headers (the ACK request
/// aside), how much payload it carries and how many PSNs it takes.
struct Segment {
    headers: Headers,
    payload_len: usize,
    /// PSNs the packet consumes (a READ request: one per response packet).
    psns: u32,
    /// The WR has no packet left after this one.
    finished: bool,
}

impl Segment {
    /// The packet of `wqe` starting at message byte `off`, with `bth`'s
    /// destination and PSN.
    fn of(wqe: &SendWqe, off: u64, mtu: u64, is_rc: bool, bth: Bth) -> Segment {
        let mut headers = Headers::new(bth);
        let whole = |headers: Headers, psns: u32| Segment {
            headers,
            payload_len: 0,
            psns,
            finished: true,
        };
        let atomic = |mut headers: Headers, opcode, va, rkey, swap_add, compare| {
            headers.bth.opcode = opcode;
            headers.atomic_eth = Some(AtomicEth {
                va,
                rkey,
                swap_add,
                compare,
            });
            whole(headers, 1)
        };
        match wqe.wr.opcode {
            WrOpcode::RdmaRead { remote_addr, rkey } => {
                // A READ goes out whole, or from the first byte not yet placed
                // when it is retried after a partial response.
                let done = wqe.read_done;
                headers.bth.opcode = Opcode::RC_RDMA_READ_REQUEST;
                headers.reth = Some(Reth {
                    va: remote_addr.wrapping_add(done),
                    rkey,
                    dma_len: (wqe.len - done) as u32,
                });
                whole(headers, packets_for(wqe.len - done, mtu))
            }
            WrOpcode::AtomicCmpSwap {
                remote_addr,
                rkey,
                compare,
                swap,
            } => atomic(
                headers,
                Opcode::RC_COMPARE_SWAP,
                remote_addr,
                rkey,
                swap,
                compare,
            ),
            WrOpcode::AtomicFetchAdd {
                remote_addr,
                rkey,
                add,
            } => atomic(headers, Opcode::RC_FETCH_ADD, remote_addr, rkey, add, 0),
            op => {
                let remaining = wqe.len - off;
                let chunk = remaining.min(mtu);
                let first = off == 0;
                let last = chunk == remaining;
                headers.bth.opcode = data_opcode(op, is_rc, first, last);
                if first {
                    if let WrOpcode::RdmaWrite { remote_addr, rkey }
                    | WrOpcode::RdmaWriteWithImm {
                        remote_addr, rkey, ..
                    } = op
                    {
                        headers.reth = Some(Reth {
                            va: remote_addr,
                            rkey,
                            dma_len: wqe.len as u32,
                        });
                    }
                }
                if last {
                    match op {
                        WrOpcode::SendWithImm { imm } | WrOpcode::RdmaWriteWithImm { imm, .. } => {
                            headers.immdt = Some(imm)
                        }
                        WrOpcode::SendWithInv { rkey } => headers.ieth = Some(rkey),
                        _ => {}
                    }
                    headers.bth.solicited = wqe.wr.flags.contains(SendFlags::SOLICITED);
                }
                Segment {
                    headers,
                    payload_len: chunk as usize,
                    psns: 1,
                    finished: last,
                }
            }
        }
    }
}

/// Copies message bytes `[off, off + out.len())` of a send WR into `out`.
fn fill_payload(
    env: &mut Env,
    pd: Pdn,
    data: &SendData,
    off: u64,
    out: &mut [u8],
) -> Result<(), DmaError> {
    if out.is_empty() {
        return Ok(());
    }
    match data {
        SendData::Inline(bytes) => {
            let start = off as usize;
            let src = bytes
                .get(start..start + out.len())
                .ok_or(DmaError::Length)?;
            out.copy_from_slice(src);
            Ok(())
        }
        SendData::Sges(sges) => dma::gather(env.mem, &env.objs.mrs, pd, sges, off, out),
    }
}

/// The opcode of a SEND or WRITE packet at this position of its message.
fn data_opcode(op: WrOpcode, rc: bool, first: bool, last: bool) -> Opcode {
    use WrOpcode::*;
    let code = match (op, first, last) {
        (Send | SendWithImm { .. } | SendWithInv { .. }, true, false) => Opcode::RC_SEND_FIRST,
        (Send | SendWithImm { .. } | SendWithInv { .. }, false, false) => Opcode::RC_SEND_MIDDLE,
        (Send, false, true) => Opcode::RC_SEND_LAST,
        (Send, true, true) => Opcode::RC_SEND_ONLY,
        (SendWithImm { .. }, false, true) => Opcode::RC_SEND_LAST_WITH_IMMEDIATE,
        (SendWithImm { .. }, true, true) => Opcode::RC_SEND_ONLY_WITH_IMMEDIATE,
        (SendWithInv { .. }, false, true) => Opcode::RC_SEND_LAST_WITH_INVALIDATE,
        (SendWithInv { .. }, true, true) => Opcode::RC_SEND_ONLY_WITH_INVALIDATE,
        (_, true, false) => Opcode::RC_RDMA_WRITE_FIRST,
        (_, false, false) => Opcode::RC_RDMA_WRITE_MIDDLE,
        (RdmaWriteWithImm { .. }, false, true) => Opcode::RC_RDMA_WRITE_LAST_WITH_IMMEDIATE,
        (RdmaWriteWithImm { .. }, true, true) => Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE,
        (_, false, true) => Opcode::RC_RDMA_WRITE_LAST,
        (_, true, true) => Opcode::RC_RDMA_WRITE_ONLY,
    };
    if rc {
        code
    } else {
        // UC opcodes are the RC ones in the 0x20 range.
        Opcode(code.0 | 0x20)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use migros_wire::{Packet, Psn};

    use crate::device::{Device, DeviceConfig, NoMemory};
    use crate::error::VerbsError;
    use crate::time::Instant;
    use migros_proto::verbs::*;

    const QPN: Qpn = 0x42;

    /// A device with one UD QP in RTS.
    fn ud_device() -> Device {
        let mut dev = Device::new(DeviceConfig::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
        let now = Instant::ZERO;
        let (owner, pd, cq) = (1, 2, 3);
        dev.alloc_pd(owner, pd).expect("pd");
        dev.create_cq(owner, cq, 16).expect("cq");
        let cap = QpCap {
            max_send_wr: 4,
            max_recv_wr: 4,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 64,
        };
        let (qp_type, srq, sq_sig_all) = (QpType::Ud, None, true);
        let (send_cq, recv_cq) = (cq, cq);
        let init = QpInit {
            owner,
            qpn: QPN,
            qp_type,
            pd,
            send_cq,
            recv_cq,
            srq,
            cap,
            sq_sig_all,
        };
        dev.create_qp(init).expect("qp");
        let steps = [
            (
                QpState::Init,
                AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
            ),
            (QpState::Rtr, AttrMask::default()),
            (QpState::Rts, AttrMask::SQ_PSN),
        ];
        for (qp_state, mask) in steps {
            let attr = QpAttr {
                qp_state,
                port_num: 1,
                qkey: 0x1111,
                ..QpAttr::default()
            };
            dev.modify_qp(now, QPN, &attr, AttrMask::STATE | mask)
                .expect("modify_qp");
        }
        dev
    }

    fn ud_send(remote_qpn: Qpn) -> SendWr {
        SendWr {
            wr_id: 9,
            opcode: WrOpcode::Send,
            flags: SendFlags::default(),
            data: SendData::Inline(vec![7; 10]),
            ud: Some(UdDest {
                addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
                remote_qpn,
                remote_qkey: 0x1111,
            }),
        }
    }

    #[test]
    fn ud_send_to_a_qpn_wider_than_24_bits_is_refused() {
        // A client writes the remote QPN as 32 bits; the BTH has 24. This
        // used to reach the packet emitter and panic the device.
        let mut dev = ud_device();
        let now = Instant::ZERO;
        let wide = dev.post_send(QPN, ud_send(1 << 24));
        assert!(
            matches!(wide, Err(VerbsError::InvalidArgument(_))),
            "{wide:?}"
        );
        let mut buf = Vec::new();
        assert_eq!(dev.poll_transmit(now, &mut NoMemory, &mut buf), None);

        dev.post_send(QPN, ud_send(MAX_QPN))
            .expect("the widest QPN");
        let sent = dev.poll_transmit(now, &mut NoMemory, &mut buf);
        assert!(sent.is_some());
        let packet = Packet::parse(&buf).expect("parses");
        assert_eq!(packet.headers.bth.dest_qpn, MAX_QPN);
        assert_eq!(packet.headers.bth.psn, Psn::new(0));
        assert_eq!(packet.payload, &[7; 10]);
    }
}
