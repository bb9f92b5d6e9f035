//! Connecting an RC QP of the Rust verbs API (migros-verbs), for the tests
//! and examples that drive a process through the CRIU sequence.

use std::net::IpAddr;

use migros_verbs::*;

/// Local write, remote write and remote read.
pub const ALL_ACCESS: Access =
    Access(Access::LOCAL_WRITE.0 | Access::REMOTE_WRITE.0 | Access::REMOTE_READ.0);

/// RESET → INIT → RTR → RTS towards `remote_qpn` at `remote_addr`: PSNs
/// 0x100, path MTU 1024, 4 READ/atomic in flight, RNR retries forever,
/// ACK timeout `timeout` (4.096 µs · 2^timeout) with 7 retries.
pub fn connect_rc(qp: &Qp, remote_qpn: Qpn, remote_addr: IpAddr, timeout: u8) {
    let init = QpAttr {
        qp_state: QpState::Init,
        port_num: 1,
        qp_access_flags: ALL_ACCESS,
        ..QpAttr::default()
    };
    qp.modify(
        &init,
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS,
    )
    .expect("init");
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: remote_qpn,
        dest_addr: Some(remote_addr),
        rq_psn: 0x100,
        max_dest_rd_atomic: 4,
        min_rnr_timer: 1,
        ..QpAttr::default()
    };
    qp.modify(
        &rtr,
        AttrMask::STATE
            | AttrMask::AV
            | AttrMask::PATH_MTU
            | AttrMask::DEST_QPN
            | AttrMask::RQ_PSN
            | AttrMask::MAX_DEST_RD_ATOMIC
            | AttrMask::MIN_RNR_TIMER,
    )
    .expect("rtr");
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: 0x100,
        timeout,
        retry_cnt: 7,
        rnr_retry: 7,
        max_rd_atomic: 4,
        ..QpAttr::default()
    };
    qp.modify(
        &rts,
        AttrMask::STATE
            | AttrMask::SQ_PSN
            | AttrMask::TIMEOUT
            | AttrMask::RETRY_CNT
            | AttrMask::RNR_RETRY
            | AttrMask::MAX_QP_RD_ATOMIC,
    )
    .expect("rts");
}
