//! End to end: real `migrosd` daemons on loopback addresses (127.0.0.x,
//! each test its own), a temporary socket directory per test, and this
//! process as their client. Needs root (the daemons reach this process's
//! memory with process_vm_readv/writev); skipped otherwise.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use migros_verbs::*;
use support::*;

fn send_wr(wr_id: u64, opcode: WrOpcode, sges: Vec<Sge>) -> SendWr {
    SendWr {
        wr_id,
        opcode,
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(sges),
        ud: None,
    }
}

fn u64_at(mr: &Mr, at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&mr.as_slice()[at..at + 8]);
    u64::from_ne_bytes(b)
}

#[test]
fn rc_send_write_read_and_atomics_between_two_daemons() {
    if !can_run() {
        return;
    }
    let net = Net::start(&[("a", "127.0.0.201"), ("b", "127.0.0.202")]);
    let mut a = rc_side(net.open("a"), 1 << 16);
    let mut b = rc_side(net.open("b"), 1 << 16);
    assert_eq!(a.ctx.addr(), "127.0.0.201".parse::<IpAddr>().unwrap());
    assert_eq!(b.ctx.device().name, "b");
    connect_pair(&a, &b);
    let rkey = b.mr.rkey;
    let base = b.mr.addr();
    let raddr = |off: usize| base + off as u64;

    // SEND with immediate.
    let data = pattern(3000, 1);
    a.mr.as_mut_slice()[..3000].copy_from_slice(&data);
    b.qp.post_recv(&[RecvWr {
        wr_id: 11,
        sges: vec![b.mr.sge(0, 4096)],
    }])
    .unwrap();
    a.qp.post_send(&[send_wr(
        1,
        WrOpcode::SendWithImm { imm: 0xfeed },
        vec![a.mr.sge(0, 3000)],
    )])
    .unwrap();
    let wc = wait_ok(&a.cq);
    assert_eq!((wc.wr_id, wc.opcode), (1, WcOpcode::Send));
    let wc = wait_ok(&b.cq);
    assert_eq!(
        (wc.wr_id, wc.opcode, wc.byte_len),
        (11, WcOpcode::Recv, 3000)
    );
    assert_eq!((wc.imm_data, wc.qp_num), (Some(0xfeed), b.qp.qpn));
    assert_eq!(&b.mr.as_slice()[..3000], &data[..]);
    assert!(b.mr.as_slice()[3000..4096].iter().all(|&x| x == 0));

    // RDMA WRITE (several packets, two SGEs).
    let data = pattern(5000, 2);
    a.mr.as_mut_slice()[8192..13192].copy_from_slice(&data);
    a.qp.post_send(&[send_wr(
        2,
        WrOpcode::RdmaWrite {
            remote_addr: raddr(16384),
            rkey,
        },
        vec![a.mr.sge(8192, 1000), a.mr.sge(9192, 4000)],
    )])
    .unwrap();
    let wc = wait_ok(&a.cq);
    assert_eq!((wc.wr_id, wc.opcode), (2, WcOpcode::RdmaWrite));
    assert_eq!(&b.mr.as_slice()[16384..21384], &data[..]);
    assert_eq!(b.mr.as_slice()[16383], 0);
    assert_eq!(b.mr.as_slice()[21384], 0);

    // RDMA WRITE with immediate: consumes a receive, no data in it.
    b.qp.post_recv(&[RecvWr {
        wr_id: 12,
        sges: vec![],
    }])
    .unwrap();
    let data = pattern(100, 3);
    a.mr.as_mut_slice()[..100].copy_from_slice(&data);
    a.qp.post_send(&[send_wr(
        3,
        WrOpcode::RdmaWriteWithImm {
            remote_addr: raddr(30000),
            rkey,
            imm: 7,
        },
        vec![a.mr.sge(0, 100)],
    )])
    .unwrap();
    assert_eq!(wait_ok(&a.cq).wr_id, 3);
    let wc = wait_ok(&b.cq);
    assert_eq!((wc.wr_id, wc.opcode), (12, WcOpcode::RecvRdmaWithImm));
    assert_eq!((wc.imm_data, wc.byte_len), (Some(7), 100));
    assert_eq!(&b.mr.as_slice()[30000..30100], &data[..]);

    // RDMA READ.
    let data = pattern(2000, 4);
    b.mr.as_mut_slice()[40000..42000].copy_from_slice(&data);
    a.qp.post_send(&[send_wr(
        4,
        WrOpcode::RdmaRead {
            remote_addr: raddr(40000),
            rkey,
        },
        vec![a.mr.sge(20000, 2000)],
    )])
    .unwrap();
    let wc = wait_ok(&a.cq);
    assert_eq!(
        (wc.wr_id, wc.opcode, wc.byte_len),
        (4, WcOpcode::RdmaRead, 2000)
    );
    assert_eq!(&a.mr.as_slice()[20000..22000], &data[..]);

    // Atomics on an 8-byte word of b's MR.
    b.mr.as_mut_slice()[48..56].copy_from_slice(&5u64.to_ne_bytes());
    let cas = |wr_id, compare, swap, at| {
        send_wr(
            wr_id,
            WrOpcode::AtomicCmpSwap {
                remote_addr: raddr(48),
                rkey,
                compare,
                swap,
            },
            vec![a.mr.sge(at, 8)],
        )
    };
    a.qp.post_send(&[cas(5, 5, 9, 56)]).unwrap();
    assert_eq!(wait_ok(&a.cq).opcode, WcOpcode::CompSwap);
    assert_eq!(u64_at(&a.mr, 56), 5);
    assert_eq!(u64_at(&b.mr, 48), 9);
    a.qp.post_send(&[send_wr(
        6,
        WrOpcode::AtomicFetchAdd {
            remote_addr: raddr(48),
            rkey,
            add: 3,
        },
        vec![a.mr.sge(64, 8)],
    )])
    .unwrap();
    assert_eq!(wait_ok(&a.cq).opcode, WcOpcode::FetchAdd);
    assert_eq!(u64_at(&a.mr, 64), 9);
    assert_eq!(u64_at(&b.mr, 48), 12);
    // A compare that fails returns the old value and swaps nothing.
    a.qp.post_send(&[cas(7, 100, 1, 72)]).unwrap();
    wait_ok(&a.cq);
    assert_eq!(u64_at(&a.mr, 72), 12);
    assert_eq!(u64_at(&b.mr, 48), 12);

    // A batch larger than the ring is refused with QueueFull after the
    // WRs that fit.
    let cap = a.qp.cap().max_send_wr as usize;
    let many: Vec<SendWr> = (0..cap + 1)
        .map(|i| SendWr {
            flags: SendFlags::default(),
            ..send_wr(
                100 + i as u64,
                WrOpcode::RdmaWrite {
                    remote_addr: raddr(0),
                    rkey,
                },
                vec![a.mr.sge(0, 8)],
            )
        })
        .collect();
    let err = a.qp.post_send(&many).unwrap_err();
    assert!(matches!(err, Error::QueueFull), "{err}");
    let stats = a.ctx.stats().unwrap();
    assert!(stats.1.iter().any(|(q, _)| *q == a.qp.qpn), "{stats:?}");
}

fn ud_side(ctx: Context, srq: bool) -> (Side, Option<Srq>) {
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(64, None).unwrap();
    let srq = srq.then(|| pd.create_srq(16, 1, 0).unwrap());
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Ud,
            send_cq: &cq,
            recv_cq: &cq,
            srq: srq.as_ref(),
            cap: cap(16),
            sq_sig_all: true,
        })
        .unwrap();
    let init = QpAttr {
        qp_state: QpState::Init,
        qkey: 0x1111,
        ..QpAttr::default()
    };
    qp.modify(
        &init,
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
    )
    .unwrap();
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        ..QpAttr::default()
    };
    qp.modify(&rtr, AttrMask::STATE).unwrap();
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: 1,
        ..QpAttr::default()
    };
    qp.modify(&rts, AttrMask::STATE | AttrMask::SQ_PSN).unwrap();
    let mr = pd.alloc_mr(1 << 14, ALL_ACCESS).unwrap();
    (
        Side {
            ctx,
            pd,
            cq,
            qp,
            mr,
        },
        srq,
    )
}

#[test]
fn ud_datagrams_carry_the_grh_and_source() {
    if !can_run() {
        return;
    }
    let net = Net::start(&[("a", "127.0.0.203"), ("b", "127.0.0.204")]);
    let (mut a, _) = ud_side(net.open("a"), false);
    let (b, _) = ud_side(net.open("b"), false);
    let dest = UdDest {
        addr: b.ctx.addr(),
        remote_qpn: b.qp.qpn,
        remote_qkey: 0x1111,
    };
    b.qp.post_recv(&[
        RecvWr {
            wr_id: 1,
            sges: vec![b.mr.sge(0, 40 + 1024)],
        },
        RecvWr {
            wr_id: 2,
            sges: vec![b.mr.sge(4096, 40 + 1024)],
        },
    ])
    .unwrap();
    let data = pattern(500, 5);
    a.mr.as_mut_slice()[..500].copy_from_slice(&data);
    a.qp.post_send(&[
        SendWr {
            ud: Some(dest),
            ..send_wr(10, WrOpcode::Send, vec![a.mr.sge(0, 500)])
        },
        SendWr {
            wr_id: 11,
            opcode: WrOpcode::SendWithImm { imm: 42 },
            flags: SendFlags::SIGNALED | SendFlags::INLINE,
            data: SendData::Inline(b"inline datagram".to_vec()),
            ud: Some(dest),
        },
    ])
    .unwrap();
    let sent = wait_n(&a.cq, 2);
    assert!(
        sent.iter().all(|w| w.status == WcStatus::Success),
        "{sent:?}"
    );
    let got = wait_n(&b.cq, 2);
    let (w1, w2) = (&got[0], &got[1]);
    assert_eq!(
        (w1.wr_id, w1.status, w1.byte_len),
        (1, WcStatus::Success, 540)
    );
    assert_eq!((w1.src_qp, w1.src_addr), (a.qp.qpn, Some(a.ctx.addr())));
    assert_eq!(&b.mr.as_slice()[40..540], &data[..]);
    assert_eq!((w2.wr_id, w2.imm_data, w2.byte_len), (2, Some(42), 40 + 15));
    assert_eq!(&b.mr.as_slice()[4096 + 40..4096 + 55], b"inline datagram");
    // A UD send without a destination is refused before it reaches the ring.
    let err =
        a.qp.post_send(&[send_wr(12, WrOpcode::Send, vec![a.mr.sge(0, 1)])])
            .unwrap_err();
    assert_eq!(err.errno(), 22);
}

#[test]
fn srq_feeds_receives_in_order() {
    if !can_run() {
        return;
    }
    let net = Net::start(&[("a", "127.0.0.205"), ("b", "127.0.0.206")]);
    let mut a = rc_side(net.open("a"), 1 << 14);
    let bctx = net.open("b");
    let pd = bctx.alloc_pd().unwrap();
    let cq = bctx.create_cq(64, None).unwrap();
    let srq = pd.create_srq(16, 1, 0).unwrap();
    assert_eq!(srq.entries(), 16);
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: &cq,
            recv_cq: &cq,
            srq: Some(&srq),
            cap: cap(16),
            sq_sig_all: false,
        })
        .unwrap();
    let mr = pd.alloc_mr(1 << 14, ALL_ACCESS).unwrap();
    let b = Side {
        ctx: bctx,
        pd,
        cq,
        qp,
        mr,
    };
    assert!(matches!(
        b.qp.post_recv(&[RecvWr {
            wr_id: 0,
            sges: vec![]
        }]),
        Err(Error::InvalidArgument(_))
    ));
    connect_pair(&a, &b);
    let recvs: Vec<RecvWr> = (0..4)
        .map(|i| RecvWr {
            wr_id: 100 + i,
            sges: vec![b.mr.sge(i as usize * 1024, 1024)],
        })
        .collect();
    srq.post_recv(&recvs).unwrap();
    for i in 0..4u8 {
        let len = 100 + usize::from(i) * 200;
        let at = usize::from(i) * 2048;
        a.mr.as_mut_slice()[at..at + len].copy_from_slice(&pattern(len, i));
        a.qp.post_send(&[send_wr(
            u64::from(i),
            WrOpcode::Send,
            vec![a.mr.sge(at, len)],
        )])
        .unwrap();
    }
    assert!(wait_n(&a.cq, 4)
        .iter()
        .all(|w| w.status == WcStatus::Success));
    let got = wait_n(&b.cq, 4);
    for (i, wc) in got.iter().enumerate() {
        let len = 100 + i * 200;
        assert_eq!((wc.wr_id, wc.status), (100 + i as u64, WcStatus::Success));
        assert_eq!(wc.byte_len as usize, len);
        assert_eq!(
            &b.mr.as_slice()[i * 1024..i * 1024 + len],
            &pattern(len, i as u8)[..]
        );
    }
    srq.modify_limit(2).unwrap();
}

#[test]
fn completion_channel_reports_armed_cqs() {
    if !can_run() {
        return;
    }
    let net = Net::start(&[("a", "127.0.0.207"), ("b", "127.0.0.208")]);
    let a = rc_side(net.open("a"), 4096);
    let bctx = net.open("b");
    let ch = bctx.create_comp_channel().unwrap();
    assert!(ch.fd() >= 0);
    let pd = bctx.alloc_pd().unwrap();
    let cq = bctx.create_cq(16, Some(&ch)).unwrap();
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: &cq,
            recv_cq: &cq,
            srq: None,
            cap: cap(16),
            sq_sig_all: false,
        })
        .unwrap();
    let mr = pd.alloc_mr(4096, ALL_ACCESS).unwrap();
    let b = Side {
        ctx: bctx,
        pd,
        cq,
        qp,
        mr,
    };
    connect_pair(&a, &b);
    b.cq.req_notify(false).unwrap();
    assert_eq!(
        ch.get_event_timeout(Duration::from_millis(100)).unwrap(),
        None
    );
    for round in 0..2u64 {
        b.qp.post_recv(&[RecvWr {
            wr_id: round,
            sges: vec![b.mr.sge(0, 64)],
        }])
        .unwrap();
        a.qp.post_send(&[send_wr(round, WrOpcode::Send, vec![a.mr.sge(0, 64)])])
            .unwrap();
        let cq = if round == 0 {
            ch.get_event_timeout(WAIT).unwrap().expect("an event")
        } else {
            ch.get_event().unwrap()
        };
        assert_eq!(cq, b.cq.handle);
        assert_eq!(wait_ok(&b.cq).wr_id, round);
        wait_ok(&a.cq);
        b.cq.req_notify(false).unwrap();
    }
    // Not armed for a completion that did not happen: no event.
    assert_eq!(
        ch.get_event_timeout(Duration::from_millis(50)).unwrap(),
        None
    );
}

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
            let off = (next % SLOTS) as usize * MSG;
            a.mr.as_mut_slice()[off..off + 4].copy_from_slice(&next.to_le_bytes());
            a.qp.post_send(&[send_wr(
                u64::from(next),
                WrOpcode::Send,
                vec![a.mr.sge(off, MSG)],
            )])
            .unwrap();
            next += 1;
        }
        wcs.clear();
        a.cq.poll(&mut wcs, 32).unwrap();
        for wc in &wcs {
            assert_eq!(
                (wc.status, wc.wr_id),
                (WcStatus::Success, u64::from(acked)),
                "{wc:?}"
            );
            acked += 1;
        }
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
    if !can_run() {
        return;
    }
    let net = Net::start(&[
        ("a", "127.0.0.209"),
        ("b", "127.0.0.210"),
        ("c", "127.0.0.211"),
    ]);
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
/// stream while the sender keeps its address handle (b's address): every
/// datagram sent before the move arrives; after it, once the sender's
/// device has been redirected (by the tombstone's answer or the restored
/// QP's announcement), every one arrives; at most the first few sent
/// right after the move may be lost, as UD allows. Each arrival is
/// byte-exact, once, in order, with the sender's address and QPN in its
/// GRH (never the forwarding node's).
#[test]
fn ud_receiver_migrates_mid_stream() {
    if !can_run() {
        return;
    }
    const LEN: usize = 600;
    const SLOT: usize = 1024;
    const BEFORE: u64 = 100;
    const AFTER: u64 = 200;
    let net = Net::start(&[
        ("a", "127.0.0.216"),
        ("b", "127.0.0.217"),
        ("c", "127.0.0.218"),
    ]);
    let (mut a, _) = ud_side(net.open("a"), false);
    let (b, _) = ud_side(net.open("b"), false);
    let dest = UdDest {
        addr: b.ctx.addr(),
        remote_qpn: b.qp.qpn,
        remote_qkey: 0x1111,
    };
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
    // Sends datagram `seq` and waits (at most `limit`) for it to arrive;
    // whether it did. Every arrival is checked and its receive reposted.
    let mut send_and_receive = |a: &mut Side, seq: u64, limit: Duration| -> bool {
        let data = datagram(seq, LEN);
        let at = (seq % 8) as usize * SLOT;
        a.mr.as_mut_slice()[at..at + LEN].copy_from_slice(&data);
        a.qp.post_send(&[SendWr {
            ud: Some(dest),
            ..send_wr(seq, WrOpcode::Send, vec![a.mr.sge(at, LEN)])
        }])
        .unwrap();
        assert_eq!(wait_ok(&a.cq).wr_id, seq);
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
    let report = b.ctx.migrate_to("c").expect("migrate");
    assert_eq!((report.from.as_str(), report.to.as_str()), ("b", "c"));
    assert_eq!(report.qpns, vec![b.qp.qpn]);
    let mut lost = Vec::new();
    for seq in BEFORE..BEFORE + AFTER {
        if !send_and_receive(&mut a, seq, Duration::from_millis(200)) {
            lost.push(seq);
        }
    }
    assert!(
        lost.len() <= 3 && lost.iter().all(|&s| s < BEFORE + 3),
        "only datagrams sent right after the move may be lost: lost {lost:?}"
    );
    assert_eq!(got.len() as u64, BEFORE + AFTER - lost.len() as u64);
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
    if !can_run() {
        return;
    }
    const MSG: usize = 512;
    const SLOTS: u64 = 48;
    const TOTAL: u32 = 300;
    let net = Net::start(&[
        ("a", "127.0.0.219"),
        ("b", "127.0.0.220"),
        ("c", "127.0.0.221"),
    ]);
    let mut a = rc_side(net.open("a"), 1 << 14);
    let bctx = net.open("b");
    let pd = bctx.alloc_pd().unwrap();
    let cq = bctx.create_cq(256, None).unwrap();
    let srq = pd.create_srq(64, 1, 0).unwrap();
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: &cq,
            recv_cq: &cq,
            srq: Some(&srq),
            cap: cap(16),
            sq_sig_all: false,
        })
        .unwrap();
    let mr = pd.alloc_mr(SLOTS as usize * MSG, ALL_ACCESS).unwrap();
    let b = Side {
        ctx: bctx,
        pd,
        cq,
        qp,
        mr,
    };
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
            a.mr.as_mut_slice()[off..off + 4].copy_from_slice(&next.to_le_bytes());
            a.qp.post_send(&[send_wr(
                u64::from(next),
                WrOpcode::Send,
                vec![a.mr.sge(off, MSG)],
            )])
            .unwrap();
            next += 1;
        }
        wcs.clear();
        a.cq.poll(&mut wcs, 32).unwrap();
        for wc in &wcs {
            assert_eq!((wc.status, wc.wr_id), (WcStatus::Success, u64::from(acked)));
            acked += 1;
        }
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

#[test]
fn killed_daemon_flushes_outstanding_work_requests() {
    if !can_run() {
        return;
    }
    let mut net = Net::start(&[("a", "127.0.0.214"), ("b", "127.0.0.215")]);
    let a = rc_side(net.open("a"), 1 << 12);
    let b = rc_side(net.open("b"), 1 << 12);
    connect_pair(&a, &b);
    let recv = |wr_id| RecvWr {
        wr_id,
        sges: vec![b.mr.sge(0, 64)],
    };
    b.qp.post_recv(&[recv(10), recv(11), recv(12), recv(13)])
        .unwrap();
    a.qp.post_send(&[
        send_wr(1, WrOpcode::Send, vec![a.mr.sge(0, 8)]),
        send_wr(2, WrOpcode::Send, vec![a.mr.sge(0, 8)]),
    ])
    .unwrap();
    wait_n(&a.cq, 2);
    let got: Vec<_> = wait_n(&b.cq, 2).iter().map(|w| w.wr_id).collect();
    assert_eq!(got, [10, 11]);

    net.kill("b");
    let start = Instant::now();
    while !b.ctx.connection_lost() {
        assert!(start.elapsed() < WAIT, "the daemon's death went unnoticed");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut wcs = Vec::new();
    b.cq.poll(&mut wcs, 16).unwrap();
    let got: Vec<_> = wcs.iter().map(|w| (w.wr_id, w.status)).collect();
    assert_eq!(
        got,
        [(12, WcStatus::WrFlushErr), (13, WcStatus::WrFlushErr)]
    );
    assert_eq!(b.cq.poll(&mut wcs, 16).unwrap(), 0);
    assert!(b.qp.post_recv(&[recv(14)]).is_err());
    assert!(b
        .qp
        .post_send(&[send_wr(3, WrOpcode::Send, vec![b.mr.sge(0, 8)])])
        .is_err());
}

const CHILD_ENV: &str = "MIGROS_VERBS_E2E_CHILD_DIR";

/// Not a test on its own: the client process that
/// `killed_client_gives_the_peer_retry_exceeded` starts and kills.
#[test]
fn child_process_role() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ctx = Context::open_in(std::path::Path::new(&dir), "a").unwrap();
    let side = rc_side(ctx, 1 << 16);
    println!(
        "CHILD {} {} {} {}",
        side.qp.qpn,
        side.ctx.addr(),
        side.mr.addr(),
        side.mr.rkey
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut it = line.split_whitespace();
    let qpn: Qpn = it.next().unwrap().parse().unwrap();
    let addr: IpAddr = it.next().unwrap().parse().unwrap();
    connect_rc(&side.qp, qpn, addr, 12, 7);
    println!("CHILD READY");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killed_client_gives_the_peer_retry_exceeded() {
    if !can_run() {
        return;
    }
    let net = Net::start(&[("a", "127.0.0.212"), ("b", "127.0.0.213")]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, net.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The harness may print "test ... " before the child's own output on
    // the same line; lines are read on a thread so no wait is unbounded.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(at) = l.find("CHILD ") {
                if tx.send(l[at + 6..].to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    let child_line = |want: &str| loop {
        let l = rx
            .recv_timeout(WAIT)
            .expect("the child process did not answer");
        if l.starts_with(want) {
            return l;
        }
    };
    let info = child_line("");
    let f: Vec<&str> = info.split_whitespace().collect();
    let (cqpn, caddr, cmr, crkey): (Qpn, IpAddr, u64, u32) = (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    );
    let b = rc_side(net.open("b"), 1 << 16);
    // ACK timeout 4.096 µs * 2^10 ≈ 4 ms, 3 retries.
    connect_rc(&b.qp, cqpn, caddr, 10, 3);
    writeln!(
        child.stdin.as_mut().unwrap(),
        "{} {}",
        b.qp.qpn,
        b.ctx.addr()
    )
    .unwrap();
    child_line("READY");

    let write = |wr_id| {
        send_wr(
            wr_id,
            WrOpcode::RdmaWrite {
                remote_addr: cmr,
                rkey: crkey,
            },
            vec![b.mr.sge(0, 1 << 16)],
        )
    };
    b.qp.post_send(&(0..8).map(write).collect::<Vec<_>>())
        .unwrap();
    for wc in wait_n(&b.cq, 8) {
        assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    }
    // Kill the client mid-transfer and keep writing to it.
    b.qp.post_send(&(8..16).map(write).collect::<Vec<_>>())
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut posted, mut done) = (16u64, 8u64);
    let start = Instant::now();
    let mut wcs = Vec::new();
    let first_error = loop {
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "no error completion after the peer died ({} completions)",
            wcs.len()
        );
        let n = wcs.len();
        b.cq.poll(&mut wcs, 16).unwrap();
        done += (wcs.len() - n) as u64;
        if let Some(wc) = wcs[n..].iter().find(|w| w.status != WcStatus::Success) {
            break wc.clone();
        }
        if posted - done < 8 {
            b.qp.post_send(&[write(posted)]).unwrap();
            posted += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!("error after {:?}: {first_error:?}", start.elapsed());
    // Either the peer's daemon noticed its client gone and dropped the QP
    // (retries, then retry exceeded), or it NAKed a WRITE into the dead
    // client's memory first (remote operational error: never an ACK for
    // data that did not land).
    assert!(
        matches!(
            first_error.status,
            WcStatus::RetryExcErr | WcStatus::RemOpErr
        ),
        "{first_error:?}"
    );
    // Everything after it is flushed; nothing hangs.
    let rest = (posted - done) as usize;
    for wc in wait_n(&b.cq, rest) {
        assert_ne!(wc.status, WcStatus::Success);
    }
}
