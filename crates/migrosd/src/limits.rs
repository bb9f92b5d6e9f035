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

/// What clients learn about the device.
pub fn device_info(cfg: &Config) -> DeviceInfo {
    let node_guid = match cfg.addr {
        std::net::IpAddr::V4(a) => 0x0200_5eff_fe00_0000 ^ u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => 0x0200_5eff_fe00_0000 ^ (u128::from(a) as u64),
    };
    DeviceInfo {
        name: cfg.name.clone(),
        addr: cfg.addr,
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
