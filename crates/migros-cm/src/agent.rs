//! The connection manager of one device, sans-IO: fed MADs
//! ([`Agent::handle_mad`]), time ([`Agent::handle_timeout`]) and its
//! clients' requests (bind, listen, connect, accept, …); asked for MADs to
//! send ([`Agent::poll_transmit`]), events for its clients
//! ([`Agent::poll_event`]) and its next deadline ([`Agent::poll_timeout`]).
//! It never reads a clock and does no I/O.
//!
//! It follows the kernel's IB CM (`drivers/infiniband/core/cm.c`) with the
//! RDMA CM's (`cma.c`) use of it, so that a kernel peer sees what another
//! kernel would send:
//!
//! - Active side: `connect` sends a REQ (resent every `2 × 2^(plt−8) +
//!   2^(20−8)` ms, 6.144 s with the packet lifetime of 18, 15 times) and goes REQ_SENT. A REP gives
//!   `ConnectResponse` (REP_RCVD, and a delayed MRA: a duplicate REP is
//!   answered with an MRA); `establish` sends the RTU (ESTABLISHED; a
//!   duplicate REP gets the RTU again). A REJ gives `Rejected` with its
//!   reason, silence `Unreachable` (−ETIMEDOUT); an MRA extends the wait.
//! - Passive side: a REQ for a listener's service ID becomes a new
//!   connection (REQ_RCVD → delayed MRA) and a `ConnectRequest`; a REQ
//!   for no listener gets a REJ "invalid service ID" (8), one the RDMA CM
//!   cannot take (bad header, other address or QP type) a REJ "consumer
//!   defined" (28). Duplicates (same peer CA GUID and comm ID) are
//!   answered from the state, not taken twice. `accept` sends the REP
//!   (resent until the RTU); the RTU gives `Established`.
//! - Disconnect: DREQ (resent), DREP, time-wait (2^(t−8) ms), then
//!   `TimewaitExit`. A DREQ for an unknown connection gets a DREP.
//! - UD: SIDR_REQ / SIDR_REP; no listener gets status "unsupported".
//! - `destroy` leaves the wire tidy as the kernel's `cm_destroy_id` does
//!   (REJ, DREQ or DREP depending on the state).
//!
//! Outputs come in the order they were produced.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use migros_proto::cm::{AcceptParams, CmEvent, CmQpType, ConnInfo, ConnectParams, PortSpace};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::cma::{addr_of_gid, gid_of, user_private_data_len as user_pd, CmaHeader, CMA_HDR_LEN};
use crate::conn::{Conn, Retransmit, State};
use crate::error::{CmError, MadError};
use crate::mad::{MadHeader, MAD_LEN};
use crate::msg::{
    private_data_len as pd_len, rej_reason, sidr_status, CmMessage, Drep, Dreq, Mra, MsgResponse,
    PathInfo, Rej, Rep, Req, Rtu, ServiceType, SidrRep, SidrReq,
};
use crate::ports::{BindId, Ports};
use crate::time::{ib_time_to_ms, Instant};

/// `CMA_CM_RESPONSE_TIMEOUT`: the response time both sides announce.
pub const CM_RESPONSE_TIMEOUT: u8 = 20;
/// `CMA_MAX_CM_RETRIES`.
pub const MAX_CM_RETRIES: u8 = 15;
/// Service timeout of the RDMA CM's MRAs (`CMA_CM_MRA_SETTING`).
pub const MRA_SERVICE_TIMEOUT: u8 = 24;
/// `CMA_IBOE_PACKET_LIFETIME`: packet lifetime on RoCE, as Debian 12's
/// Linux 6.1 has it (its REQs carry ACK timeout 19 = 18 + 1; later kernels
/// use 16).
pub const IBOE_PACKET_LIFETIME: u8 = 18;
/// The Q_Key of RDMA CM UD QPs (`RDMA_UDP_QKEY`).
pub const RDMA_UDP_QKEY: u32 = 0x0123_4567;
/// −ETIMEDOUT, the status of timeouts.
pub const ETIMEDOUT: i32 = -110;

/// A device as the agent sees it.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The device's address (its GID).
    pub addr: IpAddr,
    /// The device's node GUID (the CA GUID of REQ and REP).
    pub node_guid: u64,
    /// `local_ca_ack_delay` announced in REPs (rxe: 15).
    pub ca_ack_delay: u8,
    /// Largest path MTU the device takes (IB code, 1..=5).
    pub max_mtu: u8,
    /// Seed of the identifiers and PSNs the agent draws.
    pub seed: u64,
}

/// A listener.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    pub(crate) owner: u64,
    pub(crate) ps: PortSpace,
    pub(crate) port: u16,
    pub(crate) addr: Option<IpAddr>,
    pub(crate) qp_type: CmQpType,
}

/// Counters (what `cm_tx_msgs` & co count in the kernel's sysfs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentCounters {
    pub tx: u64,
    pub tx_retries: u64,
    pub rx: u64,
    pub rx_duplicates: u64,
    pub rx_dropped: u64,
    /// MADs for migrated connections sent on to their new node.
    pub forwarded: u64,
}

/// A MAD to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: IpAddr,
    pub mad: [u8; MAD_LEN],
}

/// What `connect` started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connecting {
    pub conn: u32,
    /// Receive PSN of the local QP (the REQ's starting PSN).
    pub psn: u32,
}

/// The connection manager of one device.
pub struct Agent {
    pub(crate) cfg: AgentConfig,
    pub(crate) rng: SmallRng,
    pub(crate) hi_tid: u32,
    pub(crate) ports: Ports,
    pub(crate) listeners: BTreeMap<u32, Listener>,
    pub(crate) next_listen: u32,
    pub(crate) conns: BTreeMap<u32, Conn>,
    /// (peer CA GUID, peer comm ID) → local comm ID: duplicate REQs/REPs.
    pub(crate) remote_ids: BTreeMap<(u64, u32), u32>,
    /// (peer CA GUID, peer QPN) → local comm ID: stale connections.
    pub(crate) remote_qpns: BTreeMap<(u64, u32), u32>,
    /// (peer request ID, peer address) → local ID: duplicate SIDR_REQs.
    pub(crate) sidr_remote: BTreeMap<(u32, IpAddr), u32>,
    /// SIDR_REPs sent, by (peer request ID, peer address), with when to
    /// forget them: a resent SIDR_REQ (its reply was lost) gets the same
    /// reply again instead of reaching the application twice. (The kernel
    /// forgets at once; keeping them longer is what makes UD resolution
    /// idempotent under loss.)
    pub(crate) sidr_answered: BTreeMap<(u32, IpAddr), (Instant, [u8; MAD_LEN])>,
    pub(crate) out: VecDeque<Transmit>,
    pub(crate) events: VecDeque<(u64, CmEvent)>,
    /// Connections that migrated away: local comm ID → where they went
    /// (`None`: not told yet). MADs for them are forwarded there.
    pub(crate) tombstones: BTreeMap<u32, Option<IpAddr>>,
    pub counters: AgentCounters,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// The kernel's `cm_ack_timeout`: 4.096 µs × 2^t ≥ ack delay + 2 × packet
/// lifetime, rounded as the kernel does.
pub fn ack_timeout(ca_ack_delay: u8, packet_life_time: u8) -> u8 {
    let mut t = packet_life_time.saturating_add(1);
    if t >= ca_ack_delay {
        t += u8::from(ca_ack_delay >= t - 1);
    } else {
        t = ca_ack_delay + u8::from(t >= ca_ack_delay.saturating_sub(1));
    }
    t.min(31)
}

fn fit(pd: &[u8], max: usize) -> Result<(), CmError> {
    if pd.len() > max {
        Err(CmError::PrivateData { len: pd.len(), max })
    } else {
        Ok(())
    }
}

impl Agent {
    pub fn new(cfg: AgentConfig) -> Agent {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let hi_tid = rng.gen();
        Agent {
            cfg,
            rng,
            hi_tid,
            ports: Ports::new(),
            listeners: BTreeMap::new(),
            next_listen: 0,
            conns: BTreeMap::new(),
            remote_ids: BTreeMap::new(),
            remote_qpns: BTreeMap::new(),
            sidr_remote: BTreeMap::new(),
            sidr_answered: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: AgentCounters::default(),
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    // ---- outputs ----

    /// The next MAD to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event, with the owner it is for.
    pub fn poll_event(&mut self) -> Option<(u64, CmEvent)> {
        self.events.pop_front()
    }

    /// The earliest deadline of a resend or a time-wait.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .flat_map(|c| {
                c.retransmit
                    .as_ref()
                    .map(|r| r.deadline)
                    .into_iter()
                    .chain(c.timewait_until)
            })
            .min()
    }

    /// The state of a connection (tests and diagnostics).
    pub fn state(&self, conn: u32) -> Option<State> {
        self.conns.get(&conn).map(|c| c.state)
    }

    /// Connections, listeners and bindings held.
    pub fn len(&self) -> (usize, usize, usize) {
        (self.conns.len(), self.listeners.len(), self.ports.len())
    }

    // ---- ports and listeners ----

    /// Takes `addr:port` in `ps` (`port` 0: an ephemeral port).
    pub fn bind(
        &mut self,
        owner: u64,
        ps: PortSpace,
        addr: Option<IpAddr>,
        port: u16,
        reuse: bool,
    ) -> Result<(BindId, u16), CmError> {
        self.ports.bind(&mut self.rng, owner, ps, addr, port, reuse)
    }

    /// Releases a binding (and its listeners).
    pub fn unbind(&mut self, owner: u64, bind: BindId) -> Result<(), CmError> {
        let b = self.ports.get(bind).ok_or(CmError::NoId)?;
        if b.owner != owner {
            return Err(CmError::NoId);
        }
        self.ports.unbind(bind);
        Ok(())
    }

    /// Listens on binding `bind` for connections of `qp_type`.
    pub fn listen(&mut self, owner: u64, bind: BindId, qp_type: CmQpType) -> Result<u32, CmError> {
        let b = self.ports.get(bind).ok_or(CmError::NoId)?;
        if b.owner != owner {
            return Err(CmError::NoId);
        }
        let taken = self.listeners.values().any(|l| {
            l.ps == b.ps
                && l.port == b.port
                && (l.addr.is_none() || b.addr.is_none() || l.addr == b.addr)
        });
        if taken {
            return Err(CmError::AddrInUse);
        }
        loop {
            self.next_listen = self.next_listen.wrapping_add(1).max(1);
            if !self.listeners.contains_key(&self.next_listen) {
                break;
            }
        }
        self.listeners.insert(
            self.next_listen,
            Listener {
                owner,
                ps: b.ps,
                port: b.port,
                addr: b.addr,
                qp_type,
            },
        );
        Ok(self.next_listen)
    }

    pub fn unlisten(&mut self, owner: u64, listen: u32) -> Result<(), CmError> {
        match self.listeners.get(&listen) {
            Some(l) if l.owner == owner => {
                self.listeners.remove(&listen);
                Ok(())
            }
            _ => Err(CmError::NoId),
        }
    }

    // ---- active side ----

    fn new_local_id(&mut self) -> u32 {
        loop {
            let id: u32 = self.rng.gen();
            if id != 0 && !self.conns.contains_key(&id) && !self.tombstones.contains_key(&id) {
                return id;
            }
        }
    }

    fn psn(&mut self) -> u32 {
        self.rng.gen::<u32>() & 0x00ff_ffff
    }

    fn form_tid(&self, local_id: u32) -> u64 {
        (u64::from(self.hi_tid) << 32) | u64::from(local_id)
    }

    /// Sends a REQ (RC, UC) or SIDR_REQ (UD) for `p`.
    pub fn connect(
        &mut self,
        now: Instant,
        owner: u64,
        p: &ConnectParams,
    ) -> Result<Connecting, CmError> {
        let b = self.ports.get(p.bind).ok_or(CmError::NoId)?;
        if b.owner != owner {
            return Err(CmError::NoId);
        }
        let local = SocketAddr::new(p.src, b.port);
        let service_id = b.ps.service_id(p.dst.port());
        let hdr = CmaHeader {
            src: local,
            dst: p.dst.ip(),
        }
        .emit();
        let local_id = self.new_local_id();
        let tid = self.form_tid(local_id);
        let psn = self.psn();
        let plt = p.packet_life_time;
        let av_timeout = ack_timeout(self.cfg.ca_ack_delay, plt);
        let info = ConnInfo {
            local,
            peer: p.dst,
            remote_qpn: 0,
            rq_psn: psn,
            sq_psn: 0,
            path_mtu: p.path_mtu,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            flow_control: p.flow_control,
            retry_count: p.retry_count.min(7),
            rnr_retry_count: p.rnr_retry_count.min(7),
            srq: p.srq,
            remote_gid: gid_of(p.dst.ip()),
            hop_limit: p.hop_limit,
            traffic_class: p.traffic_class,
            flow_label: 0,
            sl: 0,
            ack_timeout: av_timeout,
            private_data: Vec::new(),
        };
        let (msg, state, timeout_ms) = match p.qp_type {
            CmQpType::Ud => {
                fit(&p.private_data, user_pd::SIDR_REQ)?;
                let mut pd = hdr.to_vec();
                pd.extend_from_slice(&p.private_data);
                let m = CmMessage::SidrReq(SidrReq {
                    request_id: local_id,
                    pkey: crate::gsi::DEFAULT_PKEY,
                    service_id,
                    private_data: pd,
                });
                (m, State::SidrReqSent, ib_time_to_ms(CM_RESPONSE_TIMEOUT))
            }
            CmQpType::Rc | CmQpType::Uc => {
                fit(&p.private_data, user_pd::REQ)?;
                if !(1..=5).contains(&p.path_mtu) {
                    return Err(CmError::Invalid("path mtu"));
                }
                let mut pd = hdr.to_vec();
                pd.extend_from_slice(&p.private_data);
                let subnet_local = p.hop_limit <= 1;
                let lid = if subnet_local { 0 } else { 0xffff };
                let m = CmMessage::Req(Req {
                    local_comm_id: local_id,
                    service_id,
                    local_ca_guid: self.cfg.node_guid,
                    local_qkey: 0,
                    local_qpn: p.qpn & 0x00ff_ffff,
                    responder_resources: p.responder_resources,
                    local_eecn: 0,
                    initiator_depth: p.initiator_depth,
                    remote_eecn: 0,
                    remote_cm_response_timeout: CM_RESPONSE_TIMEOUT,
                    service_type: if p.qp_type == CmQpType::Uc {
                        ServiceType::Uc
                    } else {
                        ServiceType::Rc
                    },
                    flow_control: p.flow_control,
                    starting_psn: psn,
                    local_cm_response_timeout: CM_RESPONSE_TIMEOUT,
                    retry_count: p.retry_count.min(7),
                    pkey: crate::gsi::DEFAULT_PKEY,
                    path_mtu: p.path_mtu,
                    rdc_exists: false,
                    rnr_retry_count: p.rnr_retry_count.min(7),
                    max_cm_retries: MAX_CM_RETRIES,
                    srq: p.srq,
                    primary: PathInfo {
                        local_lid: lid,
                        remote_lid: lid,
                        local_gid: gid_of(p.src),
                        remote_gid: gid_of(p.dst.ip()),
                        flow_label: 0,
                        packet_rate: 0,
                        traffic_class: p.traffic_class,
                        hop_limit: p.hop_limit,
                        sl: 0,
                        subnet_local,
                        local_ack_timeout: av_timeout,
                    },
                    alternate: PathInfo::default(),
                    sap_supported: false,
                    private_data: pd,
                });
                let t = 2 * ib_time_to_ms(plt) + ib_time_to_ms(CM_RESPONSE_TIMEOUT);
                (m, State::ReqSent, t)
            }
        };
        let mad = msg
            .emit(tid)
            .map_err(|_| CmError::Invalid("private data"))?;
        let conn = Conn {
            owner,
            local_id,
            remote_id: 0,
            state,
            qp_type: p.qp_type,
            peer_ip: p.dst.ip(),
            tid,
            service_id,
            remote_ca_guid: 0,
            local_qpn: p.qpn,
            remote_qpn: 0,
            local,
            peer: p.dst,
            info,
            timeout_ms,
            max_cm_retries: MAX_CM_RETRIES,
            av_timeout,
            retransmit: None,
            timewait_until: None,
            last_private: Vec::new(),
            disconnect_reported: false,
            indexed: false,
        };
        self.conns.insert(local_id, conn);
        self.send_expecting(now, local_id, mad);
        Ok(Connecting {
            conn: local_id,
            psn,
        })
    }

    /// Sends the RTU once the QP is ready (after `ConnectResponse`).
    pub fn establish(&mut self, owner: u64, conn: u32) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        if !matches!(c.state, State::RepRcvd | State::MraRepSent) {
            return Err(CmError::Invalid("no REP to answer"));
        }
        c.state = State::Established;
        c.last_private = Vec::new();
        let msg = CmMessage::Rtu(Rtu {
            local_comm_id: c.local_id,
            remote_comm_id: c.remote_id,
            private_data: Vec::new(),
        });
        let (dst, tid) = (c.peer_ip, c.tid);
        self.send(dst, tid, &msg);
        Ok(())
    }

    // ---- passive side ----

    /// Answers a connection request with a REP (RC, UC) or SIDR_REP (UD).
    pub fn accept(
        &mut self,
        now: Instant,
        owner: u64,
        conn: u32,
        p: &AcceptParams,
    ) -> Result<(), CmError> {
        let ack_delay = self.cfg.ca_ack_delay;
        let guid = self.cfg.node_guid;
        let c = self.owned(owner, conn)?;
        match c.state {
            State::ReqRcvd | State::MraReqSent => {
                fit(&p.private_data, pd_len::REP)?;
                c.local_qpn = p.qpn & 0x00ff_ffff;
                c.info.responder_resources = p.responder_resources;
                c.info.initiator_depth = p.initiator_depth;
                c.state = State::RepSent;
                let msg = CmMessage::Rep(Rep {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    local_qkey: 0,
                    local_qpn: c.local_qpn,
                    local_eecn: 0,
                    starting_psn: c.info.rq_psn,
                    responder_resources: p.responder_resources,
                    initiator_depth: p.initiator_depth,
                    target_ack_delay: ack_delay,
                    failover_accepted: 0,
                    flow_control: p.flow_control,
                    rnr_retry_count: p.rnr_retry_count.min(7),
                    srq: p.srq,
                    local_ca_guid: guid,
                    private_data: p.private_data.clone(),
                });
                let mad = msg
                    .emit(c.tid)
                    .map_err(|_| CmError::Invalid("private data"))?;
                self.send_expecting(now, conn, mad);
                Ok(())
            }
            State::SidrReqRcvd => {
                fit(&p.private_data, pd_len::SIDR_REP)?;
                let msg = CmMessage::SidrRep(SidrRep {
                    request_id: c.remote_id,
                    status: sidr_status::SUCCESS,
                    qpn: p.qpn & 0x00ff_ffff,
                    service_id: c.service_id,
                    qkey: p.qkey,
                    additional_info: Vec::new(),
                    private_data: p.private_data.clone(),
                });
                c.state = State::Idle;
                let (dst, tid, key) = (c.peer_ip, c.tid, (c.remote_id, c.peer_ip));
                self.sidr_remote.remove(&key);
                self.send_sidr_rep(now, key, dst, tid, &msg);
                Ok(())
            }
            _ => Err(CmError::Invalid("no connection request to accept")),
        }
    }

    /// Rejects a connection: a REJ with `reason` (0: "consumer defined",
    /// as `rdma_reject`), or a SIDR_REP "reject".
    pub fn reject(
        &mut self,
        now: Instant,
        owner: u64,
        conn: u32,
        reason: u16,
        private_data: &[u8],
    ) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        if c.state == State::SidrReqRcvd {
            fit(private_data, pd_len::SIDR_REP)?;
            self.sidr_reject(now, conn, sidr_status::REJECT, private_data);
            return Ok(());
        }
        fit(private_data, pd_len::REJ)?;
        let reason = if reason == 0 {
            rej_reason::CONSUMER_DEFINED
        } else {
            reason
        };
        self.send_rej(now, conn, reason, &[], private_data)
    }

    /// Sends a SIDR_REP and keeps it for the resends of its SIDR_REQ.
    fn send_sidr_rep(
        &mut self,
        now: Instant,
        key: (u32, IpAddr),
        dst: IpAddr,
        tid: u64,
        msg: &CmMessage,
    ) {
        if let Ok(mad) = msg.emit(tid) {
            let keep = ms(u64::from(MAX_CM_RETRIES + 1) * ib_time_to_ms(CM_RESPONSE_TIMEOUT));
            self.sidr_answered.insert(key, (now + keep, mad));
            self.counters.tx += 1;
            self.out.push_back(Transmit { dst, mad });
        }
    }

    /// Answers a SIDR_REQ with `status` and forgets it.
    fn sidr_reject(&mut self, now: Instant, conn: u32, status: u8, private_data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let msg = CmMessage::SidrRep(SidrRep {
            request_id: c.remote_id,
            status,
            qpn: 0,
            service_id: c.service_id,
            qkey: 0,
            additional_info: Vec::new(),
            private_data: private_data.to_vec(),
        });
        c.state = State::Idle;
        let (dst, tid, key) = (c.peer_ip, c.tid, (c.remote_id, c.peer_ip));
        self.sidr_remote.remove(&key);
        self.send_sidr_rep(now, key, dst, tid, &msg);
    }

    /// `ib_send_cm_rej`: REJ in the states that allow it; idle or
    /// time-wait after.
    fn send_rej(
        &mut self,
        now: Instant,
        conn: u32,
        reason: u16,
        ari: &[u8],
        private_data: &[u8],
    ) -> Result<(), CmError> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Err(CmError::NoId);
        };
        let (local_id, rejected) = match c.state {
            State::ReqRcvd => (0, MsgResponse::Req),
            State::MraReqSent => (c.local_id, MsgResponse::Req),
            State::RepRcvd | State::MraRepSent => (c.local_id, MsgResponse::Rep),
            State::ReqSent | State::MraReqRcvd | State::RepSent | State::MraRepRcvd => {
                (c.local_id, MsgResponse::Other)
            }
            _ => return Err(CmError::Invalid("nothing to reject")),
        };
        let msg = CmMessage::Rej(Rej {
            local_comm_id: local_id,
            remote_comm_id: c.remote_id,
            message_rejected: rejected,
            ari: ari.to_vec(),
            reason,
            private_data: private_data.to_vec(),
        });
        let timewait = matches!(c.state, State::RepSent | State::MraRepRcvd);
        c.retransmit = None;
        let (dst, tid) = (c.peer_ip, c.tid);
        if timewait {
            self.enter_timewait(now, conn);
        } else {
            self.reset_to_idle(conn);
        }
        self.send(dst, tid, &msg);
        Ok(())
    }

    /// The passive QP saw traffic before the RTU (`IBV_EVENT_COMM_EST`).
    pub fn notify_established(&mut self, owner: u64, conn: u32) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        match c.state {
            State::RepSent | State::MraRepRcvd => {
                c.state = State::Established;
                c.retransmit = None;
                let o = c.owner;
                self.events.push_back((o, CmEvent::Established { conn }));
                Ok(())
            }
            State::Established => Err(CmError::IsConnected),
            _ => Err(CmError::Invalid("not waiting for an RTU")),
        }
    }

    // ---- disconnect and destroy ----

    /// Sends a DREQ (connected) or the DREP (a DREQ arrived). Nothing to
    /// do in other states (as `rdma_disconnect`, which then succeeds).
    pub fn disconnect(&mut self, now: Instant, owner: u64, conn: u32) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        match c.state {
            State::Established => {
                self.send_dreq(now, conn);
            }
            State::DreqRcvd => {
                self.send_drep(now, conn);
            }
            _ => {}
        }
        Ok(())
    }

    fn send_dreq(&mut self, now: Instant, conn: u32) {
        let tid = self.form_tid(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.tid = tid;
        c.state = State::DreqSent;
        let msg = CmMessage::Dreq(Dreq {
            local_comm_id: c.local_id,
            remote_comm_id: c.remote_id,
            remote_qpn: c.remote_qpn,
            private_data: Vec::new(),
        });
        if let Ok(mad) = msg.emit(tid) {
            self.send_expecting(now, conn, mad);
        }
    }

    fn send_drep(&mut self, now: Instant, conn: u32) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_private = Vec::new();
        let msg = CmMessage::Drep(Drep {
            local_comm_id: c.local_id,
            remote_comm_id: c.remote_id,
            private_data: Vec::new(),
        });
        let (dst, tid) = (c.peer_ip, c.tid);
        self.enter_timewait(now, conn);
        self.send(dst, tid, &msg);
    }

    /// Forgets a connection, telling the peer as the kernel does.
    pub fn destroy(&mut self, now: Instant, owner: u64, conn: u32) -> Result<(), CmError> {
        self.owned(owner, conn)?;
        self.destroy_conn(now, conn);
        Ok(())
    }

    fn destroy_conn(&mut self, now: Instant, conn: u32) {
        let Some(state) = self.conns.get(&conn).map(|c| c.state) else {
            return;
        };
        match state {
            State::SidrReqRcvd => self.sidr_reject(now, conn, sidr_status::REJECT, &[]),
            State::ReqSent | State::MraReqRcvd => {
                let guid = self.cfg.node_guid.to_be_bytes();
                let _ = self.send_rej(now, conn, rej_reason::TIMEOUT, &guid, &[]);
            }
            State::ReqRcvd
            | State::MraReqSent
            | State::RepSent
            | State::MraRepRcvd
            | State::RepRcvd
            | State::MraRepSent => {
                let _ = self.send_rej(now, conn, rej_reason::CONSUMER_DEFINED, &[], &[]);
            }
            State::Established => self.send_dreq(now, conn),
            State::DreqRcvd => self.send_drep(now, conn),
            State::DreqSent | State::Timewait | State::Idle | State::SidrReqSent => {}
        }
        self.unindex(conn);
        self.conns.remove(&conn);
    }

    /// Forgets everything of `owner` (its process is gone).
    pub fn destroy_owner(&mut self, now: Instant, owner: u64) {
        let conns: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for c in conns {
            self.destroy_conn(now, c);
        }
        self.listeners.retain(|_, l| l.owner != owner);
        self.ports.unbind_owner(owner);
        self.events.retain(|(o, _)| *o != owner);
    }

    fn owned(&mut self, owner: u64, conn: u32) -> Result<&mut Conn, CmError> {
        match self.conns.get_mut(&conn) {
            Some(c) if c.owner == owner => Ok(c),
            _ => Err(CmError::NoId),
        }
    }

    // ---- state helpers ----

    fn reset_to_idle(&mut self, conn: u32) {
        self.unindex(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = State::Idle;
            c.retransmit = None;
            c.timewait_until = None;
        }
    }

    fn enter_timewait(&mut self, now: Instant, conn: u32) {
        self.unindex(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = State::Timewait;
            c.retransmit = None;
            c.timewait_until = Some(now + ms(ib_time_to_ms(c.av_timeout)));
        }
    }

    fn unindex(&mut self, conn: u32) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.indexed {
            c.indexed = false;
            let (g, rid, rqpn) = (c.remote_ca_guid, c.remote_id, c.remote_qpn);
            if self.remote_ids.get(&(g, rid)) == Some(&conn) {
                self.remote_ids.remove(&(g, rid));
            }
            if self.remote_qpns.get(&(g, rqpn)) == Some(&conn) {
                self.remote_qpns.remove(&(g, rqpn));
            }
        }
    }

    fn emit_event(&mut self, conn: u32, ev: CmEvent) {
        if let Some(c) = self.conns.get(&conn) {
            self.events.push_back((c.owner, ev));
        }
    }

    fn send(&mut self, dst: IpAddr, tid: u64, msg: &CmMessage) {
        if let Ok(mad) = msg.emit(tid) {
            self.counters.tx += 1;
            self.out.push_back(Transmit { dst, mad });
        }
    }

    /// Sends `mad` for `conn` and resends it until answered.
    fn send_expecting(&mut self, now: Instant, conn: u32, mad: [u8; MAD_LEN]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let timeout = ms(c.timeout_ms);
        c.retransmit = Some(Retransmit {
            mad,
            deadline: now + timeout,
            timeout,
            retries_left: c.max_cm_retries,
            sends: 1,
        });
        self.counters.tx += 1;
        let dst = c.peer_ip;
        self.out.push_back(Transmit { dst, mad });
    }

    // ---- time ----

    /// Resends what is due, gives up on what ran out of retries, ends
    /// time-waits.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.sidr_answered.retain(|_, (until, _)| *until > now);
        let due: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.retransmit.as_ref().is_some_and(|r| r.deadline <= now)
                    || c.timewait_until.is_some_and(|t| t <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.timeout_conn(now, id);
        }
    }

    fn timeout_conn(&mut self, now: Instant, id: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.timewait_until.is_some_and(|t| t <= now) {
            c.timewait_until = None;
            if c.state == State::Timewait {
                c.state = State::Idle;
                // The RDMA CM reports it only after DISCONNECTED.
                if c.disconnect_reported {
                    self.emit_event(id, CmEvent::TimewaitExit { conn: id });
                }
            }
            return;
        }
        let Some(r) = c.retransmit.as_mut() else {
            return;
        };
        if r.deadline > now {
            return;
        }
        if r.retries_left > 0 {
            r.retries_left -= 1;
            r.sends += 1;
            r.deadline = now + r.timeout;
            let t = Transmit {
                dst: c.peer_ip,
                mad: r.mad,
            };
            self.counters.tx += 1;
            self.counters.tx_retries += 1;
            self.out.push_back(t);
            return;
        }
        // Out of retries: the kernel's cm_process_send_error.
        c.retransmit = None;
        match c.state {
            State::ReqSent | State::MraReqRcvd | State::SidrReqSent => {
                self.reset_to_idle(id);
                self.emit_event(
                    id,
                    CmEvent::Unreachable {
                        conn: id,
                        status: ETIMEDOUT,
                    },
                );
            }
            State::RepSent | State::MraRepRcvd => {
                self.reset_to_idle(id);
                self.emit_event(
                    id,
                    CmEvent::Unreachable {
                        conn: id,
                        status: ETIMEDOUT,
                    },
                );
            }
            State::DreqSent => {
                self.enter_timewait(now, id);
                self.report_disconnect(id, ETIMEDOUT);
            }
            _ => {}
        }
    }

    fn report_disconnect(&mut self, id: u32, status: i32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.disconnect_reported {
            c.disconnect_reported = true;
            self.emit_event(id, CmEvent::Disconnected { conn: id, status });
        }
    }

    // ---- the network ----

    /// Takes a MAD that arrived from `src` (the sender's address). Bad
    /// MADs are counted and dropped, never answered.
    pub fn handle_mad(&mut self, now: Instant, src: IpAddr, mad: &[u8]) -> Result<(), MadError> {
        let (hdr, msg) = match CmMessage::parse(mad) {
            Ok(m) => m,
            Err(e) => {
                self.counters.rx_dropped += 1;
                return Err(e);
            }
        };
        self.counters.rx += 1;
        if let Some(target) = crate::migrate::target(&msg) {
            if !self.conns.contains_key(&target) {
                if let Some(to) = self.tombstones.get(&target) {
                    if let Some(dst) = *to {
                        let mut mad_copy = [0u8; MAD_LEN];
                        mad_copy.copy_from_slice(mad);
                        self.counters.forwarded += 1;
                        self.out.push_back(Transmit { dst, mad: mad_copy });
                    }
                    return Ok(());
                }
            }
        }
        match msg {
            CmMessage::Req(m) => self.on_req(now, src, &hdr, m),
            CmMessage::Mra(m) => self.on_mra(now, m),
            CmMessage::Rej(m) => self.on_rej(now, m),
            CmMessage::Rep(m) => self.on_rep(now, src, &hdr, m),
            CmMessage::Rtu(m) => self.on_rtu(m),
            CmMessage::Dreq(m) => self.on_dreq(src, &hdr, m),
            CmMessage::Drep(m) => self.on_drep(now, m),
            CmMessage::SidrReq(m) => self.on_sidr_req(now, src, &hdr, m),
            CmMessage::SidrRep(m) => self.on_sidr_rep(src, m),
            CmMessage::Other(_) => {}
        }
        Ok(())
    }

    /// A REJ to a REQ we take no further (`cm_issue_rej`).
    fn issue_rej(&mut self, dst: IpAddr, tid: u64, req: &Req, reason: u16) {
        let msg = CmMessage::Rej(Rej {
            local_comm_id: 0,
            remote_comm_id: req.local_comm_id,
            message_rejected: MsgResponse::Req,
            ari: Vec::new(),
            reason,
            private_data: Vec::new(),
        });
        self.send(dst, tid, &msg);
    }

    fn find_listener(&self, service_id: u64) -> Option<Vec<(u32, Listener)>> {
        let (ps, port) = PortSpace::from_service_id(service_id)?;
        let found: Vec<(u32, Listener)> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.ps == ps && l.port == port)
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// The listener whose address the RDMA CM header names.
    fn match_listener(
        found: &[(u32, Listener)],
        hdr: &CmaHeader,
        kind: CmQpType,
    ) -> Option<(u32, Listener)> {
        found
            .iter()
            .find(|(_, l)| l.addr == Some(hdr.dst) && l.qp_type == kind)
            .or_else(|| {
                found
                    .iter()
                    .find(|(_, l)| l.addr.is_none() && l.qp_type == kind)
            })
            .cloned()
    }

    fn on_req(&mut self, now: Instant, src: IpAddr, hdr: &MadHeader, m: Req) {
        // A duplicate: answered from the connection's state.
        if let Some(&id) = self.remote_ids.get(&(m.local_ca_guid, m.local_comm_id)) {
            self.counters.rx_duplicates += 1;
            let Some(c) = self.conns.get(&id) else {
                return;
            };
            match c.state {
                State::MraReqSent => {
                    let msg = CmMessage::Mra(Mra {
                        local_comm_id: c.local_id,
                        remote_comm_id: c.remote_id,
                        message_mraed: MsgResponse::Req,
                        service_timeout: MRA_SERVICE_TIMEOUT,
                        private_data: Vec::new(),
                    });
                    self.send(src, hdr.tid, &msg);
                }
                State::Timewait => self.issue_rej(src, hdr.tid, &m, rej_reason::STALE_CONN),
                _ => {}
            }
            return;
        }
        // Another REQ from a QP we are connected to: stale.
        if let Some(&id) = self.remote_qpns.get(&(m.local_ca_guid, m.local_qpn)) {
            self.issue_rej(src, hdr.tid, &m, rej_reason::STALE_CONN);
            if self.conns.get(&id).map(|c| c.state) == Some(State::Established) {
                self.send_dreq(now, id);
            }
            return;
        }
        let Some(found) = self.find_listener(m.service_id) else {
            self.issue_rej(src, hdr.tid, &m, rej_reason::INVALID_SERVICE_ID);
            return;
        };
        let kind = match m.service_type {
            ServiceType::Rc => CmQpType::Rc,
            ServiceType::Uc => CmQpType::Uc,
            ServiceType::Other { .. } => {
                self.issue_rej(src, hdr.tid, &m, rej_reason::CONSUMER_DEFINED);
                return;
            }
        };
        let matched = CmaHeader::parse(&m.private_data)
            .ok()
            .and_then(|h| Self::match_listener(&found, &h, kind).map(|x| (x, h)));
        let Some(((listen, l), cma)) = matched else {
            // The RDMA CM refuses it after the IB CM took it.
            self.issue_rej(src, hdr.tid, &m, rej_reason::CONSUMER_DEFINED);
            return;
        };
        if m.path_mtu == 0 || m.path_mtu > self.cfg.max_mtu {
            self.issue_rej(src, hdr.tid, &m, rej_reason::INVALID_MTU);
            return;
        }
        let local_id = self.new_local_id();
        let psn = self.psn();
        let local = SocketAddr::new(l.addr.unwrap_or(cma.dst), l.port);
        let av_timeout = m.primary.local_ack_timeout;
        let info = ConnInfo {
            local,
            peer: cma.src,
            remote_qpn: m.local_qpn,
            rq_psn: psn,
            sq_psn: m.starting_psn,
            path_mtu: m.path_mtu,
            // The peer's initiator depth is what we answer, and back.
            responder_resources: m.initiator_depth,
            initiator_depth: m.responder_resources,
            flow_control: m.flow_control,
            retry_count: m.retry_count,
            rnr_retry_count: m.rnr_retry_count,
            srq: m.srq,
            remote_gid: m.primary.local_gid,
            hop_limit: m.primary.hop_limit,
            traffic_class: m.primary.traffic_class,
            flow_label: m.primary.flow_label,
            sl: m.primary.sl,
            ack_timeout: av_timeout,
            private_data: m.private_data[CMA_HDR_LEN..].to_vec(),
        };
        let conn = Conn {
            owner: l.owner,
            local_id,
            remote_id: m.local_comm_id,
            state: State::ReqRcvd,
            qp_type: kind,
            peer_ip: src,
            tid: hdr.tid,
            service_id: m.service_id,
            remote_ca_guid: m.local_ca_guid,
            local_qpn: 0,
            remote_qpn: m.local_qpn,
            local,
            peer: cma.src,
            info: info.clone(),
            timeout_ms: ib_time_to_ms(m.local_cm_response_timeout),
            max_cm_retries: m.max_cm_retries,
            av_timeout,
            retransmit: None,
            timewait_until: None,
            last_private: Vec::new(),
            disconnect_reported: false,
            indexed: true,
        };
        self.remote_ids
            .insert((m.local_ca_guid, m.local_comm_id), local_id);
        self.remote_qpns
            .insert((m.local_ca_guid, m.local_qpn), local_id);
        self.conns.insert(local_id, conn);
        self.events.push_back((
            l.owner,
            CmEvent::ConnectRequest {
                listen,
                conn: local_id,
                info,
            },
        ));
        // The RDMA CM's delayed MRA: sent only if the REQ comes again.
        if let Some(c) = self.conns.get_mut(&local_id) {
            c.state = State::MraReqSent;
        }
    }

    fn on_mra(&mut self, now: Instant, m: Mra) {
        let Some(c) = self.conns.get_mut(&m.remote_comm_id) else {
            return;
        };
        if m.message_mraed != MsgResponse::Req && c.remote_id != m.local_comm_id {
            return;
        }
        let next = match (c.state, m.message_mraed) {
            (State::ReqSent, MsgResponse::Req) => State::MraReqRcvd,
            (State::RepSent, MsgResponse::Rep) => State::MraRepRcvd,
            (State::MraReqRcvd | State::MraRepRcvd, _) => {
                self.counters.rx_duplicates += 1;
                return;
            }
            _ => return,
        };
        let wait = ib_time_to_ms(m.service_timeout) + ib_time_to_ms(c.av_timeout);
        if let Some(r) = c.retransmit.as_mut() {
            r.timeout = ms(wait);
            r.deadline = now + r.timeout;
        }
        c.state = next;
    }

    fn on_rej(&mut self, now: Instant, m: Rej) {
        let Some(c) = self.conns.get(&m.remote_comm_id) else {
            return;
        };
        // A REJ of our REQ does not know our peer's id yet; others must match.
        if m.message_rejected != MsgResponse::Req
            && m.reason != rej_reason::TIMEOUT
            && c.remote_id != m.local_comm_id
        {
            return;
        }
        let id = c.local_id;
        match c.state {
            State::ReqSent
            | State::MraReqRcvd
            | State::RepSent
            | State::MraRepRcvd
            | State::ReqRcvd
            | State::MraReqSent => {
                if m.reason == rej_reason::STALE_CONN {
                    self.enter_timewait(now, id);
                } else {
                    self.reset_to_idle(id);
                }
            }
            State::DreqSent | State::RepRcvd | State::MraRepSent | State::Established => {
                self.enter_timewait(now, id);
            }
            _ => return,
        }
        self.emit_event(
            id,
            CmEvent::Rejected {
                conn: id,
                reason: m.reason,
                private_data: m.private_data,
            },
        );
    }

    fn on_rep(&mut self, now: Instant, src: IpAddr, hdr: &MadHeader, m: Rep) {
        let Some(c) = self.conns.get(&m.remote_comm_id) else {
            return;
        };
        let id = c.local_id;
        match c.state {
            State::ReqSent | State::MraReqRcvd => {}
            // A duplicate: answer from the state (cm_dup_rep_handler).
            State::Established if c.remote_id == m.local_comm_id => {
                self.counters.rx_duplicates += 1;
                let msg = CmMessage::Rtu(Rtu {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    private_data: c.last_private.clone(),
                });
                // To the peer, not to `src`: a MAD can come forwarded by
                // the node the connection migrated from.
                let dst = c.peer_ip;
                self.send(dst, hdr.tid, &msg);
                return;
            }
            State::MraRepSent if c.remote_id == m.local_comm_id => {
                self.counters.rx_duplicates += 1;
                let msg = CmMessage::Mra(Mra {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    message_mraed: MsgResponse::Rep,
                    service_timeout: MRA_SERVICE_TIMEOUT,
                    private_data: Vec::new(),
                });
                let dst = c.peer_ip;
                self.send(dst, hdr.tid, &msg);
                return;
            }
            _ => {
                self.counters.rx_duplicates += 1;
                return;
            }
        }
        if self
            .remote_ids
            .contains_key(&(m.local_ca_guid, m.local_comm_id))
        {
            return;
        }
        if let Some(&other) = self.remote_qpns.get(&(m.local_ca_guid, m.local_qpn)) {
            // Stale: the peer QP is someone else's connection.
            let msg = CmMessage::Rej(Rej {
                local_comm_id: m.remote_comm_id,
                remote_comm_id: m.local_comm_id,
                message_rejected: MsgResponse::Rep,
                ari: Vec::new(),
                reason: rej_reason::STALE_CONN,
                private_data: Vec::new(),
            });
            self.send(src, hdr.tid, &msg);
            if self.conns.get(&other).map(|c| c.state) == Some(State::Established) {
                self.send_dreq(now, other);
            }
            return;
        }
        let ca_ack_delay = m.target_ack_delay;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.remote_id = m.local_comm_id;
        c.remote_ca_guid = m.local_ca_guid;
        c.remote_qpn = m.local_qpn;
        c.indexed = true;
        c.retransmit = None;
        c.av_timeout = ack_timeout(ca_ack_delay, c.av_timeout.saturating_sub(1));
        c.info.remote_qpn = m.local_qpn;
        c.info.sq_psn = m.starting_psn;
        c.info.responder_resources = m.initiator_depth;
        c.info.initiator_depth = m.responder_resources;
        c.info.flow_control = m.flow_control;
        c.info.rnr_retry_count = m.rnr_retry_count;
        c.info.srq = m.srq;
        c.info.ack_timeout = c.av_timeout;
        c.info.private_data = m.private_data;
        // REP_RCVD, then the RDMA CM's delayed MRA.
        c.state = State::MraRepSent;
        let info = c.info.clone();
        self.remote_ids
            .insert((m.local_ca_guid, m.local_comm_id), id);
        self.remote_qpns.insert((m.local_ca_guid, m.local_qpn), id);
        self.emit_event(id, CmEvent::ConnectResponse { conn: id, info });
    }

    fn on_rtu(&mut self, m: Rtu) {
        let Some(c) = self.conns.get_mut(&m.remote_comm_id) else {
            return;
        };
        if c.remote_id != m.local_comm_id {
            return;
        }
        if !matches!(c.state, State::RepSent | State::MraRepRcvd) {
            self.counters.rx_duplicates += 1;
            return;
        }
        c.state = State::Established;
        c.retransmit = None;
        let id = c.local_id;
        self.emit_event(id, CmEvent::Established { conn: id });
    }

    fn on_dreq(&mut self, src: IpAddr, hdr: &MadHeader, m: Dreq) {
        let known = self
            .conns
            .get(&m.remote_comm_id)
            .is_some_and(|c| c.remote_id == m.local_comm_id);
        if !known {
            // cm_issue_drep: a DREQ for nothing we know still gets a DREP.
            self.counters.rx_duplicates += 1;
            let msg = CmMessage::Drep(Drep {
                local_comm_id: m.remote_comm_id,
                remote_comm_id: m.local_comm_id,
                private_data: Vec::new(),
            });
            self.send(src, hdr.tid, &msg);
            return;
        }
        let id = m.remote_comm_id;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.local_qpn != m.remote_qpn {
            return;
        }
        match c.state {
            State::RepSent | State::DreqSent | State::Established | State::MraRepRcvd => {}
            // Time-wait, or past it (the peer's DREQ resent after our DREP
            // was lost outlives a short time-wait): the DREP again. The
            // kernel ignores an idle id's DREQ and its peer times out;
            // answering it as for an unknown connection ends both cleanly.
            State::Timewait | State::Idle if c.disconnect_reported => {
                self.counters.rx_duplicates += 1;
                let msg = CmMessage::Drep(Drep {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    private_data: c.last_private.clone(),
                });
                let dst = c.peer_ip;
                self.send(dst, hdr.tid, &msg);
                return;
            }
            State::DreqRcvd => {
                self.counters.rx_duplicates += 1;
                return;
            }
            _ => return,
        }
        c.retransmit = None;
        c.state = State::DreqRcvd;
        c.tid = hdr.tid;
        self.report_disconnect(id, 0);
    }

    fn on_drep(&mut self, now: Instant, m: Drep) {
        let Some(c) = self.conns.get(&m.remote_comm_id) else {
            return;
        };
        if c.remote_id != m.local_comm_id || !matches!(c.state, State::DreqSent | State::DreqRcvd) {
            return;
        }
        let id = c.local_id;
        self.enter_timewait(now, id);
        self.report_disconnect(id, 0);
    }

    fn on_sidr_req(&mut self, now: Instant, src: IpAddr, hdr: &MadHeader, m: SidrReq) {
        if self.sidr_remote.contains_key(&(m.request_id, src)) {
            self.counters.rx_duplicates += 1;
            return;
        }
        if let Some((until, mad)) = self.sidr_answered.get(&(m.request_id, src)) {
            if *until > now {
                self.counters.rx_duplicates += 1;
                let t = Transmit {
                    dst: src,
                    mad: *mad,
                };
                self.counters.tx += 1;
                self.out.push_back(t);
                return;
            }
        }
        let reply = |status: u8| {
            CmMessage::SidrRep(SidrRep {
                request_id: m.request_id,
                status,
                qpn: 0,
                service_id: m.service_id,
                qkey: 0,
                additional_info: Vec::new(),
                private_data: Vec::new(),
            })
        };
        let Some(found) = self.find_listener(m.service_id) else {
            let msg = reply(sidr_status::UNSUPPORTED);
            self.send(src, hdr.tid, &msg);
            return;
        };
        let Some(((listen, l), cma)) = CmaHeader::parse(&m.private_data)
            .ok()
            .and_then(|h| Self::match_listener(&found, &h, CmQpType::Ud).map(|x| (x, h)))
        else {
            let msg = reply(sidr_status::REJECT);
            self.send(src, hdr.tid, &msg);
            return;
        };
        let local_id = self.new_local_id();
        let local = SocketAddr::new(l.addr.unwrap_or(cma.dst), l.port);
        let info = ConnInfo {
            local,
            peer: cma.src,
            remote_qpn: 0,
            rq_psn: 0,
            sq_psn: 0,
            path_mtu: 0,
            responder_resources: 0,
            initiator_depth: 0,
            flow_control: false,
            retry_count: 0,
            rnr_retry_count: 0,
            srq: false,
            remote_gid: gid_of(src),
            hop_limit: 0,
            traffic_class: 0,
            flow_label: 0,
            sl: 0,
            ack_timeout: 0,
            private_data: Vec::new(),
        };
        self.conns.insert(
            local_id,
            Conn {
                owner: l.owner,
                local_id,
                remote_id: m.request_id,
                state: State::SidrReqRcvd,
                qp_type: CmQpType::Ud,
                peer_ip: src,
                tid: hdr.tid,
                service_id: m.service_id,
                remote_ca_guid: 0,
                local_qpn: 0,
                remote_qpn: 0,
                local,
                peer: cma.src,
                info,
                timeout_ms: 0,
                max_cm_retries: 0,
                av_timeout: 0,
                retransmit: None,
                timewait_until: None,
                last_private: Vec::new(),
                disconnect_reported: false,
                indexed: false,
            },
        );
        self.sidr_remote.insert((m.request_id, src), local_id);
        self.events.push_back((
            l.owner,
            CmEvent::SidrRequest {
                listen,
                conn: local_id,
                local,
                peer: cma.src,
                private_data: m.private_data[CMA_HDR_LEN..].to_vec(),
            },
        ));
    }

    fn on_sidr_rep(&mut self, src: IpAddr, m: SidrRep) {
        let Some(c) = self.conns.get_mut(&m.request_id) else {
            return;
        };
        if c.state != State::SidrReqSent {
            self.counters.rx_duplicates += 1;
            return;
        }
        c.state = State::Idle;
        c.retransmit = None;
        let id = c.local_id;
        let ev = if m.status == sidr_status::SUCCESS {
            CmEvent::SidrResolved {
                conn: id,
                qpn: m.qpn,
                qkey: m.qkey,
                peer_gid: gid_of(src),
                hop_limit: c.info.hop_limit,
                traffic_class: c.info.traffic_class,
                private_data: m.private_data,
            }
        } else {
            CmEvent::Unreachable {
                conn: id,
                status: i32::from(m.status),
            }
        };
        self.emit_event(id, ev);
    }
}

/// The address a GID names (re-exported for clients of the agent).
pub fn gid_addr(g: [u8; 16]) -> IpAddr {
    addr_of_gid(g)
}
