//! The verbs of issue 11 through the Rust API against real daemons:
//! memory windows (type 1 and 2: bind, access through them, SEND_WITH_INV,
//! a key invalidated), `Cq::resize` with completions waiting, and the SRQ
//! limit event on a subscribed channel.

use super::*;

/// Rights of a region windows may be bound to.
const MW_REGION: Access = Access(ALL_ACCESS.0 | Access::MW_BIND.0);

fn wait_status(cq: &Cq) -> WorkCompletion {
    wait_n(cq, 1).remove(0)
}

#[test]
fn memory_windows_bind_grant_and_are_invalidated() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.234"), ("b", "127.0.0.235")]) else {
        return;
    };
    let mut a = rc_side(net.open("a"), 1 << 16);
    let b = rc_side(net.open("b"), 1 << 16);
    let mut region = b.pd.alloc_mr(1 << 16, MW_REGION).unwrap();
    connect_pair(&a, &b);
    let base = region.addr();

    // Type 1: bound with `bind` (ibv_bind_mw) to 4 KiB, READ only.
    let data = pattern(4096, 5);
    region.as_mut_slice()[..4096].copy_from_slice(&data);
    let mw1 = b.pd.alloc_mw(MwType::Type1).unwrap();
    let old = mw1.rkey();
    let k1 = mw1
        .bind(
            &b.qp,
            1,
            SendFlags::SIGNALED,
            (region.lkey, base, 4096),
            Access::REMOTE_READ,
        )
        .unwrap();
    assert_ne!(k1, old, "a bind gives the window a new key");
    assert_eq!(mw1.rkey(), k1);
    let wc = wait_ok(&b.cq);
    assert_eq!((wc.wr_id, wc.opcode), (1, WcOpcode::BindMw));
    a.qp.post_send(&[send_wr(
        10,
        WrOpcode::RdmaRead {
            remote_addr: base,
            rkey: k1,
        },
        vec![a.mr.sge(0, 4096)],
    )])
    .unwrap();
    let wc = wait_ok(&a.cq);
    assert_eq!((wc.wr_id, wc.opcode), (10, WcOpcode::RdmaRead));
    assert_eq!(&a.mr.as_slice()[..4096], &data[..]);

    // Type 2: bound by a BIND_MW work request to [8 KiB, 12 KiB), WRITE.
    let mw2 = b.pd.alloc_mw(MwType::Type2).unwrap();
    let (wr, k2) = mw2.bind_wr(
        2,
        SendFlags::SIGNALED,
        (region.lkey, base + 8192, 4096),
        Access::REMOTE_WRITE,
    );
    b.qp.post_send(&[wr]).unwrap();
    let wc = wait_ok(&b.cq);
    assert_eq!((wc.wr_id, wc.opcode), (2, WcOpcode::BindMw));
    mw2.set_rkey(k2);
    let data = pattern(1000, 6);
    a.mr.as_mut_slice()[..1000].copy_from_slice(&data);
    a.qp.post_send(&[send_wr(
        11,
        WrOpcode::RdmaWrite {
            remote_addr: base + 8192 + 3000,
            rkey: k2,
        },
        vec![a.mr.sge(0, 1000)],
    )])
    .unwrap();
    assert_eq!(wait_ok(&a.cq).wr_id, 11);
    assert_eq!(&region.as_slice()[11192..12192], &data[..]);
    assert_eq!(region.as_slice()[12192], 0, "nothing past the window");

    // SEND_WITH_INV frees the type 2 window; the receive names the key.
    b.qp.post_recv(&[RecvWr {
        wr_id: 20,
        sges: vec![b.mr.sge(0, 64)],
    }])
    .unwrap();
    a.qp.post_send(&[send_wr(
        12,
        WrOpcode::SendWithInv { rkey: k2 },
        vec![a.mr.sge(0, 8)],
    )])
    .unwrap();
    assert_eq!(wait_ok(&a.cq).wr_id, 12);
    let wc = wait_ok(&b.cq);
    assert_eq!((wc.wr_id, wc.opcode), (20, WcOpcode::Recv));
    assert_eq!(wc.invalidated_rkey, Some(k2));

    // The invalidated key no longer grants anything: a remote access
    // error, as rxe answers an rkey it cannot find.
    a.qp.post_send(&[send_wr(
        13,
        WrOpcode::RdmaWrite {
            remote_addr: base + 8192,
            rkey: k2,
        },
        vec![a.mr.sge(0, 8)],
    )])
    .unwrap();
    let wc = wait_status(&a.cq);
    assert_eq!(
        (wc.wr_id, wc.status),
        (13, WcStatus::RemAccessErr),
        "{wc:?}"
    );
}

#[test]
fn a_window_refuses_what_it_does_not_grant() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.236"), ("b", "127.0.0.237")]) else {
        return;
    };
    let a = rc_side(net.open("a"), 1 << 16);
    let b = rc_side(net.open("b"), 1 << 16);
    let region = b.pd.alloc_mr(1 << 16, MW_REGION).unwrap();
    connect_pair(&a, &b);
    // A READ-only type 1 window: a WRITE through it is refused.
    let mw = b.pd.alloc_mw(MwType::Type1).unwrap();
    let k = mw
        .bind(
            &b.qp,
            1,
            SendFlags::SIGNALED,
            (region.lkey, region.addr(), 4096),
            Access::REMOTE_READ,
        )
        .unwrap();
    wait_ok(&b.cq);
    a.qp.post_send(&[send_wr(
        2,
        WrOpcode::RdmaWrite {
            remote_addr: region.addr(),
            rkey: k,
        },
        vec![a.mr.sge(0, 8)],
    )])
    .unwrap();
    let wc = wait_status(&a.cq);
    assert_eq!((wc.wr_id, wc.status), (2, WcStatus::RemAccessErr), "{wc:?}");
    assert!(region.as_slice()[..8].iter().all(|&x| x == 0));
}

#[test]
fn a_resized_cq_keeps_its_completions_and_holds_more() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.238"), ("b", "127.0.0.239")]) else {
        return;
    };
    let mut a = rc_side(net.open("a"), 1 << 16);
    let b = rc_side_sized(net.open("b"), 16, cap(64), 1 << 16, None);
    assert_eq!(b.cq.entries(), 16);
    connect_pair(&a, &b);
    let max = b.ctx.device().max_cqe;
    assert!(matches!(b.cq.resize(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        b.cq.resize(max + 1),
        Err(Error::InvalidArgument(_))
    ));

    // Ten receives complete and wait in the CQ; it grows to 64.
    let send_n = |a: &mut Side, from: u64, n: u64| {
        let recvs: Vec<RecvWr> = (from..from + n)
            .map(|i| RecvWr {
                wr_id: i,
                sges: vec![b.mr.sge(64 * (i as usize % 512), 64)],
            })
            .collect();
        b.qp.post_recv(&recvs).unwrap();
        for i in from..from + n {
            let at = 64 * (i as usize % 512);
            a.mr.as_mut_slice()[at..at + 8].copy_from_slice(&i.to_le_bytes());
            a.qp.post_send(&[send_wr(i, WrOpcode::Send, vec![a.mr.sge(at, 8)])])
                .unwrap();
        }
        // a's SENDs complete once b acknowledged them.
        assert!(wait_n(&a.cq, n as usize)
            .iter()
            .all(|w| w.status == WcStatus::Success));
    };
    send_n(&mut a, 0, 10);
    b.cq.resize(64).unwrap();
    assert_eq!(b.cq.entries(), 64);
    let got = wait_n(&b.cq, 10);
    let ids: Vec<u64> = got.iter().map(|w| w.wr_id).collect();
    assert_eq!(ids, (0..10).collect::<Vec<_>>(), "kept, in order");

    // 40 more than the old ring held, none polled until all arrived.
    send_n(&mut a, 10, 40);
    let got = wait_n(&b.cq, 40);
    for (k, wc) in got.iter().enumerate() {
        let i = 10 + k as u64;
        assert_eq!(
            (wc.wr_id, wc.status, wc.byte_len),
            (i, WcStatus::Success, 8)
        );
        let at = 64 * (i as usize % 512);
        assert_eq!(&b.mr.as_slice()[at..at + 8], &i.to_le_bytes());
    }
    // Shrunk again (nothing waiting): it still works.
    b.cq.resize(8).unwrap();
    assert_eq!(b.cq.entries(), 8);
    send_n(&mut a, 50, 4);
    assert_eq!(
        wait_n(&b.cq, 4).iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        vec![50, 51, 52, 53]
    );
}

#[test]
fn the_srq_limit_event_fires_once_when_armed() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.243"), ("b", "127.0.0.244")]) else {
        return;
    };
    let a = rc_side(net.open("a"), 1 << 16);
    let (srq, b) = rc_side_on_srq(net.open("b"), 64, 16, 1 << 16);
    let ch = b.ctx.create_comp_channel().unwrap();
    ch.subscribe_async().unwrap();
    connect_pair(&a, &b);
    let (max_wr, limit) = srq.query().unwrap();
    assert!(max_wr >= 16);
    assert_eq!(limit, 0);
    assert!(srq.modify_limit(max_wr + 1).is_err(), "past the SRQ's size");
    let recvs: Vec<RecvWr> = (0..10)
        .map(|i| RecvWr {
            wr_id: i,
            sges: vec![b.mr.sge(64 * i as usize, 64)],
        })
        .collect();
    srq.post_recv(&recvs).unwrap();
    srq.modify_limit(8).unwrap();
    assert_eq!(srq.query().unwrap().1, 8);
    let send = |i: u64| {
        a.qp.post_send(&[send_wr(i, WrOpcode::Send, vec![a.mr.sge(0, 8)])])
            .unwrap();
        wait_ok(&a.cq);
        wait_ok(&b.cq);
    };
    // 10 → 9 → 8: not below the limit yet.
    send(0);
    send(1);
    assert_eq!(
        ch.get_async_event_timeout(Duration::from_millis(100))
            .unwrap(),
        None
    );
    // 8 → 7: below, once; the limit is disarmed.
    send(2);
    let ev = ch
        .get_async_event_timeout(WAIT)
        .unwrap()
        .expect("SRQ_LIMIT_REACHED");
    assert_eq!(
        (ev.kind, ev.element),
        (AsyncKind::SrqLimitReached, srq.handle)
    );
    assert_eq!(srq.query().unwrap().1, 0, "disarmed");
    send(3);
    assert_eq!(
        ch.get_async_event_timeout(Duration::from_millis(100))
            .unwrap(),
        None,
        "one event per arming"
    );
    // Armed again above what it holds (6): the next receive taken fires.
    srq.modify_limit(7).unwrap();
    send(4);
    let ev = ch.get_async_event_timeout(WAIT).unwrap().expect("again");
    assert_eq!(ev.kind, AsyncKind::SrqLimitReached);
}
