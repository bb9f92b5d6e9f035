//! Device limits the daemon enforces, and what clients learn about the
//! device ([`DeviceInfo`]).

use migros_proto::msg::DeviceInfo;

use crate::config::Config;

// Object counts are at least those of the kernel's SoftRoCE (rxe_param.h
// of Linux 6.x: 2^20 - 16 QPs, 2^20 CQs and PDs, 2^19 - 1 MRs, 2^20 -
// 0x20001 SRQs; older kernels allowed 65,536 QPs, 16,384 CQs, 256 Ki MRs,
// 32,764 PDs and 960 SRQs). They only bound the device as a whole: what
// one client may take is its quota ([`Quotas`]).
pub const MAX_QP: u32 = (1 << 20) - 16;
/// Queue depths stay at the 65,536-QP kernel's (0x4000): the daemon holds
/// every posted WR, so deeper queues would multiply what one QP may cost.
pub const MAX_QP_WR: u32 = 16384;
/// Both send and receive WRs take this many SGEs (sends take up to
/// [`migros_proto::ring::MAX_SEND_SGE`]).
pub const MAX_SGE: u32 = migros_proto::ring::MAX_RECV_SGE as u32;
pub const MAX_CQ: u32 = 1 << 20;
pub const MAX_CQE: u32 = 1 << 20;
pub const MAX_MR: u32 = (1 << 19) - 1;
pub const MAX_MR_SIZE: u64 = 1 << 40;
pub const MAX_PD: u32 = 1 << 20;
pub const MAX_QP_RD_ATOM: u32 = 16;
pub const MAX_SRQ: u32 = (1 << 20) - 0x20001;
pub const MAX_SRQ_WR: u32 = 16384;
// At least Linux 6.x rxe_param.h's object counts (checked when building).
const _: () = assert!(
    MAX_QP >= (1 << 20) - 16
        && MAX_CQ >= 1 << 20
        && MAX_PD >= 1 << 20
        && MAX_MR >= (1 << 19) - 1
        && MAX_SRQ >= (1 << 20) - 0x20001
);
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

/// The quotas of every kind of object; the daemon's defaults are
/// [`Quotas::default`], `migrosd --quota KIND=SESSION,UID` changes one.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub pd: Quota,
    pub mr: Quota,
    pub cq: Quota,
    pub srq: Quota,
    pub qp: Quota,
    pub channel: Quota,
}

impl Default for Quotas {
    /// One process may hold 131,072 QPs and as many CQs (one per QP is
    /// common): many-QP applications (one RC QP per peer, 100,000 peers)
    /// fit in one process. One uid may hold twice that, so the device's
    /// 2^20 QPs take four users at their quota. A connected RC QP costs
    /// under 27 KB of resident memory, daemon and client together
    /// (`restore_time`'s `B/qp`), so a full session quota is at most
    /// about 3.5 GB.
    fn default() -> Quotas {
        Quotas {
            pd: Quota::new("protection domains", 1024, 4096),
            mr: Quota::new("memory regions", 16384, 32768),
            cq: Quota::new("cqs", 1 << 17, 1 << 18),
            srq: Quota::new("srqs", 1024, 2048),
            qp: Quota::new("qps", 1 << 17, 1 << 18),
            channel: Quota::new("completion channels", 256, 1024),
        }
    }
}

impl Quotas {
    /// Applies `KIND=SESSION,UID` (kinds: pds, mrs, cqs, srqs, qps,
    /// channels), as `migrosd --quota` takes it.
    pub fn apply(&mut self, spec: &str) -> Result<(), String> {
        let (kind, values) = spec
            .split_once('=')
            .ok_or_else(|| format!("quota {spec:?} is not KIND=SESSION,UID"))?;
        let (session, uid) = values
            .split_once(',')
            .ok_or_else(|| format!("quota {spec:?} is not KIND=SESSION,UID"))?;
        let number = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("quota {spec:?}: {v:?} is not a number"))
        };
        let (per_session, per_uid) = (number(session)?, number(uid)?);
        if per_session > per_uid {
            return Err(format!(
                "quota {spec:?}: a session may not hold more than its uid"
            ));
        }
        let q = match kind.trim() {
            "pds" => &mut self.pd,
            "mrs" => &mut self.mr,
            "cqs" => &mut self.cq,
            "srqs" => &mut self.srq,
            "qps" => &mut self.qp,
            "channels" => &mut self.channel,
            other => {
                return Err(format!(
                    "quota {spec:?}: unknown kind {other:?} (pds, mrs, cqs, srqs, qps, channels)"
                ))
            }
        };
        q.per_session = per_session;
        q.per_uid = per_uid;
        Ok(())
    }
}

/// Connections (sessions, channels, not yet identified) of one uid.
pub const MAX_CONNS_PER_UID: usize = 1024;
/// How long a new connection may take to send its first request.
pub const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest frame a session or channel connection may send once
/// identified, and any frame of a non-root connection (an in-session
/// Restore carries a whole image: thousands of QPs fit). The first request
/// of a root connection (RestoreSession with its image: 100,000 QPs take
/// about 175 MB) may be up to `migros_proto::frame::MAX_FRAME`, and must
/// come within [`HELLO_TIMEOUT`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_changed_by_kind() {
        let mut q = Quotas::default();
        q.apply("qps=200000,400000").unwrap();
        assert_eq!((q.qp.per_session, q.qp.per_uid), (200_000, 400_000));
        q.apply("cqs = 5, 6").unwrap();
        assert_eq!((q.cq.per_session, q.cq.per_uid), (5, 6));
        for bad in ["qps", "qps=1", "qps=x,2", "ahs=1,2", "qps=3,2"] {
            assert!(q.apply(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_qp_quota_takes_100000_qps_in_one_session() {
        let q = Quotas::default();
        assert!(q.qp.per_session >= 100_000 && q.qp.per_uid <= MAX_QP as usize);
    }
}
