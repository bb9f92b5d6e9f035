//! RC error paths: receiver not ready, retries exhausted, remote access
//! violations and messages longer than the receive buffer.

use std::time::Duration;

use migros_sim::support::{
    assert_buf_eq, assert_no_completion, rc_pair, reg_buffer, wr, Endpoint, RcOptions,
};
use migros_sim::{Rule, Sim};
use migros_transport::{Access, QpState, WcOpcode, WcStatus};

const DEADLINE: Duration = Duration::from_secs(30);

fn pair(seed: u64, opts: RcOptions) -> (Sim, Endpoint, Endpoint) {
    let mut sim = Sim::new(seed);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    let (a, b) = rc_pair(&mut sim, n0, n1, &opts);
    (sim, a, b)
}

/// A SEND that finds no receive is NAKed with RNR and retried; once the
/// receive is posted it completes normally, exactly once.
#[test]
fn rnr_then_receive_posted_late_succeeds() {
    let (mut sim, a, b) = pair(
        0x1000,
        RcOptions {
            rnr_retry: 7,
            min_rnr_timer: 1,
            ..RcOptions::default()
        },
    );
    let data = a.fill_tx(&mut sim, 0, 3000, 1);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 3000)))
        .expect("posted");
    sim.run_for(Duration::from_millis(5));
    assert!(a.poll_send(&mut sim).is_empty(), "no completion while RNR");
    let rnr = sim
        .device(a.node(&sim))
        .qp_counters(a.qpn)
        .expect("qp exists")
        .rnr_naks_received;
    assert!(rnr > 0, "the requester saw RNR NAKs");

    b.recv(&mut sim, 9, 0, 4096);
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(
        (r[0].wr_id, r[0].status, r[0].byte_len),
        (9, WcStatus::Success, 3000)
    );
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::Success));
    assert_buf_eq(&sim, &b.rx, 0, &data);
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::from_millis(20));
}

/// With rnr_retry 0 the first RNR NAK ends the WR with RnrRetryExcErr and
/// the QP goes to the error state; later WRs are flushed.
#[test]
fn rnr_retry_zero_fails() {
    let (mut sim, a, b) = pair(
        0x1010,
        RcOptions {
            rnr_retry: 0,
            ..RcOptions::default()
        },
    );
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 100)))
        .expect("posted");
    a.post_send(&mut sim, wr::send(2, a.tx.sges(100, 100)))
        .expect("posted");
    let s = a.expect_send(&mut sim, 2, DEADLINE);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::RnrRetryExcErr));
    assert_eq!((s[1].wr_id, s[1].status), (2, WcStatus::WrFlushErr));
    assert_eq!(a.state(&sim), QpState::Err);
    // The responder saw nothing it could complete.
    assert!(b.poll_recv(&mut sim).is_empty());
}

/// The peer vanishes (a partition in both directions): the requester
/// retransmits retry_cnt times, then fails with RetryExcErr.
#[test]
fn retry_exceeded_when_peer_is_partitioned() {
    let (mut sim, a, b) = pair(
        0x1020,
        RcOptions {
            timeout: 4,
            retry_cnt: 3,
            ..RcOptions::default()
        },
    );
    b.recv(&mut sim, 1, 0, 100);
    let (aa, ba) = (a.addr(&sim), b.addr(&sim));
    sim.add_rule(Rule::partition(aa, ba));
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 100)))
        .expect("posted");
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::RetryExcErr));
    assert_eq!(a.state(&sim), QpState::Err);
    let c = sim
        .device(a.node(&sim))
        .qp_counters(a.qpn)
        .expect("qp exists");
    assert_eq!(
        c.retransmits, 3,
        "retry_cnt retransmissions of the one packet"
    );
    assert!(sim.net_counters(a.node(&sim)).dropped >= 4);
}

/// A partition that heals before the retries run out costs only time.
#[test]
fn partition_healed_in_time_recovers() {
    let (mut sim, a, b) = pair(
        0x1030,
        RcOptions {
            timeout: 8,
            retry_cnt: 7,
            ..RcOptions::default()
        },
    );
    b.recv(&mut sim, 1, 0, 100);
    let (aa, ba) = (a.addr(&sim), b.addr(&sim));
    let cut = sim.add_rule(Rule::partition(aa, ba));
    let data = a.fill_tx(&mut sim, 0, 100, 3);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 100)))
        .expect("posted");
    sim.run_for(Duration::from_millis(3));
    sim.remove_rule(cut);
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(s[0].status, WcStatus::Success);
    assert_eq!(b.expect_recv(&mut sim, 1, DEADLINE)[0].byte_len, 100);
    assert_buf_eq(&sim, &b.rx, 0, &data);
    // The partition did cut the first tries, and they were resent.
    assert!(sim.net_counters(a.node(&sim)).dropped >= 1);
    let c = sim
        .device(a.node(&sim))
        .qp_counters(a.qpn)
        .expect("qp exists");
    assert!(c.retransmits >= 1 && c.timeouts >= 1, "{c:?}");
}

/// One RDMA WRITE, READ or atomic that the responder must refuse: the
/// requester completes it with RemAccessErr and its QP enters the error
/// state; the target memory is untouched.
fn expect_remote_access_error(
    seed: u64,
    make: impl FnOnce(&Endpoint, &Endpoint) -> migros_transport::SendWr,
) {
    let (mut sim, a, b) = pair(seed, RcOptions::default());
    let before = b.fill_rx(&mut sim, 0, 4096, 77);
    a.fill_tx(&mut sim, 0, 4096, 78);
    let wr = make(&a, &b);
    a.post_send(&mut sim, wr).expect("posted");
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::RemAccessErr));
    assert_eq!(a.state(&sim), QpState::Err);
    assert_buf_eq(&sim, &b.rx, 0, &before);
}

#[test]
fn write_with_wrong_rkey_is_rem_access_err() {
    expect_remote_access_error(0x1100, |a, b| {
        wr::write(1, a.tx.sges(0, 64), b.rx.at(0), b.rx.rkey ^ 0x0040_0000)
    });
}

#[test]
fn read_with_wrong_rkey_is_rem_access_err() {
    expect_remote_access_error(0x1110, |a, b| {
        wr::read(1, a.tx.sges(0, 64), b.rx.at(0), b.rx.rkey ^ 0x0080_0000)
    });
}

#[test]
fn atomic_with_wrong_rkey_is_rem_access_err() {
    expect_remote_access_error(0x1120, |a, b| {
        wr::fetch_add(1, a.tx.sge(0, 8), b.rx.at(0), b.rx.rkey ^ 0x0080_0000, 1)
    });
}

#[test]
fn write_past_the_end_of_the_region_is_rem_access_err() {
    expect_remote_access_error(0x1130, |a, b| {
        // Starts inside, ends 1 byte past the region.
        let start = b.rx.len - 63;
        wr::write(1, a.tx.sges(0, 64), b.rx.at(start), b.rx.rkey)
    });
}

#[test]
fn read_before_the_start_of_the_region_is_rem_access_err() {
    expect_remote_access_error(0x1140, |a, b| {
        wr::read(1, a.tx.sges(0, 64), b.rx.addr - 8, b.rx.rkey)
    });
}

#[test]
fn multi_packet_write_running_out_of_bounds_is_rem_access_err() {
    // The first packets are inside; the last one is not.
    expect_remote_access_error(0x1150, |a, b| {
        let start = b.rx.len - 3000;
        wr::write(1, a.tx.sges(0, 3001), b.rx.at(start), b.rx.rkey)
    });
}

/// A region registered without a remote right refuses that access.
fn missing_permission(seed: u64, access: Access, op: &str) {
    let (mut sim, a, b) = pair(seed, RcOptions::default());
    let mr = reg_buffer(&mut sim, b.owner, b.pd, 4096, access);
    let before = migros_sim::support::fill_pattern(&mut sim, &mr, 0, 4096, 5);
    let wr = match op {
        "write" => wr::write(1, a.tx.sges(0, 64), mr.at(0), mr.rkey),
        "read" => wr::read(1, a.tx.sges(0, 64), mr.at(0), mr.rkey),
        _ => wr::cmp_swap(1, a.tx.sge(0, 8), mr.at(0), mr.rkey, 0, 1),
    };
    a.post_send(&mut sim, wr).expect("posted");
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(
        (s[0].wr_id, s[0].status),
        (1, WcStatus::RemAccessErr),
        "{op}"
    );
    assert_buf_eq(&sim, &mr, 0, &before);
}

/// A QP whose access flags lack the right refuses the operation with an
/// invalid-request NAK (the region's rights are not looked at), as rxe's
/// `check_op_valid` does, and goes to the error state.
fn qp_without_right(seed: u64, missing: Access, op: &str) {
    let all = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
    let all = all | Access::REMOTE_ATOMIC;
    let opts = RcOptions {
        access: Access(all.0 & !missing.0),
        ..RcOptions::default()
    };
    let (mut sim, a, b) = pair(seed, opts);
    let before = migros_sim::support::fill_pattern(&mut sim, &b.rx, 0, 4096, 5);
    let wr = match op {
        "write" => wr::write(1, a.tx.sges(0, 64), b.rx.at(0), b.rx.rkey),
        "read" => wr::read(1, a.tx.sges(0, 64), b.rx.at(0), b.rx.rkey),
        _ => wr::fetch_add(1, a.tx.sge(0, 8), b.rx.at(0), b.rx.rkey, 1),
    };
    a.post_send(&mut sim, wr).expect("posted");
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(
        (s[0].wr_id, s[0].status),
        (1, WcStatus::RemInvReqErr),
        "{op}"
    );
    assert_buf_eq(&sim, &b.rx, 0, &before);
    assert_eq!(b.state(&sim), QpState::Err, "{op}");
}

#[test]
fn qp_without_remote_write_refuses_a_write_as_invalid() {
    qp_without_right(0x1230, Access::REMOTE_WRITE, "write");
}

#[test]
fn qp_without_remote_read_refuses_a_read_as_invalid() {
    qp_without_right(0x1240, Access::REMOTE_READ, "read");
}

#[test]
fn qp_without_remote_atomic_refuses_an_atomic_as_invalid() {
    qp_without_right(0x1250, Access::REMOTE_ATOMIC, "atomic");
}

#[test]
fn write_without_remote_write_is_rem_access_err() {
    missing_permission(
        0x1200,
        Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC,
        "write",
    );
}

#[test]
fn read_without_remote_read_is_rem_access_err() {
    missing_permission(
        0x1210,
        Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_ATOMIC,
        "read",
    );
}

#[test]
fn atomic_without_remote_atomic_is_rem_access_err() {
    missing_permission(
        0x1220,
        Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
        "atomic",
    );
}

/// A SEND longer than the posted receive: as the kernel's rxe (6.1) does,
/// the responder completes the receive with LocQpOpErr and the requester
/// gets RemOpErr (the specification says LocLenErr and RemInvReqErr).
#[test]
fn send_longer_than_receive_buffer() {
    let (mut sim, a, b) = pair(0x1300, RcOptions::default());
    b.recv(&mut sim, 5, 0, 50);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 100)))
        .expect("posted");
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::RemOpErr));
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!((r[0].wr_id, r[0].status), (5, WcStatus::LocQpOpErr));
    assert_eq!(a.state(&sim), QpState::Err);
    assert_eq!(b.state(&sim), QpState::Err);
}

/// A multi-packet SEND that overflows the receive only in its last packet.
#[test]
fn multi_packet_send_longer_than_receive_buffer() {
    let (mut sim, a, b) = pair(0x1310, RcOptions::default());
    b.recv(&mut sim, 5, 0, 4000);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 4001)))
        .expect("posted");
    let s = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!((s[0].wr_id, s[0].status), (1, WcStatus::RemOpErr));
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!((r[0].wr_id, r[0].status), (5, WcStatus::LocQpOpErr));
}

/// A receive exactly as long as the message is enough.
#[test]
fn send_exactly_filling_the_receive_buffer() {
    let (mut sim, a, b) = pair(0x1320, RcOptions::default());
    b.recv(&mut sim, 5, 0, 2048);
    let data = a.fill_tx(&mut sim, 0, 2048, 4);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, 2048)))
        .expect("posted");
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(
        (r[0].status, r[0].opcode, r[0].byte_len),
        (WcStatus::Success, WcOpcode::Recv, 2048)
    );
    assert_buf_eq(&sim, &b.rx, 0, &data);
}

/// An error on one WR flushes the ones posted after it, in order.
#[test]
fn error_flushes_later_work_requests_in_order() {
    let (mut sim, a, b) = pair(0x1400, RcOptions::default());
    a.post_send(
        &mut sim,
        wr::write(1, a.tx.sges(0, 8), b.rx.at(0), b.rx.rkey ^ 1),
    )
    .expect("posted");
    for i in 2..6 {
        a.post_send(
            &mut sim,
            wr::write(i, a.tx.sges(0, 8), b.rx.at(64), b.rx.rkey),
        )
        .expect("posted");
    }
    let s = a.expect_send(&mut sim, 5, DEADLINE);
    assert_eq!(s[0].status, WcStatus::RemAccessErr);
    for (i, wc) in s.iter().enumerate().skip(1) {
        assert_eq!((wc.wr_id, wc.status), (i as u64 + 1, WcStatus::WrFlushErr));
    }
}

/// A SEND Only carrying more than the path MTU is refused with an
/// invalid-request NAK and the responder's QP goes to the error state, as
/// the kernel's rxe does (its responder's length check, a class C error):
/// nothing is delivered, the posted receives are flushed.
#[test]
fn payload_larger_than_the_path_mtu_is_refused() {
    use migros_wire::{Bth, Headers, IpContext, Opcode, Psn};
    let psn = 0x1234;
    let (mut sim, a, b) = pair(
        0x1100,
        RcOptions {
            psn: Some(psn),
            ..RcOptions::default()
        },
    );
    let mtu = RcOptions::default().mtu.bytes() as usize;
    b.recv(&mut sim, 9, 0, 2 * mtu);
    b.recv(&mut sim, 10, 0, 2 * mtu);
    let (src, dst) = (a.addr(&sim), b.addr(&sim));
    let send_only = |payload: usize| {
        let mut bth = Bth::new(Opcode::RC_SEND_ONLY, b.qpn, Psn::new(psn));
        bth.ack_req = true;
        let headers = Headers::new(bth);
        let mut bytes = vec![0u8; Bth::LEN + payload + 4];
        migros_wire::emit_headers(&headers, payload, &mut bytes).expect("headers");
        let ctx = IpContext::new(src, dst, 4791, migros_wire::ROCE_V2_PORT);
        migros_wire::seal(&ctx, &mut bytes);
        bytes
    };
    sim.inject(src, 4791, dst, send_only(mtu + 4));
    sim.run_for(std::time::Duration::from_millis(20));
    let recvs = b.poll_recv(&mut sim);
    assert!(
        recvs.iter().all(|c| c.status == WcStatus::WrFlushErr),
        "nothing delivered: {recvs:?}"
    );
    assert_eq!(b.state(&sim), QpState::Err);
    let counters = sim
        .device(b.node(&sim))
        .qp_counters(b.qpn)
        .expect("qp exists");
    assert_eq!(counters.naks_sent, 1, "{counters:?}");
}
