//! UC across a migration, and further scenarios: a whole node, loss, there
//! and back, a lost RESUME, the responder of READs and atomics, a rolled-back
//! checkpoint.

use super::*;

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
    let (mut sim, n, a, b) = rc_setup(0x3000, 3);
    let s = stream_under_way(&mut sim, &a, &b, 64, 1, 40);
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
    let (mut sim, n, a, b) = rc_setup(0x3040, 3);
    sim.add_rule(Rule::drop(Filter::any(), 0.05));
    let s = stream_under_way(&mut sim, &a, &b, 64, 4, 60);
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
    let (mut sim, n, a, b) = rc_setup(0x3050, 3);
    let s = stream_under_way(&mut sim, &a, &b, 64, 5, 30);
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
    let (mut sim, n, a, b) = rc_setup(0x3060, 3);
    sim.add_rule(Rule::drop_next(Filter::any().opcode(OPCODE_RESUME), 2));
    let resumes = sim.start_capture(Filter::any().opcode(OPCODE_RESUME));
    let s = stream_under_way(&mut sim, &a, &b, 32, 6, 40);
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
    let (mut sim, n, a, b) = rc_setup(0x3070, 3);
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
    let (mut sim, n, a, b) = rc_setup(0x3080, 2);
    let s = stream_under_way(&mut sim, &a, &b, 32, 8, 40);
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

// ---- tombstones expire once nobody needs them ----

/// A forwarded tombstone: the partner resumed at the new node (under 5 %
/// loss, 2 % duplication), so nothing reaches the old node any more and
/// its tombstone goes TOMBSTONE_TTL after it was forwarded, not before;
/// the stream is byte-exact meanwhile and after.
#[test]
fn a_forwarded_tombstone_expires_when_its_partner_went_on() {
    let (mut sim, n, a, b) = rc_setup(0x3e00, 3);
    sim.add_rule(Rule::drop(Filter::any(), 0.05));
    sim.add_rule(Rule::new(
        Filter::any(),
        Action::Duplicate { probability: 0.02 },
    ));
    let s = stream_under_way(&mut sim, &a, &b, 64, 0x3e, 40);
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    let forwarded_at = sim.now();
    finish_stream(&mut sim, &a, &b, &s);
    assert_eq!(sim.device(n[1]).tombstones(), [b.qpn]);
    let second = start_stream(&mut sim, &a, &b, 16, 0x3f);
    let before = Instant::from_nanos((forwarded_at + TOMBSTONE_TTL).as_nanos() - 1_000_000_000);
    sim.run_until(before, |_| false);
    assert_eq!(
        sim.device(n[1]).tombstones(),
        [b.qpn],
        "kept for its full time"
    );
    assert_eq!(sim.device(n[1]).counters().tombstones_dropped, 0);
    sim.run_until(forwarded_at + TOMBSTONE_TTL, |_| false);
    assert!(sim.device(n[1]).tombstones().is_empty(), "expired");
    assert_eq!(sim.device(n[1]).counters().tombstones_dropped, 1);
    finish_stream(&mut sim, &a, &b, &second);
}

/// A tombstone whose migration never finished: its partner is paused by
/// it, probes and retries, and each answer keeps it alive; once the
/// partner gave up (its pause timeout), nothing comes and it goes
/// TOMBSTONE_TTL after the last answer. Under 5 % loss.
#[test]
fn an_unforwarded_tombstone_outlives_its_paused_partner_then_expires() {
    let (mut sim, n, a, b) = rc_setup(0x3e10, 3);
    sim.add_rule(Rule::drop(Filter::any(), 0.05));
    let _s = stream_under_way(&mut sim, &a, &b, 64, 0x3e, 40);
    let _pending = sim
        .begin_migration(&[(b.owner, n[1], n[2])])
        .expect("migration started");
    let paused = sim.run_until(Duration::from_millis(5), |s| {
        mig_state(s, &a) == MigrationState::Paused
    });
    assert!(paused, "the tombstone paused the partner");
    let failed = sim.run_until(Duration::from_secs(60), |s| a.state(s) == QpState::Err);
    assert!(failed, "the partner gave up at its pause timeout");
    let gave_up = sim.now();
    assert!(sim.device(n[1]).counters().rx_tombstone >= 1);
    // Alive for TOMBSTONE_TTL after the last thing it answered, which came
    // no later than the partner's failure.
    let before = Instant::from_nanos((gave_up + TOMBSTONE_TTL).as_nanos() - 60_000_000_000);
    sim.run_until(before, |_| false);
    assert_eq!(sim.device(n[1]).tombstones(), [b.qpn]);
    sim.run_until(gave_up + TOMBSTONE_TTL, |_| false);
    assert!(sim.device(n[1]).tombstones().is_empty(), "expired");
}
