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
//!
//! This module holds the agent's state, its outputs, ports, listeners and
//! timers; `requests` the clients' calls on connections, `incoming` the
//! MADs from the network, `sidr` UD service ID resolution.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use migros_proto::cm::{CmEvent, CmQpType, PortSpace};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::cma::addr_of_gid;
use crate::conn::{Conn, Retransmit, State};
use crate::error::CmError;
use crate::mad::MAD_LEN;
use crate::msg::CmMessage;
use crate::ports::{BindId, Ports};
use crate::time::{ib_time_to_ms, Instant};
use crate::tombstone::CmTombstones;

mod incoming;
mod requests;
mod sidr;

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
/// Most MADs kept for an owner being checkpointed (its peers resend what
/// is lost).
pub const MAX_HELD_PER_OWNER: usize = 256;
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
    /// MADs kept for a checkpointed owner or an unforwarded tombstone.
    pub held: u64,
    /// Tombstones that expired or were pushed out by a full table.
    pub tombstones_dropped: u64,
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
    /// Connections that migrated away: MADs for them are forwarded to
    /// where they went, or held until that is known; bounded, expiring.
    pub(crate) tombstones: CmTombstones,
    /// Owners being checkpointed ([`Agent::hold_owner`]) → the MADs for
    /// them that arrived since, from where (untouched until the
    /// checkpoint commits or rolls back).
    pub(crate) held: BTreeMap<u64, Vec<(IpAddr, [u8; MAD_LEN])>>,
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
            tombstones: CmTombstones::default(),
            held: BTreeMap::new(),
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

    /// The earliest deadline of a resend, a time-wait or a tombstone's
    /// expiry.
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
            .chain(self.tombstones.next_expiry())
            .min()
    }

    /// Tombstones held (connections that migrated away).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Whether comm ID `id` has a tombstone here.
    pub fn has_tombstone(&self, id: u32) -> bool {
        self.tombstones.contains(id)
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

    // ---- identifiers ----

    fn new_local_id(&mut self) -> u32 {
        loop {
            let id: u32 = self.rng.gen();
            if id != 0 && !self.conns.contains_key(&id) && !self.tombstones.contains(id) {
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

    // ---- state helpers ----

    fn owned(&mut self, owner: u64, conn: u32) -> Result<&mut Conn, CmError> {
        match self.conns.get_mut(&conn) {
            Some(c) if c.owner == owner => Ok(c),
            _ => Err(CmError::NoId),
        }
    }

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
        self.counters.tombstones_dropped += self.tombstones.expire(now) as u64;
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
}

/// The address a GID names (re-exported for clients of the agent).
pub fn gid_addr(g: [u8; 16]) -> IpAddr {
    addr_of_gid(g)
}
