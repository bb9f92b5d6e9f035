//! Moving a process's connection-manager state to another device, for
//! live migration: what its connections, listeners and bindings are
//! ([`CmSnapshot`], plain data with a version), recreated on the
//! destination's agent with the same identifiers (the process keeps
//! naming them), and tombstones on the source.
//!
//! A peer keeps sending the connection's MADs (a DREQ, a DREP) to the
//! address it connected to, as the kernel does (its CM's address vector
//! does not move). The source's agent therefore keeps, per migrated
//! connection, where it went and forwards every MAD naming it there; the
//! destination's agent answers a connection's MADs at the peer's address,
//! never at the forwarder's. Listeners move with the process: new
//! connections reach it at its new node's address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use migros_proto::cm::{CmQpType, ConnInfo, PortSpace};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Listener, Transmit};
use crate::conn::{Conn, Retransmit, State};
use crate::error::CmError;
use crate::mad::MAD_LEN;
use crate::msg::CmMessage;
use crate::ports::Bound;
use crate::time::Instant;
use crate::tombstone::CmTombstone;

/// Version of [`CmSnapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// Longest timer a snapshot may hold (a REQ's response timeout is at most
/// 2^23 ms, about 2.3 h, with 15 resends; time-wait is shorter): a longer
/// one comes from a damaged image.
pub const MAX_SNAPSHOT_TIMER: Duration = Duration::from_secs(48 * 3600);

/// The local comm ID a MAD is for (its "remote comm ID", a SIDR_REP's
/// request ID); `None` for REQ and SIDR_REQ, which start something new.
pub fn target(m: &CmMessage) -> Option<u32> {
    match m {
        CmMessage::Mra(x) => Some(x.remote_comm_id),
        CmMessage::Rej(x) => Some(x.remote_comm_id),
        CmMessage::Rep(x) => Some(x.remote_comm_id),
        CmMessage::Rtu(x) => Some(x.remote_comm_id),
        CmMessage::Dreq(x) => Some(x.remote_comm_id),
        CmMessage::Drep(x) => Some(x.remote_comm_id),
        CmMessage::SidrRep(x) => Some(x.request_id),
        CmMessage::Req(_) | CmMessage::SidrReq(_) | CmMessage::Other(_) => None,
    }
}

/// A process's connection-manager state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmSnapshot {
    pub version: u32,
    /// The source device's address (bindings to it move to the new one).
    pub addr: IpAddr,
    pub binds: Vec<BindSnap>,
    pub listens: Vec<ListenSnap>,
    pub conns: Vec<ConnSnap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindSnap {
    pub id: u32,
    pub ps: PortSpace,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub reuse: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSnap {
    pub id: u32,
    pub ps: PortSpace,
    pub port: u16,
    pub addr: Option<IpAddr>,
    pub qp_type: CmQpType,
}

/// A message waiting for its answer, with its timer as time left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetransmitSnap {
    pub mad: Vec<u8>,
    pub left_ns: u64,
    pub timeout_ns: u64,
    pub retries_left: u8,
    pub sends: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnSnap {
    pub local_id: u32,
    pub remote_id: u32,
    pub state: State,
    pub qp_type: CmQpType,
    pub peer_ip: IpAddr,
    pub tid: u64,
    pub service_id: u64,
    pub remote_ca_guid: u64,
    pub local_qpn: u32,
    pub remote_qpn: u32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub info: ConnInfo,
    pub timeout_ms: u64,
    pub max_cm_retries: u8,
    pub av_timeout: u8,
    pub retransmit: Option<RetransmitSnap>,
    pub timewait_left_ns: Option<u64>,
    pub last_private: Vec<u8>,
    pub disconnect_reported: bool,
    pub indexed: bool,
}

/// What a snapshot must be on its own, wherever it is restored: its
/// version, identifiers unique and non-zero, timers and retry counts
/// within what the CM ever sets, resent MADs whole.
pub fn check_snapshot(snap: &CmSnapshot) -> Result<(), CmError> {
    use std::collections::BTreeSet;
    if snap.version != SNAPSHOT_VERSION {
        return Err(CmError::Invalid("snapshot version"));
    }
    let max = u64::try_from(MAX_SNAPSHOT_TIMER.as_nanos()).unwrap_or(u64::MAX);
    let mut binds = BTreeSet::new();
    for b in &snap.binds {
        if b.id == 0 || !binds.insert(b.id) {
            return Err(CmError::Invalid("a binding id is 0 or repeated"));
        }
    }
    let mut listens = BTreeSet::new();
    for l in &snap.listens {
        if l.id == 0 || !listens.insert(l.id) {
            return Err(CmError::Invalid("a listener id is 0 or repeated"));
        }
    }
    let mut conns = BTreeSet::new();
    let mut remote = BTreeSet::new();
    for c in &snap.conns {
        if c.local_id == 0 || !conns.insert(c.local_id) {
            return Err(CmError::Invalid("a connection id is 0 or repeated"));
        }
        if c.indexed
            && (!remote.insert((0, c.remote_ca_guid, c.remote_id))
                || !remote.insert((1, c.remote_ca_guid, c.remote_qpn)))
        {
            return Err(CmError::Invalid("two connections name the same peer"));
        }
        if c.max_cm_retries > 15 || c.av_timeout > 31 {
            return Err(CmError::Invalid("a connection's retries or ack timeout"));
        }
        if c.timeout_ms > MAX_SNAPSHOT_TIMER.as_millis() as u64
            || c.timewait_left_ns.is_some_and(|n| n > max)
        {
            return Err(CmError::Invalid("a connection's timer is too long"));
        }
        if let Some(r) = &c.retransmit {
            if r.mad.len() != MAD_LEN {
                return Err(CmError::Invalid("a resent mad is not 256 bytes"));
            }
            if r.left_ns > max || r.timeout_ns > max || r.retries_left > 15 {
                return Err(CmError::Invalid("a resent mad's timer or retries"));
            }
        }
    }
    Ok(())
}

fn left(now: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(now).as_nanos()).unwrap_or(u64::MAX)
}

impl Agent {
    /// The state of `owner` (nothing changes).
    pub fn snapshot_owner(&self, now: Instant, owner: u64) -> CmSnapshot {
        let binds = self
            .ports
            .of_owner(owner)
            .into_iter()
            .map(|(id, b)| BindSnap {
                id,
                ps: b.ps,
                addr: b.addr,
                port: b.port,
                reuse: b.reuse,
            })
            .collect();
        let listens = self
            .listeners
            .iter()
            .filter(|(_, l)| l.owner == owner)
            .map(|(id, l)| ListenSnap {
                id: *id,
                ps: l.ps,
                port: l.port,
                addr: l.addr,
                qp_type: l.qp_type,
            })
            .collect();
        let conns = self
            .conns
            .values()
            .filter(|c| c.owner == owner)
            .map(|c| ConnSnap {
                local_id: c.local_id,
                remote_id: c.remote_id,
                state: c.state,
                qp_type: c.qp_type,
                peer_ip: c.peer_ip,
                tid: c.tid,
                service_id: c.service_id,
                remote_ca_guid: c.remote_ca_guid,
                local_qpn: c.local_qpn,
                remote_qpn: c.remote_qpn,
                local: c.local,
                peer: c.peer,
                info: c.info.clone(),
                timeout_ms: c.timeout_ms,
                max_cm_retries: c.max_cm_retries,
                av_timeout: c.av_timeout,
                retransmit: c.retransmit.as_ref().map(|r| RetransmitSnap {
                    mad: r.mad.to_vec(),
                    left_ns: left(now, r.deadline),
                    timeout_ns: u64::try_from(r.timeout.as_nanos()).unwrap_or(u64::MAX),
                    retries_left: r.retries_left,
                    sends: r.sends,
                }),
                timewait_left_ns: c.timewait_until.map(|t| left(now, t)),
                last_private: c.last_private.clone(),
                disconnect_reported: c.disconnect_reported,
                indexed: c.indexed,
            })
            .collect();
        CmSnapshot {
            version: SNAPSHOT_VERSION,
            addr: self.config().addr,
            binds,
            listens,
            conns,
        }
    }

    fn map_addr(&self, snap: &CmSnapshot, a: Option<IpAddr>) -> Option<IpAddr> {
        a.map(|a| {
            if a == snap.addr {
                self.config().addr
            } else {
                a
            }
        })
    }

    /// Whether `snap` can be restored here: its version, its identifiers
    /// free, its ports bindable, its MADs whole.
    pub fn check_restore(&self, snap: &CmSnapshot) -> Result<(), CmError> {
        check_snapshot(snap)?;
        for b in &snap.binds {
            if self.ports.get(b.id).is_some() {
                return Err(CmError::AddrInUse);
            }
            self.ports
                .check(b.ps, self.map_addr(snap, b.addr), b.port, b.reuse)?;
        }
        for l in &snap.listens {
            let addr = self.map_addr(snap, l.addr);
            let taken = self.listeners.values().any(|x| {
                x.ps == l.ps
                    && x.port == l.port
                    && (x.addr.is_none() || addr.is_none() || x.addr == addr)
            });
            if taken || self.listeners.contains_key(&l.id) {
                return Err(CmError::AddrInUse);
            }
        }
        for c in &snap.conns {
            if self.conns.contains_key(&c.local_id) {
                return Err(CmError::AddrInUse);
            }
            let indexed = c.indexed
                && (self
                    .remote_ids
                    .contains_key(&(c.remote_ca_guid, c.remote_id))
                    || self
                        .remote_qpns
                        .contains_key(&(c.remote_ca_guid, c.remote_qpn)));
            if indexed {
                return Err(CmError::AddrInUse);
            }
        }
        Ok(())
    }

    /// Recreates `snap` for `owner`, with the same identifiers; timers run
    /// on from where they were. Refused (nothing changed) if
    /// [`Agent::check_restore`] refuses.
    pub fn restore_owner(
        &mut self,
        now: Instant,
        owner: u64,
        snap: &CmSnapshot,
    ) -> Result<(), CmError> {
        self.check_restore(snap)?;
        if !self.ports.of_owner(owner).is_empty()
            || self.listeners.values().any(|l| l.owner == owner)
            || self.conns.values().any(|c| c.owner == owner)
        {
            return Err(CmError::Invalid("the owner exists on this device"));
        }
        for b in &snap.binds {
            let addr = self.map_addr(snap, b.addr);
            let bound = self.ports.bind_as(
                b.id,
                Bound {
                    ps: b.ps,
                    addr,
                    port: b.port,
                    owner,
                    reuse: b.reuse,
                },
            );
            if let Err(e) = bound {
                // Two bindings of the snapshot conflict with each other:
                // undo the ones made (the owner had none before).
                self.ports.unbind_owner(owner);
                return Err(e);
            }
        }
        for l in &snap.listens {
            let addr = self.map_addr(snap, l.addr);
            self.listeners.insert(
                l.id,
                Listener {
                    owner,
                    ps: l.ps,
                    port: l.port,
                    addr,
                    qp_type: l.qp_type,
                },
            );
        }
        for c in &snap.conns {
            let retransmit = c.retransmit.as_ref().map(|r| {
                let mut mad = [0u8; MAD_LEN];
                mad.copy_from_slice(&r.mad);
                Retransmit {
                    mad,
                    deadline: now + Duration::from_nanos(r.left_ns),
                    timeout: Duration::from_nanos(r.timeout_ns),
                    retries_left: r.retries_left,
                    sends: r.sends,
                }
            });
            if c.indexed {
                self.remote_ids
                    .insert((c.remote_ca_guid, c.remote_id), c.local_id);
                self.remote_qpns
                    .insert((c.remote_ca_guid, c.remote_qpn), c.local_id);
            }
            self.tombstones.remove(c.local_id);
            self.conns.insert(
                c.local_id,
                Conn {
                    owner,
                    local_id: c.local_id,
                    remote_id: c.remote_id,
                    state: c.state,
                    qp_type: c.qp_type,
                    peer_ip: c.peer_ip,
                    tid: c.tid,
                    service_id: c.service_id,
                    remote_ca_guid: c.remote_ca_guid,
                    local_qpn: c.local_qpn,
                    remote_qpn: c.remote_qpn,
                    local: c.local,
                    peer: c.peer,
                    info: c.info.clone(),
                    timeout_ms: c.timeout_ms,
                    max_cm_retries: c.max_cm_retries,
                    av_timeout: c.av_timeout,
                    retransmit,
                    timewait_until: c.timewait_left_ns.map(|n| now + Duration::from_nanos(n)),
                    last_private: c.last_private.clone(),
                    disconnect_reported: c.disconnect_reported,
                    indexed: c.indexed,
                },
            );
        }
        Ok(())
    }

    /// `owner` is being checkpointed: from now on MADs for it (for its
    /// connections, resent REQs of them, new REQs and SIDR_REQs to its
    /// listeners) are kept untouched instead of handled, so its state
    /// stays what [`Agent::snapshot_owner`] took and nothing it would have
    /// been told is lost in the window before the process is gone. The
    /// checkpoint then commits ([`Agent::evict_owner`]: its connections'
    /// MADs go to their tombstones and on to the new node) or rolls back
    /// ([`Agent::release_owner`]: they are handled here).
    pub fn hold_owner(&mut self, owner: u64) {
        self.held.entry(owner).or_default();
    }

    /// The checkpoint of `owner` rolled back: the MADs held for it are
    /// handled now, in the order they came.
    pub fn release_owner(&mut self, now: Instant, owner: u64) {
        for (src, mad) in self.held.remove(&owner).unwrap_or_default() {
            self.replay(now, src, &mad);
        }
    }

    /// Whether `owner` is held ([`Agent::hold_owner`]).
    pub fn is_held(&self, owner: u64) -> bool {
        self.held.contains_key(&owner)
    }

    /// Removes `owner` after its state moved away, telling no peer: each
    /// of its connections leaves a tombstone that forwards the peer's MADs
    /// once [`Agent::forward_tombstones`] says where, and keeps them until
    /// then. MADs held for the owner since [`Agent::hold_owner`] are
    /// handled as if they came now: its connections' go to their
    /// tombstones; a new REQ to one of its listeners finds none here and is
    /// rejected (reason 8), as one that comes after the move is: its
    /// sender named this node's address, which the process left. Returns
    /// the connections' IDs.
    pub fn evict_owner(&mut self, now: Instant, owner: u64) -> Vec<u32> {
        let held = self.held.remove(&owner).unwrap_or_default();
        let ids: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            let Some(c) = self.conns.remove(id) else {
                continue;
            };
            if c.indexed {
                self.remote_ids.remove(&(c.remote_ca_guid, c.remote_id));
                self.remote_qpns.remove(&(c.remote_ca_guid, c.remote_qpn));
            }
            let t = CmTombstone {
                peer_ip: c.peer_ip,
                remote: (c.remote_id != 0).then_some((c.remote_ca_guid, c.remote_id)),
                forward: None,
                held: Vec::new(),
                ended: matches!(
                    c.state,
                    State::Idle | State::Timewait | State::DreqSent | State::DreqRcvd
                ),
            };
            if self.tombstones.insert(now, *id, t).is_some() {
                self.counters.tombstones_dropped += 1;
            }
        }
        self.listeners.retain(|_, l| l.owner != owner);
        self.ports.unbind_owner(owner);
        self.events.retain(|(o, _)| *o != owner);
        for (src, mad) in held {
            self.replay(now, src, &mad);
        }
        ids
    }

    /// Where the migrated connections `ids` went: what their tombstones
    /// held goes there now, and what comes later follows.
    pub fn forward_tombstones(&mut self, now: Instant, ids: &[u32], to: IpAddr) {
        for id in ids {
            for mad in self.tombstones.forward(now, *id, to).unwrap_or_default() {
                self.counters.forwarded += 1;
                self.out.push_back(Transmit { dst: to, mad });
            }
        }
    }

    /// Drops tombstones (their connections ended on the new node).
    pub fn forget_tombstones(&mut self, ids: &[u32]) {
        for id in ids {
            self.tombstones.remove(*id);
        }
    }
}
