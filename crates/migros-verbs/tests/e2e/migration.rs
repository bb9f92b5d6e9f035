//! A QP, a UD receiver and an SRQ-fed QP migrate to a third daemon while traffic
//! runs.

use super::*;

/// Streams `total` numbered SENDs from `a` to `b`, calling `mid` once
/// when `at` of them were posted; checks every message arrives once, in
/// order. The first stream on a pair posts the receives (`first`).
fn stream(a: &mut Side, b: &Side, first: bool, total: u32, at: u32, mut mid: impl FnMut(&Side)) {
    const SLOTS: u32 = 16;
    const MSG: usize = 64;
    let post_recv = |slot: u64| {
        b.qp.post_recv(&[RecvWr {
            wr_id: slot,
            sges: vec![b.mr.sge(slot as usize * MSG, MSG)],
        }])
        .unwrap();
    };
    if first {
        for slot in 0..32 {
            post_recv(slot);
        }
    }
    let mut mid_done = false;
    let (mut next, mut acked, mut received) = (0u32, 0u32, Vec::new());
    let mut wcs = Vec::new();
    let start = Instant::now();
    while received.len() < total as usize || acked < total {
        assert!(
            start.elapsed() < WAIT,
            "stalled: posted {next}, acked {acked}, received {}",
            received.len()
        );
        if next >= at && !mid_done {
            mid_done = true;
            mid(a);
        }
        while next < total && next - acked < SLOTS {
            post_numbered(a, next, (next % SLOTS) as usize * MSG, MSG);
            next += 1;
        }
        poll_acks(a, &mut wcs, &mut acked);
        wcs.clear();
        b.cq.poll(&mut wcs, 32).unwrap();
        for wc in &wcs {
            assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
            let off = wc.wr_id as usize * MSG;
            let mut seq = [0u8; 4];
            seq.copy_from_slice(&b.mr.as_slice()[off..off + 4]);
            received.push(u32::from_le_bytes(seq));
            post_recv(wc.wr_id);
        }
        if wcs.is_empty() {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    assert_eq!(received, (0..total).collect::<Vec<_>>());
}

#[test]
fn qp_migrates_to_a_third_daemon_mid_stream() {
    let Some(net) = Net::start_if_can(&[
        ("a", "127.0.0.209"),
        ("b", "127.0.0.210"),
        ("c", "127.0.0.211"),
    ]) else {
        return;
    };
    let actx = net.open("a");
    let ch = actx.create_comp_channel().unwrap();
    let mut a = rc_side_with(actx, 1 << 12, Some(&ch));
    let b = rc_side(net.open("b"), 1 << 12);
    let fd = ch.fd();
    connect_pair(&a, &b);
    let mut report = None;
    stream(&mut a, &b, true, 400, 150, |a| {
        report = Some(a.ctx.migrate_to("c").expect("migrate"));
    });
    let report = report.expect("migrated");
    eprintln!("migration: {report:?}");
    assert_eq!((report.from.as_str(), report.to.as_str()), ("a", "c"));
    assert_eq!(report.qpns, vec![a.qp.qpn]);
    assert!(report.image_bytes > 0);
    assert_eq!(a.ctx.device().name, "c");
    assert_eq!(a.ctx.addr(), "127.0.0.211".parse::<IpAddr>().unwrap());
    assert_eq!(ch.fd(), fd, "the channel keeps its descriptor");
    // The stream goes on after the migration, and requests reach the new daemon.
    stream(&mut a, &b, false, 100, u32::MAX, |_| {});
    let (_, qps) = a.ctx.stats().unwrap();
    assert!(qps.iter().any(|(q, _)| *q == a.qp.qpn));
    // The channel works on the new daemon.
    a.cq.req_notify(false).unwrap();
    a.qp.post_send(&[send_wr(
        7,
        WrOpcode::RdmaWrite {
            remote_addr: b.mr.addr(),
            rkey: b.mr.rkey,
        },
        vec![a.mr.sge(0, 8)],
    )])
    .unwrap();
    assert_eq!(ch.get_event_timeout(WAIT).unwrap(), Some(a.cq.handle));
    wait_ok(&a.cq);
}

/// Datagram `seq` of a numbered UD stream: its number, then a pattern.
fn datagram(seq: u64, len: usize) -> Vec<u8> {
    let mut d = pattern(len, seq as u8 ^ 0x5a);
    d[..8].copy_from_slice(&seq.to_le_bytes());
    d
}

/// A UD receiver migrates (daemon b to c) in the middle of a numbered
/// stream while the sender keeps its address handle (b's address) and
/// goes on sending while the move is under way (at least one datagram is
/// in flight when the receiver moves): every datagram sent before the
/// move arrives; those sent during it may be lost, as UD allows; after
/// it, once the sender's device has been redirected (by the tombstone's
/// answer or the restored QP's announcement), every one arrives but at
/// most the first few. Each arrival is byte-exact, once, in order, with
/// the sender's address and QPN in its GRH (never the forwarding node's).
#[test]
fn ud_receiver_migrates_mid_stream() {
    const LEN: usize = 600;
    const SLOT: usize = 1024;
    const BEFORE: u64 = 100;
    const AFTER: u64 = 200;
    let Some(net) = Net::start_if_can(&[
        ("a", "127.0.0.216"),
        ("b", "127.0.0.217"),
        ("c", "127.0.0.218"),
    ]) else {
        return;
    };
    let (mut a, b, dest) = ud_pair(&net);
    let post_recv = |slot: u64| {
        b.qp.post_recv(&[RecvWr {
            wr_id: slot,
            sges: vec![b.mr.sge(slot as usize * SLOT, 40 + LEN)],
        }])
        .unwrap();
    };
    for slot in 0..16 {
        post_recv(slot);
    }
    let mut got: Vec<u64> = Vec::new();
    let mut wcs = Vec::new();
    // Sends datagram `seq` and waits for its send completion.
    let send = |a: &mut Side, seq: u64| {
        let data = datagram(seq, LEN);
        let at = (seq % 8) as usize * SLOT;
        a.mr.as_mut_slice()[at..at + LEN].copy_from_slice(&data);
        a.qp.post_send(&[SendWr {
            ud: Some(dest),
            ..send_wr(seq, WrOpcode::Send, vec![a.mr.sge(at, LEN)])
        }])
        .unwrap();
        assert_eq!(wait_ok(&a.cq).wr_id, seq);
    };
    // Sends datagram `seq` and waits (at most `limit`) for it to arrive;
    // whether it did. Every arrival is checked and its receive reposted.
    let mut send_and_receive = |a: &mut Side, seq: u64, limit: Duration| -> bool {
        send(a, seq);
        let start = Instant::now();
        while start.elapsed() < limit {
            wcs.clear();
            b.cq.poll(&mut wcs, 16).unwrap();
            for wc in &wcs {
                assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
                assert_eq!(wc.byte_len as usize, 40 + LEN, "{wc:?}");
                assert_eq!((wc.src_qp, wc.src_addr), (a.qp.qpn, Some(a.ctx.addr())));
                let off = wc.wr_id as usize * SLOT + 40;
                let body = &b.mr.as_slice()[off..off + LEN];
                let n = u64::from_le_bytes(body[..8].try_into().unwrap());
                assert_eq!(body, &datagram(n, LEN)[..], "datagram {n} corrupted");
                assert!(got.last().is_none_or(|&l| n > l), "{n} after {got:?}");
                got.push(n);
                post_recv(wc.wr_id);
            }
            if got.last() == Some(&seq) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    };
    for seq in 0..BEFORE {
        assert!(
            send_and_receive(&mut a, seq, WAIT),
            "datagram {seq} before the move"
        );
    }
    // The move runs in a thread while this one goes on sending (at most
    // 8, fewer than the receives posted): these datagrams are in flight
    // while the receiver's QP moves.
    let mut during = Vec::new();
    let report = std::thread::scope(|s| {
        let moving = s.spawn(|| b.ctx.migrate_to("c"));
        while !moving.is_finished() && during.len() < 8 {
            let seq = BEFORE + during.len() as u64;
            send(&mut a, seq);
            during.push(seq);
            std::thread::sleep(Duration::from_millis(2));
        }
        moving.join().expect("the migrating thread")
    })
    .expect("migrate");
    assert!(
        !during.is_empty(),
        "no datagram was sent while the receiver moved"
    );
    assert_eq!((report.from.as_str(), report.to.as_str()), ("b", "c"));
    assert_eq!(report.qpns, vec![b.qp.qpn]);
    let first_after = BEFORE + during.len() as u64;
    let mut lost = Vec::new();
    for seq in first_after..first_after + AFTER {
        if !send_and_receive(&mut a, seq, Duration::from_millis(200)) {
            lost.push(seq);
        }
    }
    assert!(
        lost.len() <= 3 && lost.iter().all(|&s| s < first_after + 3),
        "only datagrams sent right after the move may be lost: lost {lost:?}"
    );
    let lost_during = during.iter().filter(|s| !got.contains(s)).count();
    eprintln!(
        "{} datagrams sent during the move, {} of them arrived",
        during.len(),
        during.len() - lost_during
    );
    assert_eq!(
        got.len(),
        BEFORE as usize + during.len() + AFTER as usize - lost.len() - lost_during
    );
    assert_eq!(b.ctx.device().name, "c");
    let (_, qps) = b.ctx.stats().unwrap();
    let (_, c) = qps
        .iter()
        .find(|(q, _)| *q == b.qp.qpn)
        .expect("the UD QP lives on c");
    assert!(c.rx_packets >= AFTER - lost.len() as u64, "{c:?}");
}

/// An RC QP whose receives come from an SRQ migrates with it (daemon b to
/// c) in the middle of a stream of numbered SENDs, with receives still
/// queued in the SRQ: every message arrives once, in order, byte-exact,
/// each taking the SRQ's receives in posting order; receives posted after
/// the move go to the restored SRQ.
#[test]
fn srq_migrates_with_its_queued_receives_mid_stream() {
    const MSG: usize = 512;
    const SLOTS: u64 = 48;
    const TOTAL: u32 = 300;
    let Some(net) = Net::start_if_can(&[
        ("a", "127.0.0.219"),
        ("b", "127.0.0.220"),
        ("c", "127.0.0.221"),
    ]) else {
        return;
    };
    let mut a = rc_side(net.open("a"), 1 << 14);
    let (srq, b) = rc_side_on_srq(net.open("b"), 256, 64, SLOTS as usize * MSG);
    connect_pair(&a, &b);
    // Receives are numbered in posting order; receive k uses slot k % SLOTS.
    let post = |posted: &mut u64, n: u64| {
        let wrs: Vec<RecvWr> = (*posted..*posted + n)
            .map(|k| RecvWr {
                wr_id: k,
                sges: vec![b.mr.sge((k % SLOTS) as usize * MSG, MSG)],
            })
            .collect();
        srq.post_recv(&wrs).unwrap();
        *posted += n;
    };
    let mut posted = 0u64;
    post(&mut posted, SLOTS);
    let (mut next, mut acked, mut received) = (0u32, 0u32, 0u64);
    let mut queued_at_move = None;
    let mut wcs = Vec::new();
    let start = Instant::now();
    while u64::from(TOTAL) > received || acked < TOTAL {
        assert!(
            start.elapsed() < WAIT,
            "stalled: posted {next}, acked {acked}, received {received}"
        );
        if next >= TOTAL / 2 && queued_at_move.is_none() {
            // Mid-stream: sends in flight, receives queued in the SRQ.
            queued_at_move = Some((posted - received, received));
            let report = b.ctx.migrate_to("c").expect("migrate");
            assert_eq!(report.qpns, vec![b.qp.qpn]);
        }
        while next < TOTAL && next - acked < 8 {
            let off = (next % 16) as usize * MSG;
            let data = pattern(MSG, next as u8);
            a.mr.as_mut_slice()[off..off + MSG].copy_from_slice(&data);
            post_numbered(&mut a, next, off, MSG);
            next += 1;
        }
        poll_acks(&a, &mut wcs, &mut acked);
        wcs.clear();
        b.cq.poll(&mut wcs, 32).unwrap();
        for wc in &wcs {
            assert_eq!(
                (wc.status, wc.wr_id, wc.qp_num, wc.byte_len as usize),
                (WcStatus::Success, received, b.qp.qpn, MSG),
                "receives taken from the SRQ once each, in posting order"
            );
            let off = (wc.wr_id % SLOTS) as usize * MSG;
            let body = &b.mr.as_slice()[off..off + MSG];
            let seq = u32::from_le_bytes(body[..4].try_into().unwrap());
            assert_eq!(u64::from(seq), received, "message order");
            assert_eq!(&body[4..], &pattern(MSG, seq as u8)[4..], "message {seq}");
            received += 1;
            post(&mut posted, 1);
        }
        if wcs.is_empty() {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
    let (queued, arrived) = queued_at_move.expect("migrated");
    assert!(queued > 0, "receives were queued in the SRQ at the move");
    assert!(
        arrived > 0 && arrived < u64::from(TOTAL / 2),
        "the move came mid-stream: {arrived} messages had arrived"
    );
    assert_eq!(b.ctx.device().name, "c");
    let (_, qps) = b.ctx.stats().unwrap();
    assert!(qps.iter().any(|(q, _)| *q == b.qp.qpn), "{qps:?}");
}
