//! Messages on a daemon's admin socket (`<device>.admin.sock`, root only).
//!
//! Each admin connection carries [`AdminRequest`] frames (framed like the
//! client socket, see [`crate::frame`]); every request gets exactly one
//! [`AdminResponse`], in order. The daemon refuses peers whose uid is not 0
//! with [`AdminResponse::Error`] and closes the connection.
//!
//! Both enums only ever grow at the end (postcard encodes the variant
//! index), so tools built against an older version keep working: the CRIU
//! plugin adds its pause / checkpoint / restore requests (by pid) here.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::counters::{DeviceCounters, QpCounters};
use crate::msg::DeviceInfo;
use crate::verbs::{OwnerId, QpState, Qpn};

/// Version of the admin protocol, reported by [`AdminResponse::Status`].
pub const ADMIN_PROTOCOL_VERSION: u32 = 1;

/// What an administrator asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The device, its sessions and its counters.
    Status,
    /// Device counters and the counters of every QP.
    Stats,
    /// Ends the daemon (cleanly, as on SIGTERM).
    Shutdown,
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
        for r in [
            AdminRequest::Status,
            AdminRequest::Stats,
            AdminRequest::Shutdown,
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
        let bytes = postcard::to_allocvec(&resp).unwrap();
        assert_eq!(postcard::from_bytes::<AdminResponse>(&bytes).unwrap(), resp);
    }
}
