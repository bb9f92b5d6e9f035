//! Memory windows: type 1 and type 2 binds, remote access through them,
//! invalidation by LOCAL_INV and by SEND_WITH_INV, the errors of each
//! (completion statuses and NAKs as rxe's), ATOMIC WRITE, and all of it
//! across a migration of the window's owner: bound windows, invalidated
//! keys and rebound keys are exactly as they were.

use std::time::Duration;

use migros_sim::support::{
    alloc_mw, assert_buf_eq, assert_no_completion, poll_all, query_mw, rc_pair, reg_buffer, wr,
    Endpoint, RcOptions,
};
use migros_sim::{Action, Filter, NodeId, Rule, Sim};
use migros_transport::{
    Access, DeviceEvent, MwState, MwType, QpState, WcOpcode, WcStatus, WorkCompletion,
};
use migros_wire::{AckSyndrome, NakCode};

const DEADLINE: Duration = Duration::from_secs(10);
const DOWNTIME: Duration = Duration::from_millis(2);
/// Where the window starts in `b.rx`, and its length.
const WIN_AT: usize = 4096;
const WIN_LEN: usize = 1024;
const RW: Access = Access(Access::REMOTE_WRITE.0 | Access::REMOTE_READ.0);

fn setup(seed: u64, nodes: usize) -> (Sim, Vec<NodeId>, Endpoint, Endpoint) {
    let mut sim = Sim::new(seed);
    let n: Vec<NodeId> = (0..nodes).map(|_| sim.add_node()).collect();
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    (sim, n, a, b)
}

/// `b` binds window `mw` (current rkey) over `b.rx[WIN_AT..WIN_AT +
/// WIN_LEN]` with `access`; returns the window's new rkey.
fn bind(sim: &mut Sim, b: &Endpoint, wr_id: u64, mw: u32, access: Access) -> u32 {
    let new = wr::inc_rkey(mw);
    let range = (b.rx.lkey, b.rx.at(WIN_AT), WIN_LEN as u64);
    b.post_send(sim, wr::bind_mw(wr_id, mw, new, range, access))
        .expect("bind posted");
    let wc = b.expect_send(sim, 1, DEADLINE);
    assert_eq!(
        (wc[0].wr_id, wc[0].status, wc[0].opcode),
        (wr_id, WcStatus::Success, WcOpcode::BindMw)
    );
    new
}

/// `a` writes `len` pattern bytes at `b.rx[at..]` through `rkey`; returns
/// the completion and the bytes.
fn write_through(
    sim: &mut Sim,
    a: &Endpoint,
    b: &Endpoint,
    (wr_id, rkey): (u64, u32),
    at: usize,
    len: usize,
) -> (WorkCompletion, Vec<u8>) {
    let data = a.fill_tx(sim, 0, len, wr_id);
    let w = wr::write(wr_id, a.tx.sges(0, len), b.rx.at(at), rkey);
    a.post_send(sim, w).expect("write posted");
    let wc = a.expect_send(sim, 1, DEADLINE).remove(0);
    (wc, data)
}

fn nak_seen(sim: &Sim, id: migros_sim::CaptureId, code: NakCode) -> bool {
    sim.captured(id)
        .iter()
        .filter_map(|c| c.ack_syndrome())
        .any(|s| AckSyndrome::decode(s) == AckSyndrome::Nak(code))
}

#[test]
fn type_2_window_gives_access_to_its_range_only() {
    let (mut sim, _, a, b) = setup(0x5100, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    assert_eq!(query_mw(&sim, b.owner, mw).state, MwState::Free);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    assert_eq!(rkey & 0xff, 1, "the key byte changed");
    let w = query_mw(&sim, b.owner, rkey);
    assert_eq!(
        (w.state, w.qpn, w.rkey),
        (MwState::Valid, Some(b.qpn), rkey)
    );

    let (wc, data) = write_through(&mut sim, &a, &b, (10, rkey), WIN_AT + 100, 512);
    assert_eq!(wc.status, WcStatus::Success);
    assert_buf_eq(&sim, &b.rx, WIN_AT + 100, &data);
    // READ through the window, into a's tx at 8192.
    let r = wr::read(11, a.tx.sges(8192, 512), b.rx.at(WIN_AT + 100), rkey);
    a.post_send(&mut sim, r).expect("read posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_buf_eq(&sim, &a.tx, 8192, &data);

    // The old rkey (key byte 0) names nothing any more.
    let (wc, _) = write_through(&mut sim, &a, &b, (12, mw), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
    assert_eq!(a.state(&sim), QpState::Err);
}

#[test]
fn access_past_the_window_end_is_a_remote_access_error() {
    // rxe checks only the region's bounds; migros the window's.
    let (mut sim, _, a, b) = setup(0x5110, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    let before = b.fill_rx(&mut sim, WIN_AT, 2 * WIN_LEN, 3);
    let cap = sim.start_capture(Filter::from(b.addr(&sim)));
    let (wc, _) = write_through(&mut sim, &a, &b, (10, rkey), WIN_AT + WIN_LEN - 8, 16);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
    assert!(nak_seen(&sim, cap, NakCode::RemoteAccessError));
    assert_buf_eq(&sim, &b.rx, WIN_AT, &before);
    assert_eq!(b.state(&sim), QpState::Err);
    assert!(sim
        .events(b.node(&sim))
        .contains(&DeviceEvent::QpAccessError { qpn: b.qpn }));
}

#[test]
fn a_window_without_write_rights_refuses_writes() {
    let (mut sim, _, a, b) = setup(0x5120, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, Access::REMOTE_READ);
    let (wc, _) = write_through(&mut sim, &a, &b, (10, rkey), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
}

#[test]
fn local_invalidate_revokes_a_type_2_window() {
    let (mut sim, _, a, b) = setup(0x5130, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    let (wc, _) = write_through(&mut sim, &a, &b, (10, rkey), WIN_AT, 64);
    assert_eq!(wc.status, WcStatus::Success);

    b.post_send(&mut sim, wr::local_inv(2, rkey))
        .expect("posted");
    let wc = b.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(
        (wc[0].wr_id, wc[0].status, wc[0].opcode),
        (2, WcStatus::Success, WcOpcode::LocalInv)
    );
    let w = query_mw(&sim, b.owner, rkey);
    assert_eq!((w.state, w.qpn, w.length), (MwState::Free, None, 0));

    let cap = sim.start_capture(Filter::from(b.addr(&sim)));
    let (wc, _) = write_through(&mut sim, &a, &b, (11, rkey), WIN_AT, 64);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
    assert!(nak_seen(&sim, cap, NakCode::RemoteAccessError));

    // A free type 2 window may be bound again, with a new key.
    let (mut sim, _, _a, b) = setup(0x5131, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let k1 = bind(&mut sim, &b, 1, mw, RW);
    b.post_send(&mut sim, wr::local_inv(2, k1)).expect("posted");
    b.expect_send(&mut sim, 1, DEADLINE);
    let k2 = bind(&mut sim, &b, 3, k1, RW);
    assert_ne!(k1, k2);
}

#[test]
fn send_with_invalidate_frees_the_window_it_names() {
    let (mut sim, _, a, b) = setup(0x5140, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    b.recv(&mut sim, 7, 0, 256);
    let data = a.fill_tx(&mut sim, 0, 100, 9);
    a.post_send(&mut sim, wr::send_inv(20, a.tx.sges(0, 100), rkey))
        .expect("posted");
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(
        (
            r[0].wr_id,
            r[0].status,
            r[0].byte_len,
            r[0].invalidated_rkey
        ),
        (7, WcStatus::Success, 100, Some(rkey))
    );
    assert_buf_eq(&sim, &b.rx, 0, &data);
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_eq!(query_mw(&sim, b.owner, rkey).state, MwState::Free);
    let (wc, _) = write_through(&mut sim, &a, &b, (21, rkey), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
}

#[test]
fn send_with_invalidate_of_a_key_that_cannot_be_invalidated_fails_both_sides() {
    // A region's rkey, a type 1 window, a free window, a key naming nothing.
    let (mut sim, n, _, _) = setup(0x5150, 2);
    type KeyOf = fn(&mut Sim, &Endpoint) -> u32;
    let cases: [KeyOf; 4] = [
        |_, b| b.rx.rkey,
        |sim, b| {
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type1);
            bind(sim, b, 1, mw, RW)
        },
        |sim, b| alloc_mw(sim, b.owner, b.pd, MwType::Type2),
        |_, _| 0xdead_be00,
    ];
    for (i, key_of) in cases.iter().enumerate() {
        let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
        let rkey = key_of(&mut sim, &b);
        b.recv(&mut sim, 7, 0, 256);
        let cap = sim.start_capture(Filter::from(b.addr(&sim)));
        a.post_send(&mut sim, wr::send_inv(20, a.tx.sges(0, 100), rkey))
            .expect("posted");
        let r = b.expect_recv(&mut sim, 1, DEADLINE);
        assert_eq!(
            (r[0].wr_id, r[0].status),
            (7, WcStatus::RemInvReqErr),
            "case {i}"
        );
        let s = a.expect_send(&mut sim, 1, DEADLINE);
        assert_eq!(s[0].status, WcStatus::RemInvReqErr, "case {i}");
        assert!(nak_seen(&sim, cap, NakCode::InvalidRequest), "case {i}");
        assert_eq!(b.state(&sim), QpState::Err, "case {i}");
        assert!(sim
            .events(b.node(&sim))
            .contains(&DeviceEvent::QpRequestError { qpn: b.qpn }));
    }
}

#[test]
fn type_1_window_is_bound_again_to_move_or_unbind_it() {
    let (mut sim, _, a, b) = setup(0x5160, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type1);
    let w = query_mw(&sim, b.owner, mw);
    assert_eq!(
        (w.state, w.length),
        (MwState::Valid, 0),
        "valid, bound to nothing"
    );
    // Unbound: no access.
    let (wc, _) = write_through(&mut sim, &a, &b, (1, mw), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);

    let (mut sim, _, a, b) = setup(0x5161, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type1);
    let k1 = bind(&mut sim, &b, 1, mw, RW);
    let (wc, data) = write_through(&mut sim, &a, &b, (10, k1), WIN_AT, 64);
    assert_eq!(wc.status, WcStatus::Success);
    assert_buf_eq(&sim, &b.rx, WIN_AT, &data);
    // Binding again moves it (a type 1 window may be rebound while valid).
    let k2 = bind(&mut sim, &b, 2, k1, Access::REMOTE_READ);
    assert_eq!(query_mw(&sim, b.owner, k2).access, Access::REMOTE_READ);
    // Unbind: length 0 and no region.
    let k3 = wr::inc_rkey(k2);
    b.post_send(
        &mut sim,
        wr::bind_mw(3, k2, k3, (0, 0, 0), Access::default()),
    )
    .expect("posted");
    assert_eq!(
        b.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_eq!(query_mw(&sim, b.owner, k3).length, 0);
    // Unbound now: the newest key reaches nothing.
    let r = wr::read(20, a.tx.sges(0, 8), b.rx.at(WIN_AT), k3);
    a.post_send(&mut sim, r).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::RemAccessErr
    );
}

#[test]
fn an_old_key_of_a_rebound_type_1_window_reaches_nothing() {
    let (mut sim, _, a, b) = setup(0x5162, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type1);
    let k1 = bind(&mut sim, &b, 1, mw, RW);
    let _k2 = bind(&mut sim, &b, 2, k1, RW);
    let (wc, _) = write_through(&mut sim, &a, &b, (10, k1), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
}

#[test]
fn bind_errors_complete_with_mw_bind_err_and_fail_the_qp() {
    // Each case: what to bind, with which region; the bind fails.
    let (mut sim, n, _, _) = setup(0x5170, 2);
    type Case = fn(&mut Sim, &Endpoint) -> migros_transport::SendWr;
    let cases: [(&str, Case); 6] = [
        ("unknown window", |_, b| {
            let range = (b.rx.lkey, b.rx.at(0), 8);
            wr::bind_mw(1, 0x00ab_cd00, 0x00ab_cd01, range, RW)
        }),
        ("bound type 2 bound again", |sim, b| {
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type2);
            let k = bind(sim, b, 9, mw, RW);
            wr::bind_mw(1, k, wr::inc_rkey(k), (b.rx.lkey, b.rx.at(0), 8), RW)
        }),
        ("region without MW_BIND", |sim, b| {
            let plain = reg_buffer(sim, b.owner, b.pd, 4096, Access::LOCAL_WRITE);
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type2);
            wr::bind_mw(1, mw, mw + 1, (plain.lkey, plain.at(0), 8), RW)
        }),
        ("writable window on a read-only region", |sim, b| {
            let ro = Access(Access::MW_BIND.0 | Access::REMOTE_READ.0);
            let mr = reg_buffer(sim, b.owner, b.pd, 4096, ro);
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type2);
            wr::bind_mw(1, mw, mw + 1, (mr.lkey, mr.at(0), 8), Access::REMOTE_WRITE)
        }),
        ("outside the region", |sim, b| {
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type2);
            let range = (b.rx.lkey, b.rx.at(b.rx.len - 4), 8);
            wr::bind_mw(1, mw, mw + 1, range, RW)
        }),
        ("zero-based type 1", |sim, b| {
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type1);
            let zb = Access(RW.0 | Access::ZERO_BASED.0);
            wr::bind_mw(1, mw, mw + 1, (b.rx.lkey, 0, 8), zb)
        }),
    ];
    for (what, make) in cases {
        let (_a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
        b.recv(&mut sim, 50, 0, 64);
        let w = make(&mut sim, &b);
        b.post_send(&mut sim, w).expect("posted");
        b.post_send(&mut sim, wr::send(2, b.tx.sges(0, 8)))
            .expect("posted");
        let wc = b.expect_send(&mut sim, 2, DEADLINE);
        assert_eq!(
            (wc[0].wr_id, wc[0].status, wc[0].opcode),
            (1, WcStatus::MwBindErr, WcOpcode::BindMw),
            "{what}"
        );
        assert_eq!(
            (wc[1].wr_id, wc[1].status),
            (2, WcStatus::WrFlushErr),
            "{what}"
        );
        assert_eq!(b.state(&sim), QpState::Err, "{what}");
        let r = poll_all(&mut sim, b.owner, b.recv_cq);
        assert_eq!(r.len(), 1, "{what}: the receive is flushed");
    }
}

#[test]
fn local_invalidate_errors_complete_with_loc_qp_op_err() {
    let (mut sim, n, _, _) = setup(0x5180, 2);
    type Case = fn(&mut Sim, &Endpoint) -> u32;
    let cases: [(&str, Case); 4] = [
        ("a region's rkey", |_, b| b.rx.rkey),
        ("a type 1 window", |sim, b| {
            let mw = alloc_mw(sim, b.owner, b.pd, MwType::Type1);
            bind(sim, b, 9, mw, RW)
        }),
        ("a free type 2 window", |sim, b| {
            alloc_mw(sim, b.owner, b.pd, MwType::Type2)
        }),
        ("nothing", |_, _| 0x0012_3400),
    ];
    for (what, key) in cases {
        let (_a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
        let rkey = key(&mut sim, &b);
        b.post_send(&mut sim, wr::local_inv(1, rkey))
            .expect("posted");
        let wc = b.expect_send(&mut sim, 1, DEADLINE);
        assert_eq!(
            (wc[0].status, wc[0].opcode),
            (WcStatus::LocQpOpErr, WcOpcode::LocalInv),
            "{what}"
        );
        assert_eq!(b.state(&sim), QpState::Err, "{what}");
    }
}

#[test]
fn only_the_qp_a_type_2_window_is_bound_to_may_use_it() {
    let mut sim = Sim::new(0x5190);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    // A second connection into b's owner, same PD: c → d.
    let opts = RcOptions::default();
    let c = migros_sim::support::endpoint(&mut sim, n[0], migros_transport::QpType::Rc, &opts);
    let d = migros_sim::support::endpoint_beside(&mut sim, &b, &opts);
    migros_sim::support::connect_rc(&mut sim, &c, &d, &opts);
    let w = wr::write(5, c.tx.sges(0, 8), b.rx.at(WIN_AT), rkey);
    c.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        c.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::RemAccessErr
    );
    // The QP it is bound to still may.
    let (wc, _) = write_through(&mut sim, &a, &b, (6, rkey), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::Success);
}

#[test]
fn a_region_with_bound_windows_cannot_be_deregistered() {
    let (mut sim, _, _a, b) = setup(0x51a0, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    let node = b.node(&sim);
    let lkey = b.rx.lkey;
    let r = sim.with_device(node, |d, _, _| d.dereg_mr(lkey));
    assert!(
        matches!(r, Err(migros_transport::VerbsError::InvalidArgument(_))),
        "{r:?}"
    );
    b.post_send(&mut sim, wr::local_inv(2, rkey))
        .expect("posted");
    b.expect_send(&mut sim, 1, DEADLINE);
    sim.with_device(node, |d, _, _| d.dereg_mr(lkey))
        .expect("free again once unbound");
}

#[test]
fn a_fenced_local_invalidate_waits_for_the_write_before_it() {
    // b writes to a's region, then invalidates its own window with FENCE:
    // the invalidate runs only once the write completed.
    let (mut sim, _, a, b) = setup(0x51b0, 2);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    let w = wr::write(2, b.tx.sges(0, 60_000), a.rx.at(0), a.rx.rkey);
    b.post_send(&mut sim, w).expect("posted");
    let mut inv = wr::local_inv(3, rkey);
    inv.flags = inv.flags | migros_transport::SendFlags::FENCE;
    b.post_send(&mut sim, inv).expect("posted");
    sim.flush_all();
    assert_eq!(
        query_mw(&sim, b.owner, rkey).state,
        MwState::Valid,
        "not before the write completed"
    );
    let wc = b.expect_send(&mut sim, 2, DEADLINE);
    assert_eq!((wc[0].wr_id, wc[1].wr_id), (2, 3));
    assert!(wc.iter().all(|w| w.status == WcStatus::Success));
    assert_eq!(query_mw(&sim, b.owner, rkey).state, MwState::Free);
}

#[test]
fn atomic_write_stores_eight_bytes_at_once() {
    let (mut sim, _, a, b) = setup(0x51c0, 2);
    let value = 0x1122_3344_5566_7788u64.to_le_bytes();
    sim.write_mem(a.owner, a.tx.at(0), &value);
    let w = wr::atomic_write(1, a.tx.sge(0, 8), b.rx.at(64), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    let wc = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(
        (wc[0].status, wc[0].opcode),
        (WcStatus::Success, WcOpcode::AtomicWrite)
    );
    assert_buf_eq(&sim, &b.rx, 64, &value);

    // Misaligned: invalid request, as rxe.
    let w = wr::atomic_write(2, a.tx.sge(0, 8), b.rx.at(65), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::RemInvReqErr
    );

    // Not 8 bytes: refused at post.
    let (mut sim, _, a, b) = setup(0x51c1, 2);
    let w = wr::atomic_write(1, a.tx.sge(0, 16), b.rx.at(64), b.rx.rkey);
    assert!(a.post_send(&mut sim, w).is_err());
}

#[test]
fn atomic_write_duplicates_are_answered_not_executed_again() {
    // The first answer is lost: the requester resends, and the responder
    // answers from its resource without storing again (the test changes
    // the memory in between, as a local writer could).
    let (mut sim, _, a, b) = setup(0x51d0, 2);
    let value = 7u64.to_le_bytes();
    sim.write_mem(a.owner, a.tx.at(0), &value);
    let rule = sim.add_rule(Rule::drop_next(Filter::from(b.addr(&sim)).opcode(0x10), 1));
    let w = wr::atomic_write(1, a.tx.sge(0, 8), b.rx.at(0), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    // Let the store happen, then change the memory before the resend.
    sim.run_for(Duration::from_micros(30));
    assert_buf_eq(&sim, &b.rx, 0, &value);
    sim.write_mem(b.owner, b.rx.at(0), &[9; 8]);
    let wc = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(wc[0].status, WcStatus::Success);
    assert_buf_eq(&sim, &b.rx, 0, &[9; 8]);
    let resent = sim
        .device(a.node(&sim))
        .qp_counters(a.qpn)
        .expect("qp")
        .retransmits;
    assert!(resent >= 1, "the atomic write was sent again");
    assert!(
        sim.device(b.node(&sim))
            .qp_counters(b.qpn)
            .expect("qp")
            .duplicates
            >= 1
    );
    sim.remove_rule(rule);
}

// ---- across a migration ----

/// Migrates `ep`'s owner from where it is to `to`.
fn migrate(sim: &mut Sim, ep: &Endpoint, to: NodeId) {
    let from = ep.node(sim);
    sim.migrate_owner(ep.owner, from, to, DOWNTIME)
        .expect("migrated");
}

#[test]
fn windows_and_invalidated_keys_survive_a_migration_exactly() {
    let (mut sim, n, a, b) = setup(0x5200, 3);
    let bound = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let bound = bind(&mut sim, &b, 1, bound, RW);
    let freed = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let freed = bind(&mut sim, &b, 2, freed, RW);
    b.post_send(&mut sim, wr::local_inv(3, freed))
        .expect("posted");
    b.expect_send(&mut sim, 1, DEADLINE);
    let t1 = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type1);
    let t1 = bind(&mut sim, &b, 4, t1, Access::REMOTE_READ);
    let before: Vec<_> = [bound, freed, t1]
        .iter()
        .map(|k| query_mw(&sim, b.owner, *k))
        .collect();

    migrate(&mut sim, &b, n[2]);
    assert_eq!(b.node(&sim), n[2]);
    let after: Vec<_> = [bound, freed, t1]
        .iter()
        .map(|k| query_mw(&sim, b.owner, *k))
        .collect();
    assert_eq!(before, after, "every window as it was");
    assert!(
        sim.device(n[1]).query_mw(bound).is_none(),
        "gone from the source"
    );

    // The bound window still works from the same QP, on the new node.
    let (wc, data) = write_through(&mut sim, &a, &b, (10, bound), WIN_AT + 8, 32);
    assert_eq!(wc.status, WcStatus::Success);
    assert_buf_eq(&sim, &b.rx, WIN_AT + 8, &data);
    // The type 1 window reads, and refuses writes (read-only).
    let r = wr::read(11, a.tx.sges(100, 32), b.rx.at(WIN_AT + 8), t1);
    a.post_send(&mut sim, r).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_buf_eq(&sim, &a.tx, 100, &data);
    // The invalidated key stays invalid.
    let (wc, _) = write_through(&mut sim, &a, &b, (12, freed), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
}

#[test]
fn invalidation_after_a_migration_and_send_with_invalidate_across_one() {
    let (mut sim, n, a, b) = setup(0x5210, 3);
    let w1 = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let w1 = bind(&mut sim, &b, 1, w1, RW);
    let w2 = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let w2 = bind(&mut sim, &b, 2, w2, RW);
    // SEND_WITH_INV posted while b migrates: it arrives at the new node.
    b.recv(&mut sim, 7, 0, 256);
    a.post_send(&mut sim, wr::send_inv(20, a.tx.sges(0, 64), w2))
        .expect("posted");
    migrate(&mut sim, &b, n[2]);
    let r = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(
        (r[0].status, r[0].invalidated_rkey),
        (WcStatus::Success, Some(w2))
    );
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_eq!(query_mw(&sim, b.owner, w2).state, MwState::Free);
    // LOCAL_INV on the new node.
    b.post_send(&mut sim, wr::local_inv(3, w1)).expect("posted");
    assert_eq!(
        b.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    let (wc, _) = write_through(&mut sim, &a, &b, (21, w1), WIN_AT, 8);
    assert_eq!(wc.status, WcStatus::RemAccessErr);
}

#[test]
fn a_migrated_requester_keeps_using_a_peer_window() {
    // The window's user moves, the window's owner stays.
    let (mut sim, n, a, b) = setup(0x5220, 3);
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let rkey = bind(&mut sim, &b, 1, mw, RW);
    migrate(&mut sim, &a, n[2]);
    let (wc, data) = write_through(&mut sim, &a, &b, (10, rkey), WIN_AT, 128);
    assert_eq!(wc.status, WcStatus::Success);
    assert_buf_eq(&sim, &b.rx, WIN_AT, &data);
}

// ---- on a faulty network ----

/// Rounds of bind → WRITE through the window → SEND_WITH_INV, on a network
/// that drops, duplicates and reorders, with a migration of the window's
/// owner in the middle: every write lands, every invalidation happens
/// exactly once (a duplicate SEND_WITH_INV is answered, not executed
/// again), every completion comes once and in order.
fn windows_under_faults(seed: u64, fault: Action) {
    let (mut sim, n, a, b) = setup(seed, 3);
    sim.add_rule(Rule::new(Filter::any(), fault));
    let mw = alloc_mw(&mut sim, b.owner, b.pd, MwType::Type2);
    let mut key = mw;
    for round in 0..12u64 {
        if round == 6 {
            let from = b.node(&sim);
            let to = if from == n[1] { n[2] } else { n[1] };
            sim.migrate_owner(b.owner, from, to, DOWNTIME)
                .expect("migrated");
        }
        key = bind(&mut sim, &b, 100 + round, key, RW);
        let at = WIN_AT + (round as usize % 4) * 200;
        let (wc, data) = write_through(&mut sim, &a, &b, (round, key), at, 200);
        assert_eq!(wc.status, WcStatus::Success, "round {round}");
        assert_buf_eq(&sim, &b.rx, at, &data);
        b.recv(&mut sim, 500 + round, 0, 64);
        let s = wr::send_inv(200 + round, a.tx.sges(0, 32), key);
        a.post_send(&mut sim, s).expect("posted");
        let r = b.expect_recv(&mut sim, 1, DEADLINE);
        assert_eq!(
            (r[0].wr_id, r[0].status, r[0].invalidated_rkey),
            (500 + round, WcStatus::Success, Some(key)),
            "round {round}"
        );
        let s = a.expect_send(&mut sim, 1, DEADLINE);
        assert_eq!((s[0].wr_id, s[0].status), (200 + round, WcStatus::Success));
        assert_eq!(query_mw(&sim, b.owner, key).state, MwState::Free);
    }
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::from_millis(20));
    assert_no_completion(&mut sim, a.owner, a.send_cq, Duration::ZERO);
    assert_eq!((a.state(&sim), b.state(&sim)), (QpState::Rts, QpState::Rts));
    let c = sim.network().total_counters();
    assert!(
        c.dropped + c.duplicated + c.delayed > 0,
        "the faults happened: {c:?}"
    );
}

#[test]
fn windows_under_loss() {
    windows_under_faults(0x5300, Action::Drop { probability: 0.1 });
}

#[test]
fn windows_under_duplication() {
    windows_under_faults(0x5301, Action::Duplicate { probability: 0.3 });
}

#[test]
fn windows_under_reordering() {
    let fault = Action::Reorder {
        probability: 0.2,
        delay: Duration::from_micros(30),
    };
    windows_under_faults(0x5302, fault);
}
