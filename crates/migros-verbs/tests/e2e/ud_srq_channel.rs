//! UD datagrams, an SRQ and a completion channel on real daemons.

use super::*;

#[test]
fn ud_datagrams_carry_the_grh_and_source() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.203"), ("b", "127.0.0.204")]) else {
        return;
    };
    let (mut a, b, dest) = ud_pair(&net);
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
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.205"), ("b", "127.0.0.206")]) else {
        return;
    };
    let mut a = rc_side(net.open("a"), 1 << 14);
    let (srq, b) = rc_side_on_srq(net.open("b"), 64, 16, 1 << 14);
    assert_eq!(srq.entries(), 16);
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
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.207"), ("b", "127.0.0.208")]) else {
        return;
    };
    let a = rc_side(net.open("a"), 4096);
    let bctx = net.open("b");
    let ch = bctx.create_comp_channel().unwrap();
    assert!(ch.fd() >= 0);
    let b = rc_side_sized(bctx, 16, cap(16), 4096, Some(&ch));
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
