//! RC between two daemons: SEND, WRITE, READ and atomics, checked byte for byte.

use super::*;

#[test]
fn rc_send_write_read_and_atomics_between_two_daemons() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.201"), ("b", "127.0.0.202")]) else {
        return;
    };
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
