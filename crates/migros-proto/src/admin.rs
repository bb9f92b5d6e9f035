//! Messages on a daemon's admin socket (`<device>.admin.sock`, root only).
//!
//! Each admin connection carries [`AdminRequest`] frames (framed like the
//! client socket, see [`crate::frame`]); every request gets exactly one
//! [`AdminResponse`], in order. The daemon refuses peers whose uid is not 0
//! with [`AdminResponse::Error`] and closes the connection.
//!
//! Both enums only ever grow at the end (postcard encodes the variant
//! index), so tools built against an older version keep working.
//!
//! The requests after `Shutdown` move a whole process with CRIU (the
//! `migros-criu` plugin and `migros migrate`): [`AdminRequest::Pause`]
//! before the freeze, [`AdminRequest::Checkpoint`] after it (one
//! [`SessionImage`] per session, whose `objects` the plugin hands to
//! [`crate::msg::Request::RestoreSession`] on the destination),
//! [`AdminRequest::Resume`] to start the restored sessions or to roll a
//! failed dump back, and the identifier checks and tombstone requests
//! around them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::counters::{DeviceCounters, QpCounters};
use crate::msg::{ChannelId, DeviceInfo};
use crate::verbs::{Cqn, OwnerId, Pdn, QpState, Qpn, Srqn};

/// Version of the admin protocol, reported by [`AdminResponse::Status`].
/// 2: [`DeviceInfo`] holds the GID table and the port's state.
pub const ADMIN_PROTOCOL_VERSION: u32 = 2;

/// What an administrator asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The device, its sessions and its counters.
    Status,
    /// Device counters and the counters of every QP.
    Stats,
    /// Ends the daemon (cleanly, as on SIGTERM).
    Shutdown,
    /// Stops every QP of every session of process `pid` (peers get pause
    /// NAKs); from then on the daemon writes nothing into the process's
    /// memory or sockets. Answers [`AdminResponse::Paused`].
    Pause { pid: u32 },
    /// Handles what the (frozen) process `pid` already sent, pauses it if
    /// needed and snapshots its sessions, without removing anything: the
    /// objects become tombstones when the session connection closes, and
    /// everything rolls back if the process runs again with its connection
    /// open. Answers [`AdminResponse::Checkpointed`].
    Checkpoint { pid: u32 },
    /// Source daemon: rolls paused or checkpointed sessions of `pid` back.
    /// Destination daemon: starts the sessions restored for `pid`. Answers
    /// [`AdminResponse::Resumed`].
    Resume { pid: u32 },
    /// The identifiers of the sessions of `pid`. Answers
    /// [`AdminResponse::Identifiers`].
    Identifiers { pid: u32 },
    /// Whether sessions with these identifiers could be restored here:
    /// [`AdminResponse::Ok`], or an `EEXIST` error naming a collision.
    CheckIdentifiers(Vec<SessionIds>),
    /// Tells the tombstones of `qpns` where their QPs went.
    ForwardTombstones { qpns: Vec<Qpn>, to: IpAddr },
    /// Drops the tombstones of `qpns` (and of the CM connections of those
    /// QPs).
    ReleaseTombstones { qpns: Vec<Qpn> },
    /// After [`AdminRequest::Checkpoint`]: handles what the (frozen)
    /// process `pid` already sent on its librdmacm connections and
    /// snapshots their connection-manager state (bindings, listeners,
    /// connections), without removing anything: each connection becomes a
    /// tombstone when the librdmacm connection closes, and forwards with
    /// the QP it carries ([`AdminRequest::ForwardTombstones`]). Answers
    /// [`AdminResponse::CmCheckpointed`].
    CheckpointCm { pid: u32 },
    /// The connection-manager state of process `pid`'s librdmacm
    /// connections, taken without changing anything (for the check before
    /// a migration freezes anything). Answers
    /// [`AdminResponse::CmIdentifiers`].
    CmIdentifiers { pid: u32 },
    /// Whether this device's connection manager could restore these
    /// (owners, connection IDs, listener and binding IDs free; ports
    /// bindable; no connection to the same peer): `Ok`, or an error
    /// naming the clash. Nothing changes.
    CheckCmIdentifiers(Vec<CmIds>),
}

/// The daemon's answer to an admin request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminResponse {
    Ok,
    Status(DaemonStatus),
    Stats {
        device: DeviceCounters,
        qps: Vec<QpStats>,
    },
    Error {
        errno: i32,
        message: String,
    },
    /// Sessions paused (0: the process has none here).
    Paused {
        sessions: u32,
    },
    Checkpointed(Vec<SessionImage>),
    /// Sessions rolled back or started (0: nothing of the process here).
    Resumed {
        sessions: u32,
    },
    Identifiers(Vec<SessionIds>),
    CmCheckpointed(Vec<CmImage>),
    CmIdentifiers(Vec<CmIds>),
}

/// One librdmacm connection's connection-manager identifiers: its owner
/// and its state as a checkpoint would take it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CmIds {
    pub owner: u64,
    /// `migros_cm::migrate::CmSnapshot` as JSON.
    #[serde(with = "crate::bytes")]
    pub snapshot: Vec<u8>,
}

/// One librdmacm connection as an admin checkpoint takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmImage {
    /// The connection's owner id in the connection manager (kept by the
    /// restore).
    pub owner: u64,
    /// The device name.
    pub device: String,
    /// The socket path the client connected to, as the client sees it.
    pub path: String,
    /// Inode of the client's socket (CRIU's id for it).
    pub inode: u64,
    /// The connection-manager state: what `RestoreCm` takes as `image`.
    #[serde(with = "crate::bytes")]
    pub image: Vec<u8>,
    /// Bytes queued for the socket but not yet written.
    #[serde(with = "crate::bytes")]
    pub outbox: Vec<u8>,
    /// The QPs its connections carry.
    pub qpns: Vec<Qpn>,
}

/// One session as an admin checkpoint takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionImage {
    pub session: u64,
    /// The device name.
    pub device: String,
    /// The socket path the client connected to, as the client sees it.
    pub path: String,
    /// Inode of the client's session socket (CRIU's id for it).
    pub inode: u64,
    pub channels: Vec<ChannelImage>,
    /// The objects: what `RestoreSession` takes as `image`.
    #[serde(with = "crate::bytes")]
    pub objects: Vec<u8>,
    /// Bytes queued for the session socket but not yet written.
    #[serde(with = "crate::bytes")]
    pub outbox: Vec<u8>,
    pub qpns: Vec<Qpn>,
}

/// A completion channel of a checkpointed session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelImage {
    pub channel: ChannelId,
    /// Inode of the client's channel socket.
    pub inode: u64,
    /// Bytes queued for the channel socket but not yet written.
    #[serde(with = "crate::bytes")]
    pub outbox: Vec<u8>,
}

/// The identifiers a session holds (all must be free where it is restored).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionIds {
    pub session: u64,
    pub owner: OwnerId,
    pub qpns: Vec<Qpn>,
    /// lkeys and rkeys (one space).
    pub keys: Vec<u32>,
    pub pds: Vec<Pdn>,
    pub cqs: Vec<Cqn>,
    pub srqs: Vec<Srqn>,
    pub channels: Vec<ChannelId>,
}

/// What [`AdminRequest::Status`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: u32,
    pub device: DeviceInfo,
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    pub sessions: Vec<SessionInfo>,
    pub counters: DeviceCounters,
    /// QPNs with a tombstone (QPs checkpointed away from this daemon).
    pub tombstones: Vec<Qpn>,
}

/// A client session as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session: u64,
    pub pid: u32,
    pub owner: OwnerId,
    pub qps: u32,
    pub cqs: u32,
    pub mrs: u32,
    /// Completion channel connections attached.
    pub channels: u32,
    /// The session checkpointed its objects away (it owns nothing now).
    pub checkpointed: bool,
}

/// One QP's counters, with whose it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QpStats {
    pub qpn: Qpn,
    pub owner: OwnerId,
    pub pid: u32,
    pub state: QpState,
    pub dest: Option<(IpAddr, Qpn)>,
    pub counters: QpCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_messages_round_trip() {
        let ids = SessionIds {
            session: 1,
            owner: 2,
            qpns: vec![3],
            keys: vec![4, 5],
            pds: vec![6],
            cqs: vec![7],
            srqs: vec![],
            channels: vec![8],
        };
        for r in [
            AdminRequest::Status,
            AdminRequest::Stats,
            AdminRequest::Shutdown,
            AdminRequest::Pause { pid: 42 },
            AdminRequest::Checkpoint { pid: 42 },
            AdminRequest::Resume { pid: 42 },
            AdminRequest::Identifiers { pid: 42 },
            AdminRequest::CheckIdentifiers(vec![ids.clone()]),
            AdminRequest::ForwardTombstones {
                qpns: vec![1, 2],
                to: "198.18.0.2".parse().unwrap(),
            },
            AdminRequest::ReleaseTombstones { qpns: vec![3] },
            AdminRequest::CheckpointCm { pid: 42 },
            AdminRequest::CmIdentifiers { pid: 42 },
            AdminRequest::CheckCmIdentifiers(vec![CmIds {
                owner: 3,
                snapshot: b"{}".to_vec(),
            }]),
        ] {
            let bytes = postcard::to_allocvec(&r).unwrap();
            assert_eq!(postcard::from_bytes::<AdminRequest>(&bytes).unwrap(), r);
        }
        let resp = AdminResponse::Stats {
            device: DeviceCounters::default(),
            qps: vec![QpStats {
                qpn: 7,
                owner: 9,
                pid: 1,
                state: QpState::Rts,
                dest: Some(("127.0.0.2".parse().unwrap(), 8)),
                counters: QpCounters::default(),
            }],
        };
        let image = SessionImage {
            session: 0xabc,
            device: "rxe0".into(),
            path: "/run/migros/rxe0.sock".into(),
            inode: 77,
            channels: vec![ChannelImage {
                channel: 5,
                inode: 78,
                outbox: vec![1, 2],
            }],
            objects: vec![3; 40],
            outbox: vec![4],
            qpns: vec![0x12],
        };
        for resp in [
            resp,
            AdminResponse::Paused { sessions: 1 },
            AdminResponse::Checkpointed(vec![image]),
            AdminResponse::Resumed { sessions: 0 },
            AdminResponse::Identifiers(vec![ids]),
            AdminResponse::CmCheckpointed(vec![CmImage {
                owner: 1,
                device: "rxe0".into(),
                path: "/run/migros/rxe0.sock".into(),
                inode: 79,
                image: vec![5; 10],
                outbox: vec![6],
                qpns: vec![0x13],
            }]),
            AdminResponse::CmIdentifiers(vec![CmIds::default()]),
        ] {
            let bytes = postcard::to_allocvec(&resp).unwrap();
            assert_eq!(postcard::from_bytes::<AdminResponse>(&bytes).unwrap(), resp);
        }
    }

    /// Older tools keep working: the first variants keep their indices.
    #[test]
    fn old_variants_keep_their_encoding() {
        assert_eq!(postcard::to_allocvec(&AdminRequest::Status).unwrap(), [0]);
        assert_eq!(postcard::to_allocvec(&AdminRequest::Shutdown).unwrap(), [2]);
        assert_eq!(postcard::to_allocvec(&AdminResponse::Ok).unwrap(), [0]);
        assert_eq!(
            postcard::to_allocvec(&AdminRequest::Pause { pid: 1 }).unwrap(),
            [3, 1]
        );
    }
}
