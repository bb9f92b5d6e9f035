//! Retransmissions around a migration, from the devices' counters: a
//! stream of 64 KiB SENDs (MTU 1024, 1 MiB window, as perftest's
//! `ib_send_bw`) is under way when one end, the other, or both move. Per
//! QP: `in-flight`, the request PSNs it had sent and not seen acknowledged
//! when it stopped sending (a moved QP at the pause, its partner at the
//! pause NAK); `lacked`, those its partner did not have; `rtx-to-pause`,
//! request packets it sent again until then; `rtx-after`, those it sent
//! again from the resume to the end of the stream. Rows ending in `/l`
//! lose the first answer to the moved receiver's RESUME (it sends the
//! RESUME again 10 ms later). Rows ending in `/s` run between slow receivers (2 µs per datagram, 208 KiB receive queue,
//! as a daemon behind a socket buffer): their queues overflow, and the
//! `none/s` rows show what the stream resends over the same span without
//! any migration.
//!
//! `cargo run -p migros-sim --example resend_after_migration`

use std::time::Duration;

use migros_sim::net::OPCODE_RC_ACK;
use migros_sim::support::{post_send_stream, rc_pair, Endpoint, RcOptions};
use migros_sim::{Filter, NodeId, Rule, Sim, SlowReceiver};
use migros_transport::{MigrationState, Mtu, WcStatus};

const MSG: usize = 64 * 1024;
const MESSAGES: usize = 48;
const DOWNTIME: Duration = Duration::from_millis(2);
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Who {
    /// No migration: what the stream resends on its own after the same
    /// moment (a slow receiver's queue overflows).
    Nobody,
    Receiver,
    /// The receiver, and the first answer to its RESUME is lost (the
    /// RESUME comes again).
    ReceiverAnswerLost,
    Sender,
    Both,
}

fn main() {
    println!(
        "{MESSAGES} SENDs of {} KiB each way (MTU 1024), migration after 300 µs, 2 ms down",
        MSG / 1024
    );
    println!(
        "{:<14} {:<3} {:>6} {:>10} {:>7} {:>11} {:>10}",
        "moved", "qp", "moved", "in-flight", "lacked", "rtx-to-pause", "rtx-after"
    );
    for (name, who, bidir, slow) in [
        ("receiver", Who::Receiver, false, false),
        ("sender", Who::Sender, false, false),
        ("one (bidir)", Who::Receiver, true, false),
        ("both", Who::Both, true, false),
        ("receiver/l", Who::ReceiverAnswerLost, false, false),
        ("one (bidir)/l", Who::ReceiverAnswerLost, true, false),
        ("none/s", Who::Nobody, false, true),
        ("none (bidir)/s", Who::Nobody, true, true),
        ("receiver/s", Who::Receiver, false, true),
        ("sender/s", Who::Sender, false, true),
        ("one (bidir)/s", Who::Receiver, true, true),
        ("both/s", Who::Both, true, true),
    ] {
        run(name, who, bidir, slow);
    }
}

fn unacked(sim: &Sim, ep: &Endpoint) -> u32 {
    sim.device(ep.node(sim))
        .qp_unacknowledged(ep.qpn)
        .expect("qp exists")
}

/// (next request PSN, expected PSN) of a QP.
fn psns(sim: &Sim, ep: &Endpoint) -> (u32, u32) {
    let attr = ep.query(sim).expect("qp exists");
    (attr.sq_psn, attr.rq_psn)
}

fn retransmits(sim: &Sim, ep: &Endpoint) -> u64 {
    sim.device(ep.node(sim))
        .qp_counters(ep.qpn)
        .expect("qp exists")
        .retransmits
}

fn run(name: &str, who: Who, bidir: bool, slow: bool) {
    let mut sim = Sim::new(0x5e5e);
    let n: Vec<NodeId> = (0..4).map(|_| sim.add_node()).collect();
    if slow {
        for &node in &n {
            let model = SlowReceiver {
                per_datagram: Duration::from_micros(2),
                queue_bytes: 208 << 10,
            };
            sim.set_slow_receiver(node, Some(model));
        }
    }
    let opts = RcOptions {
        mtu: Mtu::Mtu1024,
        buf_len: MESSAGES * MSG,
        timeout: 14,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let ab = post_send_stream(&mut sim, &a, &b, MESSAGES, MSG, 1);
    let ba = bidir.then(|| post_send_stream(&mut sim, &b, &a, MESSAGES, MSG, 2));
    sim.run_for(Duration::from_micros(300));
    let moves = match who {
        Who::Nobody => vec![],
        Who::Receiver | Who::ReceiverAnswerLost => vec![(b.owner, n[1], n[2])],
        Who::Sender => vec![(a.owner, n[0], n[2])],
        Who::Both => vec![(a.owner, n[0], n[2]), (b.owner, n[1], n[3])],
    };
    let moved = |ep: &Endpoint| moves.iter().any(|m| m.0 == ep.owner);
    // A moved QP stops at the pause; its partner sends until it hears the
    // pause NAK: each one's count is taken where it stopped sending.
    let mut in_flight = [unacked(&sim, &a), unacked(&sim, &b)];
    let mut at_resume = [retransmits(&sim, &a), retransmits(&sim, &b)];
    let mut psns = [psns(&sim, &a), psns(&sim, &b)];
    let pending = (!moves.is_empty()).then(|| sim.begin_migration(&moves).expect("checkpoint"));
    sim.run_for(DOWNTIME);
    for (i, ep) in [&a, &b].into_iter().enumerate() {
        if !moved(ep) {
            in_flight[i] = unacked(&sim, ep);
            at_resume[i] = retransmits(&sim, ep);
            psns[i] = self::psns(&sim, ep);
        }
    }
    if let Who::ReceiverAnswerLost = who {
        let to_c = Filter::between(sim.addr(n[0]), sim.addr(n[2])).opcode(OPCODE_RC_ACK);
        sim.add_rule(Rule::drop_next(to_c, 1));
    }
    if let Some(pending) = pending {
        sim.finish_migration(pending).expect("restore");
    }
    let r = b.expect_recv(&mut sim, MESSAGES, DEADLINE);
    let s = a.expect_send(&mut sim, MESSAGES, DEADLINE);
    assert!(r.iter().chain(&s).all(|wc| wc.status == WcStatus::Success));
    for (i, data) in ab.iter().enumerate() {
        assert_eq!(&sim.read_mem(b.owner, b.rx.at(i * MSG), MSG), data);
    }
    if let Some(ba) = ba {
        let r = a.expect_recv(&mut sim, MESSAGES, DEADLINE);
        let s = b.expect_send(&mut sim, MESSAGES, DEADLINE);
        assert!(r.iter().chain(&s).all(|wc| wc.status == WcStatus::Success));
        for (i, data) in ba.iter().enumerate() {
            assert_eq!(&sim.read_mem(a.owner, a.rx.at(i * MSG), MSG), data);
        }
    }
    // A moved QP whose RESUME went unanswered sends it again.
    let running = |s: &mut Sim| {
        [&a, &b]
            .iter()
            .all(|ep| ep.query(s).expect("qp").migration == MigrationState::Running)
    };
    assert!(sim.run_until(Duration::from_millis(100), running));
    let after = [retransmits(&sim, &a), retransmits(&sim, &b)];
    for (i, (ep, qp)) in [(&a, "A"), (&b, "B")].into_iter().enumerate() {
        // Request PSNs sent that the partner did not have at the pause.
        let lacked = psns[i].0.wrapping_sub(psns[1 - i].1) & 0xff_ffff;
        let lacked = lacked.min(in_flight[i]);
        println!(
            "{:<14} {:<3} {:>6} {:>10} {:>7} {:>11} {:>10}",
            name,
            qp,
            if moved(ep) { "yes" } else { "no" },
            in_flight[i],
            lacked,
            at_resume[i],
            after[i] - at_resume[i]
        );
    }
}
