//! The connection manager between agents on a virtual-time network with
//! loss, duplication and reordering of MADs: every connection that can be
//! made is made exactly once, every refusal reaches the application as
//! the kernel's RDMA CM reports it, and silence ends in a timeout after the
//! kernel's number of resends, never a hang.

mod common;

use std::time::Duration;

use common::*;
use migros_cm::msg::rej_reason;
use migros_cm::State;
use migros_proto::cm::{CmEvent, CmQpType};

const PORT: u16 = 7174;

fn lossy() -> Faults {
    Faults {
        drop: 0.2,
        duplicate: 0.15,
        reorder: 0.3,
        jitter: Duration::from_millis(3000),
    }
}

/// One connection, established and torn down, both ends' events exactly
/// once, over many seeds with loss, duplicates and reordering.
#[test]
fn connect_and_disconnect_survive_loss_duplication_and_reordering() {
    let mut total = FaultCounts::default();
    for seed in 0..200 {
        let mut net = Net::new(2, seed, lossy());
        net.listen(1, PORT, CmQpType::Rc);
        let conn = net.connect(0, 1, PORT, CmQpType::Rc, b"hello");
        // Long enough for the worst case: a duplicate REP answered with an
        // MRA, the RTU lost, the REP resent every 2^(24−8) ms.
        net.run_for(Duration::from_secs(1200));
        // Both ends are connected exactly once (the passive end when the
        // RTU arrives or is resent after a duplicate REP).
        assert_eq!(
            net.count(0, is_response),
            1,
            "seed {seed}: {:?}",
            net.nodes[0].events
        );
        assert_eq!(
            net.count(1, is_request),
            1,
            "seed {seed}: {:?}",
            net.nodes[1].events
        );
        let est = net.count(1, is_established);
        assert_eq!(est, 1, "seed {seed}: {:?}", net.nodes[1].events);
        // The request carried the private data after the RDMA CM header.
        let req = net.nodes[1]
            .events
            .iter()
            .find_map(|(_, e)| match e {
                CmEvent::ConnectRequest { info, .. } => Some(info.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(&req.private_data[..5], b"hello");
        assert_eq!(req.private_data.len(), 56);
        // The PSNs and QPNs cross over.
        let rep = net.nodes[0]
            .events
            .iter()
            .find_map(|(_, e)| match e {
                CmEvent::ConnectResponse { info, .. } => Some(info.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(rep.sq_psn, req.rq_psn, "seed {seed}");
        assert_eq!(rep.rq_psn, req.sq_psn, "seed {seed}");
        assert_eq!(&rep.private_data[..8], b"accepted");

        // Now the active side disconnects.
        let now = net.now;
        net.nodes[0]
            .agent
            .disconnect(now, OWNER, conn)
            .expect("disconnect");
        net.run_for(Duration::from_secs(200));
        for i in 0..2 {
            assert_eq!(
                net.count(i, is_disconnected),
                1,
                "seed {seed} node {i}: {:?}",
                net.nodes[i].events
            );
        }
        // The DREQ/DREP exchange finished: even a DREQ resent after a lost
        // DREP, past the passive side's time-wait, gets its DREP.
        assert_eq!(
            net.count(0, |e| matches!(e, CmEvent::Disconnected { status: 0, .. })),
            1,
            "seed {seed}: {:?}",
            net.nodes[0].events
        );
        for i in 0..2 {
            let tw = net.count(i, is_timewait_exit);
            assert!(tw <= 1, "seed {seed}");
        }
        total.sent += net.counts.sent;
        total.dropped += net.counts.dropped;
        total.duplicated += net.counts.duplicated;
        total.delayed += net.counts.delayed;
    }
    // The faults happened, many times.
    assert!(total.dropped > 100, "{total:?}");
    assert!(total.duplicated > 50, "{total:?}");
    assert!(total.delayed > 100, "{total:?}");
}

/// A REQ to a port nobody listens on gets a REJ "invalid service ID",
/// which the application sees as REJECTED with status 8 — also when the
/// REQ or the REJ is lost on the way (the REQ is resent).
#[test]
fn no_listener_is_rejected_with_reason_8() {
    let mut rejected_after_resend = 0;
    for seed in 0..50 {
        let mut net = Net::new(2, seed, lossy());
        net.connect(0, 1, PORT, CmQpType::Rc, &[]);
        net.run_for(Duration::from_secs(120));
        let ev: Vec<_> = net.nodes[0]
            .events
            .iter()
            .map(|(t, e)| (*t, e.clone()))
            .collect();
        assert_eq!(ev.len(), 1, "seed {seed}: {ev:?}");
        match &ev[0].1 {
            CmEvent::Rejected { reason, .. } => assert_eq!(*reason, rej_reason::INVALID_SERVICE_ID),
            e => panic!("seed {seed}: {e:?}"),
        }
        if ev[0].0.as_nanos() > 2_000_000_000 {
            rejected_after_resend += 1;
        }
        assert!(net.nodes[1].events.is_empty());
    }
    assert!(rejected_after_resend > 0, "no REQ or REJ was ever lost");
}

/// A peer that never answers: UNREACHABLE with −ETIMEDOUT after the
/// kernel's 1 + 15 sends, 6.144 s apart (2 × 2^(18−8) + 2^(20−8) ms).
#[test]
fn silence_ends_in_unreachable_after_fifteen_resends() {
    let mut net = Net::new(2, 1, Faults::default());
    net.nodes[1].deaf = true;
    let t0 = net.now;
    net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(300));
    let (t, ev) = net.nodes[0].events[0].clone();
    assert_eq!(
        ev,
        CmEvent::Unreachable {
            conn: ev.conn(),
            status: -110
        }
    );
    assert_eq!(net.counts.sent, 16);
    assert_eq!(
        t.saturating_duration_since(t0),
        Duration::from_millis(16 * 6144)
    );
    assert_eq!(net.nodes[0].events.len(), 1);
}

/// `rdma_reject` with private data: REJECTED with reason 28 and the data.
#[test]
fn application_reject_carries_reason_28_and_private_data() {
    for seed in 0..20 {
        let mut net = Net::new(2, seed, lossy());
        net.nodes[1].policy = Policy::Reject;
        net.listen(1, PORT, CmQpType::Rc);
        net.connect(0, 1, PORT, CmQpType::Rc, &[]);
        net.run_for(Duration::from_secs(120));
        let rej: Vec<_> = net.nodes[0]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                CmEvent::Rejected {
                    reason,
                    private_data,
                    ..
                } => Some((*reason, private_data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(rej.len(), 1, "seed {seed}: {:?}", net.nodes[0].events);
        assert_eq!(rej[0].0, rej_reason::CONSUMER_DEFINED);
        assert_eq!(&rej[0].1[..4], &[0xab; 4]);
        assert_eq!(rej[0].1.len(), 148);
        // A resent REQ after the reject is a new request (the kernel forgets
        // a rejected REQ); the active side reports one rejection only.
        assert!(net.count(0, is_response) == 0);
    }
}

/// Both sides connect to each other at once (each also listening): two
/// independent connections, each established once at both ends.
#[test]
fn both_sides_connecting_at_once() {
    for seed in 0..100 {
        let mut net = Net::new(2, seed, lossy());
        net.listen(0, 5000, CmQpType::Rc);
        net.listen(1, 6000, CmQpType::Rc);
        let a = net.connect(0, 1, 6000, CmQpType::Rc, b"a");
        let b = net.connect(1, 0, 5000, CmQpType::Rc, b"b");
        net.run_for(Duration::from_secs(120));
        for i in 0..2 {
            assert_eq!(net.count(i, is_response), 1, "seed {seed} node {i}");
            assert_eq!(net.count(i, is_request), 1, "seed {seed} node {i}");
            assert_eq!(net.count(i, is_established), 1, "seed {seed} node {i}");
        }
        assert_eq!(net.nodes[0].agent.state(a), Some(State::Established));
        assert_eq!(net.nodes[1].agent.state(b), Some(State::Established));
    }
}

/// Ten connections from one node to another's listener (as `ucmatose -c
/// 10`), all at once, with faults.
#[test]
fn many_connections_to_one_listener() {
    for seed in 0..30 {
        let mut net = Net::new(2, seed, lossy());
        net.listen(1, PORT, CmQpType::Rc);
        let conns: Vec<u32> = (0..10)
            .map(|_| net.connect(0, 1, PORT, CmQpType::Rc, &[]))
            .collect();
        net.run_for(Duration::from_secs(200));
        assert_eq!(net.count(0, is_response), 10, "seed {seed}");
        assert_eq!(net.count(1, is_request), 10, "seed {seed}");
        assert_eq!(net.count(1, is_established), 10, "seed {seed}");
        for c in conns {
            assert_eq!(net.nodes[0].agent.state(c), Some(State::Established));
        }
    }
}

/// An application slow to accept: the REQ is resent, the passive side
/// answers the duplicate with an MRA, the active side waits longer
/// instead of timing out, and the connection is made.
#[test]
fn slow_accept_is_covered_by_an_mra() {
    let mut net = Net::new(2, 5, Faults::default());
    net.nodes[1].policy = Policy::Accept {
        delay: Duration::from_secs(100),
    };
    net.listen(1, PORT, CmQpType::Rc);
    let conn = net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(7));
    // The REQ was resent once (after 6.144 s); the MRA moved the active
    // side on.
    assert_eq!(net.nodes[0].agent.state(conn), Some(State::MraReqRcvd));
    net.run_for(Duration::from_secs(120));
    assert_eq!(net.count(0, is_response), 1);
    assert_eq!(net.count(1, is_established), 1);
    // Without the MRA it would have given up after ~74 s.
    assert_eq!(
        net.count(0, |e| matches!(e, CmEvent::Unreachable { .. })),
        0
    );
}

/// UD: SIDR_REQ / SIDR_REP with faults; to no listener, "unsupported".
#[test]
fn sidr_resolves_and_reports_unsupported() {
    for seed in 0..50 {
        let mut net = Net::new(2, seed, lossy());
        net.listen(1, PORT, CmQpType::Ud);
        net.connect(0, 1, PORT, CmQpType::Ud, b"ud");
        net.connect(0, 1, PORT + 1, CmQpType::Ud, &[]);
        net.run_for(Duration::from_secs(120));
        let resolved: Vec<_> = net.nodes[0]
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                CmEvent::SidrResolved { qpn, qkey, .. } => Some((*qpn, *qkey)),
                _ => None,
            })
            .collect();
        assert_eq!(resolved.len(), 1, "seed {seed}: {:?}", net.nodes[0].events);
        assert_eq!(resolved[0].1, 0x0123_4567);
        assert_eq!(
            net.count(0, |e| matches!(e, CmEvent::Unreachable { status: 1, .. })),
            1,
            "seed {seed}: {:?}",
            net.nodes[0].events
        );
        assert_eq!(
            net.count(1, |e| matches!(e, CmEvent::SidrRequest { .. })),
            1,
            "seed {seed}: {:?}",
            net.nodes[1].events
        );
    }
}

/// The peer vanishes after the connection: the DREQ is resent, then the
/// initiator reports DISCONNECTED with −ETIMEDOUT.
#[test]
fn dreq_to_a_vanished_peer_times_out() {
    let mut net = Net::new(2, 9, Faults::default());
    net.listen(1, PORT, CmQpType::Rc);
    let conn = net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(5));
    assert_eq!(net.count(1, is_established), 1);
    net.nodes[1].deaf = true;
    let now = net.now;
    net.nodes[0].agent.disconnect(now, OWNER, conn).unwrap();
    net.run_for(Duration::from_secs(200));
    assert_eq!(
        net.count(0, |e| matches!(
            e,
            CmEvent::Disconnected { status: -110, .. }
        )),
        1
    );
    assert_eq!(net.count(0, is_timewait_exit), 1);
}

/// Destroying a connection tells the peer: a passive id destroyed before
/// accepting rejects (reason 28); an established one sends a DREQ.
#[test]
fn destroy_tells_the_peer() {
    let mut net = Net::new(2, 3, Faults::default());
    net.nodes[1].policy = Policy::Ignore;
    net.listen(1, PORT, CmQpType::Rc);
    net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(1));
    let pconn = net.nodes[1].events[0].1.conn();
    let now = net.now;
    net.nodes[1].agent.destroy(now, OWNER, pconn).unwrap();
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.count(0, |e| matches!(e, CmEvent::Rejected { reason: 28, .. })),
        1
    );

    let mut net = Net::new(2, 4, Faults::default());
    net.listen(1, PORT, CmQpType::Rc);
    let conn = net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(1));
    let now = net.now;
    net.nodes[0].agent.destroy(now, OWNER, conn).unwrap();
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.count(1, is_disconnected), 1);
    assert_eq!(net.nodes[0].agent.state(conn), None);
}

/// Both ends disconnect at the same moment: the DREQs cross, each side
/// reports DISCONNECTED once and both end in time-wait.
#[test]
fn simultaneous_disconnect() {
    for seed in 0..50 {
        let mut net = Net::new(2, seed, lossy());
        let (a, b) = net.connect_established(PORT, Duration::from_secs(100), seed);
        let now = net.now;
        net.nodes[0].agent.disconnect(now, OWNER, a).unwrap();
        net.nodes[1].agent.disconnect(now, OWNER, b).unwrap();
        net.run_for(Duration::from_secs(200));
        for i in 0..2 {
            assert_eq!(net.count(i, is_disconnected), 1, "seed {seed} node {i}");
        }
    }
}

/// Disconnect and destroy leave nothing behind: the agents end empty but
/// for the listener.
#[test]
fn nothing_leaks() {
    let mut net = Net::new(2, 11, lossy());
    net.listen(1, PORT, CmQpType::Rc);
    for _ in 0..5 {
        net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    }
    net.run_for(Duration::from_secs(120));
    let now = net.now;
    for i in 0..2 {
        let conns: Vec<u32> = net.nodes[i].events.iter().map(|(_, e)| e.conn()).collect();
        for c in conns {
            let _ = net.nodes[i].agent.destroy(now, OWNER, c);
        }
    }
    net.run_for(Duration::from_secs(200));
    net.nodes[0].agent.destroy_owner(net.now, OWNER);
    assert_eq!(net.nodes[0].agent.len(), (0, 0, 0));
    assert_eq!(net.nodes[1].agent.len().0, 0);
    net.nodes[1].agent.destroy_owner(net.now, OWNER);
    assert_eq!(net.nodes[1].agent.len(), (0, 0, 0));
}
