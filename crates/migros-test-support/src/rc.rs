//! The verbs attributes that connect an RC (or UC) QP and activate a UD
//! QP, as `ibv_modify_qp` calls with their masks, for any client: apply
//! each `(attr, mask)` of [`RcParams::transitions`] in order with
//! `Qp::modify` (migros-verbs), `Request::ModifyQp` (the raw daemon
//! protocol) or `Device::modify_qp` (the simulator).

use std::net::IpAddr;

use migros_proto::verbs::{
    Access, AttrMask, Cqn, Mtu, OwnerId, Pdn, QpAttr, QpCap, QpInit, QpState, QpType, Qpn,
    SendData, SendFlags, SendWr, Sge, WrOpcode,
};

/// Local write and every remote right (write, read, atomic).
pub const ALL_ACCESS: Access = Access(
    Access::LOCAL_WRITE.0
        | Access::REMOTE_WRITE.0
        | Access::REMOTE_READ.0
        | Access::REMOTE_ATOMIC.0,
);

/// A signaled send work request of `opcode` gathering `sges` (not UD).
pub fn signaled_send(wr_id: u64, opcode: WrOpcode, sges: Vec<Sge>) -> SendWr {
    SendWr {
        wr_id,
        opcode,
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(sges),
        ud: None,
    }
}

/// How one side of an RC connection is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RcParams {
    /// The partner's QPN and device address.
    pub remote_qpn: Qpn,
    pub remote_addr: IpAddr,
    pub mtu: Mtu,
    /// This side's first send PSN; the partner's first PSN is `rq_psn`.
    pub sq_psn: u32,
    pub rq_psn: u32,
    /// Local ACK timeout, IB encoding: 4.096 µs · 2^timeout.
    pub timeout: u8,
    pub retry_cnt: u8,
    /// 7: retry for ever.
    pub rnr_retry: u8,
    /// IB encoding (1: 0.01 ms … 0: 655.36 ms).
    pub min_rnr_timer: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    /// The QP's remote access flags.
    pub access: Access,
    /// Where the QP stops: RTR (a receive-only QP, as the server of a
    /// one-way stream leaves it) or RTS.
    pub until: QpState,
}

impl RcParams {
    /// Towards `remote_qpn` at `remote_addr`: path MTU 1024, PSNs 0x100 on
    /// both sides, ACK timeout 12 (16.8 ms) with 7 retries, RNR retries
    /// for ever, 4 READ/atomic in flight, every access right, up to RTS.
    pub fn new(remote_qpn: Qpn, remote_addr: IpAddr) -> RcParams {
        RcParams {
            remote_qpn,
            remote_addr,
            mtu: Mtu::Mtu1024,
            sq_psn: 0x100,
            rq_psn: 0x100,
            timeout: 12,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 1,
            max_rd_atomic: 4,
            max_dest_rd_atomic: 4,
            access: ALL_ACCESS,
            until: QpState::Rts,
        }
    }

    /// RESET → INIT → RTR (→ RTS unless [`RcParams::until`] is RTR), with
    /// the attribute masks an RC application passes.
    pub fn transitions(&self) -> Vec<(QpAttr, AttrMask)> {
        let mut v = vec![
            (
                QpAttr {
                    qp_state: QpState::Init,
                    pkey_index: 0,
                    port_num: 1,
                    qp_access_flags: self.access,
                    ..QpAttr::default()
                },
                AttrMask::RC_INIT,
            ),
            (
                QpAttr {
                    qp_state: QpState::Rtr,
                    path_mtu: self.mtu,
                    dest_qp_num: self.remote_qpn,
                    dest_addr: Some(self.remote_addr),
                    rq_psn: self.rq_psn,
                    max_dest_rd_atomic: self.max_dest_rd_atomic,
                    min_rnr_timer: self.min_rnr_timer,
                    ..QpAttr::default()
                },
                AttrMask::RC_RTR,
            ),
        ];
        if self.until != QpState::Rtr {
            v.push((
                QpAttr {
                    qp_state: QpState::Rts,
                    sq_psn: self.sq_psn,
                    timeout: self.timeout,
                    retry_cnt: self.retry_cnt,
                    rnr_retry: self.rnr_retry,
                    max_rd_atomic: self.max_rd_atomic,
                    ..QpAttr::default()
                },
                AttrMask::RC_RTS,
            ));
        }
        v
    }

    /// The same for a UC QP: no ACK timeout, retries or READ/atomic depth.
    pub fn uc_transitions(&self) -> Vec<(QpAttr, AttrMask)> {
        let mut v = self.transitions();
        v[1].0.max_dest_rd_atomic = 0;
        v[1].0.min_rnr_timer = 0;
        v[1].1 = AttrMask::STATE
            | AttrMask::AV
            | AttrMask::PATH_MTU
            | AttrMask::DEST_QPN
            | AttrMask::RQ_PSN;
        if let Some(rts) = v.get_mut(2) {
            rts.0 = QpAttr {
                qp_state: QpState::Rts,
                sq_psn: self.sq_psn,
                ..QpAttr::default()
            };
            rts.1 = AttrMask::STATE | AttrMask::SQ_PSN;
        }
        v
    }
}

/// RESET → INIT → RTR → RTS of a UD QP with Q_Key `qkey`.
pub fn ud_transitions(qkey: u32, sq_psn: u32) -> [(QpAttr, AttrMask); 3] {
    [
        (
            QpAttr {
                qp_state: QpState::Init,
                pkey_index: 0,
                port_num: 1,
                qkey,
                ..QpAttr::default()
            },
            AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
        ),
        (
            QpAttr {
                qp_state: QpState::Rtr,
                ..QpAttr::default()
            },
            AttrMask::STATE,
        ),
        (
            QpAttr {
                qp_state: QpState::Rts,
                sq_psn,
                ..QpAttr::default()
            },
            AttrMask::STATE | AttrMask::SQ_PSN,
        ),
    ]
}

/// Queue capacities: `send_wr` and `recv_wr` WRs of one SGE each, no
/// inline data.
pub fn cap(send_wr: u32, recv_wr: u32) -> QpCap {
    QpCap {
        max_send_wr: send_wr,
        max_recv_wr: recv_wr,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    }
}

/// What `create_qp` needs for an RC QP `qpn` of `owner` in PD `pd`, with
/// `cap`, whose both queues complete on `cq`: no SRQ, and only the send
/// WRs that ask for a completion get one.
pub fn rc_qp_init(owner: OwnerId, qpn: Qpn, pd: Pdn, cq: Cqn, cap: QpCap) -> QpInit {
    QpInit {
        owner,
        qpn,
        qp_type: QpType::Rc,
        pd,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap,
        sq_sig_all: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rc_goes_through_init_rtr_rts_with_its_masks() {
        let p = RcParams::new(0x42, "127.0.0.9".parse().unwrap());
        let t = p.transitions();
        let states: Vec<QpState> = t.iter().map(|(a, _)| a.qp_state).collect();
        assert_eq!(states, [QpState::Init, QpState::Rtr, QpState::Rts]);
        assert!(t[1].1.contains(AttrMask::DEST_QPN) && t[1].0.dest_qp_num == 0x42);
        assert!(t[2].1.contains(AttrMask::SQ_PSN) && t[2].0.sq_psn == 0x100);
        let rtr_only = RcParams {
            until: QpState::Rtr,
            ..p
        };
        assert_eq!(rtr_only.transitions().len(), 2);
        let uc = p.uc_transitions();
        assert!(!uc[1].1.contains(AttrMask::MAX_DEST_RD_ATOMIC));
        assert_eq!(uc[2].1, AttrMask::STATE | AttrMask::SQ_PSN);
    }

    #[test]
    fn all_access_has_every_right() {
        for a in [
            Access::LOCAL_WRITE,
            Access::REMOTE_WRITE,
            Access::REMOTE_READ,
            Access::REMOTE_ATOMIC,
        ] {
            assert!(ALL_ACCESS.contains(a));
        }
    }
}
