//! Selective resend after RESUME: a QP whose partner migrated resends
//! only what the partner lacks (its RESUME, or its answer to ours, names
//! the PSN it expects), a paused QP sends nothing, and a repeated RESUME
//! does not start the resend again; a READ whose responses a migration
//! cut is asked again alone, from what its requester holds. Counted with
//! the QPs' counters: the
//! request packets each QP sends again after the resume never exceed the
//! request PSNs it had unacknowledged at the pause, under loss,
//! reordering and duplication around the migration.

use super::*;

const BIG: usize = 32 * 1024;
/// 24 SENDs of 32 KiB at MTU 1024: 768 packets, all within one window.
const SENDS: usize = 24;

/// An RC pair on `n[0]` and `n[1]` with buffers for `SENDS` SENDs of
/// `BIG` bytes, at MTU 1024 with a 67 ms ACK timeout.
fn stream_pair(sim: &mut Sim, n: &[NodeId]) -> (Endpoint, Endpoint) {
    let opts = RcOptions {
        mtu: Mtu::Mtu1024,
        buf_len: SENDS * BIG,
        timeout: 14,
        ..RcOptions::default()
    };
    rc_pair(sim, n[0], n[1], &opts)
}

/// Which ends move.
#[derive(Clone, Copy, Debug)]
enum Moves {
    Receiver,
    Sender,
    Both,
}

/// Faults around the migration.
#[derive(Clone, Copy, Debug)]
enum Faults {
    None,
    /// Loss, reordering and duplication of every packet until the resume;
    /// after it, of the RESUME-opcode packets (RESUME, PROBE, KEY), the
    /// first answer to a RESUME lost, and every packet duplicated. (Data
    /// lost after the resume would be resent again, and rightly so: that
    /// is not the migration's doing.)
    Around,
}

/// Per QP: request PSNs unacknowledged at the pause, those of them the
/// partner lacked (without faults), request packets sent again while
/// paused and after the resume, and the timeouts and NAKs after it.
#[derive(Debug, Default, Clone, Copy)]
struct Resend {
    in_flight: u64,
    lacked: u64,
    during_pause: u64,
    after_resume: u64,
    timeouts_after: u64,
    naks_after: u64,
}

struct Outcome {
    qps: [Resend; 2],
    net: migros_sim::NetCounters,
}

fn unacked(sim: &Sim, ep: &Endpoint) -> u64 {
    u64::from(
        sim.device(ep.node(sim))
            .qp_unacknowledged(ep.qpn)
            .expect("qp exists"),
    )
}

/// (next request PSN, expected PSN).
fn psns(sim: &Sim, ep: &Endpoint) -> (u32, u32) {
    let attr = ep.query(sim).expect("qp exists");
    (attr.sq_psn, attr.rq_psn)
}

fn check_stream(sim: &mut Sim, from: &Endpoint, to: &Endpoint, data: &[Vec<u8>]) {
    let r = to.expect_recv(sim, data.len(), DEADLINE);
    let s = from.expect_send(sim, data.len(), DEADLINE);
    assert_sends_ok(&s, data.len());
    for (i, d) in data.iter().enumerate() {
        assert_eq!((r[i].wr_id, r[i].status), (i as u64, WcStatus::Success));
        assert_buf_eq(sim, &to.rx, i * BIG, d);
    }
}

/// A stream of `SENDS` SENDs from a to b (and b to a if `both_ways`), cut
/// by a migration 150 µs in.
fn migrate_mid_stream(seed: u64, moves: Moves, both_ways: bool, faults: Faults) -> Outcome {
    let mut sim = Sim::new(seed);
    let n: Vec<NodeId> = (0..4).map(|_| sim.add_node()).collect();
    let (a, b) = stream_pair(&mut sim, &n);
    let mut rules = Vec::new();
    if let Faults::Around = faults {
        rules.push(sim.add_rule(Rule::drop(Filter::any(), 0.01)));
        rules.push(sim.add_rule(Rule::new(
            Filter::any(),
            Action::Reorder {
                probability: 0.02,
                delay: Duration::from_micros(30),
            },
        )));
        rules.push(sim.add_rule(Rule::new(
            Filter::any(),
            Action::Duplicate { probability: 0.02 },
        )));
    }
    let ab = post_send_stream(&mut sim, &a, &b, SENDS, BIG, 1);
    let ba = both_ways.then(|| post_send_stream(&mut sim, &b, &a, SENDS, BIG, 2));
    sim.run_for(Duration::from_micros(150));
    assert_mid_stream(&sim, &b, (SENDS * BIG / 1024) as u64);

    let moved: Vec<(migros_transport::OwnerId, NodeId, NodeId)> = match moves {
        Moves::Receiver => vec![(b.owner, n[1], n[2])],
        Moves::Sender => vec![(a.owner, n[0], n[2])],
        Moves::Both => vec![(a.owner, n[0], n[2]), (b.owner, n[1], n[3])],
    };
    let is_moved = |ep: &Endpoint| moved.iter().any(|m| m.0 == ep.owner);
    let eps = [&a, &b];
    // A moved QP stops at the pause; its partner sends until the pause
    // NAK reaches it: each one's numbers are taken where it stopped.
    let mut qps = [Resend::default(); 2];
    let mut base = [0u64; 2];
    let mut at = [(0, 0); 2];
    for (i, ep) in eps.iter().enumerate() {
        qps[i].in_flight = unacked(&sim, ep);
        base[i] = counters(&sim, ep).retransmits;
        at[i] = psns(&sim, ep);
    }
    let stats = |sim: &Sim, ep: &Endpoint| {
        let c = counters(sim, ep);
        (c.timeouts, c.naks_received)
    };
    let mut stats_at_resume = [stats(&sim, &a), stats(&sim, &b)];
    let pending = sim.begin_migration(&moved).expect("checkpoint");
    let down = sim.now();
    let sends = [true, both_ways];
    let mut paused_base = base;
    for (i, ep) in eps.iter().enumerate() {
        if !is_moved(ep) && sends[i] {
            // Until the pause NAK reaches it, the partner runs as before
            // (a loss it recovers from is resent as usual).
            let paused = sim.run_until(DOWNTIME, |s| mig_state(s, ep) == MigrationState::Paused);
            assert!(paused, "{ep:?} never paused");
            qps[i].in_flight = unacked(&sim, ep);
            paused_base[i] = counters(&sim, ep).retransmits;
            at[i] = psns(&sim, ep);
        }
    }
    let rest = DOWNTIME.saturating_sub(sim.now().saturating_duration_since(down));
    sim.run_for(rest);
    let mut resume_base = base;
    for (i, ep) in eps.iter().enumerate() {
        if !is_moved(ep) {
            resume_base[i] = counters(&sim, ep).retransmits;
            stats_at_resume[i] = stats(&sim, ep);
            if !sends[i] {
                qps[i].in_flight = unacked(&sim, ep);
                paused_base[i] = resume_base[i];
                at[i] = psns(&sim, ep);
            }
            assert_eq!(unacked(&sim, ep), qps[i].in_flight, "paused: nothing sent");
        }
    }
    for i in 0..2 {
        qps[i].during_pause = resume_base[i] - paused_base[i];
        // Next request PSN less the partner's expected one: what it
        // lacked, when nothing was rewound (no faults).
        if let Faults::None = faults {
            qps[i].lacked = u64::from(at[i].0.wrapping_sub(at[1 - i].1) & 0xff_ffff);
        }
    }
    if let Faults::Around = faults {
        for id in rules.drain(..) {
            sim.remove_rule(id);
        }
        let resume = || Filter::any().opcode(OPCODE_RESUME);
        sim.add_rule(Rule::drop(resume(), 0.3));
        sim.add_rule(Rule::new(
            resume(),
            Action::Reorder {
                probability: 0.3,
                delay: Duration::from_micros(30),
            },
        ));
        sim.add_rule(Rule::new(
            Filter::any(),
            Action::Duplicate { probability: 0.02 },
        ));
        // The first ACK each way after the resume: the answer to a
        // RESUME, so the RESUME comes again.
        for (x, y) in [(0, 1), (1, 0)] {
            let from = if is_moved(eps[x]) {
                moved.iter().find(|m| m.0 == eps[x].owner).map(|m| m.2)
            } else {
                Some(eps[x].node(&sim))
            };
            let to = moved
                .iter()
                .find(|m| m.0 == eps[y].owner)
                .map_or(eps[y].node(&sim), |m| m.2);
            if let Some(from) = from {
                let f = Filter::between(sim.addr(from), sim.addr(to)).opcode(OPCODE_RC_ACK);
                sim.add_rule(Rule::drop_next(f, 1));
            }
        }
    }
    sim.finish_migration(pending).expect("restore");

    check_stream(&mut sim, &a, &b, &ab);
    if let Some(ba) = ba {
        check_stream(&mut sim, &b, &a, &ba);
    }
    for (i, ep) in eps.iter().enumerate() {
        assert_eq!(mig_state(&sim, ep), MigrationState::Running);
        let c = counters(&sim, ep);
        qps[i].after_resume = c.retransmits - resume_base[i];
        qps[i].timeouts_after = c.timeouts - stats_at_resume[i].0;
        qps[i].naks_after = c.naks_received - stats_at_resume[i].1;
    }
    let net = sim.network().total_counters();
    Outcome { qps, net }
}

/// The bound of the goal: after the resume, at most what was in flight
/// at the pause is sent again, and nothing while paused.
fn assert_bounded(o: &Outcome, what: &str) {
    for (i, q) in o.qps.iter().enumerate() {
        eprintln!("{what}: qp {i}: {q:?}");
        assert_eq!(q.during_pause, 0, "{what}: qp {i} resent while paused");
        assert!(
            q.after_resume <= q.in_flight,
            "{what}: qp {i} resent {} packets after the resume, {} were in flight at the pause",
            q.after_resume,
            q.in_flight
        );
    }
}

#[test]
fn without_faults_the_peer_resends_exactly_what_the_receiver_lacked() {
    for (seed, moves, both_ways) in [
        (0x5e10, Moves::Receiver, false),
        (0x5e11, Moves::Sender, false),
        (0x5e12, Moves::Receiver, true),
        (0x5e13, Moves::Both, true),
    ] {
        let o = migrate_mid_stream(seed, moves, both_ways, Faults::None);
        let what = format!("{moves:?}, both ways: {both_ways}");
        assert_bounded(&o, &what);
        for (i, q) in o.qps.iter().enumerate() {
            assert_eq!(
                q.after_resume, q.lacked,
                "{what}: qp {i} resent other than what its partner lacked"
            );
        }
        // The receiver had part of what was in flight: the resend is
        // smaller than the go-back-N of the whole window it replaces.
        let peer = &o.qps[0];
        if matches!(moves, Moves::Receiver) {
            assert!(
                peer.lacked < peer.in_flight && peer.after_resume < peer.in_flight,
                "{what}: {peer:?}"
            );
        }
    }
}

/// Moves `moves` mid-stream (`both_ways`: a stream each way) under loss,
/// reordering and duplication around the move, for each seed: the faults
/// happened and the resends stayed bounded.
fn faulted_moves_stay_bounded(seeds: [u64; 3], moves: Moves, both_ways: bool, what: &str) {
    for seed in seeds {
        let o = migrate_mid_stream(seed, moves, both_ways, Faults::Around);
        assert!(o.net.dropped > 0 && o.net.duplicated > 0 && o.net.delayed > 0);
        assert_bounded(&o, &format!("{what}, seed {seed:#x}"));
    }
}

#[test]
fn receiver_moves_under_loss_reorder_and_duplication() {
    faulted_moves_stay_bounded([0x5e20, 0x5e21, 0x5e22], Moves::Receiver, false, "receiver");
}

#[test]
fn sender_moves_under_loss_reorder_and_duplication() {
    faulted_moves_stay_bounded([0x5e30, 0x5e31, 0x5e32], Moves::Sender, false, "sender");
}

#[test]
fn one_end_of_two_streams_moves_under_loss_reorder_and_duplication() {
    faulted_moves_stay_bounded(
        [0x5e40, 0x5e41, 0x5e42],
        Moves::Receiver,
        true,
        "one end, both ways",
    );
}

#[test]
fn both_ends_move_under_loss_reorder_and_duplication() {
    faulted_moves_stay_bounded([0x5e50, 0x5e51, 0x5e52], Moves::Both, true, "both ends");
}

/// A RESUME of the previous version (28 bytes, no expected PSN) is still
/// taken: the partner falls back to going back to its oldest
/// unacknowledged PSN, and the stream completes byte-exact.
#[test]
fn a_resume_without_expected_psn_falls_back_to_go_back_n() {
    use migros_transport::resume::ResumeMessage;
    use migros_wire::{Aeth, Bth, Headers, IpContext, Packet, Psn};
    let mut sim = Sim::new(0x5e60);
    let n: Vec<NodeId> = (0..3).map(|_| sim.add_node()).collect();
    let (a, b) = stream_pair(&mut sim, &n);
    let data = post_send_stream(&mut sim, &a, &b, SENDS, BIG, 3);
    sim.run_for(Duration::from_micros(150));
    let (b_psn, b_expects) = psns(&sim, &b);
    let pending = sim
        .begin_migration(&[(b.owner, n[1], n[2])])
        .expect("checkpoint");
    sim.run_for(DOWNTIME);
    assert_eq!(mig_state(&sim, &a), MigrationState::Paused);
    let in_flight = unacked(&sim, &a);
    let lacked = u64::from(psns(&sim, &a).0.wrapping_sub(b_expects) & 0xff_ffff);
    let before = counters(&sim, &a).retransmits;
    // B's own RESUMEs are lost; one of the previous version stands in.
    let (c, a_addr) = (sim.addr(n[2]), sim.addr(n[0]));
    let own = sim.add_rule(Rule::drop(Filter::from(c).opcode(OPCODE_RESUME), 1.0));
    sim.finish_migration(pending).expect("restore");
    sim.run_for(Duration::from_micros(1));
    sim.remove_rule(own);
    let key = sim.device(n[2]).connection_key(b.qpn).expect("b restored");
    let legacy = ResumeMessage::Resume {
        location: c,
        qpn: b.qpn,
        key,
        expected: None,
    }
    .encode();
    assert_eq!(legacy.len(), 28);
    let mut bth = Bth::new(migros_wire::Opcode::RC_RESUME, a.qpn, Psn::new(b_psn));
    bth.ack_req = true;
    let mut headers = Headers::new(bth);
    headers.aeth = Some(Aeth {
        syndrome: 0x1f,
        msn: 0,
    });
    let packet = Packet::new(headers, &legacy).expect("a RESUME");
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.emit(&mut bytes).expect("room");
    migros_wire::seal(&IpContext::new(c, a_addr, 4791, 4791), &mut bytes);
    sim.inject(c, 4791, a_addr, bytes);
    check_stream(&mut sim, &a, &b, &data);
    let after = counters(&sim, &a).retransmits - before;
    // Go-back-N of the whole window: more than the receiver lacked.
    assert!(lacked < in_flight, "lacked {lacked}, in flight {in_flight}");
    assert_eq!(after, in_flight, "lacked {lacked}");
    assert_eq!(
        a.query(&sim).expect("qp").dest_addr,
        Some(c),
        "the 28-byte RESUME moved the sender"
    );
}

/// SENDs, a 256 KiB READ, more SENDs from a to b; `who` moves (0: a, the
/// READ's requester; 1: b, its responder) while the READ's responses
/// stream. The READ is asked again from what a holds; of the SENDs only
/// what b lacks is sent again.
fn read_between_sends(seed: u64, who: usize) -> (Resend, u64) {
    const READ: usize = 256 * 1024;
    let mut sim = Sim::new(seed);
    let n: Vec<NodeId> = (0..3).map(|_| sim.add_node()).collect();
    let (a, b) = stream_pair(&mut sim, &n);
    let sends = 12;
    let read_at = sends * BIG;
    let src = b.fill_rx(&mut sim, read_at, READ, seed);
    let mut data = Vec::new();
    for i in 0..sends {
        b.recv(&mut sim, i as u64, i * BIG, BIG);
    }
    for i in 0..sends {
        if i == 4 {
            let wr = wr::read(100, a.tx.sges(read_at, READ), b.rx.at(read_at), b.rx.rkey);
            a.post_send(&mut sim, wr).expect("read posted");
        }
        data.push(a.fill_tx(&mut sim, i * BIG, BIG, seed + i as u64));
        a.post_send(&mut sim, wr::send(i as u64, a.tx.sges(i * BIG, BIG)))
            .expect("send posted");
    }
    sim.run_for(Duration::from_micros(60));
    assert_mid_stream(&sim, &a, (READ / 1024) as u64);
    let (ep, from) = if who == 0 { (&a, n[0]) } else { (&b, n[1]) };
    let mut q = Resend {
        in_flight: unacked(&sim, &a),
        ..Resend::default()
    };
    let a_next = psns(&sim, &a).0;
    let b_expects = psns(&sim, &b).1;
    q.lacked = u64::from(a_next.wrapping_sub(b_expects) & 0xff_ffff);
    let mut base = counters(&sim, &a).retransmits;
    let pending = sim
        .begin_migration(&[(ep.owner, from, n[2])])
        .expect("checkpoint");
    sim.run_for(DOWNTIME);
    if who == 1 {
        assert_eq!(mig_state(&sim, &a), MigrationState::Paused);
        q.in_flight = unacked(&sim, &a);
        q.during_pause = counters(&sim, &a).retransmits - base;
        base = counters(&sim, &a).retransmits;
    }
    sim.finish_migration(pending).expect("restore");
    let c = a.expect_send(&mut sim, sends + 1, DEADLINE);
    let mut ids: Vec<u64> = c.iter().map(|wc| wc.wr_id).collect();
    assert!(c.iter().all(|wc| wc.status == WcStatus::Success), "{c:?}");
    let expected: Vec<u64> = (0..4).chain([100]).chain(4..sends as u64).collect();
    assert_eq!(ids, expected, "completions in order");
    ids.clear();
    let r = b.expect_recv(&mut sim, sends, DEADLINE);
    for (i, d) in data.iter().enumerate() {
        assert_eq!((r[i].wr_id, r[i].status), (i as u64, WcStatus::Success));
        assert_buf_eq(&sim, &b.rx, i * BIG, d);
    }
    assert_buf_eq(&sim, &a.tx, read_at, &src);
    q.after_resume = counters(&sim, &a).retransmits - base;
    eprintln!("read between sends, qp {who} moved: {q:?}");
    (q, u64::from(b_expects))
}

#[test]
fn read_between_sends_its_responder_moves() {
    let (q, _) = read_between_sends(0x5e70, 1);
    assert_eq!(q.during_pause, 0);
    assert!(q.after_resume <= q.in_flight, "{q:?}");
    // What b lacked, in PSNs, holds the READ's 256 (its responses): the
    // READ goes again as one request packet, every SEND packet b lacked
    // once, none that it had.
    assert_eq!(q.after_resume, q.lacked - 255, "{q:?}");
}

#[test]
fn read_between_sends_its_requester_moves() {
    let (q, _) = read_between_sends(0x5e71, 0);
    // b got every request a sent before it stopped: only the READ goes
    // again, from the response a lacks.
    assert_eq!(q.after_resume, 1, "{q:?}");
}
