//! A queue pair: its attributes, state, migration state and timers, and the
//! plumbing its engines share (the environment they run in, completions,
//! the move to the error state).
//!
//! The engines themselves live in their own modules, each an `impl Qp`
//! block: [`crate::requester`] builds request packets, [`crate::completer`]
//! handles ACKs and responses, [`crate::responder`] executes requests, and
//! [`crate::resume`] carries the pause/resume protocol. Every engine writes
//! its packets with [`crate::packet_builder`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use migros_wire::{Headers, Opcode, Psn};
use serde::{Deserialize, Serialize};

use crate::device::DeviceConfig;
use crate::memory::{Memory, MrTable};
use crate::packet_builder::ack_headers;
use crate::queues::{Cq, Srq};
use crate::requester::Requester;
use crate::responder::Responder;
use crate::time::Instant;
use migros_proto::counters::{DeviceCounters, QpCounters};
use migros_proto::verbs::*;

/// Everything of the device an engine may touch besides its own QP.
pub(crate) struct Env<'a> {
    pub mem: &'a mut dyn Memory,
    pub objs: &'a mut Objects,
    pub config: &'a DeviceConfig,
}

/// The device's objects other than QPs.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    pub pds: BTreeMap<Pdn, OwnerId>,
    pub mrs: MrTable,
    pub cqs: BTreeMap<Cqn, Cq>,
    pub srqs: BTreeMap<Srqn, Srq>,
    pub events: VecDeque<DeviceEvent>,
    pub counters: DeviceCounters,
    /// Where UD QPs that migrated went, as their old node told us.
    pub ud_redirects: crate::ud_redirect::UdRedirects,
    /// Connection keys and probe nonces.
    pub secrets: crate::secret::Secrets,
}

impl Objects {
    /// Adds a completion to `cq` (solicited only if it is in error).
    pub fn complete(&mut self, cq: Cqn, wc: WorkCompletion) {
        self.complete_solicited(cq, wc, false);
    }

    /// Adds a completion to `cq`; `solicited`: its message had the SE bit.
    /// Raises `Completion` if the queue was empty, `CqNotify` if the arming
    /// is satisfied, `CqError` when the queue first overflows.
    pub fn complete_solicited(&mut self, cq: Cqn, wc: WorkCompletion, solicited: bool) {
        if let Some(q) = self.cqs.get_mut(&cq) {
            let pushed = q.push(wc, solicited);
            if pushed.was_empty {
                self.events.push_back(DeviceEvent::Completion { cq });
            }
            if pushed.notify {
                self.events.push_back(DeviceEvent::CqNotify { cq });
            }
            if pushed.first_overflow {
                self.events.push_back(DeviceEvent::CqError { cq });
            }
        }
    }
}

/// Why a QP enters the error state, and so which asynchronous event it
/// raises (IBA 11.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `modify_qp` to ERR: no event.
    Requested,
    /// A work request completed in error: its completion says why, no
    /// event (as rxe and RoCE NICs).
    Completed,
    /// The responder refused an invalid request: `QpRequestError`.
    InvalidRequest,
    /// The responder refused a protection violation: `QpAccessError`.
    AccessViolation,
    /// Nothing can report it (an undecodable work request, a partner gone
    /// for good): `QpError` (QP_FATAL).
    Fatal,
}

/// Timers of a QP, as absolute deadlines (`None`: not armed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Timers {
    /// Retransmission (ACK) timeout of the requester.
    pub retransmit: Option<Instant>,
    /// End of the wait after an RNR NAK.
    pub rnr: Option<Instant>,
    /// Paused or Resuming for too long: the QP fails.
    pub pause: Option<Instant>,
    /// Next RESUME to send while Resuming.
    pub resume: Option<Instant>,
}

impl Timers {
    pub fn earliest(&self) -> Option<Instant> {
        [self.retransmit, self.rnr, self.pause, self.resume]
            .into_iter()
            .flatten()
            .min()
    }

    /// Applies `f` to every armed deadline (snapshot and restore rebase them).
    pub fn map(&mut self, f: impl Fn(Instant) -> Instant) {
        for t in [
            &mut self.retransmit,
            &mut self.rnr,
            &mut self.pause,
            &mut self.resume,
        ] {
            *t = t.map(&f);
        }
    }
}

/// A queue pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Qp {
    pub init: QpInit,
    pub attr: QpAttr,
    pub rq: VecDeque<RecvWr>,
    pub req: Requester,
    pub resp: Responder,
    pub timers: Timers,
    pub counters: QpCounters,
    /// UD: remote (address, QPN) pairs this QP talked to, told on resume.
    pub ud_peers: BTreeSet<(IpAddr, Qpn)>,
    /// COMM_EST was raised (a connected QP's first packet in RTR).
    pub comm_established: bool,
    /// RESUMEs a migrated UD or UC QP still has to send (no answer expected).
    pub announce: VecDeque<(IpAddr, Qpn)>,
    /// When the partner paused us (for the pause counters). Not part of a
    /// snapshot: a QP that moves while paused does not count that pause.
    #[serde(skip)]
    pub paused_at: Option<Instant>,
    /// This QP's connection key: a RESUME from it carries the key, and
    /// its old location tells it to the partner (see [`crate::resume`]).
    /// Drawn at creation, kept across migrations (in the image).
    pub resume_key: u64,
    /// What this QP learned of its partner's key, and probes under way.
    /// Not part of a snapshot: learned again after a move.
    #[serde(skip)]
    pub keys: crate::resume::KeyExchange,
}

/// Most remote peers a UD QP remembers for its resume announcement.
pub(crate) const MAX_UD_PEERS: usize = 64;

/// Longest message (bytes): 2^31, as in InfiniBand.
pub(crate) const MAX_MESSAGE: u64 = 1 << 31;

impl Qp {
    pub fn new(init: QpInit) -> Qp {
        let attr = QpAttr {
            cap: init.cap,
            ..QpAttr::default()
        };
        Qp {
            init,
            attr,
            rq: VecDeque::new(),
            req: Requester::default(),
            resp: Responder::default(),
            timers: Timers::default(),
            counters: QpCounters::default(),
            ud_peers: BTreeSet::new(),
            comm_established: false,
            announce: VecDeque::new(),
            paused_at: None,
            resume_key: 0,
            keys: Default::default(),
        }
    }

    pub fn qpn(&self) -> Qpn {
        self.init.qpn
    }

    pub fn qp_type(&self) -> QpType {
        self.init.qp_type
    }

    pub fn state(&self) -> QpState {
        self.attr.qp_state
    }

    pub fn mig(&self) -> MigrationState {
        self.attr.migration
    }

    pub fn mtu(&self) -> u64 {
        u64::from(self.attr.path_mtu.bytes())
    }

    /// The requester's ACK timeout (4.096 µs × 2^timeout; `None` = infinite).
    pub fn ack_timeout(&self) -> Option<Duration> {
        match self.attr.timeout {
            0 => None,
            t => Some(Duration::from_nanos(4096u64 << t.min(31))),
        }
    }

    /// Whether packets may be received in this state.
    pub fn can_receive(&self) -> bool {
        matches!(
            self.state(),
            QpState::Rtr | QpState::Rts | QpState::Sqd | QpState::Sqe
        )
    }

    /// Headers of an ACK-class response to the partner.
    pub fn ack_headers(&self, opcode: Opcode, psn: Psn, syndrome: u8, msn: u32) -> Headers {
        ack_headers(opcode, self.attr.dest_qp_num, psn, syndrome, msn)
    }

    /// Moves the QP to ERR: every outstanding send and receive WR completes
    /// with a flush error, in order, and the async event of `why` is
    /// raised; a QP on an SRQ also raises `LastWqeReached`.
    pub fn enter_error(&mut self, why: Failure, env: &mut Env) {
        if self.state() == QpState::Err {
            return;
        }
        self.attr.qp_state = QpState::Err;
        self.timers = Timers::default();
        self.attr.migration = MigrationState::Running;
        self.flush(env);
        let qpn = self.qpn();
        let event = match why {
            Failure::Requested | Failure::Completed => None,
            Failure::InvalidRequest => Some(DeviceEvent::QpRequestError { qpn }),
            Failure::AccessViolation => Some(DeviceEvent::QpAccessError { qpn }),
            Failure::Fatal => Some(DeviceEvent::QpError { qpn }),
        };
        env.objs.events.extend(event);
        if self.init.srq.is_some() {
            env.objs
                .events
                .push_back(DeviceEvent::LastWqeReached { qpn });
        }
    }

    /// Completes every queued WR with `WrFlushErr` (send queue, then own receive queue).
    pub fn flush(&mut self, env: &mut Env) {
        while let Some(wqe) = self.req.sq.pop_front() {
            let wc = self.send_wc(&wqe.wr, WcStatus::WrFlushErr, 0);
            env.objs.complete(self.init.send_cq, wc);
        }
        self.req.reset_cursor(Psn::new(self.attr.sq_psn));
        while let Some(wr) = self.rq.pop_front() {
            let wc = self.recv_wc(wr.wr_id, WcStatus::WrFlushErr, WcOpcode::Recv, 0);
            env.objs.complete(self.init.recv_cq, wc);
        }
        self.resp.current = None;
    }

    /// A completion for a send WR.
    pub fn send_wc(&self, wr: &SendWr, status: WcStatus, byte_len: u32) -> WorkCompletion {
        WorkCompletion::new(
            wr.wr_id,
            status,
            wr.opcode.wc_opcode(),
            self.qpn(),
            byte_len,
        )
    }

    /// A completion for a receive WR.
    pub fn recv_wc(
        &self,
        wr_id: u64,
        status: WcStatus,
        opcode: WcOpcode,
        byte_len: u32,
    ) -> WorkCompletion {
        WorkCompletion::new(wr_id, status, opcode, self.qpn(), byte_len)
    }

    /// The earliest armed timer (timers do not run while Stopped).
    pub fn deadline(&self) -> Option<Instant> {
        if self.mig() == MigrationState::Stopped {
            return None;
        }
        self.timers.earliest()
    }
}

impl Qp {
    /// Dispatches a received packet addressed to this QP.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        pkt: &migros_wire::Packet,
        src: IpAddr,
        env: &mut Env,
    ) {
        use migros_wire::{OpKind, ServiceType};
        self.counters.rx_packets += 1;
        let info = pkt.info();
        if info.kind == OpKind::Resume {
            if self.qp_type() != QpType::Ud {
                self.on_resume_message(now, pkt, src, env);
            }
            return;
        }
        if !self.can_receive() {
            return;
        }
        let service_ok = matches!(
            (info.service, self.qp_type()),
            (ServiceType::Rc, QpType::Rc)
                | (ServiceType::Uc, QpType::Uc)
                | (ServiceType::Ud, QpType::Ud)
        );
        if !service_ok {
            return;
        }
        // Connected QPs accept packets from their partner only; the check is
        // relaxed while a migration is under way (the partner may come back
        // from a new address).
        if self.qp_type() != QpType::Ud
            && self.mig() == MigrationState::Running
            && self.attr.dest_addr.is_some_and(|a| a != src)
        {
            return;
        }
        if self.state() == QpState::Rtr && self.qp_type() != QpType::Ud && !self.comm_established {
            // The partner is talking to us: the program may move to RTS.
            self.comm_established = true;
            env.objs
                .events
                .push_back(DeviceEvent::CommEstablished { qpn: self.qpn() });
        }
        if info.is_response() {
            if self.qp_type() == QpType::Rc {
                self.handle_response(now, pkt, env);
            }
        } else {
            self.handle_request(pkt, src, env);
        }
    }

    /// Whether this QP has a packet to send now.
    pub fn has_output(&self, now: Instant) -> bool {
        self.wants_resume(now) || self.has_response() || self.wants_to_send()
    }

    /// Builds this QP's next packet: RESUME first, then responses, then requests.
    pub fn poll_packet(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Option<IpAddr> {
        if let Some(dst) = self.next_resume(now, env, buf) {
            return Some(dst);
        }
        if self.has_response() {
            if let Some(dst) = self.next_response(env, buf) {
                return Some(dst);
            }
        }
        self.next_request(now, env, buf)
    }

    /// Runs the timers due at `now`.
    pub fn on_timeout(&mut self, now: Instant, env: &mut Env) {
        if self.mig() == MigrationState::Stopped {
            return;
        }
        if self.timers.pause.is_some_and(|t| t <= now) {
            self.on_pause_timeout(env);
            return;
        }
        if self.timers.rnr.is_some_and(|t| t <= now) {
            self.on_rnr_timeout(now);
        }
        if self.timers.retransmit.is_some_and(|t| t <= now) && self.mig() == MigrationState::Running
        {
            self.on_retransmit_timeout(now, env);
        }
    }
}

impl Qp {
    /// Checks the invariants the engines index by (for restored images).
    pub fn validate(&self) -> Result<(), String> {
        let req = &self.req;
        if req.next_idx > req.sq.len() {
            return Err("send cursor past the send queue".into());
        }
        match req.sq.get(req.next_idx) {
            Some(w) if req.next_off > w.len => return Err("send offset past its message".into()),
            None if req.next_off > 0 => return Err("send offset without a message".into()),
            _ => {}
        }
        if req.sq.len() > self.init.cap.max_send_wr as usize
            || self.rq.len() > self.init.cap.max_recv_wr as usize
        {
            return Err("more work requests queued than the qp holds".into());
        }
        for w in &req.sq {
            // The checks of post_send (opcode for this QP type, SGEs,
            // inline size, atomics, a UD address handle within the MTU).
            let len = self
                .check_send_wr(&w.wr)
                .map_err(|e| format!("send wr: {e}"))?;
            if w.len != len || w.read_done > w.len {
                return Err("send wr with an impossible length or progress".into());
            }
        }
        for r in &self.rq {
            if r.sges.len() > self.init.cap.max_recv_sge.max(1) as usize {
                return Err("receive wr with too many sges".into());
            }
        }
        match &self.resp.current {
            Some(crate::responder::Inbound::Write { len, offset, .. })
                if offset > len || *len > MAX_MESSAGE =>
            {
                return Err("write cursor past its message".into());
            }
            _ => {}
        }
        for r in &self.resp.out {
            if let crate::responder::Response::Read { remaining, .. } = r {
                if *remaining > MAX_MESSAGE {
                    return Err("read response longer than a message may be".into());
                }
            }
        }
        if self.qp_type() != QpType::Ud && self.resume_key == 0 {
            return Err("no connection key".into());
        }
        if self.qpn() > MAX_QPN || self.qpn() < 2 || self.attr.dest_qp_num > MAX_QPN {
            return Err("qpn out of range".into());
        }
        if self.ud_peers.len() > MAX_UD_PEERS || self.announce.len() > 4 * MAX_UD_PEERS {
            return Err("too many ud peers".into());
        }
        Ok(())
    }
}

impl Qp {
    /// Applies the attributes of a `modify_qp` call already checked by
    /// [`crate::transition::check`], and moves to `to`.
    pub fn apply_attr(
        &mut self,
        now: Instant,
        attr: &QpAttr,
        mask: AttrMask,
        to: QpState,
        env: &mut Env,
    ) {
        let has = |bit: AttrMask| mask.contains(bit);
        let a = &mut self.attr;
        if has(AttrMask::ACCESS_FLAGS) {
            a.qp_access_flags = attr.qp_access_flags;
        }
        if has(AttrMask::PKEY_INDEX) {
            a.pkey_index = attr.pkey_index;
        }
        if has(AttrMask::PORT) {
            a.port_num = attr.port_num;
        }
        if has(AttrMask::QKEY) {
            a.qkey = attr.qkey;
        }
        if has(AttrMask::AV) {
            a.dest_addr = attr.dest_addr;
        }
        if has(AttrMask::PATH_MTU) {
            a.path_mtu = attr.path_mtu;
        }
        if has(AttrMask::TIMEOUT) {
            a.timeout = attr.timeout;
        }
        if has(AttrMask::RETRY_CNT) {
            a.retry_cnt = attr.retry_cnt;
        }
        if has(AttrMask::RNR_RETRY) {
            a.rnr_retry = attr.rnr_retry;
        }
        if has(AttrMask::MAX_QP_RD_ATOMIC) {
            a.max_rd_atomic = attr.max_rd_atomic;
        }
        if has(AttrMask::MIN_RNR_TIMER) {
            a.min_rnr_timer = attr.min_rnr_timer;
        }
        if has(AttrMask::MAX_DEST_RD_ATOMIC) {
            a.max_dest_rd_atomic = attr.max_dest_rd_atomic;
        }
        if has(AttrMask::DEST_QPN) {
            a.dest_qp_num = attr.dest_qp_num;
        }
        if has(AttrMask::CAP) {
            a.cap = attr.cap;
            self.init.cap = attr.cap;
        }
        if has(AttrMask::RQ_PSN) {
            self.attr.rq_psn = attr.rq_psn;
            self.resp.epsn = Psn::new(attr.rq_psn);
        }
        if has(AttrMask::SQ_PSN) {
            self.attr.sq_psn = attr.sq_psn;
            self.req.reset_cursor(Psn::new(attr.sq_psn));
        }
        let from = self.state();
        match to {
            QpState::Reset => {
                *self = Qp {
                    counters: self.counters,
                    resume_key: self.resume_key,
                    ..Qp::new(self.init.clone())
                };
            }
            QpState::Err => self.enter_error(Failure::Requested, env),
            QpState::Rts => {
                if from == QpState::Rtr {
                    self.req.retry_left = self.attr.retry_cnt;
                    self.req.rnr_left = self.attr.rnr_retry;
                }
                self.attr.sq_draining = false;
                self.attr.qp_state = to;
                if self.req.outstanding() && self.timers.retransmit.is_none() {
                    self.timers.retransmit = self.ack_timeout().map(|t| now + t);
                }
            }
            QpState::Sqd => {
                self.attr.sq_draining = true;
                self.attr.qp_state = to;
                self.check_drained(env);
            }
            _ => self.attr.qp_state = to,
        }
    }
}
