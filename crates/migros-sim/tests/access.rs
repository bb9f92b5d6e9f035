//! What a responder refuses because of its QP's `qp_access_flags` (rxe's
//! `check_op_valid`) or because it serves no READs and atomics
//! (`max_dest_rd_atomic` 0, rxe's `check_resource`), with the NAK on the
//! wire, the requester's completion, the responder's state and its
//! asynchronous event; the same after the responder migrated; and the
//! memory-region rules of `reg_mr`.

use std::time::Duration;

use migros_sim::support::{
    assert_buf_eq, modify_qp, rc_pair, uc_pair, wr, Endpoint, RcOptions, ACCESS_ALL,
};
use migros_sim::{CaptureId, Filter, NodeId, Sim};
use migros_transport::{
    Access, AttrMask, DeviceEvent, MrSpec, QpAttr, QpState, SendWr, VerbsError, WcStatus,
};
use migros_wire::{AckSyndrome, NakCode};

const DEADLINE: Duration = Duration::from_secs(10);
const DOWNTIME: Duration = Duration::from_millis(2);

/// One remote operation `a` aims at `b.rx[0..8]`, and the QP access flag
/// it needs.
struct Op {
    name: &'static str,
    needs: Access,
    make: fn(&Endpoint, &Endpoint) -> SendWr,
}

const OPS: [Op; 5] = [
    Op {
        name: "RDMA WRITE",
        needs: Access::REMOTE_WRITE,
        make: |a, b| wr::write(1, a.tx.sges(0, 8), b.rx.at(0), b.rx.rkey),
    },
    Op {
        name: "RDMA READ",
        needs: Access::REMOTE_READ,
        make: |a, b| wr::read(1, a.tx.sges(0, 8), b.rx.at(0), b.rx.rkey),
    },
    Op {
        name: "compare and swap",
        needs: Access::REMOTE_ATOMIC,
        make: |a, b| wr::cmp_swap(1, a.tx.sge(0, 8), b.rx.at(0), b.rx.rkey, 0, 5),
    },
    Op {
        name: "fetch and add",
        needs: Access::REMOTE_ATOMIC,
        make: |a, b| wr::fetch_add(1, a.tx.sge(0, 8), b.rx.at(0), b.rx.rkey, 5),
    },
    Op {
        name: "ATOMIC WRITE",
        needs: Access::REMOTE_WRITE,
        make: |a, b| wr::atomic_write(1, a.tx.sge(0, 8), b.rx.at(0), b.rx.rkey),
    },
];

/// Every remote right but `without`.
fn all_but(without: Access) -> Access {
    let all = Access::REMOTE_WRITE.0 | Access::REMOTE_READ.0 | Access::REMOTE_ATOMIC.0;
    Access(all & !without.0)
}

fn naks(sim: &Sim, cap: CaptureId) -> Vec<AckSyndrome> {
    sim.captured(cap)
        .iter()
        .filter_map(|c| c.ack_syndrome())
        .map(AckSyndrome::decode)
        .filter(|s| matches!(s, AckSyndrome::Nak(_)))
        .collect()
}

/// `a` runs `op` against `b`, whose QP lacks the right: `a` completes with
/// `RemInvReqErr` after an "invalid request" NAK, `b` fails with
/// QP_REQ_ERR, `b`'s memory is untouched.
fn expect_refused(sim: &mut Sim, a: &Endpoint, b: &Endpoint, op: &Op) {
    let before = b.fill_rx(sim, 0, 8, 0x77);
    let cap = sim.start_capture(Filter::from(b.addr(sim)));
    a.post_send(sim, (op.make)(a, b)).expect("posted");
    let wc = a.expect_send(sim, 1, DEADLINE);
    assert_eq!(wc[0].status, WcStatus::RemInvReqErr, "{}", op.name);
    assert_eq!(
        naks(sim, cap),
        [AckSyndrome::Nak(NakCode::InvalidRequest)],
        "{}",
        op.name
    );
    assert_eq!(a.state(sim), QpState::Err, "{}", op.name);
    assert_eq!(b.state(sim), QpState::Err, "{}", op.name);
    let events = sim.events(b.node(sim));
    assert!(
        events.contains(&DeviceEvent::QpRequestError { qpn: b.qpn }),
        "{}: {events:?}",
        op.name
    );
    assert_buf_eq(sim, &b.rx, 0, &before);
}

fn pair(sim: &mut Sim, n: &[NodeId], access: Access) -> (Endpoint, Endpoint) {
    let opts = RcOptions {
        access,
        ..RcOptions::default()
    };
    rc_pair(sim, n[0], n[1], &opts)
}

#[test]
fn each_operation_needs_its_qp_access_flag() {
    let mut sim = Sim::new(0x5300);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    for op in &OPS {
        let (a, b) = pair(&mut sim, &n, all_but(op.needs));
        expect_refused(&mut sim, &a, &b, op);
        // With the flag the same operation goes through.
        let (a, b) = pair(&mut sim, &n, op.needs);
        a.post_send(&mut sim, (op.make)(&a, &b)).expect("posted");
        let wc = a.expect_send(&mut sim, 1, DEADLINE);
        assert_eq!(wc[0].status, WcStatus::Success, "{}", op.name);
    }
}

#[test]
fn access_flags_changed_in_rts_apply_to_the_next_request() {
    let mut sim = Sim::new(0x5310);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    let (a, b) = pair(&mut sim, &n, Access::REMOTE_WRITE | Access::REMOTE_READ);
    let w = wr::write(1, a.tx.sges(0, 8), b.rx.at(0), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    let attr = QpAttr {
        qp_state: QpState::Rts,
        qp_access_flags: Access::REMOTE_READ,
        ..QpAttr::default()
    };
    modify_qp(
        &mut sim,
        b.owner,
        b.qpn,
        &attr,
        AttrMask::STATE | AttrMask::ACCESS_FLAGS,
    )
    .expect("rts to rts with new access flags");
    expect_refused(&mut sim, &a, &b, &OPS[0]);
}

#[test]
fn region_rights_are_checked_after_the_qp_flags_with_remote_access_errors() {
    // The QP allows everything, the region only reading: a WRITE gets the
    // remote access NAK and QP_ACCESS_ERR, not the invalid request one.
    let mut sim = Sim::new(0x5320);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        rx_access: Access::REMOTE_READ,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let cap = sim.start_capture(Filter::from(b.addr(&sim)));
    let w = wr::write(1, a.tx.sges(0, 8), b.rx.at(0), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::RemAccessErr
    );
    assert_eq!(
        naks(&sim, cap),
        [AckSyndrome::Nak(NakCode::RemoteAccessError)]
    );
    assert!(sim
        .events(b.node(&sim))
        .contains(&DeviceEvent::QpAccessError { qpn: b.qpn }));
}

#[test]
fn a_qp_serving_no_reads_refuses_them_as_invalid_requests() {
    let mut sim = Sim::new(0x5330);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        max_dest_rd_atomic: 0,
        ..RcOptions::default()
    };
    for op in &OPS[1..] {
        let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
        expect_refused(&mut sim, &a, &b, op);
    }
    // WRITEs do not need responder resources.
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    a.post_send(&mut sim, (OPS[0].make)(&a, &b))
        .expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
}

#[test]
fn uc_drops_a_write_its_flags_refuse_and_goes_on() {
    let mut sim = Sim::new(0x5340);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        access: Access::default(),
        ..RcOptions::default()
    };
    let (a, b) = uc_pair(&mut sim, n[0], n[1], &opts);
    let before = b.fill_rx(&mut sim, 0, 64, 1);
    let w = wr::write(1, a.tx.sges(0, 64), b.rx.at(0), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    // UC completes the sender at once; the receiver drops the message.
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    sim.run_for(Duration::from_millis(1));
    assert_buf_eq(&sim, &b.rx, 0, &before);
    assert_eq!(b.state(&sim), QpState::Rts);
    // A SEND needs no flag and still arrives.
    b.recv(&mut sim, 9, 1024, 64);
    let data = a.fill_tx(&mut sim, 0, 64, 2);
    a.post_send(&mut sim, wr::send(2, a.tx.sges(0, 64)))
        .expect("posted");
    assert_eq!(b.expect_recv(&mut sim, 1, DEADLINE)[0].wr_id, 9);
    assert_buf_eq(&sim, &b.rx, 1024, &data);
}

#[test]
fn refusals_and_permissions_survive_a_migration_of_the_responder() {
    let mut sim = Sim::new(0x5350);
    let n: Vec<NodeId> = (0..3).map(|_| sim.add_node()).collect();
    let (a, b) = pair(&mut sim, &n, Access::REMOTE_WRITE);
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    assert_eq!(
        b.query(&sim).expect("qp").qp_access_flags,
        Access::REMOTE_WRITE
    );
    // Allowed on the new node.
    let data = a.fill_tx(&mut sim, 0, 8, 3);
    let w = wr::write(1, a.tx.sges(0, 8), b.rx.at(16), b.rx.rkey);
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_buf_eq(&sim, &b.rx, 16, &data);
    // Refused on the new node, with the same NAK and event.
    expect_refused(&mut sim, &a, &b, &OPS[1]);
}

#[test]
fn a_read_refused_while_its_responder_migrates() {
    // The READ leaves before the move and reaches the responder on its new
    // node after RESUME: still refused as an invalid request.
    let mut sim = Sim::new(0x5360);
    let n: Vec<NodeId> = (0..3).map(|_| sim.add_node()).collect();
    let (a, b) = pair(&mut sim, &n, Access::REMOTE_WRITE);
    let pending = sim
        .begin_migration(&[(b.owner, n[1], n[2])])
        .expect("checkpointed");
    a.post_send(&mut sim, (OPS[1].make)(&a, &b))
        .expect("posted");
    sim.run_for(DOWNTIME);
    sim.finish_migration(pending).expect("restored");
    let wc = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!(wc[0].status, WcStatus::RemInvReqErr);
    assert_eq!(b.state(&sim), QpState::Err);
}

// ---- memory region rules ----

fn reg(sim: &mut Sim, ep: &Endpoint, access: Access, iova: u64) -> Result<MrSpec, VerbsError> {
    let addr = sim.alloc(ep.owner, 4096);
    let mr = MrSpec {
        owner: ep.owner,
        pd: ep.pd,
        addr,
        length: 4096,
        iova,
        lkey: sim.alloc_id(),
        rkey: sim.alloc_id(),
        access,
    };
    let node = ep.node(sim);
    sim.with_device(node, |d, _, _| d.reg_mr(mr)).map(|()| mr)
}

#[test]
fn region_access_rules_are_the_kernels() {
    let mut sim = Sim::new(0x5370);
    let n: Vec<NodeId> = (0..2).map(|_| sim.add_node()).collect();
    let (a, _b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    let invalid = [
        Access::REMOTE_WRITE,
        Access::REMOTE_ATOMIC,
        Access(Access::REMOTE_WRITE.0 | Access::REMOTE_READ.0),
        Access(1 << 12),
    ];
    for access in invalid {
        let r = reg(&mut sim, &a, access, 0x1000);
        assert!(
            matches!(r, Err(VerbsError::InvalidArgument(_))),
            "{access:?}: {r:?}"
        );
    }
    for access in [Access::ZERO_BASED, Access::HUGETLB, Access::FLUSH_GLOBAL] {
        let r = reg(&mut sim, &a, access | Access::LOCAL_WRITE, 0x1000);
        assert!(
            matches!(r, Err(VerbsError::Unsupported(_))),
            "{access:?}: {r:?}"
        );
    }
    for access in [
        Access::REMOTE_READ,
        Access(Access::REMOTE_WRITE.0 | Access::LOCAL_WRITE.0),
        ACCESS_ALL,
        Access(Access::LOCAL_WRITE.0 | 1 << 20), // relaxed ordering: a hint
        Access::ON_DEMAND,
    ] {
        let r = reg(&mut sim, &a, access, 0x1000);
        assert!(r.is_ok(), "{access:?}: {r:?}");
    }
}

#[test]
fn a_region_answers_to_its_iova_for_local_and_remote_access() {
    let mut sim = Sim::new(0x5380);
    let n: Vec<NodeId> = (0..3).map(|_| sim.add_node()).collect();
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    let iova = 0x7700_0000_0000;
    let mr = reg(&mut sim, &b, ACCESS_ALL, iova).expect("registered");
    // a writes at iova + 100: the bytes land at addr + 100.
    let data = a.fill_tx(&mut sim, 0, 64, 5);
    let w = wr::write(1, a.tx.sges(0, 64), iova + 100, mr.rkey);
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_eq!(sim.read_mem(b.owner, mr.addr + 100, 64), data);
    // The virtual address is not an address of this region.
    let w = wr::write(2, a.tx.sges(0, 8), mr.addr, mr.rkey);
    a.post_send(&mut sim, w).expect("posted");
    assert_eq!(
        a.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::RemAccessErr
    );

    // Local SGEs name iovas too, and survive a migration of the owner.
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &RcOptions::default());
    let mr = reg(&mut sim, &b, ACCESS_ALL, iova).expect("registered");
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    let data = b.fill_tx(&mut sim, 0, 32, 6);
    sim.write_mem(b.owner, mr.addr + 200, &data);
    a.recv(&mut sim, 3, 0, 64);
    let sge = migros_transport::Sge {
        addr: iova + 200,
        length: 32,
        lkey: mr.lkey,
    };
    b.post_send(&mut sim, wr::send(4, vec![sge]))
        .expect("posted");
    assert_eq!(
        b.expect_send(&mut sim, 1, DEADLINE)[0].status,
        WcStatus::Success
    );
    assert_eq!(a.expect_recv(&mut sim, 1, DEADLINE)[0].byte_len, 32);
    assert_buf_eq(&sim, &a.rx, 0, &data);
}
