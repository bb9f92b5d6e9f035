//! Bringing QPs up as applications do: RESET → INIT → RTR → RTS with the
//! attribute masks `ibv_modify_qp` callers pass for each service, and the
//! connected pairs built on that.
//!
//! Every bring-up goes through [`bring_up`]; the services differ only in
//! the attributes of each step ([`init_step`], [`rtr_step`], [`rts_step`]).

use migros_transport::{Access, AttrMask, QpAttr, QpState, QpType};
use rand::Rng;

use super::{endpoint, endpoint_in, modify_qp, ok, Endpoint, RcOptions, SrqHost};
use crate::sim::{NodeId, Sim};

/// One `ibv_modify_qp` call: the attributes and the mask (without
/// `AttrMask::STATE`, which every step sets).
type Step = (QpAttr, AttrMask);

/// Applies `steps` to `ep`'s QP in order.
///
/// # Panics
/// If a transition fails.
fn bring_up(sim: &mut Sim, ep: &Endpoint, steps: &[Step]) {
    for (attr, mask) in steps {
        let to = format!("{:?}", attr.qp_state).to_uppercase();
        ok(
            modify_qp(sim, ep.owner, ep.qpn, attr, AttrMask::STATE | *mask),
            &format!("modify_qp to {to}"),
        );
    }
}

/// RESET to INIT: port 1, P_Key index 0, and for a connected QP its
/// remote access flags, for UD its Q_Key.
fn init_step(qp_type: QpType, access: Access, qkey: u32) -> Step {
    let attr = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        ..QpAttr::default()
    };
    let mask = AttrMask::PKEY_INDEX | AttrMask::PORT;
    match qp_type {
        QpType::Ud => (QpAttr { qkey, ..attr }, mask | AttrMask::QKEY),
        QpType::Rc | QpType::Uc => (
            QpAttr {
                qp_access_flags: access,
                ..attr
            },
            mask | AttrMask::ACCESS_FLAGS,
        ),
    }
}

/// INIT to RTR: UD needs nothing more; a connected QP its path to
/// `peer` and the PSN it expects, RC also the READ/atomic depth it serves
/// and its RNR timer.
fn rtr_step(sim: &Sim, qp_type: QpType, opts: &RcOptions, peer: Option<(&Endpoint, u32)>) -> Step {
    let attr = QpAttr {
        qp_state: QpState::Rtr,
        ..QpAttr::default()
    };
    let Some((peer, rq_psn)) = peer.filter(|_| qp_type != QpType::Ud) else {
        return (attr, AttrMask::default());
    };
    let attr = QpAttr {
        dest_addr: Some(peer.addr(sim)),
        path_mtu: opts.mtu,
        dest_qp_num: peer.qpn,
        rq_psn,
        ..attr
    };
    let mask = AttrMask::AV | AttrMask::PATH_MTU | AttrMask::DEST_QPN | AttrMask::RQ_PSN;
    if qp_type == QpType::Uc {
        return (attr, mask);
    }
    let attr = QpAttr {
        max_dest_rd_atomic: opts.max_dest_rd_atomic,
        min_rnr_timer: opts.min_rnr_timer,
        ..attr
    };
    (
        attr,
        mask | AttrMask::MAX_DEST_RD_ATOMIC | AttrMask::MIN_RNR_TIMER,
    )
}

/// RTR to RTS sending from `sq_psn`; RC also sets its ACK timeout, retry
/// counts and READ/atomic depth.
fn rts_step(qp_type: QpType, opts: &RcOptions, sq_psn: u32) -> Step {
    let attr = QpAttr {
        qp_state: QpState::Rts,
        sq_psn,
        ..QpAttr::default()
    };
    if qp_type != QpType::Rc {
        return (attr, AttrMask::SQ_PSN);
    }
    let attr = QpAttr {
        timeout: opts.timeout,
        retry_cnt: opts.retry_cnt,
        rnr_retry: opts.rnr_retry,
        max_rd_atomic: opts.max_rd_atomic,
        ..attr
    };
    let mask = AttrMask::SQ_PSN
        | AttrMask::TIMEOUT
        | AttrMask::RETRY_CNT
        | AttrMask::RNR_RETRY
        | AttrMask::MAX_QP_RD_ATOMIC;
    (attr, mask)
}

/// Connects two RESET QPs of a connected service: `a` to RTS, `b` to
/// `b_state` (RTR or RTS).
fn connect(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions, b_state: QpState) {
    let qp_type = a.qp_type;
    let (psn_a, psn_b) = initial_psns(sim, opts);
    for (ep, peer, sq_psn, rq_psn, last) in [
        (a, b, psn_a, psn_b, QpState::Rts),
        (b, a, psn_b, psn_a, b_state),
    ] {
        let mut steps = vec![
            init_step(qp_type, opts.access, 0),
            rtr_step(sim, qp_type, opts, Some((peer, rq_psn))),
        ];
        if last == QpState::Rts {
            steps.push(rts_step(qp_type, opts, sq_psn));
        }
        bring_up(sim, ep, &steps);
    }
}

/// The initial send PSNs of sides A and B (see [`RcOptions::psn`]).
fn initial_psns(sim: &mut Sim, opts: &RcOptions) -> (u32, u32) {
    let psn_a = opts.psn.unwrap_or_else(|| sim.rng().gen::<u32>()) & 0x00ff_ffff;
    let psn_b = match opts.psn {
        Some(p) => (p ^ 0x005a_5a5a) & 0x00ff_ffff,
        None => sim.rng().gen::<u32>() & 0x00ff_ffff,
    };
    (psn_a, psn_b)
}

/// Moves two RESET RC QPs to RTS, connected to each other, with the verbs
/// attribute masks an application uses.
///
/// # Panics
/// If a transition fails.
pub fn connect_rc(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions) {
    connect(sim, a, b, opts, QpState::Rts);
}

/// Like [`connect_rc`], but `b` stops at RTR: a receive-only QP, as a
/// server of a one-way stream may leave it (it never sends a request, so
/// it never needs RTS). `a` goes to RTS.
///
/// # Panics
/// If a transition fails.
pub fn connect_rc_receiver_rtr(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions) {
    connect(sim, a, b, opts, QpState::Rtr);
}

/// Moves two RESET UC QPs to RTS, connected to each other, with the UC
/// attribute masks (no ACK timeout, retries or RDMA READ/atomic depth).
///
/// # Panics
/// If a transition fails.
pub fn connect_uc(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions) {
    connect(sim, a, b, opts, QpState::Rts);
}

/// Moves a RESET UD QP to RTS with Q_Key `qkey`.
///
/// # Panics
/// If a transition fails.
pub fn activate_ud(sim: &mut Sim, ep: &mut Endpoint, qkey: u32) {
    ep.qkey = qkey;
    let opts = RcOptions::default();
    let steps = [
        init_step(QpType::Ud, Access::default(), qkey),
        rtr_step(sim, QpType::Ud, &opts, None),
    ];
    bring_up(sim, ep, &steps);
    let sq_psn = sim.rng().gen::<u32>() & 0x00ff_ffff;
    bring_up(sim, ep, &[rts_step(QpType::Ud, &opts, sq_psn)]);
}

/// Two endpoints of `qp_type` on `node_a` and `node_b`, joined by `connect`.
fn pair_with(
    sim: &mut Sim,
    node_a: NodeId,
    node_b: NodeId,
    qp_type: QpType,
    opts: &RcOptions,
    connect: fn(&mut Sim, &Endpoint, &Endpoint, &RcOptions),
) -> (Endpoint, Endpoint) {
    let a = endpoint(sim, node_a, qp_type, opts);
    let b = endpoint(sim, node_b, qp_type, opts);
    connect(sim, &a, &b, opts);
    (a, b)
}

/// Two connected UC endpoints in RTS, on `node_a` and `node_b`.
pub fn uc_pair(
    sim: &mut Sim,
    node_a: NodeId,
    node_b: NodeId,
    opts: &RcOptions,
) -> (Endpoint, Endpoint) {
    pair_with(sim, node_a, node_b, QpType::Uc, opts, connect_uc)
}

/// Two connected RC endpoints: `a` on `node_a` in RTS, `b` on `node_b`
/// left in RTR (see [`connect_rc_receiver_rtr`]).
pub fn rc_pair_receiver_rtr(
    sim: &mut Sim,
    node_a: NodeId,
    node_b: NodeId,
    opts: &RcOptions,
) -> (Endpoint, Endpoint) {
    pair_with(
        sim,
        node_a,
        node_b,
        QpType::Rc,
        opts,
        connect_rc_receiver_rtr,
    )
}

/// Two connected RC endpoints in RTS, on `node_a` and `node_b`.
pub fn rc_pair(
    sim: &mut Sim,
    node_a: NodeId,
    node_b: NodeId,
    opts: &RcOptions,
) -> (Endpoint, Endpoint) {
    pair_with(sim, node_a, node_b, QpType::Rc, opts, connect_rc)
}

/// A UD endpoint in RTS on `node` with Q_Key `qkey`.
pub fn ud_endpoint(sim: &mut Sim, node: NodeId, qkey: u32, opts: &RcOptions) -> Endpoint {
    let mut ep = endpoint(sim, node, QpType::Ud, opts);
    activate_ud(sim, &mut ep, qkey);
    ep
}

/// Two UD endpoints in RTS sharing the Q_Key `qkey`.
pub fn ud_pair(
    sim: &mut Sim,
    node_a: NodeId,
    node_b: NodeId,
    qkey: u32,
    opts: &RcOptions,
) -> (Endpoint, Endpoint) {
    let a = ud_endpoint(sim, node_a, qkey, opts);
    let b = ud_endpoint(sim, node_b, qkey, opts);
    (a, b)
}

/// An RC connection whose server side (returned first) belongs to `host`,
/// receives from its SRQ into its shared CQ; the client lives on
/// `client_node`.
pub fn rc_pair_on_srq(
    sim: &mut Sim,
    host: &SrqHost,
    client_node: NodeId,
    opts: &RcOptions,
) -> (Endpoint, Endpoint) {
    let server = endpoint_in(
        sim,
        host.owner,
        host.pd,
        QpType::Rc,
        opts,
        Some((host, host.recv_cq)),
    );
    let client = endpoint(sim, client_node, QpType::Rc, opts);
    connect_rc(sim, &server, &client, opts);
    (server, client)
}
