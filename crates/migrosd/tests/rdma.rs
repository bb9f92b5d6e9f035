//! RDMA through two daemons (127.0.0.111 and .112) with a hand-rolled
//! client: an RC pair, SENDs, WRITEs, a bulk WRITE for throughput, and a
//! migration of one side to a third daemon. Needs root.

mod common;

use std::net::IpAddr;
use std::time::Instant;

use common::verbs::*;
use common::*;
use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::msg::{Request, Response};
use migros_proto::verbs::*;

struct Side {
    c: Client,
    cq: Cq,
    qp: Qp,
    mr: Mr,
}

fn side(d: &Daemon, buf: usize, entries: u32) -> Side {
    let (mut c, _) = d.session();
    let pd = alloc_pd(&mut c);
    let mr = reg_mr(&mut c, pd, buf);
    let cq = create_cq(&mut c, entries * 2);
    let qp = create_qp(&mut c, pd, &cq, entries);
    Side { c, cq, qp, mr }
}

fn pair(a_addr: &str, b_addr: &str, a: &mut Side, b: &mut Side, mtu: Mtu) {
    let aa: IpAddr = a_addr.parse().unwrap();
    let ba: IpAddr = b_addr.parse().unwrap();
    connect(&mut a.c, a.qp.qpn, ba, b.qp.qpn, mtu);
    connect(&mut b.c, b.qp.qpn, aa, a.qp.qpn, mtu);
}

/// Daemons `(name, addr)`, each with `extra` arguments, in a new socket
/// directory (returned first, so that it goes after them); `None` when the
/// test cannot run (see `can_run`).
fn daemons<const N: usize>(
    devs: [(&str, &str); N],
    extra: &[&str],
) -> Option<(tempfile::TempDir, [Daemon; N])> {
    if !can_run() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemons = devs.map(|(name, addr)| start_daemon(dir.path(), name, addr, extra));
    Some((dir, daemons))
}

/// An RC pair with 64 KiB and 16 entries a side, `a` on `da` and `b` on
/// `db`, connected to each other at MTU 1024.
fn rc_pair(da: &Daemon, db: &Daemon) -> (Side, Side) {
    let mut a = side(da, 1 << 16, 16);
    let mut b = side(db, 1 << 16, 16);
    pair(&da.addr, &db.addr, &mut a, &mut b, Mtu::Mtu1024);
    (a, b)
}

#[test]
fn sends_and_writes_between_two_daemons() {
    let Some((_dir, [d1, d2])) = daemons([("r1", "127.0.0.111"), ("r2", "127.0.0.112")], &[])
    else {
        return;
    };
    let (mut a, mut b) = rc_pair(&d1, &d2);

    // SENDs: receives first, then 4 messages of 3000 bytes (3 packets each).
    for i in 0..4u64 {
        b.qp.post_recv(&mut b.c, &recv_wr(100 + i, &b.mr, i * 4096, 4096));
    }
    for i in 0..4u64 {
        let pattern: Vec<u8> = (0..3000).map(|k| (k as u64 * 7 + i) as u8).collect();
        a.mr.buf.write(i as usize * 4096, &pattern);
        let wr = send_wr(i, &a.mr, i * 4096, 3000, WrOpcode::Send);
        a.qp.post_send(&mut a.c, &wr);
    }
    let sent = a.cq.wait(4);
    assert!(sent
        .iter()
        .all(|w| w.status == WcStatus::Success && w.opcode == WcOpcode::Send));
    assert_eq!(
        sent.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let got = b.cq.wait(4);
    for (i, wc) in got.iter().enumerate() {
        assert_eq!(wc.status, WcStatus::Success);
        assert_eq!(wc.opcode, WcOpcode::Recv);
        assert_eq!(wc.wr_id, 100 + i as u64);
        assert_eq!(wc.byte_len, 3000);
        let mut buf = vec![0u8; 3000];
        b.mr.buf.read(i * 4096, &mut buf);
        let want: Vec<u8> = (0..3000).map(|k| (k as u64 * 7 + i as u64) as u8).collect();
        assert_eq!(buf, want, "message {i}");
    }
    assert_eq!(a.qp.sq_ci(), 4);

    // A WRITE into B's buffer at an offset.
    let data: Vec<u8> = (0..10_000u32).map(|k| (k % 251) as u8).collect();
    a.mr.buf.write(0, &data);
    let wr = send_wr(
        9,
        &a.mr,
        0,
        data.len() as u32,
        WrOpcode::RdmaWrite {
            remote_addr: b.mr.buf.addr() + 20_000,
            rkey: b.mr.rkey,
        },
    );
    a.qp.post_send(&mut a.c, &wr);
    let wc = a.cq.wait(1);
    assert_eq!(wc[0].status, WcStatus::Success);
    assert_eq!(wc[0].opcode, WcOpcode::RdmaWrite);
    let mut buf = vec![0u8; data.len()];
    b.mr.buf.read(20_000, &mut buf);
    assert_eq!(buf, data);

    // A WRITE with a wrong rkey fails remotely and the QP goes to error.
    let bad = send_wr(
        10,
        &a.mr,
        0,
        16,
        WrOpcode::RdmaWrite {
            remote_addr: b.mr.buf.addr(),
            rkey: b.mr.rkey ^ 1,
        },
    );
    a.qp.post_send(&mut a.c, &bad);
    let wc = a.cq.wait(1);
    assert_eq!(wc[0].status, WcStatus::RemAccessErr);

    // Counters.
    match a.c.request(&Request::Stats) {
        Response::Stats { device, qps } => {
            assert!(device.tx_packets >= 14, "{device:?}");
            assert_eq!(qps.len(), 1);
            assert!(qps[0].1.tx_packets >= 14);
        }
        other => panic!("{other:?}"),
    }
}

/// Bulk 64 KiB WRITEs; prints the rate (a smoke check, not a benchmark).
#[test]
fn bulk_writes() {
    let Some((_dir, [d1, d2])) = daemons(
        [("r3", "127.0.0.113"), ("r4", "127.0.0.114")],
        &["--mtu", "4096"],
    ) else {
        return;
    };
    const MSG: usize = 64 << 10;
    const DEPTH: u32 = 64;
    let mut a = side(&d1, MSG * DEPTH as usize, DEPTH);
    let mut b = side(&d2, MSG * DEPTH as usize, DEPTH);
    pair("127.0.0.113", "127.0.0.114", &mut a, &mut b, Mtu::Mtu4096);
    for k in 0..DEPTH as usize {
        a.mr.buf.write(k * MSG, &[k as u8 + 1; 64]);
    }
    let total: u64 = if cfg!(debug_assertions) { 2000 } else { 20000 };
    let start = Instant::now();
    let (mut posted, mut done) = (0u64, 0u64);
    while done < total {
        let mut batch = 0;
        while posted < total && posted - done < u64::from(DEPTH) {
            let slot = posted % u64::from(DEPTH);
            let wr = send_wr(
                posted,
                &a.mr,
                slot * MSG as u64,
                MSG as u32,
                WrOpcode::RdmaWrite {
                    remote_addr: b.mr.buf.addr() + slot * MSG as u64,
                    rkey: b.mr.rkey,
                },
            );
            a.qp.write_send(&wr);
            posted += 1;
            batch += 1;
        }
        if batch > 0 {
            a.qp.sq_doorbell(&mut a.c);
        }
        let wc = a.cq.wait(1);
        assert_eq!(wc[0].status, WcStatus::Success, "{wc:?}");
        done += 1;
        while let Some(wc) = a.cq.poll() {
            assert_eq!(wc.status, WcStatus::Success);
            done += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let gbit = (total * MSG as u64 * 8) as f64 / secs / 1e9;
    eprintln!("bulk_writes: {total} x 64 KiB in {secs:.3} s = {gbit:.2} Gbit/s");
    for k in 0..DEPTH as usize {
        assert_eq!(b.mr.buf.get(k * MSG + 63), k as u8 + 1);
    }
    match d1.admin(&AdminRequest::Stats) {
        AdminResponse::Stats { qps, .. } => assert_eq!(qps.len(), 1),
        other => panic!("{other:?}"),
    }
}

/// Moves A's context from daemon 5 to daemon 7 while B (daemon 6) stays.
#[test]
fn migrate_one_side_to_a_third_daemon() {
    let Some((_dir, [d1, d2, d3])) = daemons(
        [
            ("r5", "127.0.0.115"),
            ("r6", "127.0.0.116"),
            ("r7", "127.0.0.117"),
        ],
        &[],
    ) else {
        return;
    };
    let (mut a, mut b) = rc_pair(&d1, &d2);
    for i in 0..8u64 {
        b.qp.post_recv(&mut b.c, &recv_wr(i, &b.mr, i * 1024, 1024));
    }
    a.mr.buf.write(0, b"before");
    a.qp.post_send(&mut a.c, &send_wr(1, &a.mr, 0, 6, WrOpcode::Send));
    assert_eq!(a.cq.wait(1)[0].status, WcStatus::Success);
    assert_eq!(b.cq.wait(1)[0].byte_len, 6);

    // Checkpoint on the old daemon.
    let (image, qpns) = match a.c.request(&Request::Checkpoint) {
        Response::Image { image, qpns } => (image, qpns),
        other => panic!("{other:?}"),
    };
    assert_eq!(qpns, vec![a.qp.qpn]);
    // A bad image is refused on the new daemon, without harm.
    let (mut n, _) = d3.session();
    let mut broken = image.clone();
    broken.truncate(image.len() / 2);
    assert!(matches!(
        n.request(&Request::Restore { image: broken }),
        Response::Error { errno, .. } if errno == libc::EINVAL
    ));
    n.ok(&Request::Restore { image });
    n.ok(&Request::Resume);
    a.c.ok(&Request::ForwardTombstones {
        qpns,
        to: "127.0.0.117".parse().unwrap(),
    });
    drop(std::mem::replace(&mut a.c, n));

    // The same QP, rings and MR, now through daemon 7.
    a.mr.buf.write(1024, b"after the move");
    a.qp.post_send(&mut a.c, &send_wr(2, &a.mr, 1024, 14, WrOpcode::Send));
    let wc = a.cq.wait(1);
    assert_eq!((wc[0].wr_id, wc[0].status), (2, WcStatus::Success));
    let wc = b.cq.wait(1);
    assert_eq!(wc[0].byte_len, 14);
    let mut buf = [0u8; 14];
    b.mr.buf.read(1024, &mut buf);
    assert_eq!(&buf, b"after the move");
    match d1.admin(&AdminRequest::Status) {
        AdminResponse::Status(s) => assert_eq!(s.tombstones, vec![a.qp.qpn]),
        other => panic!("{other:?}"),
    }
    match d3.admin(&AdminRequest::Stats) {
        AdminResponse::Stats { qps, .. } => assert_eq!(qps[0].qpn, a.qp.qpn),
        other => panic!("{other:?}"),
    }
}

/// More WRs than the transport's send queue holds: the daemon stops
/// reading the ring when the queue is full and goes on after completions.
#[test]
fn a_full_send_queue_is_retried_after_completions() {
    let Some((_dir, [d1, d2])) = daemons([("r8", "127.0.0.118"), ("r9", "127.0.0.119")], &[])
    else {
        return;
    };
    let (mut a, b) = rc_pair(&d1, &d2);
    const N: u64 = 200;
    let (mut posted, mut done) = (0u64, 0u64);
    let end = Instant::now() + TIMEOUT;
    while done < N {
        assert!(Instant::now() < end, "stuck at {done} of {N}");
        let mut batch = 0;
        while posted < N && a.qp.sq_pi.wrapping_sub(a.qp.sq_ci()) < a.qp.entries {
            let wr = send_wr(
                posted,
                &a.mr,
                0,
                4000,
                WrOpcode::RdmaWrite {
                    remote_addr: b.mr.buf.addr() + (posted % 8) * 4096,
                    rkey: b.mr.rkey,
                },
            );
            a.qp.write_send(&wr);
            posted += 1;
            batch += 1;
        }
        if batch > 0 {
            a.qp.sq_doorbell(&mut a.c);
        }
        while let Some(wc) = a.cq.poll() {
            assert_eq!((wc.wr_id, wc.status), (done, WcStatus::Success));
            done += 1;
        }
        std::thread::yield_now();
    }
}

/// Drops, reorders and duplicates on both daemons' transmit paths: the
/// transport recovers and every message arrives intact, in order.
#[test]
fn sends_survive_injected_faults() {
    let fault = ["--fault", "drop=0.05,reorder=0.05,dup=0.05,seed=3"];
    let Some((_dir, [d1, d2])) = daemons([("r10", "127.0.0.120"), ("r11", "127.0.0.121")], &fault)
    else {
        return;
    };
    let (mut a, mut b) = rc_pair(&d1, &d2);
    for round in 0..4u64 {
        for i in 0..8u64 {
            b.qp.post_recv(&mut b.c, &recv_wr(i, &b.mr, i * 8192, 8192));
        }
        for i in 0..8u64 {
            let data: Vec<u8> = (0..5000u64).map(|k| (k + i + round) as u8).collect();
            a.mr.buf.write(i as usize * 8192, &data);
            a.qp.write_send(&send_wr(i, &a.mr, i * 8192, 5000, WrOpcode::Send));
        }
        a.qp.sq_doorbell(&mut a.c);
        let sent = a.cq.wait(8);
        assert!(
            sent.iter().all(|w| w.status == WcStatus::Success),
            "{sent:?}"
        );
        let got = b.cq.wait(8);
        for (i, wc) in got.iter().enumerate() {
            assert_eq!((wc.wr_id, wc.byte_len), (i as u64, 5000));
            let mut buf = vec![0u8; 5000];
            b.mr.buf.read(i * 8192, &mut buf);
            let want: Vec<u8> = (0..5000u64).map(|k| (k + i as u64 + round) as u8).collect();
            assert_eq!(buf, want);
        }
    }
    // Each fault hit the stream: losses were resent, the receiver saw
    // duplicates and requests out of sequence (after a loss or a reorder).
    let qp_counters = |c: &mut Client| match c.request(&Request::Stats) {
        Response::Stats { qps, .. } => qps[0].1,
        other => panic!("{other:?}"),
    };
    let sender = qp_counters(&mut a.c);
    assert!(sender.retransmits > 0, "{sender:?}");
    let receiver = qp_counters(&mut b.c);
    assert!(
        receiver.duplicates > 0 && receiver.out_of_sequence > 0,
        "{receiver:?}"
    );
}

/// Both ends of one connection migrate at once, each to its own new
/// daemon (A: .122 → .124, B: .123 → .125), as `migros migrate` does it
/// for each: checkpoint (tombstones stay), restore and resume on the new
/// daemon, then ForwardTombstones on the old one. Each end's RESUME goes
/// to the other's old daemon, whose tombstone forwards it (once told) to
/// the other's new daemon: the capture on loopback shows the forwarded
/// RESUME, and both ends end up pointing at each other's new address.
/// Traffic is in flight throughout: A has 8 SENDs posted and B only 4
/// receives, so A retries the rest (RNR) across the move; B posts the
/// other 4 receives after it, and all 8 arrive intact, in order.
#[test]
fn both_ends_migrate_at_once_and_tombstones_forward_the_resumes() {
    use migros_test_support::capture::{Capture, OPCODE_RESUME};
    let (aa, ba, ca, da) = ("127.0.0.122", "127.0.0.123", "127.0.0.124", "127.0.0.125");
    let Some((_dir, [d_a, d_b, d_c, d_d])) =
        daemons([("r12", aa), ("r13", ba), ("r14", ca), ("r15", da)], &[])
    else {
        return;
    };
    let (mut a, mut b) = rc_pair(&d_a, &d_b);
    let resumes = Capture::opcode(OPCODE_RESUME).expect("capture on lo");

    let message = |i: u64| -> Vec<u8> { (0..3000u64).map(|k| (k * 13 + i * 7) as u8).collect() };
    for i in 0..4u64 {
        b.qp.post_recv(&mut b.c, &recv_wr(100 + i, &b.mr, i * 4096, 4096));
    }
    for i in 0..8u64 {
        a.mr.buf.write(i as usize * 4096, &message(i));
        a.qp.write_send(&send_wr(i, &a.mr, i * 4096, 3000, WrOpcode::Send));
    }
    a.qp.sq_doorbell(&mut a.c);
    let first = b.cq.wait(4);
    let sent = a.cq.wait(4);
    assert!(first
        .iter()
        .chain(&sent)
        .all(|w| w.status == WcStatus::Success));
    // Four SENDs still wait for receives: the stream is under way.
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(a.cq.poll().is_none(), "sends 4..8 have no receive yet");

    let checkpoint = |s: &mut Side| match s.c.request(&Request::Checkpoint) {
        Response::Image { image, qpns } => (image, qpns),
        other => panic!("checkpoint: {other:?}"),
    };
    let (image_a, qpns_a) = checkpoint(&mut a);
    let (image_b, qpns_b) = checkpoint(&mut b);
    assert_eq!(
        (qpns_a.clone(), qpns_b.clone()),
        (vec![a.qp.qpn], vec![b.qp.qpn])
    );
    let restore = |d: &Daemon, image: Vec<u8>| {
        let (mut n, _) = d.session();
        n.ok(&Request::Restore { image });
        n.ok(&Request::Resume);
        n
    };
    let na = restore(&d_c, image_a);
    let nb = restore(&d_d, image_b);
    a.c.ok(&Request::ForwardTombstones {
        qpns: qpns_a,
        to: ca.parse().unwrap(),
    });
    b.c.ok(&Request::ForwardTombstones {
        qpns: qpns_b,
        to: da.parse().unwrap(),
    });
    drop(std::mem::replace(&mut a.c, na));
    drop(std::mem::replace(&mut b.c, nb));

    // B, now on .125, posts the receives the rest of the stream needs.
    for i in 4..8u64 {
        b.qp.post_recv(&mut b.c, &recv_wr(100 + i, &b.mr, i * 4096, 4096));
    }
    let rest = b.cq.wait(4);
    let sent = a.cq.wait(4);
    for (k, wc) in sent.iter().enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status),
            (4 + k as u64, WcStatus::Success),
            "{wc:?}"
        );
    }
    for (i, wc) in first.iter().chain(&rest).enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status, wc.byte_len),
            (100 + i as u64, WcStatus::Success, 3000),
            "{wc:?}"
        );
        let mut got = vec![0u8; 3000];
        b.mr.buf.read(i * 4096, &mut got);
        assert_eq!(got, message(i as u64), "message {i}");
    }

    let packets = resumes.finish();
    let (aa, ba, ca, da): (IpAddr, IpAddr, IpAddr, IpAddr) = (
        aa.parse().unwrap(),
        ba.parse().unwrap(),
        ca.parse().unwrap(),
        da.parse().unwrap(),
    );
    let sent = |from, to, qpn| {
        packets
            .iter()
            .any(|p| p.src == from && p.dst == to && p.dest_qpn == qpn)
    };
    // Each end, restored, announced itself where it believed the other
    // was: at the other's old daemon.
    assert!(
        sent(ca, ba, b.qp.qpn),
        "A's RESUME to B's old daemon: {packets:?}"
    );
    assert!(
        sent(da, aa, a.qp.qpn),
        "B's RESUME to A's old daemon: {packets:?}"
    );
    // Neither end could learn the other's new address but from a RESUME a
    // tombstone forwarded (which direction comes first is a matter of
    // timing: the end that hears first answers the other directly).
    assert!(
        sent(ba, da, b.qp.qpn) || sent(aa, ca, a.qp.qpn),
        "a tombstone forwarded a RESUME to the other end's new daemon: {packets:?}"
    );
    let dest = |d: &Daemon, qpn| match d.admin(&AdminRequest::Stats) {
        AdminResponse::Stats { qps, .. } => {
            qps.iter()
                .find(|q| q.qpn == qpn)
                .unwrap_or_else(|| panic!("qp {qpn:#x} on {}: {qps:?}", d.name))
                .dest
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(dest(&d_c, a.qp.qpn), Some((da, b.qp.qpn)));
    assert_eq!(dest(&d_d, b.qp.qpn), Some((ca, a.qp.qpn)));
    for d in [&d_a, &d_b] {
        match d.admin(&AdminRequest::Status) {
            AdminResponse::Status(s) => {
                assert!(s.counters.rx_tombstone > 0, "{}: {:?}", d.name, s.counters)
            }
            other => panic!("{other:?}"),
        }
    }
}
