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

use std::net::IpAddr;
use std::time::Duration;

use migros_proto::cm::{CmQpType, PortSpace};
use serde::{Deserialize, Serialize};

use crate::agent::{Agent, Listener};
use crate::conn::{Conn, Retransmit};
use crate::error::CmError;
use crate::mad::MAD_LEN;
use crate::msg::CmMessage;
use crate::ports::Bound;
use crate::time::Instant;

/// Version of [`CmSnapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

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
pub struct CmSnapshot {
    pub version: u32,
    /// The source device's address (bindings to it move to the new one).
    pub addr: IpAddr,
    pub binds: Vec<BindSnap>,
    pub listens: Vec<ListenSnap>,
    pub conns: Vec<ConnSnap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindSnap {
    pub id: u32,
    pub ps: PortSpace,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub reuse: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenSnap {
    pub id: u32,
    pub ps: PortSpace,
    pub port: u16,
    pub addr: Option<IpAddr>,
    pub qp_type: CmQpType,
}

/// A message waiting for its answer, with its timer as time left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetransmitSnap {
    pub mad: Vec<u8>,
    pub left_ns: u64,
    pub timeout_ns: u64,
    pub retries_left: u8,
    pub sends: u32,
}

/// A connection: its record (without owner and timers), and its timers as
/// time left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnSnap {
    #[serde(flatten)]
    pub conn: Conn,
    pub retransmit: Option<RetransmitSnap>,
    pub timewait_left_ns: Option<u64>,
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
                conn: Conn {
                    owner: 0,
                    retransmit: None,
                    timewait_until: None,
                    ..c.clone()
                },
                retransmit: c.retransmit.as_ref().map(|r| RetransmitSnap {
                    mad: r.mad.to_vec(),
                    left_ns: left(now, r.deadline),
                    timeout_ns: u64::try_from(r.timeout.as_nanos()).unwrap_or(u64::MAX),
                    retries_left: r.retries_left,
                    sends: r.sends,
                }),
                timewait_left_ns: c.timewait_until.map(|t| left(now, t)),
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
        if snap.version != SNAPSHOT_VERSION {
            return Err(CmError::Invalid("snapshot version"));
        }
        for b in &snap.binds {
            if self.ports.get(b.id).is_some() {
                return Err(CmError::AddrInUse);
            }
            self.ports
                .check(b.ps, self.map_addr(snap, b.addr), b.port, b.reuse)?;
        }
        for l in &snap.listens {
            if self.listeners.contains_key(&l.id) {
                return Err(CmError::AddrInUse);
            }
        }
        for c in &snap.conns {
            if c.conn.local_id == 0 || self.conns.contains_key(&c.conn.local_id) {
                return Err(CmError::AddrInUse);
            }
            if c.retransmit
                .as_ref()
                .is_some_and(|r| r.mad.len() != MAD_LEN)
            {
                return Err(CmError::Invalid("a resent mad is not 256 bytes"));
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
        for b in &snap.binds {
            let addr = self.map_addr(snap, b.addr);
            self.ports.bind_as(
                b.id,
                Bound {
                    ps: b.ps,
                    addr,
                    port: b.port,
                    owner,
                    reuse: b.reuse,
                },
            )?;
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
            if c.conn.indexed {
                self.remote_ids
                    .insert((c.conn.remote_ca_guid, c.conn.remote_id), c.conn.local_id);
                self.remote_qpns
                    .insert((c.conn.remote_ca_guid, c.conn.remote_qpn), c.conn.local_id);
            }
            self.tombstones.remove(&c.conn.local_id);
            self.conns.insert(
                c.conn.local_id,
                Conn {
                    owner,
                    retransmit,
                    timewait_until: c.timewait_left_ns.map(|n| now + Duration::from_nanos(n)),
                    ..c.conn.clone()
                },
            );
        }
        Ok(())
    }

    /// Removes `owner` after its state moved away, telling no peer: each
    /// of its connections leaves a tombstone that forwards the peer's MADs
    /// once [`Agent::forward_tombstones`] says where. Returns their IDs.
    pub fn evict_owner(&mut self, owner: u64) -> Vec<u32> {
        let ids: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(c) = self.conns.remove(id) {
                if c.indexed {
                    self.remote_ids.remove(&(c.remote_ca_guid, c.remote_id));
                    self.remote_qpns.remove(&(c.remote_ca_guid, c.remote_qpn));
                }
            }
            self.tombstones.insert(*id, None);
        }
        self.listeners.retain(|_, l| l.owner != owner);
        self.ports.unbind_owner(owner);
        self.events.retain(|(o, _)| *o != owner);
        ids
    }

    /// Where the migrated connections `ids` went.
    pub fn forward_tombstones(&mut self, ids: &[u32], to: IpAddr) {
        for id in ids {
            if let Some(t) = self.tombstones.get_mut(id) {
                *t = Some(to);
            }
        }
    }

    /// Drops tombstones (their connections ended on the new node).
    pub fn forget_tombstones(&mut self, ids: &[u32]) {
        for id in ids {
            self.tombstones.remove(id);
        }
    }
}
