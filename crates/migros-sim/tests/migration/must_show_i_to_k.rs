//! The must-show items i to k: UD and SRQ, a thousand QPs, loss during the
//! RESUME handshake.

use super::*;

// ---- i: UD and SRQ ----

const QKEY: u32 = 0x1111_2222;

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
    let (mut sim, n, a, b) = rc_setup(seed, 3);
    let s = stream_under_way(&mut sim, &a, &b, 32, seed, 40);
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
