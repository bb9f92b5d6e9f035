//! Unit tests of the device: failed WRs and CQ overruns.

use super::*;
use migros_test_support::rc::{cap, rc_qp_init};

const OWNER: OwnerId = 1;
const CQ: Cqn = 3;
const QPN: Qpn = 0x42;

/// A device with one RC QP in INIT holding one queued receive.
fn device_with_queued_work() -> Device {
    let mut d = Device::new(DeviceConfig::new("127.0.0.1".parse().unwrap()));
    d.alloc_pd(OWNER, 1).unwrap();
    d.create_cq(OWNER, CQ, 8).unwrap();
    d.create_qp(rc_qp_init(OWNER, QPN, 1, CQ, cap(4, 4)))
        .unwrap();
    let init = QpAttr {
        qp_state: QpState::Init,
        ..QpAttr::default()
    };
    let mask = AttrMask::STATE | AttrMask::ACCESS_FLAGS | AttrMask::PKEY_INDEX | AttrMask::PORT;
    d.modify_qp(Instant::ZERO, QPN, &init, mask).unwrap();
    let recv = RecvWr {
        wr_id: 2,
        sges: vec![],
    };
    d.post_recv(QPN, recv).unwrap();
    d
}

/// A WR its poster could not hand over fails the QP: what was queued
/// is flushed first, in order, then the WR completes with LocQpOpErr.
#[test]
fn a_failed_wr_completes_after_the_flush_of_what_came_before() {
    let mut d = device_with_queued_work();
    assert_eq!(d.completions_waiting(CQ), 0);
    d.fail_wr(Instant::ZERO, QPN, WorkQueue::Send, 9, WcOpcode::RdmaWrite)
        .unwrap();
    assert_eq!(d.query_qp(QPN).unwrap().qp_state, QpState::Err);
    assert_eq!(d.completions_waiting(CQ), 2);
    let mut wcs = Vec::new();
    assert_eq!(d.poll_cq(CQ, 1, &mut wcs).unwrap(), 1);
    assert_eq!(d.completions_waiting(CQ), 1);
    d.poll_cq(CQ, usize::MAX, &mut wcs).unwrap();
    let got: Vec<(u64, WcStatus)> = wcs.iter().map(|w| (w.wr_id, w.status)).collect();
    assert_eq!(got, [(2, WcStatus::WrFlushErr), (9, WcStatus::LocQpOpErr)]);
    assert_eq!(wcs[1].opcode, WcOpcode::RdmaWrite);
    assert!(d
        .fail_wr(Instant::ZERO, 7, WorkQueue::Recv, 1, WcOpcode::Recv)
        .is_err());
}

/// The CQ is the only queue of completions: past its capacity they are
/// counted as lost, not queued elsewhere.
#[test]
fn a_full_cq_counts_its_overruns() {
    let mut d = device_with_queued_work();
    d.objs.cqs.get_mut(&CQ).unwrap().capacity = 1;
    d.fail_wr(Instant::ZERO, QPN, WorkQueue::Recv, 9, WcOpcode::Recv)
        .unwrap();
    assert_eq!(d.completions_waiting(CQ), 1);
    assert_eq!(d.objs.cqs[&CQ].overflows, 1);
}
