//! UD traffic (Q_Key, source reporting, the GRH area) and shared receive
//! queues (several QPs on one SRQ, the limit event).

use std::collections::BTreeMap;
use std::time::Duration;

use migros_sim::support::{
    assert_buf_eq, assert_no_completion, rc_pair_on_srq, srq_host, ud_endpoint, ud_pair, wr,
    Endpoint, RcOptions, GRH_LEN,
};
use migros_sim::{Filter, NodeId, Rule, Sim};
use migros_transport::{DeviceEvent, UdDest, WcOpcode, WcStatus};

const DEADLINE: Duration = Duration::from_secs(5);
const QKEY: u32 = 0x1111_2222;

fn two_nodes(seed: u64) -> (Sim, NodeId, NodeId) {
    let mut sim = Sim::new(seed);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    (sim, n0, n1)
}

/// Posts a UD receive with room for the GRH and `len` bytes at `slot`.
fn ud_recv(sim: &mut Sim, ep: &Endpoint, wr_id: u64, slot: usize, len: usize) {
    ep.recv(sim, wr_id, slot * 4096, GRH_LEN + len);
}

#[test]
fn ud_send_reports_source_and_leaves_grh_area() {
    let (mut sim, n0, n1) = two_nodes(0x2000);
    let (a, b) = ud_pair(&mut sim, n0, n1, QKEY, &RcOptions::default());
    ud_recv(&mut sim, &b, 7, 0, 512);
    ud_recv(&mut sim, &b, 8, 1, 512);
    let d1 = a.fill_tx(&mut sim, 0, 300, 1);
    let d2 = a.fill_tx(&mut sim, 4096, 512, 2);
    let dest = b.ud_dest(&sim);
    a.post_send(&mut sim, wr::ud_send(1, a.tx.sges(0, 300), dest))
        .expect("posted");
    let with_imm = migros_transport::SendWr {
        ud: Some(dest),
        ..wr::send_imm(2, a.tx.sges(4096, 512), 0xfeed)
    };
    a.post_send(&mut sim, with_imm).expect("posted");

    let s = a.expect_send(&mut sim, 2, DEADLINE);
    for (i, wc) in s.iter().enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status, wc.opcode),
            (i as u64 + 1, WcStatus::Success, WcOpcode::Send)
        );
    }
    let r = b.expect_recv(&mut sim, 2, DEADLINE);
    let a_addr = a.addr(&sim);
    for (wc, (wr_id, len, imm)) in r.iter().zip([(7, 300, None), (8, 512, Some(0xfeed))]) {
        assert_eq!(wc.wr_id, wr_id);
        assert_eq!(wc.status, WcStatus::Success);
        assert_eq!(wc.opcode, WcOpcode::Recv);
        assert_eq!(wc.qp_num, b.qpn);
        // A UD receive counts the 40-byte GRH area in byte_len.
        assert_eq!(wc.byte_len as usize, GRH_LEN + len);
        assert_eq!(wc.src_qp, a.qpn);
        assert_eq!(wc.src_addr, Some(a_addr));
        assert_eq!(wc.imm_data, imm);
    }
    // The payload starts after the GRH area.
    assert_buf_eq(&sim, &b.rx, GRH_LEN, &d1);
    assert_buf_eq(&sim, &b.rx, 4096 + GRH_LEN, &d2);
}

#[test]
fn ud_wrong_qkey_is_dropped() {
    let (mut sim, n0, n1) = two_nodes(0x2010);
    let (a, b) = ud_pair(&mut sim, n0, n1, QKEY, &RcOptions::default());
    ud_recv(&mut sim, &b, 7, 0, 256);
    let wrong = UdDest {
        remote_qkey: QKEY ^ 1,
        ..b.ud_dest(&sim)
    };
    a.post_send(&mut sim, wr::ud_send(1, a.tx.sges(0, 100), wrong))
        .expect("posted");
    // UD is unreliable: the sender completes regardless.
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(s[0].status, WcStatus::Success);
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::from_millis(10));

    // The receive is still there for a datagram with the right key.
    let data = a.fill_tx(&mut sim, 0, 100, 3);
    let dest = b.ud_dest(&sim);
    a.post_send(&mut sim, wr::ud_send(2, a.tx.sges(0, 100), dest))
        .expect("posted");
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!((r[0].wr_id, r[0].byte_len as usize), (7, GRH_LEN + 100));
    assert_buf_eq(&sim, &b.rx, GRH_LEN, &data);
}

#[test]
fn ud_wrong_qpn_is_dropped() {
    let (mut sim, n0, n1) = two_nodes(0x2020);
    let (a, b) = ud_pair(&mut sim, n0, n1, QKEY, &RcOptions::default());
    ud_recv(&mut sim, &b, 7, 0, 256);
    let nowhere = UdDest {
        remote_qpn: b.qpn + 1000,
        ..b.ud_dest(&sim)
    };
    a.post_send(&mut sim, wr::ud_send(1, a.tx.sges(0, 10), nowhere))
        .expect("posted");
    a.expect_send(&mut sim, 1, DEADLINE);
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::from_millis(10));
    assert!(sim.device(n1).counters().rx_unknown_qp >= 1);
}

#[test]
fn ud_loss_is_not_retransmitted() {
    let (mut sim, n0, n1) = two_nodes(0x2030);
    let (a, b) = ud_pair(&mut sim, n0, n1, QKEY, &RcOptions::default());
    ud_recv(&mut sim, &b, 7, 0, 256);
    ud_recv(&mut sim, &b, 8, 1, 256);
    sim.add_rule(Rule::drop_next(Filter::from(a.addr(&sim)), 1));
    let dest = b.ud_dest(&sim);
    a.fill_tx(&mut sim, 0, 50, 1);
    let second = a.fill_tx(&mut sim, 4096, 60, 2);
    a.post_send(&mut sim, wr::ud_send(1, a.tx.sges(0, 50), dest))
        .expect("posted");
    a.post_send(&mut sim, wr::ud_send(2, a.tx.sges(4096, 60), dest))
        .expect("posted");
    assert_eq!(a.expect_send(&mut sim, 2, DEADLINE).len(), 2);
    // Only the second datagram arrives; it takes the first receive.
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!((r[0].wr_id, r[0].byte_len as usize), (7, GRH_LEN + 60));
    assert_buf_eq(&sim, &b.rx, GRH_LEN, &second);
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::from_millis(50));
    assert_eq!(
        sim.net_counters(n0).dropped,
        1,
        "the first datagram was lost"
    );
    assert_eq!(
        sim.device(n0).counters().retransmits,
        0,
        "and never sent again"
    );
}

#[test]
fn ud_several_senders_to_one_receiver() {
    let mut sim = Sim::new(0x2040);
    let nodes: Vec<NodeId> = (0..4).map(|_| sim.add_node()).collect();
    let opts = RcOptions::default();
    let rx = ud_endpoint(&mut sim, nodes[0], QKEY, &opts);
    let senders: Vec<Endpoint> = nodes[1..]
        .iter()
        .map(|&n| ud_endpoint(&mut sim, n, QKEY, &opts))
        .collect();
    let per_sender = 4;
    for slot in 0..senders.len() * per_sender {
        ud_recv(&mut sim, &rx, slot as u64, slot, 128);
    }
    let dest = rx.ud_dest(&sim);
    let mut sent = BTreeMap::new();
    for k in 0..per_sender {
        for (s, ep) in senders.iter().enumerate() {
            let len = 10 + 10 * k + s;
            let data = ep.fill_tx(&mut sim, k * 128, len, (s * 100 + k) as u64);
            ep.post_send(
                &mut sim,
                wr::ud_send(k as u64, ep.tx.sges(k * 128, len), dest),
            )
            .expect("posted");
            sent.insert((ep.qpn, k), data);
        }
    }
    let r = rx.expect_recv(&mut sim, sent.len(), DEADLINE);
    let mut next_k: BTreeMap<u32, usize> = BTreeMap::new();
    for wc in &r {
        assert_eq!(wc.status, WcStatus::Success);
        let sender = senders
            .iter()
            .find(|e| e.qpn == wc.src_qp)
            .expect("src_qp names a sender");
        assert_eq!(wc.src_addr, Some(sender.addr(&sim)));
        // Per sender, datagrams arrive in order on a fault-free network.
        let k = next_k.entry(wc.src_qp).or_default();
        let data = &sent[&(wc.src_qp, *k)];
        *k += 1;
        assert_eq!(wc.byte_len as usize, GRH_LEN + data.len());
        assert_buf_eq(&sim, &rx.rx, wc.wr_id as usize * 4096 + GRH_LEN, data);
    }
}

#[test]
fn srq_shared_by_several_qps() {
    let mut sim = Sim::new(0x2100);
    let nodes: Vec<NodeId> = (0..4).map(|_| sim.add_node()).collect();
    let host = srq_host(&mut sim, nodes[0], 64, 0, 64 * 1024);
    let opts = RcOptions::default();
    let pairs: Vec<(Endpoint, Endpoint)> = nodes[1..]
        .iter()
        .map(|&n| rc_pair_on_srq(&mut sim, &host, n, &opts))
        .collect();
    let per_client = 4;
    let total = pairs.len() * per_client;
    for i in 0..total {
        host.recv(&mut sim, i as u64, i * 1024, 1024);
    }
    let mut sent = BTreeMap::new();
    for k in 0..per_client {
        for (c, (server, client)) in pairs.iter().enumerate() {
            let len = 100 + 10 * k + c;
            let data = client.fill_tx(&mut sim, k * 1024, len, (c * 10 + k) as u64);
            client
                .post_send(&mut sim, wr::send(k as u64, client.tx.sges(k * 1024, len)))
                .expect("posted");
            sent.insert((server.qpn, k), data);
        }
    }
    let r = host.expect_recv(&mut sim, total, DEADLINE);
    let mut next_k: BTreeMap<u32, usize> = BTreeMap::new();
    let mut wr_ids: Vec<u64> = Vec::new();
    for wc in &r {
        assert_eq!(wc.status, WcStatus::Success);
        assert_eq!(wc.opcode, WcOpcode::Recv);
        let k = next_k.entry(wc.qp_num).or_default();
        let data = &sent[&(wc.qp_num, *k)];
        *k += 1;
        assert_eq!(wc.byte_len as usize, data.len());
        assert_buf_eq(&sim, &host.rx, wc.wr_id as usize * 1024, data);
        wr_ids.push(wc.wr_id);
    }
    wr_ids.sort_unstable();
    assert_eq!(
        wr_ids,
        (0..total as u64).collect::<Vec<_>>(),
        "each receive used once"
    );
    assert_eq!(next_k.len(), pairs.len(), "every QP received");
    for (_, client) in &pairs {
        let s = client.expect_send(&mut sim, per_client, DEADLINE);
        for (k, wc) in s.iter().enumerate() {
            assert_eq!((wc.wr_id, wc.status), (k as u64, WcStatus::Success));
        }
    }
}

fn srq_limit_events(sim: &Sim, node: NodeId) -> usize {
    sim.events(node)
        .iter()
        .filter(|e| matches!(e, DeviceEvent::SrqLimitReached { .. }))
        .count()
}

#[test]
fn srq_limit_event_fires_once_below_the_limit() {
    let (mut sim, n0, n1) = two_nodes(0x2110);
    let host = srq_host(&mut sim, n0, 16, 4, 64 * 1024);
    let (_server, client) = rc_pair_on_srq(&mut sim, &host, n1, &RcOptions::default());
    for i in 0..8 {
        host.recv(&mut sim, i, i as usize * 256, 256);
    }
    let mut sent = 0u64;
    let mut send = |sim: &mut Sim, n: u64| {
        for _ in 0..n {
            client
                .post_send(sim, wr::send(sent, client.tx.sges(0, 32)))
                .expect("posted");
            sent += 1;
        }
        host.expect_recv(sim, n as usize, DEADLINE);
    };
    // 8 → 4 posted receives: not below the limit of 4.
    send(&mut sim, 4);
    assert_eq!(srq_limit_events(&sim, n0), 0);
    // 4 → 3: below the limit.
    send(&mut sim, 1);
    assert_eq!(srq_limit_events(&sim, n0), 1);
    assert!(sim
        .events(n0)
        .contains(&DeviceEvent::SrqLimitReached { srq: host.srq }));
    // The event disarms itself.
    send(&mut sim, 2);
    assert_eq!(srq_limit_events(&sim, n0), 1);
}

#[test]
fn srq_empty_gives_rnr_until_a_receive_is_posted() {
    let (mut sim, n0, n1) = two_nodes(0x2120);
    let host = srq_host(&mut sim, n0, 16, 0, 64 * 1024);
    let (server, client) = rc_pair_on_srq(&mut sim, &host, n1, &RcOptions::default());
    let data = client.fill_tx(&mut sim, 0, 500, 8);
    client
        .post_send(&mut sim, wr::send(1, client.tx.sges(0, 500)))
        .expect("posted");
    sim.run_for(Duration::from_millis(2));
    assert!(client.poll_send(&mut sim).is_empty());
    host.recv(&mut sim, 42, 0, 1024);
    let r = host.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(
        (r[0].wr_id, r[0].qp_num, r[0].byte_len),
        (42, server.qpn, 500)
    );
    assert_buf_eq(&sim, &host.rx, 0, &data);
    assert_eq!(
        client.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
}
