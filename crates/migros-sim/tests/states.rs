//! QP state transitions with traffic: SQD drains what is in flight and
//! starts nothing new; SQD back to RTS resumes the queue; modify_qp refuses
//! what the verbs rules forbid.

use std::time::Duration;

use migros_sim::support::{modify_qp, rc_pair, wr, RcOptions};
use migros_sim::Sim;
use migros_transport::{AttrMask, DeviceEvent, QpAttr, QpState, WcStatus};

const DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn sqd_drains_in_flight_work_and_holds_the_rest() {
    let mut sim = Sim::new(0x5d0);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    let opts = RcOptions {
        buf_len: 64 * 1024,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n0, n1, &opts);
    for i in 0..4u64 {
        b.recv(&mut sim, i, i as usize * 8192, 8192);
        a.fill_tx(&mut sim, i as usize * 8192, 8192, i);
    }
    // Two messages go out, then the send queue is drained.
    a.post_send(&mut sim, wr::send(0, a.tx.sges(0, 8192)))
        .expect("post");
    a.post_send(&mut sim, wr::send(1, a.tx.sges(8192, 8192)))
        .expect("post");
    sim.run_for(Duration::from_micros(2));
    let sqd = QpAttr {
        qp_state: QpState::Sqd,
        ..QpAttr::default()
    };
    modify_qp(&mut sim, a.owner, a.qpn, &sqd, AttrMask::STATE).expect("rts to sqd");
    a.post_send(&mut sim, wr::send(2, a.tx.sges(16384, 8192)))
        .expect("posting in sqd is allowed");

    sim.run_for(Duration::from_millis(20));
    let events = sim.take_events(n0);
    assert!(
        events.contains(&DeviceEvent::SqDrained { qpn: a.qpn }),
        "drained event raised: {events:?}"
    );
    let received = b.poll_recv(&mut sim);
    let ids: Vec<u64> = received.iter().map(|w| w.wr_id).collect();
    assert!(ids.len() <= 2, "nothing new started in SQD: {ids:?}");
    assert!(received.iter().all(|w| w.status == WcStatus::Success));

    let rts = QpAttr {
        qp_state: QpState::Rts,
        ..QpAttr::default()
    };
    modify_qp(&mut sim, a.owner, a.qpn, &rts, AttrMask::STATE).expect("sqd to rts");
    let sends = a.expect_send(&mut sim, 3, DEADLINE);
    assert_eq!(
        sends
            .iter()
            .map(|w| (w.wr_id, w.status))
            .collect::<Vec<_>>(),
        [
            (0, WcStatus::Success),
            (1, WcStatus::Success),
            (2, WcStatus::Success)
        ]
    );
    let rest = b.expect_recv(&mut sim, 3 - ids.len(), DEADLINE);
    let all: Vec<u64> = ids
        .into_iter()
        .chain(rest.iter().map(|w| w.wr_id))
        .collect();
    assert_eq!(all, [0, 1, 2]);
}

#[test]
fn forbidden_transitions_change_nothing() {
    let mut sim = Sim::new(0x5eed);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    let (a, _b) = rc_pair(&mut sim, n0, n1, &RcOptions::default());
    let init = QpAttr {
        qp_state: QpState::Init,
        ..QpAttr::default()
    };
    let err = modify_qp(&mut sim, a.owner, a.qpn, &init, AttrMask::STATE).expect_err("rts to init");
    assert!(err.to_string().contains("no transition"), "{err}");
    assert_eq!(a.state(&sim), QpState::Rts);
    // A wrong current-state claim is refused too.
    let claim = QpAttr {
        qp_state: QpState::Rts,
        cur_qp_state: QpState::Rtr,
        ..QpAttr::default()
    };
    assert!(modify_qp(
        &mut sim,
        a.owner,
        a.qpn,
        &claim,
        AttrMask::STATE | AttrMask::CUR_STATE
    )
    .is_err());
    assert_eq!(a.state(&sim), QpState::Rts);
}
