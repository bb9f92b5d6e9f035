//! Asynchronous events and completion notification: SRQ limit, last WQE
//! reached, communication established, CQ arming (next and solicited
//! completions), CQ overrun; SRQ and CQ resizing; and each one across a
//! migration (an armed limit or CQ fires exactly once, on the new node).

use std::time::Duration;

use migros_sim::support::{
    create_cq, modify_qp, rc_pair, rc_pair_on_srq, rc_pair_receiver_rtr, srq_host, wr, Endpoint,
    RcOptions, SrqHost,
};
use migros_sim::{Action, Filter, NodeId, Rule, Sim};
use migros_transport::{
    Arm, AttrMask, DeviceEvent, QpAttr, QpState, SendFlags, SrqAttr, VerbsError, WcStatus,
};

const DEADLINE: Duration = Duration::from_secs(10);
const DOWNTIME: Duration = Duration::from_millis(2);

fn nodes(seed: u64, k: usize) -> (Sim, Vec<NodeId>) {
    let mut sim = Sim::new(seed);
    let n = (0..k).map(|_| sim.add_node()).collect();
    (sim, n)
}

fn count(sim: &Sim, node: NodeId, want: DeviceEvent) -> usize {
    sim.events(node).iter().filter(|e| **e == want).count()
}

/// `client` sends `n` small messages to the SRQ of `host`, which takes them.
fn consume(sim: &mut Sim, host: &SrqHost, client: &Endpoint, n: usize, first_id: u64) {
    for i in 0..n as u64 {
        let w = wr::send(first_id + i, client.tx.sges(0, 16));
        client.post_send(sim, w).expect("posted");
    }
    host.expect_recv(sim, n, DEADLINE);
    client.expect_send(sim, n, DEADLINE);
}

#[test]
fn an_armed_srq_limit_fires_once_on_the_node_the_srq_moved_to() {
    let (mut sim, n) = nodes(0x5400, 3);
    let host = srq_host(&mut sim, n[0], 16, 0, 64 * 1024);
    let (_server, client) = rc_pair_on_srq(&mut sim, &host, n[1], &RcOptions::default());
    for i in 0..8 {
        host.recv(&mut sim, i, i as usize * 256, 256);
    }
    let node = host.node(&sim);
    let srq = host.srq;
    sim.with_device(node, |d, _, _| d.modify_srq(srq, None, Some(5)))
        .expect("armed");
    consume(&mut sim, &host, &client, 3, 0); // 8 → 5: not below 5
    let fired = DeviceEvent::SrqLimitReached { srq };
    assert_eq!(count(&sim, n[0], fired), 0);

    sim.migrate_owner(host.owner, n[0], n[2], DOWNTIME)
        .expect("migrated");
    let attr = sim.device(n[2]).query_srq(srq).expect("srq");
    assert_eq!(
        attr,
        SrqAttr {
            max_wr: 16,
            limit: 5
        },
        "the limit is still armed"
    );
    assert_eq!(sim.device(n[2]).srq_outstanding(srq), Some(5));

    consume(&mut sim, &host, &client, 1, 10); // 5 → 4: below
    assert_eq!(count(&sim, n[2], fired), 1);
    assert_eq!(count(&sim, n[0], fired), 0);
    assert_eq!(
        sim.device(n[2]).query_srq(srq).expect("srq").limit,
        0,
        "disarmed"
    );
    consume(&mut sim, &host, &client, 2, 20);
    assert_eq!(count(&sim, n[2], fired), 1, "once");
}

#[test]
fn srq_modify_checks_are_rxes() {
    let (mut sim, n) = nodes(0x5410, 1);
    let host = srq_host(&mut sim, n[0], 8, 0, 4096);
    for i in 0..4 {
        host.recv(&mut sim, i, 0, 16);
    }
    let srq = host.srq;
    let mut modify =
        |max_wr, limit| sim.with_device(n[0], |d, _, _| d.modify_srq(srq, max_wr, limit));
    let invalid = |r: Result<(), VerbsError>| matches!(r, Err(VerbsError::InvalidArgument(_)));
    assert!(invalid(modify(None, Some(9))), "a limit above the size");
    assert!(invalid(modify(Some(3), None)), "smaller than what it holds");
    assert!(invalid(modify(Some(0), None)));
    modify(Some(32), Some(20)).expect("grow and arm");
    assert!(invalid(modify(Some(16), None)), "below the armed limit");
    modify(None, Some(0)).expect("disarm");
    modify(Some(16), None).expect("shrink to what it holds or more");
    let attr = sim.device(n[0]).query_srq(srq).expect("srq");
    assert_eq!(
        attr,
        SrqAttr {
            max_wr: 16,
            limit: 0
        }
    );
}

#[test]
fn last_wqe_reached_when_a_qp_on_an_srq_fails_or_is_moved_to_error() {
    let (mut sim, n) = nodes(0x5420, 3);
    let host = srq_host(&mut sim, n[0], 16, 0, 64 * 1024);
    let (server, client) = rc_pair_on_srq(&mut sim, &host, n[1], &RcOptions::default());
    // Moved to ERR by its owner, after a migration.
    sim.migrate_owner(host.owner, n[0], n[2], DOWNTIME)
        .expect("migrated");
    let attr = QpAttr {
        qp_state: QpState::Err,
        ..QpAttr::default()
    };
    modify_qp(&mut sim, host.owner, server.qpn, &attr, AttrMask::STATE).expect("to err");
    let last = DeviceEvent::LastWqeReached { qpn: server.qpn };
    assert_eq!(count(&sim, n[2], last), 1);
    // A QP without an SRQ raises none.
    assert!(!sim
        .events(n[1])
        .iter()
        .any(|e| matches!(e, DeviceEvent::LastWqeReached { .. })));
    let _ = client;

    // Failed by a refused request: QP_REQ_ERR, then LAST_WQE_REACHED.
    let (mut sim, n) = nodes(0x5421, 2);
    let host = srq_host(&mut sim, n[0], 16, 0, 64 * 1024);
    let opts = RcOptions {
        access: migros_transport::Access::default(),
        ..RcOptions::default()
    };
    let (server, client) = rc_pair_on_srq(&mut sim, &host, n[1], &opts);
    let w = wr::write(1, client.tx.sges(0, 8), host.rx.at(0), host.rx.rkey);
    client.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        client.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::RemInvReqErr
    );
    let events = sim.events(n[0]).to_vec();
    let req = events
        .iter()
        .position(|e| *e == DeviceEvent::QpRequestError { qpn: server.qpn });
    let last = events
        .iter()
        .position(|e| *e == DeviceEvent::LastWqeReached { qpn: server.qpn });
    assert!(
        matches!((req, last), (Some(r), Some(l)) if r < l),
        "{events:?}"
    );
}

#[test]
fn comm_established_once_when_an_rtr_qp_hears_its_partner() {
    let (mut sim, n) = nodes(0x5430, 3);
    let (a, b) = rc_pair_receiver_rtr(&mut sim, n[0], n[1], &RcOptions::default());
    let est = DeviceEvent::CommEstablished { qpn: b.qpn };
    assert_eq!(count(&sim, n[1], est), 0, "nothing heard yet");
    for i in 0..3 {
        b.recv(&mut sim, i, 0, 64);
        a.post_send(&mut sim, wr::send(i, a.tx.sges(0, 16)))
            .expect("posted");
        b.expect_recv(&mut sim, 1, DEADLINE);
    }
    assert_eq!(count(&sim, n[1], est), 1);
    // Raised once per QP: not again on its new node.
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    b.recv(&mut sim, 9, 0, 64);
    a.post_send(&mut sim, wr::send(9, a.tx.sges(0, 16)))
        .expect("posted");
    b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(count(&sim, n[2], est), 0);
    // RTS QPs (a) never raise it.
    assert!(!sim
        .events(n[0])
        .iter()
        .any(|e| matches!(e, DeviceEvent::CommEstablished { .. })));
}

fn arm(sim: &mut Sim, ep: &Endpoint, solicited_only: bool) -> bool {
    let (node, cq) = (ep.node(sim), ep.recv_cq);
    sim.with_device(node, |d, _, _| d.req_notify_cq(cq, solicited_only))
        .expect("armed")
}

fn notified(sim: &Sim, ep: &Endpoint) -> usize {
    count(sim, ep.node(sim), DeviceEvent::CqNotify { cq: ep.recv_cq })
}

fn send(sim: &mut Sim, a: &Endpoint, b: &Endpoint, wr_id: u64, solicited: bool) {
    b.recv(sim, wr_id, 0, 64);
    let mut w = wr::send(wr_id, a.tx.sges(0, 16));
    if solicited {
        w.flags = w.flags | SendFlags::SOLICITED;
    }
    a.post_send(sim, w).expect("posted");
    b.expect_recv(sim, 1, DEADLINE);
}

#[test]
fn solicited_arming_waits_for_a_solicited_completion() {
    let (mut sim, n) = nodes(0x5440, 2);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    assert!(!arm(&mut sim, &b, true), "empty: no missed events");
    send(&mut sim, &a, &b, 1, false);
    send(&mut sim, &a, &b, 2, false);
    assert_eq!(
        notified(&sim, &b),
        0,
        "unsolicited completions do not notify"
    );
    send(&mut sim, &a, &b, 3, true);
    assert_eq!(notified(&sim, &b), 1);
    send(&mut sim, &a, &b, 4, true);
    assert_eq!(notified(&sim, &b), 1, "disarmed after notifying");
    // Arming for any completion wins over solicited only.
    arm(&mut sim, &b, true);
    arm(&mut sim, &b, false);
    send(&mut sim, &a, &b, 5, false);
    assert_eq!(notified(&sim, &b), 2);
}

#[test]
fn a_completion_in_error_satisfies_solicited_arming() {
    let (mut sim, n) = nodes(0x5450, 2);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    b.recv(&mut sim, 1, 0, 64);
    arm(&mut sim, &b, true);
    let attr = QpAttr {
        qp_state: QpState::Err,
        ..QpAttr::default()
    };
    modify_qp(&mut sim, b.owner, b.qpn, &attr, AttrMask::STATE).expect("to err");
    let wc = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(wc[0].status, WcStatus::WrFlushErr);
    assert_eq!(notified(&sim, &b), 1);
    let _ = a;
}

#[test]
fn an_armed_cq_stays_armed_across_a_migration_and_fires_once() {
    let (mut sim, n) = nodes(0x5460, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    arm(&mut sim, &b, true);
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    assert_eq!(sim.device(n[2]).cq_arm(b.recv_cq), Some(Arm::Solicited));
    send(&mut sim, &a, &b, 1, false);
    assert_eq!(notified(&sim, &b), 0);
    send(&mut sim, &a, &b, 2, true);
    assert_eq!(notified(&sim, &b), 1);
    assert_eq!(
        count(&sim, n[1], DeviceEvent::CqNotify { cq: b.recv_cq }),
        0
    );
    assert_eq!(sim.device(n[2]).cq_arm(b.recv_cq), Some(Arm::Disarmed));
}

#[test]
fn a_cq_overrun_raises_cq_error_once_and_resizing_is_checked() {
    let (mut sim, n) = nodes(0x5470, 2);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    let small = create_cq(&mut sim, b.owner, 2);
    let node = b.node(&sim);
    // Resizing below what the CQ holds is refused; growing works.
    let (cq, big) = (b.recv_cq, 8192);
    sim.with_device(node, |d, _, _| d.resize_cq(cq, big))
        .expect("grow");
    assert!(sim
        .with_device(node, |d, _, _| d.resize_cq(small, 0))
        .is_err());
    // Fill the receive CQ of b to 1 with a CQ of capacity 1: the second
    // completion overruns.
    sim.with_device(node, |d, _, _| d.resize_cq(cq, 1))
        .expect("shrink an empty cq");
    for i in 0..2 {
        b.recv(&mut sim, i, 0, 64);
        a.post_send(&mut sim, wr::send(i, a.tx.sges(0, 16)))
            .expect("posted");
    }
    a.expect_send(&mut sim, 2, DEADLINE);
    assert_eq!(count(&sim, node, DeviceEvent::CqError { cq }), 1);
    let r = sim.with_device(node, |d, _, _| d.resize_cq(cq, 0));
    assert!(r.is_err());
}

#[test]
fn sq_drained_after_a_migration_in_sqd() {
    let (mut sim, n) = nodes(0x5480, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    b.recv(&mut sim, 1, 0, 64);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 16)))
        .expect("posted");
    let attr = QpAttr {
        qp_state: QpState::Sqd,
        ..QpAttr::default()
    };
    modify_qp(&mut sim, a.owner, a.qpn, &attr, AttrMask::STATE).expect("to sqd");
    sim.migrate_owner(a.owner, n[0], n[2], DOWNTIME)
        .expect("migrated");
    a.expect_send(&mut sim, 1, DEADLINE);
    let drained = DeviceEvent::SqDrained { qpn: a.qpn };
    assert_eq!(count(&sim, n[2], drained) + count(&sim, n[0], drained), 1);
}

#[test]
fn the_srq_limit_counts_messages_not_packets_on_a_faulty_network() {
    // Duplicated and reordered packets must not take extra receives: the
    // limit fires once, when the last message below it arrives.
    for (seed, fault) in [
        (0x5490, Action::Duplicate { probability: 0.3 }),
        (
            0x5491,
            Action::Reorder {
                probability: 0.2,
                delay: Duration::from_micros(30),
            },
        ),
        (0x5492, Action::Drop { probability: 0.1 }),
    ] {
        let (mut sim, n) = nodes(seed, 3);
        let host = srq_host(&mut sim, n[0], 32, 0, 64 * 1024);
        let (_server, client) = rc_pair_on_srq(&mut sim, &host, n[1], &RcOptions::default());
        sim.add_rule(Rule::new(Filter::any(), fault));
        for i in 0..20 {
            host.recv(&mut sim, i, i as usize * 1024, 1024);
        }
        let srq = host.srq;
        sim.with_device(n[0], |d, _, _| d.modify_srq(srq, None, Some(6)))
            .expect("armed");
        consume(&mut sim, &host, &client, 10, 0); // 20 → 10
        sim.migrate_owner(host.owner, n[0], n[2], DOWNTIME)
            .expect("migrated");
        consume(&mut sim, &host, &client, 4, 10); // 10 → 6: not below
        let fired = DeviceEvent::SrqLimitReached { srq };
        assert_eq!(count(&sim, n[2], fired), 0, "{seed:#x}");
        consume(&mut sim, &host, &client, 1, 20); // 6 → 5
        assert_eq!(count(&sim, n[2], fired), 1, "{seed:#x}");
        assert_eq!(sim.device(n[2]).srq_outstanding(srq), Some(5), "{seed:#x}");
    }
}

#[test]
fn freed_queues_are_reported_once_their_wrs_complete_signalled_or_not() {
    let (mut sim, n) = nodes(0x54a0, 2);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    let take = |sim: &mut Sim, node| sim.with_device(node, |d, _, _| d.take_freed());
    take(&mut sim, n[0]);
    take(&mut sim, n[1]);
    b.recv(&mut sim, 1, 0, 64);
    let mut w = wr::send(1, a.tx.sges(0, 16));
    w.flags = SendFlags::default(); // unsignalled: no completion tells
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(sim.device(n[0]).qp_outstanding(a.qpn), Some((1, 0)));
    b.expect_recv(&mut sim, 1, DEADLINE);
    sim.run_for(Duration::from_millis(1));
    assert_eq!(sim.device(n[0]).qp_outstanding(a.qpn), Some((0, 0)));
    assert_eq!(take(&mut sim, n[0]), (vec![a.qpn], vec![]));
    assert_eq!(take(&mut sim, n[1]), (vec![b.qpn], vec![]));
    assert_eq!(take(&mut sim, n[0]), (vec![], vec![]), "once");

    // An SRQ frees a slot when a QP takes a receive from it.
    let host = srq_host(&mut sim, n[0], 8, 0, 64 * 1024);
    let (_server, client) = rc_pair_on_srq(&mut sim, &host, n[1], &RcOptions::default());
    host.recv(&mut sim, 1, 0, 64);
    take(&mut sim, n[0]);
    consume(&mut sim, &host, &client, 1, 0);
    let (_, srqs) = take(&mut sim, n[0]);
    assert_eq!(srqs, [host.srq]);
}
