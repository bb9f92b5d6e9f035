//! A process's connections move to another node (live migration) while
//! its peer stays: the peer keeps sending the connection's MADs to the old
//! node, whose tombstones forward them; the new node answers the peer
//! directly. With loss, duplication and reordering, both ends still see a
//! clean disconnect, whichever side starts it.

mod common;

use std::time::Duration;

use common::*;
use migros_cm::State;
use migros_proto::cm::{CmEvent, CmQpType};

const PORT: u16 = 7174;

/// Node 0 connects to node 1's listener; node 1's process then moves to
/// node 2 (snapshot, restore, evict, forward). Returns the net and the
/// connection ids (active, passive).
fn connected_then_moved(seed: u64, faults: Faults) -> (Net, u32, u32) {
    let mut net = Net::new(3, seed, faults);
    let (a, p) = net.connect_established(PORT, Duration::from_secs(1200), seed);
    let now = net.now;
    let snap = net.nodes[1].agent.snapshot_owner(now, OWNER);
    // The image travels as JSON.
    let json = serde_json::to_string(&snap).unwrap();
    let snap: migros_cm::migrate::CmSnapshot = serde_json::from_str(&json).unwrap();
    net.nodes[2].agent.check_restore(&snap).unwrap();
    net.nodes[2].agent.restore_owner(now, OWNER, &snap).unwrap();
    let ids = net.nodes[1].agent.evict_owner(now, OWNER);
    assert_eq!(ids, vec![p]);
    let to = net.nodes[2].addr;
    net.nodes[1].agent.forward_tombstones(now, &ids, to);
    assert_eq!(net.nodes[2].agent.state(p), Some(State::Established));
    assert_eq!(net.nodes[1].agent.len(), (0, 0, 0));
    (net, a, p)
}

fn lossy() -> Faults {
    Faults {
        drop: 0.15,
        duplicate: 0.1,
        reorder: 0.3,
        jitter: Duration::from_millis(2000),
    }
}

#[test]
fn the_peer_disconnects_a_migrated_connection() {
    let mut forwarded = 0;
    for seed in 0..60 {
        let (mut net, a, p) = connected_then_moved(seed, lossy());
        let now = net.now;
        net.nodes[0].agent.disconnect(now, OWNER, a).unwrap();
        net.run_for(Duration::from_secs(300));
        assert_eq!(net.count(0, is_disconnected), 1, "seed {seed}");
        // The migrated process hears it on its new node, once.
        let on_new = net.nodes[2]
            .events
            .iter()
            .filter(|(_, e)| *e == CmEvent::Disconnected { conn: p, status: 0 })
            .count();
        assert_eq!(on_new, 1, "seed {seed}: {:?}", net.nodes[2].events);
        // The old node only forwarded.
        assert!(net.nodes[1].agent.counters.forwarded > 0, "seed {seed}");
        forwarded += net.nodes[1].agent.counters.forwarded;
        // The peer got its DREP from the new node: no DREQ timed out.
        assert_eq!(
            net.count(0, |e| matches!(
                e,
                CmEvent::Disconnected { status: -110, .. }
            )),
            0,
            "seed {seed}: {:?}",
            net.nodes[0].events
        );
    }
    assert!(forwarded >= 60);
}

#[test]
fn a_migrated_connection_disconnects_its_peer() {
    for seed in 0..60 {
        let (mut net, _a, p) = connected_then_moved(seed, lossy());
        let now = net.now;
        net.nodes[2].agent.disconnect(now, OWNER, p).unwrap();
        net.run_for(Duration::from_secs(300));
        assert_eq!(net.count(0, is_disconnected), 1, "seed {seed}");
        // The peer's DREP went to the old node and was forwarded.
        let clean = net.nodes[2]
            .events
            .iter()
            .filter(|(_, e)| *e == CmEvent::Disconnected { conn: p, status: 0 })
            .count();
        assert_eq!(clean, 1, "seed {seed}: {:?}", net.nodes[2].events);
        assert!(net.nodes[1].agent.counters.forwarded > 0, "seed {seed}");
    }
}

#[test]
fn the_listener_moves_and_accepts_on_the_new_node() {
    let (mut net, _, _) = connected_then_moved(3, Faults::default());
    // A new connection to the old node finds nobody listening there...
    net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    // ...and one to the new node is accepted by the moved process.
    net.connect(0, 2, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.count(0, |e| matches!(e, CmEvent::Rejected { reason: 8, .. })),
        1
    );
    assert_eq!(net.count(2, is_established), 1);
}

#[test]
fn a_restore_that_collides_is_refused_before_anything_changes() {
    let (mut net, _, p) = connected_then_moved(4, Faults::default());
    let now = net.now;
    let snap = net.nodes[2].agent.snapshot_owner(now, OWNER);
    assert!(net.nodes[2].agent.check_restore(&snap).is_err());
    assert!(net.nodes[2].agent.restore_owner(now, OWNER, &snap).is_err());
    assert_eq!(net.nodes[2].agent.state(p), Some(State::Established));
    let mut bad = snap.clone();
    bad.version = 99;
    assert!(net.nodes[0].agent.check_restore(&bad).is_err());
}

/// A snapshot damaged on its way (an edited or corrupt image) is refused
/// by the destination's agent with a reason, and nothing changes there.
#[test]
fn a_damaged_snapshot_is_refused_and_nothing_changes() {
    use migros_cm::migrate::{check_snapshot, BindSnap};
    use migros_proto::cm::PortSpace;
    let (mut net, _, _) = connected_then_moved(5, Faults::default());
    let now = net.now;
    let good = net.nodes[2].agent.snapshot_owner(now, OWNER);
    assert!(!good.conns.is_empty() && !good.listens.is_empty());
    check_snapshot(&good).unwrap();
    type Damage = Box<dyn Fn(&mut migros_cm::migrate::CmSnapshot)>;
    let damaged: Vec<(&str, Damage)> = vec![
        ("version", Box::new(|s| s.version = 2)),
        ("conn id 0", Box::new(|s| s.conns[0].local_id = 0)),
        (
            "conn id twice",
            Box::new(|s| {
                let c = s.conns[0].clone();
                s.conns.push(c);
            }),
        ),
        (
            "listener twice",
            Box::new(|s| {
                let l = s.listens[0].clone();
                s.listens.push(l);
            }),
        ),
        ("retries", Box::new(|s| s.conns[0].max_cm_retries = 200)),
        ("ack timeout", Box::new(|s| s.conns[0].av_timeout = 40)),
        ("timeout", Box::new(|s| s.conns[0].timeout_ms = u64::MAX)),
        (
            "time-wait",
            Box::new(|s| s.conns[0].timewait_left_ns = Some(u64::MAX)),
        ),
        (
            "short mad",
            Box::new(|s| {
                s.conns[0].retransmit = Some(migros_cm::migrate::RetransmitSnap {
                    mad: vec![1; 10],
                    left_ns: 1,
                    timeout_ns: 1,
                    retries_left: 1,
                    sends: 1,
                })
            }),
        ),
        (
            "two binds of one port",
            Box::new(|s| {
                for id in [0x7001, 0x7002] {
                    s.binds.push(BindSnap {
                        id,
                        ps: PortSpace::Tcp,
                        addr: None,
                        port: 9999,
                        reuse: false,
                    });
                }
            }),
        ),
    ];
    // Node 0 has its own connection; its agent must not change.
    let before = net.nodes[0].agent.len();
    for (what, damage) in damaged {
        let mut bad = good.clone();
        damage(&mut bad);
        let e = net.nodes[0]
            .agent
            .restore_owner(now, OWNER + 1, &bad)
            .expect_err(what);
        assert!(!e.to_string().is_empty(), "{what}");
        assert_eq!(net.nodes[0].agent.len(), before, "{what}");
        // The port of the refused bindings is still free.
        net.nodes[0]
            .agent
            .bind(OWNER + 2, PortSpace::Tcp, None, 9999, false)
            .map(|(b, _)| net.nodes[0].agent.unbind(OWNER + 2, b).unwrap())
            .unwrap_or_else(|e| panic!("{what}: port 9999 left bound: {e}"));
    }
}

/// Moves node 1's process to node 2 as the daemon does with CRIU: the
/// owner is held from the checkpoint on, `between` runs while the process
/// is frozen (MADs arriving then are kept), then restore, evict, forward.
fn checkpoint_and_move(net: &mut Net, between: Duration) -> Vec<u32> {
    net.nodes[1].agent.hold_owner(OWNER);
    let now = net.now;
    let snap = net.nodes[1].agent.snapshot_owner(now, OWNER);
    net.run_for(between);
    let now = net.now;
    net.nodes[2].agent.restore_owner(now, OWNER, &snap).unwrap();
    let ids = net.nodes[1].agent.evict_owner(now, OWNER);
    let to = net.nodes[2].addr;
    net.nodes[1].agent.forward_tombstones(now, &ids, to);
    ids
}

/// A DREQ that reaches the old node between the checkpoint and the move is
/// kept and handled on the new node: the process hears DISCONNECTED there,
/// and the peer its DREP from there (no DREQ timeout).
#[test]
fn a_dreq_during_the_checkpoint_is_delivered_on_the_new_node() {
    for seed in 0..40 {
        let mut net = Net::new(3, seed, lossy());
        let (a, p) = net.connect_established(PORT, Duration::from_secs(1200), seed);
        net.nodes[1].agent.hold_owner(OWNER);
        let now = net.now;
        let snap = net.nodes[1].agent.snapshot_owner(now, OWNER);
        net.nodes[0].agent.disconnect(now, OWNER, a).unwrap();
        net.run_for(Duration::from_secs(2));
        // Held: the frozen process's state stays what the image took.
        assert_eq!(net.count(1, is_disconnected), 0, "seed {seed}");
        assert_eq!(net.nodes[1].agent.state(p), Some(State::Established));
        let now = net.now;
        net.nodes[2].agent.restore_owner(now, OWNER, &snap).unwrap();
        let ids = net.nodes[1].agent.evict_owner(now, OWNER);
        let to = net.nodes[2].addr;
        net.nodes[1].agent.forward_tombstones(now, &ids, to);
        net.run_for(Duration::from_secs(300));
        let on_new = net.nodes[2]
            .events
            .iter()
            .filter(|(_, e)| *e == CmEvent::Disconnected { conn: p, status: 0 })
            .count();
        assert_eq!(on_new, 1, "seed {seed}: {:?}", net.nodes[2].events);
        assert_eq!(net.count(0, is_disconnected), 1, "seed {seed}");
        assert_eq!(
            net.count(0, |e| matches!(
                e,
                CmEvent::Disconnected { status: -110, .. }
            )),
            0,
            "seed {seed}"
        );
    }
}

/// The moving process connects; the peer's REP arrives while it is frozen:
/// kept, forwarded, and the connection completes from the new node.
#[test]
fn a_rep_during_the_checkpoint_is_delivered_on_the_new_node() {
    for seed in 0..40 {
        let mut net = Net::new(3, seed, Faults::default());
        net.nodes[0].policy = Policy::Accept {
            delay: Duration::from_millis(500),
        };
        net.listen(0, PORT, CmQpType::Rc);
        let c = net.connect(1, 0, PORT, CmQpType::Rc, &[]);
        net.run_for(Duration::from_millis(100));
        assert_eq!(net.count(0, is_request), 1);
        checkpoint_and_move(&mut net, Duration::from_secs(2));
        assert_eq!(net.count(1, is_response), 0, "seed {seed}");
        net.run_for(Duration::from_secs(60));
        let on_new = net.nodes[2]
            .events
            .iter()
            .filter(|(_, e)| matches!(e, CmEvent::ConnectResponse { conn, .. } if *conn == c))
            .count();
        assert_eq!(on_new, 1, "seed {seed}: {:?}", net.nodes[2].events);
        assert_eq!(net.count(0, is_established), 1, "seed {seed}");
        assert_eq!(net.nodes[2].agent.state(c), Some(State::Established));
    }
}

/// A REQ to the moving process's listener while it is frozen: handled on
/// the old node if the checkpoint rolls back; refused at once (no listener
/// at that address any more) if it commits, so the client does not wait
/// out its REQ's resends.
#[test]
fn a_req_to_a_frozen_listener_is_kept_until_the_checkpoint_ends() {
    // Rolled back: the process accepts it on the old node.
    let mut net = Net::new(3, 11, Faults::default());
    net.listen(1, PORT, CmQpType::Rc);
    net.nodes[1].agent.hold_owner(OWNER);
    net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.count(1, is_request), 0);
    let now = net.now;
    net.nodes[1].agent.release_owner(now, OWNER);
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.count(1, is_established), 1);
    assert_eq!(net.count(0, is_response), 1);
    // Committed: the client is told at once.
    let mut net = Net::new(3, 12, Faults::default());
    net.listen(1, PORT, CmQpType::Rc);
    net.nodes[1].agent.hold_owner(OWNER);
    net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_millis(100));
    let now = net.now;
    let snap = net.nodes[1].agent.snapshot_owner(now, OWNER);
    net.nodes[2].agent.restore_owner(now, OWNER, &snap).unwrap();
    net.nodes[1].agent.evict_owner(now, OWNER);
    net.run_for(Duration::from_millis(100));
    assert_eq!(
        net.count(0, |e| matches!(e, CmEvent::Rejected { reason: 8, .. })),
        1
    );
    // A new client of the new node is accepted there.
    net.connect(0, 2, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.count(2, is_established), 1);
}

/// The process moves before it accepted a connection request: the peer's
/// resent REQs (which name only the peer's comm ID) reach the old node's
/// tombstone and are forwarded, so the peer waits (MRA) instead of being
/// refused, and the accept on the new node completes the connection.
#[test]
fn a_request_accepted_after_the_move_completes() {
    let mut net = Net::new(3, 13, Faults::default());
    net.nodes[1].policy = Policy::Ignore;
    net.listen(1, PORT, CmQpType::Rc);
    let a = net.connect(0, 1, PORT, CmQpType::Rc, &[]);
    net.run_for(Duration::from_millis(100));
    let p = net.nodes[1]
        .events
        .iter()
        .find_map(|(_, e)| match e {
            CmEvent::ConnectRequest { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    checkpoint_and_move(&mut net, Duration::ZERO);
    // The peer resends its REQ (about every 6 s) to the old node.
    net.run_for(Duration::from_secs(10));
    assert!(net.nodes[1].agent.counters.forwarded > 0);
    assert_eq!(net.count(0, |e| matches!(e, CmEvent::Rejected { .. })), 0);
    let now = net.now;
    net.nodes[2]
        .agent
        .accept(
            now,
            OWNER,
            p,
            &migros_proto::cm::AcceptParams {
                qpn: 0x51_0000,
                responder_resources: 4,
                initiator_depth: 4,
                flow_control: true,
                rnr_retry_count: 7,
                srq: false,
                qkey: 0,
                private_data: Vec::new(),
            },
        )
        .unwrap();
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.count(0, is_response), 1);
    assert_eq!(net.count(2, is_established), 1);
    assert_eq!(net.nodes[0].agent.state(a), Some(State::Established));
    assert_eq!(net.nodes[2].agent.state(p), Some(State::Established));
}

/// Tombstones do not live for ever: an unforwarded one (the migration
/// never finished) goes after `CM_TOMBSTONE_TTL`; a forwarded one of a
/// connection still up stays (its peer's DREQ must still reach the new
/// node, hours later) and goes `CM_TOMBSTONE_TTL` after the connection
/// ended. Each counts in `tombstones_dropped`, and the agent's timer
/// stops once none is left.
#[test]
fn cm_tombstones_expire_once_nobody_needs_them() {
    use migros_cm::tombstone::{CM_TOMBSTONE_LIVE_TTL, CM_TOMBSTONE_TTL};
    // Never forwarded.
    let mut net = Net::new(3, 21, Faults::default());
    net.connect_established(PORT, Duration::from_secs(10), 21);
    let now = net.now;
    let ids = net.nodes[1].agent.evict_owner(now, OWNER);
    assert_eq!(ids.len(), 1);
    net.run_for(CM_TOMBSTONE_TTL - Duration::from_secs(1));
    assert_eq!(net.nodes[1].agent.tombstone_count(), 1);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.nodes[1].agent.tombstone_count(), 0);
    assert_eq!(net.nodes[1].agent.counters.tombstones_dropped, 1);
    assert_eq!(net.nodes[1].agent.poll_timeout(), None);

    // Forwarded, the connection up for hours, then the peer disconnects.
    let (mut net, a, p) = connected_then_moved(22, Faults::default());
    net.run_for(Duration::from_secs(3 * 3600));
    assert_eq!(net.nodes[1].agent.tombstone_count(), 1);
    let now = net.now;
    net.nodes[0].agent.disconnect(now, OWNER, a).unwrap();
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.count(2, |e| *e == CmEvent::Disconnected { conn: p, status: 0 }),
        1
    );
    net.run_for(CM_TOMBSTONE_TTL);
    assert_eq!(net.nodes[1].agent.tombstone_count(), 0);
    assert_eq!(net.nodes[1].agent.counters.tombstones_dropped, 1);

    // Forwarded and never heard of again: gone after the long TTL.
    let (mut net, _, _) = connected_then_moved(23, Faults::default());
    net.run_for(CM_TOMBSTONE_LIVE_TTL + Duration::from_secs(1));
    assert_eq!(net.nodes[1].agent.tombstone_count(), 0);
    assert_eq!(net.nodes[1].agent.poll_timeout(), None);
}
