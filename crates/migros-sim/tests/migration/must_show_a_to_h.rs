//! The must-show items a to h: a receiver in RTR, a sender, a READ, atomics,
//! both ends, a pause without retries, a partner that never returns, the
//! tombstone's pause NAK.

use super::*;

// ---- a: a receiver left in RTR ----

#[test]
fn a_receiver_of_one_way_send_stream_migrates_from_rtr() {
    let (mut sim, n, opts) = setup(0x3100, 3);
    let (a, b) = rc_pair_receiver_rtr(&mut sim, n[0], n[1], &opts);
    assert_eq!(b.state(&sim), QpState::Rtr);
    let s = stream_under_way(&mut sim, &a, &b, 64, 11, 40);
    let report = sim
        .migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    assert_eq!(report.qpns, [b.qpn]);
    assert_eq!(b.state(&sim), QpState::Rtr, "restored in RTR");
    finish_stream(&mut sim, &a, &b, &s);
    assert_eq!(b.state(&sim), QpState::Rtr, "never moved to RTS");
    assert_eq!(mig_state(&sim, &b), MigrationState::Running);
    assert_eq!(mig_state(&sim, &a), MigrationState::Running);
    assert!(counters(&sim, &b).resumes >= 1, "the RTR QP sent RESUME");
    assert_eq!(
        a.query(&sim).expect("qp").dest_addr,
        Some(sim.addr(n[2])),
        "the RESUME from RTR moved the sender"
    );
}

// ---- b: the sender migrates ----

#[test]
fn b_sender_migrates() {
    let (mut sim, n, a, b) = rc_setup(0x3010, 3);
    let s = stream_under_way(&mut sim, &a, &b, 64, 2, 40);
    sim.migrate_owner(a.owner, n[0], n[2], DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    let attr = b.query(&sim).expect("qp exists");
    assert_eq!(
        attr.dest_addr,
        Some(sim.addr(n[2])),
        "RESUME moved the peer"
    );
}

// ---- c: a 1 MiB READ in flight ----

/// A 1 MiB READ from `b` to `a`; `who` (0: requester, 1: responder) is
/// migrated while the responses stream in.
fn read_1mib_across_migration(seed: u64, who: usize) {
    let (mut sim, n, _) = setup(seed, 3);
    let opts = RcOptions {
        mtu: Mtu::Mtu4096,
        buf_len: MIB,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let src = b.fill_rx(&mut sim, 0, MIB, seed);
    a.post_send(
        &mut sim,
        wr::read(7, a.tx.sges(0, MIB), b.rx.at(0), b.rx.rkey),
    )
    .expect("posted");
    sim.run_for(Duration::from_micros(300));
    // 256 responses of 4 KiB: some arrived, most did not.
    assert_mid_stream(&sim, &a, 256);
    let (ep, from) = if who == 0 { (&a, n[0]) } else { (&b, n[1]) };
    sim.migrate_owner(ep.owner, from, n[2], DOWNTIME)
        .expect("migrated");
    let c = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(
        (c[0].wr_id, c[0].status, c[0].opcode, c[0].byte_len as usize),
        (7, WcStatus::Success, WcOpcode::RdmaRead, MIB)
    );
    assert_buf_eq(&sim, &a.tx, 0, &src);
    assert_buf_eq(&sim, &b.rx, 0, &src);
    assert_no_completion(&mut sim, a.owner, a.send_cq, Duration::from_millis(20));
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::ZERO);
}

#[test]
fn c_migration_during_1mib_read() {
    read_1mib_across_migration(0x3200, 0);
}

#[test]
fn c_migration_during_1mib_read_of_the_responder() {
    read_1mib_across_migration(0x3210, 1);
}

// ---- d: atomics execute exactly once ----

/// One atomic of a chain and what the reference model expects of it.
struct AtomicStep {
    /// The value it must return (the target's value before it ran).
    before: u64,
    /// The target's value after it ran.
    after: u64,
}

/// Posts a chain of `n` atomics on one 8-byte target of `b` (FETCH_ADD
/// with distinct addends, CMP_SWAP that hit and CMP_SWAP that miss) and
/// returns the model: each step's expected result and the value after it.
fn post_atomic_chain(
    sim: &mut Sim,
    a: &Endpoint,
    b: &Endpoint,
    target_off: usize,
    n: usize,
    init: u64,
) -> Vec<AtomicStep> {
    sim.write_mem(b.owner, b.rx.at(target_off), &init.to_le_bytes());
    let target = b.rx.at(target_off);
    let mut v = init;
    let mut model = Vec::new();
    for i in 0..n {
        let result = a.tx.sge(8 * i, 8);
        let before = v;
        let w = match i % 4 {
            3 => {
                // A compare that misses: returns the value, changes nothing.
                wr::cmp_swap(i as u64, result, target, b.rx.rkey, v ^ 1, 0xdead)
            }
            2 => {
                let swap = v.rotate_left(7) ^ (i as u64);
                v = swap;
                wr::cmp_swap(i as u64, result, target, b.rx.rkey, before, swap)
            }
            _ => {
                let add = (1u64 << (i % 48)) + i as u64;
                v = v.wrapping_add(add);
                wr::fetch_add(i as u64, result, target, b.rx.rkey, add)
            }
        };
        a.post_send(sim, w).expect("posted");
        model.push(AtomicStep { before, after: v });
    }
    model
}

/// Checks every completion and returned value of the chain, and the target.
fn check_atomic_chain(
    sim: &mut Sim,
    a: &Endpoint,
    b: &Endpoint,
    target_off: usize,
    model: &[AtomicStep],
) {
    let c = a.expect_send(sim, model.len(), DEADLINE);
    for (i, (wc, step)) in c.iter().zip(model).enumerate() {
        let op = if i % 4 >= 2 {
            WcOpcode::CompSwap
        } else {
            WcOpcode::FetchAdd
        };
        assert_eq!(
            (wc.wr_id, wc.status, wc.opcode),
            (i as u64, WcStatus::Success, op)
        );
        let got = sim.read_mem(a.owner, a.tx.at(8 * i), 8);
        assert_eq!(
            got,
            step.before.to_le_bytes(),
            "atomic {i} saw the value left by exactly the atomics before it"
        );
    }
    let last = model.last().map_or(0, |s| s.after);
    assert_eq!(
        sim.read_mem(b.owner, b.rx.at(target_off), 8),
        last.to_le_bytes(),
        "each atomic executed exactly once"
    );
    assert_no_completion(sim, a.owner, a.send_cq, Duration::from_millis(20));
}

#[test]
fn d_atomics_across_migration_execute_once() {
    for (seed, loss) in [(0x3300, 0.0), (0x3301, 0.05), (0x3302, 0.15)] {
        let (mut sim, n, a, b) = rc_setup(seed, 3);
        if loss > 0.0 {
            sim.add_rule(Rule::drop(Filter::any(), loss));
        }
        let init = 0x0123_4567_89ab_cdef;
        let model = post_atomic_chain(&mut sim, &a, &b, 0, 64, init);
        sim.run_for(Duration::from_micros(30));
        // Mid-chain: the target holds the value after a strict prefix.
        let now = u64::from_le_bytes(
            sim.read_mem(b.owner, b.rx.at(0), 8)
                .try_into()
                .expect("8 bytes"),
        );
        let done = model.iter().position(|s| s.before == now);
        assert!(
            done.is_some_and(|k| k > 0),
            "seed {seed:#x}: migration should come mid-chain (target {now:#x})"
        );
        sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
            .expect("migrated");
        check_atomic_chain(&mut sim, &a, &b, 0, &model);
        if loss > 0.0 {
            let dropped = sim.network().total_counters().dropped;
            assert!(dropped > 0, "seed {seed:#x}: the loss rule dropped nothing");
        }
    }
}

#[test]
fn d_duplicate_atomics_after_migration_served_from_replay_cache() {
    let (mut sim, n, _) = setup(0x3310, 3);
    // A long ACK timeout: the lost atomic ACK is asked for again only
    // after the migration (by the RESUME's go-back-N).
    let opts = RcOptions {
        timeout: 14,
        buf_len: 64 * MSG,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let atomic_ack = Opcode::RC_ATOMIC_ACKNOWLEDGE.0;
    sim.add_rule(Rule::drop_next(
        Filter::from(sim.addr(n[1])).opcode(atomic_ack),
        1,
    ));
    let init = 1000;
    let model = post_atomic_chain(&mut sim, &a, &b, 0, 1, init);
    sim.run_for(Duration::from_micros(50));
    assert_eq!(
        sim.read_mem(b.owner, b.rx.at(0), 8),
        model[0].after.to_le_bytes(),
        "executed once before the migration"
    );
    assert!(a.poll_send(&mut sim).is_empty(), "its ACK was lost");
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    check_atomic_chain(&mut sim, &a, &b, 0, &model);
    assert!(
        counters(&sim, &b).duplicates >= 1,
        "the resent atomic reached the restored responder as a duplicate"
    );

    // Every atomic after the migration arrives twice (network duplicates):
    // the second copy is answered from the replay cache.
    let a_addr = sim.addr(n[0]);
    let is_atomic = |op: u8| op == Opcode::RC_COMPARE_SWAP.0 || op == Opcode::RC_FETCH_ADD.0;
    sim.add_rule(Rule::new(
        Filter::from(a_addr).opcode_matching(is_atomic),
        Action::Duplicate { probability: 1.0 },
    ));
    let dups_before = counters(&sim, &b).duplicates;
    let model = post_atomic_chain(&mut sim, &a, &b, 64, 32, 7);
    check_atomic_chain(&mut sim, &a, &b, 64, &model);
    assert!(
        counters(&sim, &b).duplicates >= dups_before + 32,
        "every duplicate was seen (and not executed)"
    );
}

// ---- e: both ends at once ----

#[test]
fn e_both_ends_migrate_at_once() {
    let (mut sim, n, a, b) = rc_setup(0x3020, 4);
    let s = stream_under_way(&mut sim, &a, &b, 64, 3, 40);
    // Each end's RESUME goes to the other's old node, whose tombstone
    // forwards it to the other's new node: a datagram from the old node
    // to the new one, the only RESUME that travels that way.
    let forwarded_to_b =
        sim.start_capture(Filter::between(sim.addr(n[1]), sim.addr(n[3])).opcode(OPCODE_RESUME));
    let forwarded_to_a =
        sim.start_capture(Filter::between(sim.addr(n[0]), sim.addr(n[2])).opcode(OPCODE_RESUME));
    sim.migrate_two((a.owner, n[0], n[2]), (b.owner, n[1], n[3]), DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    assert_eq!(a.query(&sim).expect("qp").dest_addr, Some(sim.addr(n[3])));
    assert_eq!(b.query(&sim).expect("qp").dest_addr, Some(sim.addr(n[2])));
    for (who, id, qpn) in [("b", forwarded_to_b, b.qpn), ("a", forwarded_to_a, a.qpn)] {
        let got = sim.stop_capture(id);
        assert!(
            got.iter().any(|c| !c.dropped && dest_qpn(c) == Some(qpn)),
            "a tombstone forwarded the partner's RESUME to {who}'s new node: {got:?}"
        );
    }
    assert!(counters(&sim, &a).resumes >= 1 && counters(&sim, &b).resumes >= 1);
}

// ---- f: a pause consumes no retries ----

/// The ACK timeout of `RcOptions::timeout` = `t`: 4.096 µs · 2^t.
fn ack_timeout(t: u8) -> Duration {
    Duration::from_nanos(4096 << t)
}

#[test]
fn f_pause_of_ten_timeouts_consumes_no_retries() {
    let (mut sim, n, _) = setup(0x3500, 3);
    // No retry at all: a single counted timeout or NAK retry would fail
    // the QP with RetryExcErr.
    let opts = RcOptions {
        retry_cnt: 0,
        timeout: 10,
        buf_len: 64 * MSG,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let pause_naks = sim.start_capture(Filter::between(sim.addr(n[1]), sim.addr(n[0])));
    let s = stream_under_way(&mut sim, &a, &b, 32, 12, 40);

    let pending = sim
        .begin_migration(&[(b.owner, n[1], n[2])])
        .expect("migration started");
    let paused = sim.run_until(Duration::from_millis(1), |s| {
        mig_state(s, &a) == MigrationState::Paused
    });
    assert!(paused, "the sender got the pause NAK");
    let paused_at = sim.now();
    assert!(sim
        .captured(pause_naks)
        .iter()
        .any(|c| c.ack_syndrome() == Some(PAUSE_NAK_SYNDROME)));
    let before = counters(&sim, &a);

    // Ten ACK timeouts pass while paused.
    sim.run_for(10 * ack_timeout(opts.timeout));
    assert_eq!(mig_state(&sim, &a), MigrationState::Paused);
    assert_eq!(a.state(&sim), QpState::Rts);
    let during = counters(&sim, &a);
    assert_eq!(during.timeouts, 0, "no timeout fired while paused");
    assert_eq!(
        during.retransmits, before.retransmits,
        "nothing resent while paused"
    );
    assert_eq!(
        during.tx_packets, before.tx_packets,
        "nothing sent while paused"
    );

    sim.finish_migration(pending).expect("migrated");
    assert!(sim.now().saturating_duration_since(paused_at) >= 10 * ack_timeout(opts.timeout));
    finish_stream(&mut sim, &a, &b, &s);
    let after = counters(&sim, &a);
    assert_eq!(after.timeouts, 0, "the pause consumed no retries");
    assert!(after.pauses >= 1 && after.resumes >= 1);
    // The pause the partner saw is counted: from the pause NAK (before
    // `paused_at`) to the RESUME (before now).
    let pause = Duration::from_nanos(after.last_pause_nanos);
    assert!(pause >= 10 * ack_timeout(opts.timeout), "{pause:?}");
    assert!(pause <= sim.now().saturating_duration_since(Instant::ZERO));
    assert_eq!(after.paused_nanos, after.last_pause_nanos, "one pause");
}

// ---- g: a partner that never comes back ----

#[test]
fn g_peer_that_never_returns_errors_after_pause_timeout() {
    let pause_timeout = Duration::from_millis(50);
    let mut sim = Sim::new(0x3600);
    let n: Vec<NodeId> = (0..2)
        .map(|i| {
            let mut config = DeviceConfig::new(node_addr(i));
            config.pause_timeout = pause_timeout;
            sim.add_node_with(config)
        })
        .collect();
    let opts = RcOptions {
        buf_len: 64 * MSG,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let total = 16;
    let _ = stream_under_way(&mut sim, &a, &b, total, 13, 40);

    // b's process is checkpointed and evicted, and never restored.
    let owner = b.owner;
    sim.with_device(n[1], |d, _, _| d.pause_owner(owner))
        .expect("paused");
    let image = sim
        .device(n[1])
        .snapshot_owner(sim.now(), owner)
        .expect("snapshot");
    assert!(!image.encode().is_empty());
    let evicted = sim
        .with_device(n[1], |d, _, now| d.evict_owner(now, owner))
        .expect("evicted");
    assert_eq!(evicted, [b.qpn]);

    let paused = sim.run_until(Duration::from_millis(1), |s| {
        mig_state(s, &a) == MigrationState::Paused
    });
    assert!(paused, "the tombstone paused the sender");
    let paused_at = sim.now();
    let mut done = a.poll_send(&mut sim);

    // Not before the pause timeout: still paused, nothing failed.
    let just_before = Instant::from_nanos((paused_at + pause_timeout).as_nanos() - 1);
    sim.run_until(just_before, |_| false);
    done.extend(a.poll_send(&mut sim));
    assert!(done.iter().all(|wc| wc.status == WcStatus::Success));
    assert_eq!(mig_state(&sim, &a), MigrationState::Paused);
    assert_eq!(a.state(&sim), QpState::Rts);
    assert!(!sim.events(n[0]).iter().any(|e| matches!(
        e,
        DeviceEvent::PauseTimeout { .. } | DeviceEvent::QpError { .. }
    )));
    assert_eq!(counters(&sim, &a).timeouts, 0);

    // At the pause timeout: RetryExcErr for the oldest WR, the rest flushed.
    let rest = a.expect_send(&mut sim, total - done.len(), paused_at + pause_timeout);
    assert_eq!(
        sim.now(),
        paused_at + pause_timeout,
        "exactly at the timeout"
    );
    let k = done.len();
    for (i, wc) in done.iter().chain(&rest).enumerate() {
        let status = match i.cmp(&k) {
            std::cmp::Ordering::Less => WcStatus::Success,
            std::cmp::Ordering::Equal => WcStatus::RetryExcErr,
            std::cmp::Ordering::Greater => WcStatus::WrFlushErr,
        };
        assert_eq!((wc.wr_id, wc.status), (i as u64, status), "{wc:?}");
    }
    assert_eq!(a.state(&sim), QpState::Err);
    let events = sim.events(n[0]);
    let timeout_at = events
        .iter()
        .position(|e| *e == DeviceEvent::PauseTimeout { qpn: a.qpn });
    let error_at = events
        .iter()
        .position(|e| *e == DeviceEvent::QpError { qpn: a.qpn });
    assert!(timeout_at.is_some(), "PauseTimeout raised: {events:?}");
    assert!(error_at.is_some(), "QpError raised: {events:?}");
    assert_no_completion(&mut sim, a.owner, a.send_cq, Duration::from_millis(100));
    assert_eq!(counters(&sim, &a).timeouts, 0);
}

// ---- h: the tombstone answers with the pause NAK ----

#[test]
fn h_packets_to_old_node_get_pause_nak_from_tombstone() {
    let (mut sim, n, _) = setup(0x3700, 3);
    let opts = RcOptions {
        retry_cnt: 0,
        buf_len: 64 * MSG,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = stream_under_way(&mut sim, &a, &b, 32, 14, 40);
    let from_old = sim.start_capture(Filter::between(sim.addr(n[1]), sim.addr(n[0])));

    let pending = sim
        .begin_migration(&[(b.owner, n[1], n[2])])
        .expect("migration started");
    let evicted_at = sim.now();
    assert_eq!(sim.device(n[1]).tombstones(), [b.qpn]);
    let paused = sim.run_until(Duration::from_millis(1), |s| {
        mig_state(s, &a) == MigrationState::Paused
    });
    assert!(paused, "the sender entered Paused");
    sim.run_for(DOWNTIME);
    assert_eq!(mig_state(&sim, &a), MigrationState::Paused);

    let tomb = sim.device(n[1]).counters().rx_tombstone;
    assert!(tomb >= 1, "requests reached the tombstone");
    let answers: Vec<_> = sim
        .captured(from_old)
        .iter()
        .filter(|c| c.at >= evicted_at)
        .collect();
    assert!(!answers.is_empty());
    for c in &answers {
        // The partner's key probe gets the connection key (BTH, AETH,
        // 24-byte KEY, ICRC), sent to the partner; anything else, the pause NAK.
        if c.opcode() == Some(OPCODE_RESUME) {
            assert_eq!(c.datagram.bytes.len(), 12 + 4 + 24 + 4, "a KEY answer");
            continue;
        }
        assert_eq!(
            c.ack_syndrome(),
            Some(PAUSE_NAK_SYNDROME),
            "the old node sends nothing but pause NAKs and the key"
        );
    }
    assert!(
        answers.len() as u64 <= tomb,
        "one answer per request at most"
    );
    let c = counters(&sim, &a);
    assert_eq!(c.timeouts, 0);
    assert!(c.pauses >= 1);

    sim.finish_migration(pending).expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    assert_eq!(counters(&sim, &a).timeouts, 0, "no retry was consumed");
}
