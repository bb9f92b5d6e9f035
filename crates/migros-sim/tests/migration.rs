//! Live migration while traffic runs. The "must show" list of the
//! migration protocol comes first, one test per item (`a_` … `k_`), then
//! further scenarios: a whole node, loss, there and back, a rolled-back
//! checkpoint, UC. Everywhere: data byte-exact, every completion exactly
//! once and in order.

use std::net::IpAddr;
use std::time::Duration;

use migros_sim::net::{OPCODE_RC_ACK, OPCODE_RESUME};
use migros_sim::sim::node_addr;
use migros_sim::support::{
    assert_buf_eq, assert_no_completion, poll_all, rc_pair, rc_pair_on_srq, rc_pair_receiver_rtr,
    srq_host, uc_pair, ud_pair, wait_completions, wr, Endpoint, RcOptions, GRH_LEN,
};
use migros_sim::{Action, Filter, NodeId, Rule, Sim};
use migros_transport::{
    DeviceConfig, DeviceEvent, Instant, MigrationState, Mtu, QpCounters, QpState, WcOpcode,
    WcStatus, WorkCompletion,
};
use migros_wire::{Opcode, PAUSE_NAK_SYNDROME};

const DEADLINE: Duration = Duration::from_secs(30);
const DOWNTIME: Duration = Duration::from_millis(2);
const MSG: usize = 4096;
const MIB: usize = 1 << 20;

struct Stream {
    data: Vec<Vec<u8>>,
}

/// Posts `n` receives on `b` and `n` SENDs of `MSG` bytes on `a`.
fn start_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, n: usize, seed: u64) -> Stream {
    let mut data = Vec::new();
    for i in 0..n {
        b.recv(sim, i as u64, i * MSG, MSG);
        data.push(a.fill_tx(sim, i * MSG, MSG, seed + i as u64));
        a.post_send(sim, wr::send(i as u64, a.tx.sges(i * MSG, MSG)))
            .expect("posted");
    }
    Stream { data }
}

fn finish_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, s: &Stream) {
    let n = s.data.len();
    let r = b.expect_recv(sim, n, DEADLINE);
    let c = a.expect_send(sim, n, DEADLINE);
    for i in 0..n {
        assert_eq!((r[i].wr_id, r[i].status), (i as u64, WcStatus::Success));
        assert_eq!(r[i].byte_len as usize, MSG);
        assert_eq!((c[i].wr_id, c[i].status), (i as u64, WcStatus::Success));
        assert_buf_eq(sim, &b.rx, i * MSG, &s.data[i]);
    }
    assert_no_completion(sim, b.owner, b.recv_cq, Duration::from_millis(20));
    assert_no_completion(sim, a.owner, a.send_cq, Duration::ZERO);
}

fn setup(seed: u64, nodes: usize) -> (Sim, Vec<NodeId>, RcOptions) {
    let mut sim = Sim::new(seed);
    let nodes = (0..nodes).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        mtu: Mtu::Mtu1024,
        buf_len: 64 * MSG,
        ..RcOptions::default()
    };
    (sim, nodes, opts)
}

fn counters(sim: &Sim, ep: &Endpoint) -> QpCounters {
    sim.device(ep.node(sim))
        .qp_counters(ep.qpn)
        .expect("qp exists")
}

fn mig_state(sim: &Sim, ep: &Endpoint) -> MigrationState {
    ep.query(sim).expect("qp exists").migration
}

/// Asserts the stream is under way: the receiver got some of its packets
/// (`total` of them make up the stream), not all.
fn assert_mid_stream(sim: &Sim, receiver: &Endpoint, total: u64) {
    let rx = counters(sim, receiver).rx_packets;
    assert!(
        rx > 0 && rx < total,
        "migration should hit the stream mid-way: {rx} of {total} packets received"
    );
}

/// The destination QPN in a captured datagram's BTH.
fn dest_qpn(c: &migros_sim::net::Captured) -> Option<u32> {
    let b = c.datagram.bytes.get(5..8)?;
    Some(u32::from_be_bytes([0, b[0], b[1], b[2]]))
}

/// Send completions `wcs` are for wr_ids `0..n` in order, all Success.
fn assert_sends_ok(wcs: &[WorkCompletion], n: usize) {
    assert_eq!(wcs.len(), n);
    for (i, wc) in wcs.iter().enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status),
            (i as u64, WcStatus::Success),
            "{wc:?}"
        );
    }
}

// ---- a: a receiver left in RTR ----

#[test]
fn a_receiver_of_one_way_send_stream_migrates_from_rtr() {
    let (mut sim, n, opts) = setup(0x3100, 3);
    let (a, b) = rc_pair_receiver_rtr(&mut sim, n[0], n[1], &opts);
    assert_eq!(b.state(&sim), QpState::Rtr);
    let s = start_stream(&mut sim, &a, &b, 64, 11);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 64 * 4);
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
    let (mut sim, n, opts) = setup(0x3010, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 2);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 64 * 4);
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
        let (mut sim, n, opts) = setup(seed, 3);
        let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
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
    let (mut sim, n, opts) = setup(0x3020, 4);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 3);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 64 * 4);
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
    let s = start_stream(&mut sim, &a, &b, 32, 12);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 32 * 4);

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
    let _ = start_stream(&mut sim, &a, &b, total, 13);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, total as u64 * 4);

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
        .with_device(n[1], |d, _, _| d.evict_owner(owner))
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
    let s = start_stream(&mut sim, &a, &b, 32, 14);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 32 * 4);
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
        assert_eq!(
            c.ack_syndrome(),
            Some(PAUSE_NAK_SYNDROME),
            "the old node sends nothing but pause NAKs"
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

// ---- i: UD and SRQ ----

const QKEY: u32 = 0x1111_2222;

/// Datagram `seq` of a numbered stream: its number, then a pattern.
fn numbered(seq: u64, len: usize) -> Vec<u8> {
    let mut d = migros_sim::support::pattern(seq ^ 0x5eed, len);
    d[..8].copy_from_slice(&seq.to_le_bytes());
    d
}

/// Received messages of a numbered stream, checked byte-exact against
/// `sent` (by the number they carry): returns the numbers, in receive
/// order. Panics on a duplicate, a corrupted or unknown message, a failed
/// or out-of-order receive completion. `slot` is the receive slot size and
/// `skip` the bytes before the data (the GRH area for UD).
fn check_numbered(
    sim: &Sim,
    rx: &migros_sim::support::Buffer,
    wcs: &[WorkCompletion],
    sent: &[Vec<u8>],
    slot: usize,
    skip: usize,
) -> Vec<u64> {
    let mut seen = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    for (i, wc) in wcs.iter().enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status),
            (i as u64, WcStatus::Success),
            "{wc:?}"
        );
        let len = wc.byte_len as usize - skip;
        let got = sim.read_mem(rx.owner, rx.at(i * slot + skip), len);
        let seq = u64::from_le_bytes(got[..8].try_into().expect("8 bytes"));
        let expected = sent
            .get(seq as usize)
            .unwrap_or_else(|| panic!("receive {i}: unknown message number {seq}"));
        assert_eq!(&got, expected, "receive {i}: message {seq} corrupted");
        assert!(seen.insert(seq), "message {seq} delivered twice");
        order.push(seq);
    }
    order
}

#[test]
fn i_ud_across_migration() {
    const LEN: usize = 200;
    const SLOT: usize = 512;
    const STEP: Duration = Duration::from_micros(20);
    let (mut sim, n, _) = setup(0x3800, 3);
    let opts = RcOptions {
        buf_len: 256 * SLOT,
        ..RcOptions::default()
    };
    let (a, b) = ud_pair(&mut sim, n[0], n[1], QKEY, &opts);
    for i in 0..256 {
        b.recv(&mut sim, i as u64, i * SLOT, GRH_LEN + LEN);
    }
    // The sender's address handle stays the one it had before the move.
    let old_dest = b.ud_dest(&sim);
    let (a_addr, old, new) = (sim.addr(n[0]), sim.addr(n[1]), sim.addr(n[2]));
    // The sender learns the new node from the tombstone (a RESUME naming
    // it, answering a datagram that reached the old node) or from the
    // restored QP's own announcement; old datagrams may also be forwarded.
    let told_by_tombstone = sim.start_capture(Filter::between(old, a_addr).opcode(OPCODE_RESUME));
    let announced = sim.start_capture(Filter::between(new, a_addr).opcode(OPCODE_RESUME));
    let direct = sim.start_capture(Filter::between(a_addr, new));
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let send = |sim: &mut Sim, sent: &mut Vec<Vec<u8>>| {
        let seq = sent.len();
        let data = numbered(seq as u64, LEN);
        sim.write_mem(a.owner, a.tx.at(seq * SLOT), &data);
        a.post_send(
            sim,
            wr::ud_send(seq as u64, a.tx.sges(seq * SLOT, LEN), old_dest),
        )
        .expect("posted");
        sent.push(data);
    };

    for _ in 0..40 {
        send(&mut sim, &mut sent);
        sim.run_for(STEP);
    }
    let before = sent.len();
    let pending = sim
        .begin_migration(&[(b.owner, n[1], n[2])])
        .expect("migration started");
    // Downtime: datagrams to the stopped QP may be lost.
    for _ in 0..50 {
        send(&mut sim, &mut sent);
        sim.run_for(STEP);
    }
    let report = sim.finish_migration(pending).expect("migrated").remove(0);
    // A burst right away, before the sender can have heard of the move:
    // it reaches the tombstone (which may forward it or only redirect the
    // sender; UD may lose it).
    for _ in 0..3 {
        send(&mut sim, &mut sent);
    }
    // One step later the sender knows: nothing is lost from here on.
    sim.run_for(STEP);
    let after = sent.len();
    for _ in 0..40 {
        send(&mut sim, &mut sent);
        sim.run_for(STEP);
    }
    // Without the tombstone, the sender's redirect alone delivers.
    sim.run_for(STEP);
    sim.release_tombstones(&report);
    let released = sent.len();
    for _ in 0..10 {
        send(&mut sim, &mut sent);
        sim.run_for(STEP);
    }

    let s = a.expect_send(&mut sim, sent.len(), DEADLINE);
    assert_sends_ok(&s, sent.len());
    let r = wait_completions(
        &mut sim,
        b.owner,
        b.recv_cq,
        sent.len(),
        Duration::from_millis(20),
    );
    let got = check_numbered(&sim, &b.rx, &r, &sent, SLOT, GRH_LEN);
    for wc in &r {
        assert_eq!(wc.byte_len as usize, GRH_LEN + LEN);
        assert_eq!((wc.qp_num, wc.src_qp), (b.qpn, a.qpn));
        assert_eq!(
            wc.src_addr,
            Some(a_addr),
            "the GRH names the sender, never a forwarding node"
        );
    }
    for seq in (0..before).chain(after..sent.len()) {
        assert!(
            got.contains(&(seq as u64)),
            "datagram {seq} (sent outside the downtime) was lost; got {got:?}"
        );
    }
    assert!(
        !sim.captured(told_by_tombstone).is_empty(),
        "the tombstone answered datagrams reaching the old node with a redirect"
    );
    assert!(
        !sim.captured(announced).is_empty(),
        "the restored QP announced its location to its peer"
    );
    assert!(
        sim.captured(direct).len() >= sent.len() - released,
        "the sender was redirected to the new node"
    );
    assert!(poll_all(&mut sim, b.owner, b.recv_cq).is_empty());
}

#[test]
fn i_srq_backed_rc_qp_migrates_with_its_queued_receives() {
    const LEN: usize = 2000;
    const SLOT: usize = 2048;
    let (mut sim, n, opts) = setup(0x3810, 3);
    let host = srq_host(&mut sim, n[0], 128, 0, 64 * SLOT);
    let (server, client) = rc_pair_on_srq(&mut sim, &host, n[1], &opts);
    let total = 48;
    let mut data = Vec::new();
    for i in 0..32 {
        host.recv(&mut sim, i as u64, i * SLOT, SLOT);
    }
    let send = |sim: &mut Sim, data: &mut Vec<Vec<u8>>| {
        let i = data.len();
        data.push(client.fill_tx(sim, i * SLOT, LEN, 0x3810 + i as u64));
        client
            .post_send(sim, wr::send(i as u64, client.tx.sges(i * SLOT, LEN)))
            .expect("posted");
    };
    for _ in 0..32 {
        send(&mut sim, &mut data);
    }
    sim.run_for(Duration::from_micros(30));
    let early = poll_all(&mut sim, host.owner, host.recv_cq);
    assert!(
        early.len() < 32,
        "receives still queued in the SRQ at the migration"
    );
    assert_mid_stream(&sim, &server, 64);
    sim.migrate_owner(host.owner, n[0], n[2], DOWNTIME)
        .expect("migrated");
    assert_eq!(server.node(&sim), n[2]);
    // Receives posted after the move go to the restored SRQ.
    for i in 32..total {
        host.recv(&mut sim, i as u64, i * SLOT, SLOT);
        send(&mut sim, &mut data);
    }
    let rest = host.expect_recv(&mut sim, total - early.len(), DEADLINE);
    for (i, wc) in early.iter().chain(&rest).enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status, wc.qp_num, wc.byte_len as usize),
            (i as u64, WcStatus::Success, server.qpn, LEN),
            "SRQ receives used once each, in order"
        );
        assert_buf_eq(&sim, &host.rx, i * SLOT, &data[i]);
    }
    assert_sends_ok(&client.expect_send(&mut sim, total, DEADLINE), total);
    assert_no_completion(
        &mut sim,
        host.owner,
        host.recv_cq,
        Duration::from_millis(20),
    );
    assert_no_completion(&mut sim, client.owner, client.send_cq, Duration::ZERO);
}

// ---- j: a thousand QPs ----

#[test]
fn j_thousand_qps_of_one_node_migrate_together() {
    const CONNS: usize = 1000;
    const LEN: usize = 2000;
    let (mut sim, n, _) = setup(0x3900, 3);
    let opts = RcOptions {
        buf_len: 2 * LEN,
        cap: migros_transport::QpCap {
            max_send_wr: 4,
            max_recv_wr: 4,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        ..RcOptions::default()
    };
    let mut conns = Vec::new();
    for i in 0..CONNS {
        let (x, y) = rc_pair(&mut sim, n[0], n[1], &opts);
        // Half the migrating QPs send, half receive.
        let (snd, rcv) = if i % 2 == 0 { (x, y) } else { (y, x) };
        let mut data = Vec::new();
        for k in 0..2 {
            rcv.recv(&mut sim, k as u64, k * LEN, LEN);
            data.push(snd.fill_tx(&mut sim, k * LEN, LEN, (i * 2 + k) as u64));
            snd.post_send(&mut sim, wr::send(k as u64, snd.tx.sges(k * LEN, LEN)))
                .expect("posted");
        }
        conns.push((snd, rcv, data));
    }
    sim.run_for(Duration::from_micros(500));
    let started = conns
        .iter()
        .filter(|(_, rcv, _)| counters(&sim, rcv).rx_packets > 0)
        .count();
    assert!(
        started > 0 && started < CONNS,
        "traffic in flight: {started} of {CONNS} connections received something"
    );
    let reports = sim.migrate_node(n[1], n[2], DOWNTIME).expect("migrated");
    assert_eq!(reports.len(), CONNS);
    assert_eq!(reports.iter().map(|r| r.qpns.len()).sum::<usize>(), CONNS);
    assert!(sim.owners_on(n[1]).is_empty());
    for (snd, rcv, data) in &conns {
        let r = rcv.expect_recv(&mut sim, 2, DEADLINE);
        for (k, wc) in r.iter().enumerate() {
            assert_eq!((wc.wr_id, wc.status), (k as u64, WcStatus::Success));
            assert_eq!(wc.byte_len as usize, LEN);
            assert_buf_eq(&sim, &rcv.rx, k * LEN, &data[k]);
        }
        assert_sends_ok(&snd.expect_send(&mut sim, 2, DEADLINE), 2);
    }
    sim.run_for(Duration::from_millis(20));
    for (snd, rcv, _) in &conns {
        assert!(snd.poll_send(&mut sim).is_empty());
        assert!(rcv.poll_recv(&mut sim).is_empty());
    }
}

// ---- k: loss during the RESUME handshake ----

/// What the network did to the handshake: RESUMEs and ACKs of the
/// partner to the new node, lost and delivered.
#[derive(Debug, Default, Clone, Copy)]
struct HandshakeLoss {
    resumes_lost: usize,
    resumes_delivered: usize,
    acks_lost: usize,
}

/// `mover` (0: the sender, 1: the receiver of a stream) migrates to a
/// third node while `rules(partner, new)` drop RESUMEs and the partner's
/// ACKs to the new node; the stream completes and the mover leaves
/// Resuming.
fn handshake_under_loss(
    seed: u64,
    mover: usize,
    rules: impl Fn(IpAddr, IpAddr) -> Vec<Rule>,
) -> HandshakeLoss {
    let (mut sim, n, opts) = setup(seed, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 32, seed);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 32 * 4);
    let (ep, from, partner) = if mover == 0 {
        (&a, n[0], n[1])
    } else {
        (&b, n[1], n[0])
    };
    let (partner_addr, new) = (sim.addr(partner), sim.addr(n[2]));
    let resumes = sim.start_capture(Filter::any().opcode(OPCODE_RESUME));
    let acks = sim.start_capture(Filter::between(partner_addr, new).opcode(OPCODE_RC_ACK));
    let ids: Vec<_> = rules(partner_addr, new)
        .into_iter()
        .map(|r| sim.add_rule(r))
        .collect();
    sim.migrate_owner(ep.owner, from, n[2], DOWNTIME)
        .expect("migrated");
    let done = sim.run_until(DEADLINE, |s| mig_state(s, ep) == MigrationState::Running);
    assert!(done, "seed {seed:#x}: the handshake completed");
    for id in ids {
        sim.remove_rule(id);
    }
    finish_stream(&mut sim, &a, &b, &s);
    assert_eq!(mig_state(&sim, &a), MigrationState::Running);
    assert_eq!(mig_state(&sim, &b), MigrationState::Running);
    let resumes = sim.stop_capture(resumes);
    let acks = sim.stop_capture(acks);
    HandshakeLoss {
        resumes_lost: resumes.iter().filter(|c| c.dropped).count(),
        resumes_delivered: resumes.iter().filter(|c| !c.dropped).count(),
        acks_lost: acks.iter().filter(|c| c.dropped).count(),
    }
}

#[test]
fn k_loss_during_handshake() {
    let resume = || Filter::any().opcode(OPCODE_RESUME);
    let ack = |p: IpAddr, new: IpAddr| Filter::between(p, new).opcode(OPCODE_RC_ACK);
    for mover in [0, 1] {
        // Deterministic: the first three RESUMEs and the first three ACKs
        // the partner sends to the new node are lost.
        let loss = handshake_under_loss(0x3a00 + mover as u64, mover, |p, new| {
            vec![
                Rule::drop_next(resume(), 3),
                Rule::drop_next(ack(p, new), 3),
            ]
        });
        assert_eq!(loss.resumes_lost, 3, "{loss:?}");
        assert!(loss.resumes_delivered >= 1, "{loss:?}");
        assert_eq!(loss.acks_lost, 3, "{loss:?}");
        // Random: half of them are lost.
        let mut total = HandshakeLoss::default();
        for seed in 0..8u64 {
            let loss = handshake_under_loss(0x3a10 + 16 * mover as u64 + seed, mover, |p, new| {
                vec![Rule::drop(resume(), 0.5), Rule::drop(ack(p, new), 0.5)]
            });
            total.resumes_lost += loss.resumes_lost;
            total.resumes_delivered += loss.resumes_delivered;
            total.acks_lost += loss.acks_lost;
        }
        assert!(
            total.resumes_lost >= 4 && total.acks_lost >= 2,
            "the random rules did hit the handshake: {total:?}"
        );
    }
}

// ---- UC ----

/// A numbered UC stream, one message every 20 µs, with `mover` (0: the
/// sender, 1: the receiver) migrated in the middle. UC is unreliable:
/// messages sent while the receiver is away may be lost, but none is
/// delivered twice, corrupted, or out of order, and everything sent
/// before and after the move arrives.
fn uc_stream_across_migration(seed: u64, mover: usize) {
    const LEN: usize = 3000;
    const SLOT: usize = 4096;
    const STEP: Duration = Duration::from_micros(20);
    let (mut sim, n, _) = setup(seed, 3);
    let opts = RcOptions {
        buf_len: 128 * SLOT,
        ..RcOptions::default()
    };
    let (a, b) = uc_pair(&mut sim, n[0], n[1], &opts);
    for i in 0..128 {
        b.recv(&mut sim, i as u64, i * SLOT, SLOT);
    }
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let send = |sim: &mut Sim, sent: &mut Vec<Vec<u8>>| {
        let seq = sent.len();
        let data = numbered(seq as u64, LEN);
        sim.write_mem(a.owner, a.tx.at(seq * SLOT), &data);
        a.post_send(sim, wr::send(seq as u64, a.tx.sges(seq * SLOT, LEN)))
            .expect("posted");
        sent.push(data);
    };
    for _ in 0..20 {
        send(&mut sim, &mut sent);
        sim.run_for(STEP);
    }
    let before = sent.len();
    let (ep, from) = if mover == 0 { (&a, n[0]) } else { (&b, n[1]) };
    let pending = sim
        .begin_migration(&[(ep.owner, from, n[2])])
        .expect("migration started");
    for _ in 0..50 {
        if mover == 1 {
            // The sender keeps going while the receiver is away.
            send(&mut sim, &mut sent);
        }
        sim.run_for(STEP);
    }
    sim.finish_migration(pending).expect("migrated");
    sim.run_for(STEP);
    let after = sent.len();
    for _ in 0..30 {
        send(&mut sim, &mut sent);
        sim.run_for(STEP);
    }
    assert_sends_ok(&a.expect_send(&mut sim, sent.len(), DEADLINE), sent.len());
    let r = wait_completions(
        &mut sim,
        b.owner,
        b.recv_cq,
        sent.len(),
        Duration::from_millis(50),
    );
    let got = check_numbered(&sim, &b.rx, &r, &sent, SLOT, 0);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    for seq in (0..before).chain(after..sent.len()) {
        assert!(
            got.contains(&(seq as u64)),
            "seed {seed:#x}: message {seq} (sent outside the downtime) was lost; got {got:?}"
        );
    }
    assert_eq!(mig_state(&sim, ep), MigrationState::Running);
    // Still usable after the pause timeout (nothing left Resuming).
    sim.run_for(Duration::from_secs(31));
    assert_eq!(ep.state(&sim), QpState::Rts);
}

#[test]
fn uc_traffic_across_migration() {
    uc_stream_across_migration(0x3b00, 1);
}

#[test]
fn uc_sender_migrates() {
    uc_stream_across_migration(0x3b10, 0);
}

// ---- further scenarios ----

#[test]
fn migrate_receiver_mid_stream() {
    let (mut sim, n, opts) = setup(0x3000, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 1);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 64 * 4);
    let report = sim
        .migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    assert_eq!(report.qpns, [b.qpn]);
    assert!(report.image_bytes > 0);
    assert_eq!(b.node(&sim), n[2]);
    finish_stream(&mut sim, &a, &b, &s);
    let pauses = sim
        .device(n[0])
        .qp_counters(a.qpn)
        .expect("qp exists")
        .pauses;
    assert!(pauses >= 1, "the sender was paused by the tombstone");
    assert_eq!(b.query(&sim).expect("restored").dest_qp_num, a.qpn);
}

#[test]
fn migrate_whole_node_with_several_connections() {
    let (mut sim, n, opts) = setup(0x3030, 3);
    let pairs: Vec<_> = (0..4)
        .map(|_| rc_pair(&mut sim, n[0], n[1], &opts))
        .collect();
    let streams: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| start_stream(&mut sim, a, b, 16, 100 * i as u64))
        .collect();
    sim.run_for(Duration::from_micros(40));
    // The sending device serves its QPs in turn: the migration must find
    // one stream under way and the node's traffic as a whole unfinished.
    let rx: Vec<u64> = pairs
        .iter()
        .map(|(_, b)| counters(&sim, b).rx_packets)
        .collect();
    assert!(
        rx.iter().any(|&r| r > 0 && r < 16 * 4) && rx.iter().sum::<u64>() < 4 * 16 * 4,
        "the node migrates with traffic in flight: packets received per stream {rx:?}"
    );
    let reports = sim.migrate_node(n[1], n[2], DOWNTIME).expect("migrated");
    assert_eq!(reports.len(), 4);
    assert!(sim.owners_on(n[1]).is_empty());
    for ((a, b), s) in pairs.iter().zip(&streams) {
        finish_stream(&mut sim, a, b, s);
    }
}

#[test]
fn migrate_under_loss() {
    let (mut sim, n, opts) = setup(0x3040, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    sim.add_rule(Rule::drop(Filter::any(), 0.05));
    let s = start_stream(&mut sim, &a, &b, 64, 4);
    sim.run_for(Duration::from_micros(60));
    assert_mid_stream(&sim, &b, 64 * 4);
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    let net = sim.network().total_counters();
    assert!(net.dropped > 0, "the loss rule dropped nothing: {net:?}");
    assert!(
        counters(&sim, &a).retransmits > 0,
        "the sender recovered from the losses by resending"
    );
}

#[test]
fn migrate_there_and_back() {
    let (mut sim, n, opts) = setup(0x3050, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 5);
    sim.run_for(Duration::from_micros(30));
    assert_mid_stream(&sim, &b, 64 * 4);
    let first = sim
        .migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    sim.run_for(Duration::from_micros(30));
    // Counters move with the QP: still mid-stream on the way back.
    assert_mid_stream(&sim, &b, 64 * 4);
    sim.release_tombstones(&first);
    sim.migrate_owner(b.owner, n[2], n[1], DOWNTIME)
        .expect("migrated back");
    finish_stream(&mut sim, &a, &b, &s);
}

#[test]
fn lost_resume_is_repeated() {
    let (mut sim, n, opts) = setup(0x3060, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    sim.add_rule(Rule::drop_next(Filter::any().opcode(OPCODE_RESUME), 2));
    let resumes = sim.start_capture(Filter::any().opcode(OPCODE_RESUME));
    let s = start_stream(&mut sim, &a, &b, 32, 6);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 32 * 4);
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    let resumes = sim.stop_capture(resumes);
    let dropped: Vec<_> = resumes.iter().filter(|c| c.dropped).collect();
    assert_eq!(
        dropped.len(),
        2,
        "the first two RESUMEs were lost: {resumes:?}"
    );
    let resent = resumes.iter().position(|c| !c.dropped);
    assert!(
        resent.is_some_and(|i| i >= 2),
        "a RESUME was sent again after the two lost ones: {resumes:?}"
    );
    assert!(counters(&sim, &a).resumes >= 1, "the sender heard it");
}

#[test]
fn reads_and_atomics_survive_migration_of_the_responder() {
    let (mut sim, n, opts) = setup(0x3070, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let src = b.fill_rx(&mut sim, 0, 32 * MSG, 7);
    let counter = b.rx.at(40 * MSG);
    for i in 0..32 {
        let sges = a.tx.sges(i * MSG, MSG);
        a.post_send(
            &mut sim,
            wr::read(2 * i as u64, sges, b.rx.at(i * MSG), b.rx.rkey),
        )
        .expect("posted");
        let result = a.tx.sge(40 * MSG + 8 * i, 8);
        a.post_send(
            &mut sim,
            wr::fetch_add(2 * i as u64 + 1, result, counter, b.rx.rkey, 1),
        )
        .expect("posted");
    }
    sim.run_for(Duration::from_micros(30));
    // 32 READs of 4 responses each and 32 atomic ACKs come back.
    assert_mid_stream(&sim, &a, 32 * 4 + 32);
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    let c = a.expect_send(&mut sim, 64, DEADLINE);
    for (i, wc) in c.iter().enumerate() {
        assert_eq!((wc.wr_id, wc.status), (i as u64, WcStatus::Success));
    }
    assert_buf_eq(&sim, &a.tx, 0, &src);
    for i in 0..32u64 {
        let got = sim.read_mem(a.owner, a.tx.at(40 * MSG + 8 * i as usize), 8);
        assert_eq!(got, i.to_le_bytes(), "fetch_add {i} ran exactly once");
    }
    assert_eq!(sim.read_mem(b.owner, counter, 8), 32u64.to_le_bytes());
}

#[test]
fn rolled_back_checkpoint_resumes_on_the_source() {
    let (mut sim, n, opts) = setup(0x3080, 2);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 32, 8);
    sim.run_for(Duration::from_micros(40));
    assert_mid_stream(&sim, &b, 32 * 4);
    let bytes = sim
        .checkpoint_and_roll_back(b.owner, DOWNTIME)
        .expect("checkpoint");
    assert!(bytes > 0);
    assert_eq!(b.node(&sim), n[1]);
    finish_stream(&mut sim, &a, &b, &s);
    let c = counters(&sim, &a);
    assert!(
        c.pauses >= 1 && c.resumes >= 1,
        "the sender was paused by the checkpoint and resumed by the rollback: {c:?}"
    );
    assert_eq!(
        a.query(&sim).expect("qp").dest_addr,
        Some(sim.addr(n[1])),
        "still talking to the source"
    );
}
