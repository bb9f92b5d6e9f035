//! A hostile host on the network: a third machine that can send any
//! datagram (valid ICRC, any payload) but sees no traffic. It forges
//! RESUMEs, key probes and key answers to two QPs of a connection while a
//! verified transfer runs and while one end really migrates. The transfer
//! finishes byte-exact, every completion once and in order, no QP is
//! re-pointed at the attacker, and the attacker never receives a key.

use std::net::IpAddr;
use std::time::Duration;

use migros_sim::net::OPCODE_RESUME;
use migros_sim::support::{
    assert_buf_eq, assert_no_completion, post_send_stream, rc_pair, uc_pair, ud_pair, wr, Endpoint,
    RcOptions, GRH_LEN,
};
use migros_sim::{Filter, NodeId, Sim};
use migros_transport::resume::ResumeMessage;
use migros_transport::{MigrationState, Mtu, Qpn, WcStatus};
use migros_wire::{Aeth, Bth, Headers, IpContext, Opcode, Packet, Psn};

const DEADLINE: Duration = Duration::from_secs(30);
const MSG: usize = 4096;
const N: usize = 48;

fn setup(seed: u64) -> (Sim, Vec<NodeId>, RcOptions) {
    let mut sim = Sim::new(seed);
    let nodes = (0..4).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        mtu: Mtu::Mtu1024,
        buf_len: N * MSG,
        ..RcOptions::default()
    };
    (sim, nodes, opts)
}

/// A RESUME-opcode datagram from `src` to QP `qpn` at `dst`, sealed.
fn forged(src: IpAddr, dst: IpAddr, qpn: Qpn, psn: u32, payload: &[u8]) -> Vec<u8> {
    let mut bth = Bth::new(Opcode::RC_RESUME, qpn, Psn::new(psn));
    bth.ack_req = true;
    let mut headers = Headers::new(bth);
    headers.aeth = Some(Aeth {
        syndrome: 0x1f,
        msn: 0,
    });
    let packet = Packet::new(headers, payload).expect("a RESUME of a valid length");
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.emit(&mut bytes).expect("room");
    migros_wire::seal(&IpContext::new(src, dst, 4791, 4791), &mut bytes);
    bytes
}

/// One volley against `victim` (whose partner is `partner`): every kind
/// of RESUME an attacker can build, at guessed PSNs and at the PSN the
/// victim really expects (the PSN check alone must not be what stops it).
/// While the victim is away (migrating) the volley goes to its node as
/// it was (the tombstone there) at guessed PSNs only.
fn volley(sim: &mut Sim, attacker: IpAddr, victim: &Endpoint, partner: &Endpoint, round: u64) {
    let Some(node) = sim.node_of(victim.owner) else {
        return;
    };
    let dst = sim.addr(node);
    let mut psns: Vec<u32> = (0..64u32)
        .map(|i| (i.wrapping_mul(0x9e37_79b9) ^ round as u32) & 0xff_ffff)
        .collect();
    if let Ok(attr) = victim.query(sim) {
        psns.push(attr.rq_psn);
        psns.push(attr.rq_psn.wrapping_sub(1) & 0xff_ffff);
    }
    let guess = 0x5eed_0000_0000_0000 ^ round;
    for psn in psns {
        let resume = ResumeMessage::Resume {
            location: attacker,
            qpn: partner.qpn,
            key: guess ^ u64::from(psn),
            expected: Some(Psn::new(psn)),
        };
        // The same claim in the 28 bytes of the previous version.
        let no_psn = ResumeMessage::Resume {
            location: attacker,
            qpn: partner.qpn,
            key: guess ^ u64::from(psn),
            expected: None,
        };
        let key = ResumeMessage::Key {
            qpn: partner.qpn,
            nonce: guess.rotate_left(7) ^ u64::from(psn),
            key: guess,
        };
        let probe = ResumeMessage::Probe {
            qpn: partner.qpn,
            nonce: guess,
        };
        let mut legacy = resume.encode();
        legacy.truncate(20);
        for payload in [
            Vec::new(),
            legacy,
            resume.encode(),
            no_psn.encode(),
            key.encode(),
            probe.encode(),
        ] {
            let bytes = forged(attacker, dst, victim.qpn, psn, &payload);
            sim.inject(attacker, 4791, dst, bytes);
        }
    }
}

struct Stream {
    data: Vec<Vec<u8>>,
}

fn start_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, seed: u64) -> Stream {
    Stream {
        data: post_send_stream(sim, a, b, N, MSG, seed),
    }
}

fn finish_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, s: &Stream) {
    let r = b.expect_recv(sim, N, DEADLINE);
    let c = a.expect_send(sim, N, DEADLINE);
    for i in 0..N {
        assert_eq!((r[i].wr_id, r[i].status), (i as u64, WcStatus::Success));
        assert_eq!((c[i].wr_id, c[i].status), (i as u64, WcStatus::Success));
        assert_buf_eq(sim, &b.rx, i * MSG, &s.data[i]);
    }
    assert_no_completion(sim, b.owner, b.recv_cq, Duration::from_millis(20));
    assert_no_completion(sim, a.owner, a.send_cq, Duration::ZERO);
}

fn refused(sim: &Sim, node: NodeId) -> u64 {
    sim.device(node).counters().rx_resume_refused
}

/// Runs the stream `a` → `b` while the attacker at `n[2]` fires a volley at
/// both ends every 20 µs for `rounds` rounds.
fn stream_under_attack(sim: &mut Sim, n: &[NodeId], a: &Endpoint, b: &Endpoint, rounds: u64) {
    let attacker = sim.addr(n[2]);
    for round in 0..rounds {
        volley(sim, attacker, a, b, round);
        volley(sim, attacker, b, a, round);
        sim.run_for(Duration::from_micros(20));
    }
}

#[test]
fn forged_resumes_from_a_third_host_never_repoint_a_running_connection() {
    let (mut sim, n, opts) = setup(0x4400);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let attacker = sim.addr(n[2]);
    let to_attacker = sim.start_capture(Filter::to(attacker));
    let s = start_stream(&mut sim, &a, &b, 3);
    stream_under_attack(&mut sim, &n, &a, &b, 20);
    finish_stream(&mut sim, &a, &b, &s);

    assert_eq!(a.query(&sim).unwrap().dest_addr, Some(b.addr(&sim)));
    assert_eq!(b.query(&sim).unwrap().dest_addr, Some(a.addr(&sim)));
    for ep in [&a, &b] {
        assert_eq!(ep.query(&sim).unwrap().migration, MigrationState::Running);
    }
    assert!(refused(&sim, n[0]) > 0 && refused(&sim, n[1]) > 0);
    assert!(
        sim.captured(to_attacker).is_empty(),
        "nothing, least of all a key, goes to the attacker: {} datagrams",
        sim.captured(to_attacker).len()
    );
}

/// The same while the receiver really migrates: the real RESUME is taken
/// (the sender follows it to the new node), the forged ones never are.
#[test]
fn forged_resumes_during_a_real_migration_are_refused_and_the_real_one_taken() {
    for mover in [0, 1] {
        let (mut sim, n, opts) = setup(0x4500 + mover);
        let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
        let attacker = sim.addr(n[2]);
        let to_attacker = sim.start_capture(Filter::to(attacker));
        let s = start_stream(&mut sim, &a, &b, 5);
        stream_under_attack(&mut sim, &n, &a, &b, 3);
        let (ep, from) = if mover == 0 { (&a, n[0]) } else { (&b, n[1]) };
        let pending = sim
            .begin_migration(&[(ep.owner, from, n[3])])
            .expect("migration started");
        // The attacker keeps going while the QP is away and after.
        stream_under_attack(&mut sim, &n, &a, &b, 10);
        sim.finish_migration(pending).expect("migrated");
        stream_under_attack(&mut sim, &n, &a, &b, 10);
        finish_stream(&mut sim, &a, &b, &s);

        let (moved, partner) = if mover == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(
            partner.query(&sim).unwrap().dest_addr,
            Some(sim.addr(n[3])),
            "the partner follows the real move"
        );
        assert_eq!(
            moved.query(&sim).unwrap().dest_addr,
            Some(partner.addr(&sim))
        );
        assert!(refused(&sim, partner.node(&sim)) > 0);
        // The tombstone answers a RESUME with the pause NAK, to whoever
        // sent it (that is how a partner that is itself away pauses); it
        // carries no secret. Nothing else reaches the attacker.
        for c in sim.captured(to_attacker) {
            assert_ne!(
                c.opcode(),
                Some(OPCODE_RESUME),
                "no key reached the attacker"
            );
            assert_eq!(c.ack_syndrome(), Some(migros_wire::PAUSE_NAK_SYNDROME));
        }
    }
}

/// UC has no acknowledgements: a forged RESUME must not move its
/// destination either.
#[test]
fn forged_resumes_do_not_move_a_uc_qp() {
    let (mut sim, n, opts) = setup(0x4600);
    let (a, b) = uc_pair(&mut sim, n[0], n[1], &opts);
    let attacker = sim.addr(n[2]);
    for round in 0..5 {
        volley(&mut sim, attacker, &a, &b, round);
        sim.run_for(Duration::from_micros(50));
    }
    assert_eq!(a.query(&sim).unwrap().dest_addr, Some(b.addr(&sim)));
}

/// UD: a RESUME from a host that is not the node a UD sender sent to
/// never redirects its sends (redirects are keyed by address and QPN).
#[test]
fn forged_ud_redirects_are_refused() {
    const LEN: usize = 100;
    let (mut sim, n, _) = setup(0x4700);
    let opts = RcOptions {
        buf_len: 16 * 256,
        ..RcOptions::default()
    };
    let (a, b) = ud_pair(&mut sim, n[0], n[1], 0x1111, &opts);
    let dest = b.ud_dest(&sim);
    for i in 0..4 {
        b.recv(&mut sim, i, i as usize * 256, GRH_LEN + LEN);
    }
    let attacker = sim.addr(n[2]);
    let to_attacker = sim.start_capture(Filter::to(attacker));
    let send = |sim: &mut Sim, i: u64| {
        a.post_send(sim, wr::ud_send(i, a.tx.sges(0, LEN), dest))
            .expect("posted");
        sim.run_for(Duration::from_micros(50));
    };
    send(&mut sim, 0);
    // "b's QP now lives at the attacker", sent to a's UD QP.
    for round in 0..4 {
        volley(&mut sim, attacker, &a, &b, round);
    }
    sim.run_for(Duration::from_micros(50));
    for i in 1..4 {
        send(&mut sim, i);
    }
    let got = b.poll_recv(&mut sim);
    assert_eq!(got.len(), 4, "every datagram reached b: {got:?}");
    assert!(sim.captured(to_attacker).is_empty());
    assert!(refused(&sim, n[0]) > 0);
}
