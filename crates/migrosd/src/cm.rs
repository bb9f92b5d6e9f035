//! The device's connection manager: QP1, the general services interface,
//! and the IB CM running on it ([`migros_cm::Agent`]), serving librdmacm.
//!
//! The daemon owns QP1 of its device as a UD endpoint with the GSI Q_Key:
//! datagrams whose BTH names QP1 come here instead of to the transport
//! ([`is_gsi`]), their ICRC is checked, the MAD goes to the agent; the
//! agent's MADs leave as UD SEND-only packets from QP1 to QP1 of the peer
//! (`migros_cm::gsi`). QP1's datagrams count in the device's counters, as
//! a NIC counts its GSI packets.
//!
//! [`CmPort`] is one part of the daemon's state, with its own API and no
//! I/O, as the transport and the data path are: the event loop hands it
//! QP1's datagrams, sends what [`CmPort::poll_transmit`] gives, runs its
//! timers and passes each event to the connection [`CmPort::poll_event`]
//! names. librdmacm reaches the agent through connections that start with
//! `Request::CmHello` (`ConnKind::Cm`, handled in `daemon::cm`); each is
//! one owner of bindings, listeners and connections in the agent, all
//! dropped when the connection goes (the process ended).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use migros_cm::{Agent, AgentConfig, CmError, Instant};
use migros_proto::cm::{CmEvent, CmRequest, CmResponse};
use migros_proto::counters::DeviceCounters;
use migros_proto::msg::DeviceInfo;
use migros_wire::{IpContext, ROCE_V2_PORT};

/// QP1 and the agent of one device.
pub struct CmPort {
    agent: Agent,
    addr: IpAddr,
    port: u16,
    /// PSN of the next GSI datagram.
    psn: u32,
    /// Owner → connection token of each librdmacm connection.
    owners: BTreeMap<u64, usize>,
    /// Owners checkpointed by CRIU (still here, unchanged, until their
    /// connection closes or the checkpoint rolls back) → their
    /// connections' (comm ID, local QPN).
    checkpointed: BTreeMap<u64, Vec<(u32, u32)>>,
    /// Tombstones of connections that moved away → the QPN each carried
    /// (they are forwarded and released with it).
    tombstone_qpns: BTreeMap<u32, u32>,
    /// QP1's datagrams, counted as the device's (a NIC counts its GSI
    /// packets with the rest: `migros stat` must add up with what a peer
    /// sent and received).
    link: DeviceCounters,
}

fn to_cm(now: migros_transport::Instant) -> Instant {
    Instant::from_nanos(now.as_nanos())
}

/// A MAD in a log line: its message and communication IDs.
fn describe(mad: &[u8]) -> String {
    use migros_cm::msg::CmMessage as M;
    match M::parse(mad) {
        Ok((_, M::Req(m))) => format!("REQ {:#x} qpn {:#x}", m.local_comm_id, m.local_qpn),
        Ok((_, M::Rep(m))) => format!("REP {:#x}->{:#x}", m.local_comm_id, m.remote_comm_id),
        Ok((_, M::Rtu(m))) => format!("RTU {:#x}->{:#x}", m.local_comm_id, m.remote_comm_id),
        Ok((_, M::Rej(m))) => format!(
            "REJ {:#x}->{:#x} reason {}",
            m.local_comm_id, m.remote_comm_id, m.reason
        ),
        Ok((_, M::Mra(m))) => format!("MRA {:#x}->{:#x}", m.local_comm_id, m.remote_comm_id),
        Ok((_, M::Dreq(m))) => format!("DREQ {:#x}->{:#x}", m.local_comm_id, m.remote_comm_id),
        Ok((_, M::Drep(m))) => format!("DREP {:#x}->{:#x}", m.local_comm_id, m.remote_comm_id),
        Ok((_, M::SidrReq(m))) => format!("SIDR_REQ {:#x}", m.request_id),
        Ok((_, M::SidrRep(m))) => format!("SIDR_REP {:#x} status {}", m.request_id, m.status),
        Ok((_, M::Other(a))) => format!("attribute {a:#x}"),
        Err(e) => format!("bad ({e})"),
    }
}

fn event_name(ev: &migros_proto::cm::CmEvent) -> &'static str {
    use migros_proto::cm::CmEvent as E;
    match ev {
        E::ConnectRequest { .. } => "connect request",
        E::SidrRequest { .. } => "sidr request",
        E::ConnectResponse { .. } => "connect response",
        E::Established { .. } => "established",
        E::Rejected { .. } => "rejected",
        E::Unreachable { .. } => "unreachable",
        E::Disconnected { .. } => "disconnected",
        E::TimewaitExit { .. } => "timewait exit",
        E::SidrResolved { .. } => "sidr resolved",
    }
}

/// Whether a datagram is for QP1.
pub fn is_gsi(datagram: &[u8]) -> bool {
    migros_cm::gsi::is_gsi(datagram)
}

fn error(e: CmError) -> CmResponse {
    CmResponse::Error {
        errno: e.errno(),
        message: e.to_string(),
    }
}

impl CmPort {
    pub fn new(info: &DeviceInfo, port: u16, seed: u64) -> CmPort {
        CmPort {
            agent: Agent::new(AgentConfig {
                addr: info.addr,
                node_guid: info.node_guid,
                // What rxe announces (its local_ca_ack_delay).
                ca_ack_delay: 15,
                max_mtu: info.mtu as u8,
                seed,
            }),
            addr: info.addr,
            port,
            psn: (seed as u32) & 0x00ff_ffff,
            owners: BTreeMap::new(),
            checkpointed: BTreeMap::new(),
            tombstone_qpns: BTreeMap::new(),
            link: DeviceCounters::default(),
        }
    }

    /// A datagram for QP1 from `src:src_port`.
    pub fn on_datagram(
        &mut self,
        now: migros_transport::Instant,
        src: IpAddr,
        src_port: u16,
        datagram: &[u8],
    ) {
        self.link.rx_packets += 1;
        self.link.rx_bytes += datagram.len() as u64;
        let ctx = IpContext::new(src, self.addr, src_port, ROCE_V2_PORT);
        match migros_cm::gsi::open(&ctx, datagram) {
            Ok(mad) => {
                tracing::debug!(%src, mad = %describe(mad), "cm rx");
                if let Err(e) = self.agent.handle_mad(to_cm(now), src, mad) {
                    tracing::debug!(%src, error = %e, "mad dropped");
                }
            }
            Err(e) => {
                if matches!(e, migros_cm::MadError::Icrc) {
                    self.link.rx_icrc_errors += 1;
                } else {
                    self.link.rx_malformed += 1;
                }
                tracing::debug!(%src, error = %e, "gsi datagram dropped");
            }
        }
    }

    /// The next GSI datagram to send: (destination, bytes).
    pub fn poll_transmit(&mut self) -> Option<(IpAddr, Vec<u8>)> {
        let t = self.agent.poll_transmit()?;
        tracing::debug!(dst = %t.dst, mad = %describe(&t.mad), "cm tx");
        let psn = self.psn;
        self.psn = (self.psn + 1) & 0x00ff_ffff;
        let datagram = migros_cm::gsi::seal(self.addr, t.dst, self.port, psn, &t.mad);
        self.link.tx_packets += 1;
        self.link.tx_bytes += datagram.len() as u64;
        Some((t.dst, datagram))
    }

    /// The device's counters `c` with QP1's datagrams (and the CM's
    /// dropped tombstones) added.
    pub fn add_link_counters(&self, c: DeviceCounters) -> DeviceCounters {
        let l = &self.link;
        DeviceCounters {
            tx_packets: c.tx_packets + l.tx_packets,
            tx_bytes: c.tx_bytes + l.tx_bytes,
            rx_packets: c.rx_packets + l.rx_packets,
            rx_bytes: c.rx_bytes + l.rx_bytes,
            rx_icrc_errors: c.rx_icrc_errors + l.rx_icrc_errors,
            rx_malformed: c.rx_malformed + l.rx_malformed,
            // The connection manager's tombstones go the same ways.
            tombstones_dropped: c.tombstones_dropped + self.agent.counters.tombstones_dropped,
            ..c
        }
    }

    /// Time until the agent's next deadline, from `now`.
    pub fn poll_timeout(&self, now: migros_transport::Instant) -> Option<Duration> {
        self.agent
            .poll_timeout()
            .map(|d| d.saturating_duration_since(to_cm(now)))
    }

    pub fn handle_timeout(&mut self, now: migros_transport::Instant) {
        let now = to_cm(now);
        if self.agent.poll_timeout().is_some_and(|d| d <= now) {
            self.agent.handle_timeout(now);
            // Expired tombstones leave no QPN behind.
            let agent = &self.agent;
            self.tombstone_qpns.retain(|id, _| agent.has_tombstone(*id));
        }
    }

    /// A new librdmacm connection: its owner id.
    pub fn attach(&mut self, token: usize, owner: u64) {
        self.owners.insert(owner, token);
    }

    /// Whether `owner` is taken (owner ids are drawn at random).
    pub fn has_owner(&self, owner: u64) -> bool {
        self.owners.contains_key(&owner)
    }

    /// Connection `token` of `owner` went away: everything it had goes, the
    /// peers are told (REJ, DREQ, DREP as the states ask); a checkpointed
    /// owner's state moved away instead (committed: tombstones, nobody
    /// told). Nothing happens if `owner` is another connection's now.
    pub fn detach(&mut self, now: migros_transport::Instant, token: usize, owner: u64) {
        if self.owners.get(&owner) != Some(&token) {
            return;
        }
        if self.checkpointed.contains_key(&owner) {
            self.commit(now, owner);
        } else {
            self.owners.remove(&owner);
            self.agent.destroy_owner(to_cm(now), owner);
        }
    }

    // ---- migration (CRIU) ----

    /// The state of `owner` for a checkpoint; nothing changes but that the
    /// owner counts as checkpointed (see [`CmPort::detach`]) and MADs for
    /// it are kept, untouched, until the checkpoint commits (they go to
    /// the tombstones and on to the new node) or rolls back (handled
    /// here): nothing the frozen process would have been told is lost.
    pub fn checkpoint(
        &mut self,
        now: migros_transport::Instant,
        owner: u64,
    ) -> migros_cm::migrate::CmSnapshot {
        let snap = self.agent.snapshot_owner(to_cm(now), owner);
        self.agent.hold_owner(owner);
        let conns = snap
            .conns
            .iter()
            .map(|c| (c.local_id, c.local_qpn))
            .collect();
        self.checkpointed.insert(owner, conns);
        snap
    }

    /// The state of `owner`, nothing changed (the identifier check).
    pub fn snapshot(
        &self,
        now: migros_transport::Instant,
        owner: u64,
    ) -> migros_cm::migrate::CmSnapshot {
        self.agent.snapshot_owner(to_cm(now), owner)
    }

    /// Whether `snap` could be restored here as `owner` (nothing changes):
    /// the owner free, and what [`migros_cm::Agent::check_restore`] checks.
    pub fn check_restore(
        &self,
        owner: u64,
        snap: &migros_cm::migrate::CmSnapshot,
    ) -> Result<(), CmError> {
        if self.owners.contains_key(&owner) {
            return Err(CmError::AddrInUse);
        }
        self.agent.check_restore(snap)
    }

    pub fn is_checkpointed(&self, owner: u64) -> bool {
        self.checkpointed.contains_key(&owner)
    }

    /// The checkpoint of `owner` rolled back: it goes on here as before,
    /// with the MADs that came for it meanwhile.
    pub fn roll_back(&mut self, now: migros_transport::Instant, owner: u64) {
        self.checkpointed.remove(&owner);
        self.agent.release_owner(to_cm(now), owner);
    }

    /// The checkpointed owner's state lives elsewhere now: it leaves, each
    /// connection a tombstone (forwarding nothing until told where).
    fn commit(&mut self, now: migros_transport::Instant, owner: u64) {
        let conns = self.checkpointed.remove(&owner).unwrap_or_default();
        self.owners.remove(&owner);
        let ids = self.agent.evict_owner(to_cm(now), owner);
        for (id, qpn) in conns {
            if ids.contains(&id) {
                self.tombstone_qpns.insert(id, qpn);
            }
        }
        tracing::info!(
            owner,
            connections = ids.len(),
            "cm state moved away (tombstones)"
        );
    }

    /// Commits the checkpointed owners whose connections carry one of
    /// `qpns` (whoever forwards or releases them knows they moved); their
    /// connection tokens, to be closed.
    pub fn commit_qpns(&mut self, now: migros_transport::Instant, qpns: &[u32]) -> Vec<usize> {
        // A set: a node's worth of QPs against its connections stays n log n.
        let qpns: std::collections::BTreeSet<u32> = qpns.iter().copied().collect();
        let owners: Vec<u64> = self
            .checkpointed
            .iter()
            .filter(|(_, conns)| conns.iter().any(|(_, q)| qpns.contains(q)))
            .map(|(o, _)| *o)
            .collect();
        let mut tokens = Vec::new();
        for o in owners {
            if let Some(t) = self.owners.get(&o) {
                tokens.push(*t);
            }
            self.commit(now, o);
        }
        tokens
    }

    /// The tombstones of the connections that carried `qpns` forward to
    /// `to`; how many.
    pub fn forward_tombstones(
        &mut self,
        now: migros_transport::Instant,
        qpns: &[u32],
        to: IpAddr,
    ) -> usize {
        let ids = self.tombstones_of(qpns);
        self.agent.forward_tombstones(to_cm(now), &ids, to);
        ids.len()
    }

    /// Drops the tombstones of the connections that carried `qpns`.
    pub fn release_tombstones(&mut self, qpns: &[u32]) {
        let ids = self.tombstones_of(qpns);
        self.agent.forget_tombstones(&ids);
        for id in ids {
            self.tombstone_qpns.remove(&id);
        }
    }

    fn tombstones_of(&self, qpns: &[u32]) -> Vec<u32> {
        let qpns: std::collections::BTreeSet<u32> = qpns.iter().copied().collect();
        self.tombstone_qpns
            .iter()
            .filter(|(_, q)| qpns.contains(q))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The agent's counters (tombstones dropped, MADs held or forwarded).
    pub fn counters(&self) -> &migros_cm::AgentCounters {
        &self.agent.counters
    }

    /// Recreates `snap` as owner `owner` on connection `token`, with the
    /// same identifiers (refused, nothing changed, on a collision).
    pub fn restore(
        &mut self,
        now: migros_transport::Instant,
        token: usize,
        owner: u64,
        snap: &migros_cm::migrate::CmSnapshot,
    ) -> Result<(), CmError> {
        if self.owners.contains_key(&owner) {
            return Err(CmError::AddrInUse);
        }
        self.agent.restore_owner(to_cm(now), owner, snap)?;
        for c in &snap.conns {
            self.tombstone_qpns.remove(&c.local_id);
        }
        self.owners.insert(owner, token);
        Ok(())
    }

    /// Handles one request of `owner`.
    pub fn request(
        &mut self,
        now: migros_transport::Instant,
        owner: u64,
        req: CmRequest,
    ) -> CmResponse {
        tracing::debug!(owner, ?req, "cm request");
        let now = to_cm(now);
        let a = &mut self.agent;
        let done = |r: Result<(), CmError>| r.map_or_else(error, |()| CmResponse::Ok);
        match req {
            CmRequest::Bind {
                ps,
                addr,
                port,
                reuse,
            } => {
                if addr.is_some_and(|x| x != self.addr) {
                    return error(CmError::Invalid("not this device's address"));
                }
                match a.bind(owner, ps, addr, port, reuse) {
                    Ok((bind, port)) => CmResponse::Bound { bind, port },
                    Err(e) => error(e),
                }
            }
            CmRequest::Unbind { bind } => done(a.unbind(owner, bind)),
            CmRequest::Listen { bind, qp_type } => match a.listen(owner, bind, qp_type) {
                Ok(listen) => CmResponse::Listening { listen },
                Err(e) => error(e),
            },
            CmRequest::Unlisten { listen } => done(a.unlisten(owner, listen)),
            CmRequest::Connect(p) => match a.connect(now, owner, &p) {
                Ok(c) => CmResponse::Connected {
                    conn: c.conn,
                    psn: c.psn,
                },
                Err(e) => error(e),
            },
            CmRequest::Accept { conn, params } => done(a.accept(now, owner, conn, &params)),
            CmRequest::Reject {
                conn,
                reason,
                private_data,
            } => done(a.reject(now, owner, conn, reason, &private_data)),
            CmRequest::Establish { conn } => done(a.establish(owner, conn)),
            CmRequest::Notify { conn } => done(a.notify_established(owner, conn)),
            CmRequest::Disconnect { conn } => done(a.disconnect(now, owner, conn)),
            CmRequest::Destroy { conn } => done(a.destroy(now, owner, conn)),
        }
    }

    /// The agent's next event with the connection (token) of its owner;
    /// events of owners that are gone are dropped.
    pub fn poll_event(&mut self) -> Option<(usize, CmEvent)> {
        while let Some((owner, ev)) = self.agent.poll_event() {
            tracing::debug!(owner, conn = ev.conn(), event = ?event_name(&ev), "cm event");
            if let Some(&token) = self.owners.get(&owner) {
                return Some((token, ev));
            }
        }
        None
    }
}
