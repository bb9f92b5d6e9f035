//! Device limits the daemon enforces, and what clients learn about the
//! device ([`DeviceInfo`]).

use migros_proto::msg::DeviceInfo;

use crate::config::Config;

pub const MAX_QP: u32 = 16384;
pub const MAX_QP_WR: u32 = 16384;
/// Both send and receive WRs take this many SGEs (sends take up to
/// [`migros_proto::ring::MAX_SEND_SGE`]).
pub const MAX_SGE: u32 = migros_proto::ring::MAX_RECV_SGE as u32;
pub const MAX_CQ: u32 = 16384;
pub const MAX_CQE: u32 = 1 << 20;
pub const MAX_MR: u32 = 1 << 16;
pub const MAX_MR_SIZE: u64 = 1 << 40;
pub const MAX_PD: u32 = 1 << 16;
pub const MAX_QP_RD_ATOM: u32 = 16;
pub const MAX_SRQ: u32 = 4096;
pub const MAX_SRQ_WR: u32 = 16384;
pub const MAX_INLINE_DATA: u32 = migros_proto::ring::MAX_INLINE as u32;

/// What one session (one client connection) may hold, and what all the
/// sessions of one uid may hold together: one client, or one user (every
/// root container shares uid 0), cannot take the whole device.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub what: &'static str,
    pub per_session: usize,
    pub per_uid: usize,
}

impl Quota {
    pub const fn new(what: &'static str, per_session: usize, per_uid: usize) -> Quota {
        Quota {
            what,
            per_session,
            per_uid,
        }
    }
}

pub const QUOTA_PD: Quota = Quota::new("protection domains", 1024, 4096);
pub const QUOTA_MR: Quota = Quota::new("memory regions", 16384, 32768);
pub const QUOTA_CQ: Quota = Quota::new("cqs", 4096, 8192);
pub const QUOTA_SRQ: Quota = Quota::new("srqs", 1024, 2048);
pub const QUOTA_QP: Quota = Quota::new("qps", 4096, 8192);
pub const QUOTA_CHANNEL: Quota = Quota::new("completion channels", 256, 1024);
/// Connections (sessions, channels, not yet identified) of one uid.
pub const MAX_CONNS_PER_UID: usize = 1024;
/// How long a new connection may take to send its first request.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest frame a session or channel connection may send once
/// identified (an in-session Restore carries a whole image: thousands of
/// QPs fit). The first request of a connection (RestoreSession with its
/// image) may be up to `migros_proto::frame::MAX_FRAME`, and must come
/// within [`HELLO_TIMEOUT`].
pub const SESSION_FRAME_LIMIT: usize = 16 << 20;

/// What clients learn about the device.
pub fn device_info(cfg: &Config) -> DeviceInfo {
    let node_guid = match cfg.addr {
        std::net::IpAddr::V4(a) => 0x0200_5eff_fe00_0000 ^ u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => 0x0200_5eff_fe00_0000 ^ (u128::from(a) as u64),
    };
    let port = crate::port::current(cfg.addr);
    DeviceInfo {
        name: cfg.name.clone(),
        addr: cfg.addr,
        gids: port.gids,
        port_active: port.active,
        mtu: cfg.mtu,
        node_guid,
        max_qp: MAX_QP,
        max_qp_wr: MAX_QP_WR,
        max_sge: MAX_SGE,
        max_cq: MAX_CQ,
        max_cqe: MAX_CQE,
        max_mr: MAX_MR,
        max_mr_size: MAX_MR_SIZE,
        max_pd: MAX_PD,
        max_qp_rd_atom: MAX_QP_RD_ATOM,
        max_srq: MAX_SRQ,
        max_srq_wr: MAX_SRQ_WR,
        max_inline_data: MAX_INLINE_DATA,
    }
}
