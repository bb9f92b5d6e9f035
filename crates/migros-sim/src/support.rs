//! Test support: verbs objects set up the way an application does it, work
//! request builders, completion waiting and data patterns.
//!
//! Setup helpers panic with a clear message when a verbs call fails (a
//! test cannot go on without its objects); data-path helpers
//! ([`Endpoint::post_send`], …) return the device's `Result` so tests can
//! check errors. Every identifier comes from [`Sim::alloc_id`], unique
//! across the whole simulation.

use std::net::IpAddr;
use std::time::Duration;

use migros_test_support::rc::{ud_transitions, RcParams};
use migros_transport::{
    Access, AttrMask, Cqn, Mtu, OwnerId, Pdn, QpAttr, QpCap, QpInit, QpState, QpType, Qpn, RecvWr,
    SendData, SendFlags, SendWr, Sge, Srqn, UdDest, VerbsError, WorkCompletion, WrOpcode,
};
use rand::Rng;

use crate::sim::{Deadline, NodeId, Sim};

/// Size of the GRH area at the start of every UD receive buffer.
pub const GRH_LEN: usize = 40;

/// Every access right a memory region can have.
pub const ACCESS_ALL: Access = migros_test_support::ALL_ACCESS;

/// Completion queue depth used by the helpers.
pub const CQ_DEPTH: u32 = 4096;

/// A registered memory region over freshly allocated memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub owner: OwnerId,
    pub pd: Pdn,
    pub addr: u64,
    pub len: usize,
    pub lkey: u32,
    pub rkey: u32,
    pub access: Access,
}

impl Buffer {
    /// Address of byte `offset`.
    pub fn at(&self, offset: usize) -> u64 {
        self.addr + offset as u64
    }

    /// One SGE over `offset..offset+len`.
    ///
    /// # Panics
    /// If the range is outside the buffer.
    pub fn sge(&self, offset: usize, len: usize) -> Sge {
        assert!(
            offset + len <= self.len,
            "sge {offset}+{len} outside a buffer of {} bytes",
            self.len
        );
        Sge {
            addr: self.at(offset),
            length: u32::try_from(len).expect("sge length fits in u32"),
            lkey: self.lkey,
        }
    }

    /// The SGE list for `offset..offset+len`: empty for a zero-length
    /// message, as applications post them.
    pub fn sges(&self, offset: usize, len: usize) -> Vec<Sge> {
        if len == 0 {
            Vec::new()
        } else {
            vec![self.sge(offset, len)]
        }
    }
}

/// How [`rc_pair`] sets up its QPs (the `ibv_modify_qp` attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcOptions {
    pub mtu: Mtu,
    /// Local ACK timeout, IB encoding: 4.096 µs · 2^timeout.
    pub timeout: u8,
    pub retry_cnt: u8,
    /// 7 means retry for ever.
    pub rnr_retry: u8,
    /// IB encoding (1: 0.01 ms … 0: 655.36 ms).
    pub min_rnr_timer: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    /// The QPs' remote access flags.
    pub access: Access,
    /// Access of the `rx` buffer (the target of the peer's RDMA).
    pub rx_access: Access,
    /// Size of each of the two buffers of an endpoint.
    pub buf_len: usize,
    pub cap: QpCap,
    pub sq_sig_all: bool,
    /// Initial send PSN of side A (side B uses `psn ^ 0x5a5a5a`); `None`
    /// draws both from the simulation's generator.
    pub psn: Option<u32>,
}

impl Default for RcOptions {
    fn default() -> Self {
        RcOptions {
            mtu: Mtu::Mtu1024,
            timeout: 10,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 1,
            max_rd_atomic: 16,
            max_dest_rd_atomic: 16,
            access: Access::REMOTE_WRITE | Access::REMOTE_READ | Access::REMOTE_ATOMIC,
            rx_access: ACCESS_ALL,
            buf_len: 64 * 1024,
            cap: default_cap(),
            sq_sig_all: false,
            psn: None,
        }
    }
}

/// Queue sizes used by the helpers unless told otherwise.
pub fn default_cap() -> QpCap {
    QpCap {
        max_send_wr: 256,
        max_recv_wr: 256,
        max_send_sge: 4,
        max_recv_sge: 4,
        max_inline_data: 256,
    }
}

/// One side of a connection (or one UD QP) with everything it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub owner: OwnerId,
    pub pd: Pdn,
    pub qpn: Qpn,
    pub qp_type: QpType,
    pub send_cq: Cqn,
    pub recv_cq: Cqn,
    pub srq: Option<Srqn>,
    /// Local data: the source of sends and writes, where READ and atomic
    /// responses land.
    pub tx: Buffer,
    /// Receive buffers and the target of the peer's RDMA operations.
    pub rx: Buffer,
    /// UD: the Q_Key of the QP.
    pub qkey: u32,
}

impl Endpoint {
    /// The node the endpoint lives on now (it moves with migrations).
    pub fn node(&self, sim: &Sim) -> NodeId {
        match sim.node_of(self.owner) {
            Some(n) => n,
            None => panic!("endpoint owner {} no longer exists", self.owner),
        }
    }

    /// The address of the node the endpoint lives on now.
    pub fn addr(&self, sim: &Sim) -> IpAddr {
        sim.addr(self.node(sim))
    }

    /// Where a UD send to this endpoint goes.
    pub fn ud_dest(&self, sim: &Sim) -> UdDest {
        UdDest {
            addr: self.addr(sim),
            remote_qpn: self.qpn,
            remote_qkey: self.qkey,
        }
    }

    pub fn post_send(&self, sim: &mut Sim, wr: SendWr) -> Result<(), VerbsError> {
        let qpn = self.qpn;
        sim.with_device(self.node(sim), |d, _, now| d.post_send(now, qpn, wr))
    }

    pub fn post_recv(&self, sim: &mut Sim, wr: RecvWr) -> Result<(), VerbsError> {
        let qpn = self.qpn;
        sim.with_device(self.node(sim), |d, _, _| d.post_recv(qpn, wr))
    }

    /// Posts a receive of `rx[offset..offset+len]`.
    ///
    /// # Panics
    /// If the device refuses it.
    pub fn recv(&self, sim: &mut Sim, wr_id: u64, offset: usize, len: usize) {
        let wr = wr::recv(wr_id, self.rx.sges(offset, len));
        if let Err(e) = self.post_recv(sim, wr) {
            panic!("post_recv on qp {}: {e}", self.qpn);
        }
    }

    pub fn query(&self, sim: &Sim) -> Result<QpAttr, VerbsError> {
        sim.device(self.node(sim)).query_qp(self.qpn)
    }

    /// The QP's state.
    ///
    /// # Panics
    /// If the QP does not exist.
    pub fn state(&self, sim: &Sim) -> QpState {
        match self.query(sim) {
            Ok(a) => a.qp_state,
            Err(e) => panic!("query_qp {}: {e}", self.qpn),
        }
    }

    /// Every completion on the send CQ right now.
    pub fn poll_send(&self, sim: &mut Sim) -> Vec<WorkCompletion> {
        poll_all(sim, self.owner, self.send_cq)
    }

    /// Every completion on the receive CQ right now.
    pub fn poll_recv(&self, sim: &mut Sim) -> Vec<WorkCompletion> {
        poll_all(sim, self.owner, self.recv_cq)
    }

    /// Runs until `n` completions arrived on the send CQ.
    ///
    /// # Panics
    /// If they did not arrive by the deadline.
    pub fn expect_send(
        &self,
        sim: &mut Sim,
        n: usize,
        deadline: impl Into<Deadline>,
    ) -> Vec<WorkCompletion> {
        expect_completions(sim, self.owner, self.send_cq, n, deadline)
    }

    /// Runs until `n` completions arrived on the receive CQ.
    ///
    /// # Panics
    /// If they did not arrive by the deadline.
    pub fn expect_recv(
        &self,
        sim: &mut Sim,
        n: usize,
        deadline: impl Into<Deadline>,
    ) -> Vec<WorkCompletion> {
        expect_completions(sim, self.owner, self.recv_cq, n, deadline)
    }

    /// Writes `pattern(seed, len)` into `tx[offset..]` and returns it.
    pub fn fill_tx(&self, sim: &mut Sim, offset: usize, len: usize, seed: u64) -> Vec<u8> {
        fill_pattern(sim, &self.tx, offset, len, seed)
    }

    /// Writes `pattern(seed, len)` into `rx[offset..]` and returns it.
    pub fn fill_rx(&self, sim: &mut Sim, offset: usize, len: usize, seed: u64) -> Vec<u8> {
        fill_pattern(sim, &self.rx, offset, len, seed)
    }
}

fn ok<T>(r: Result<T, VerbsError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn node_of(sim: &Sim, owner: OwnerId) -> NodeId {
    match sim.node_of(owner) {
        Some(n) => n,
        None => panic!("owner {owner} does not exist"),
    }
}

/// Allocates a protection domain for `owner`.
pub fn alloc_pd(sim: &mut Sim, owner: OwnerId) -> Pdn {
    let pd = sim.alloc_id();
    let node = node_of(sim, owner);
    ok(
        sim.with_device(node, |d, _, _| d.alloc_pd(owner, pd)),
        "alloc_pd",
    );
    pd
}

/// Allocates `len` bytes of `owner`'s memory and registers them.
pub fn reg_buffer(sim: &mut Sim, owner: OwnerId, pd: Pdn, len: usize, access: Access) -> Buffer {
    let addr = sim.alloc(owner, len);
    let lkey = sim.alloc_id();
    let rkey = sim.alloc_id();
    let buf = Buffer {
        owner,
        pd,
        addr,
        len,
        lkey,
        rkey,
        access,
    };
    let mr = migros_transport::MrSpec {
        owner,
        pd,
        addr,
        length: len as u64,
        lkey,
        rkey,
        access,
    };
    let node = node_of(sim, owner);
    ok(sim.with_device(node, |d, _, _| d.reg_mr(mr)), "reg_mr");
    buf
}

pub fn create_cq(sim: &mut Sim, owner: OwnerId, capacity: u32) -> Cqn {
    let cq = sim.alloc_id();
    let node = node_of(sim, owner);
    ok(
        sim.with_device(node, |d, _, _| d.create_cq(owner, cq, capacity)),
        "create_cq",
    );
    cq
}

pub fn create_srq(sim: &mut Sim, owner: OwnerId, pd: Pdn, max_wr: u32, limit: u32) -> Srqn {
    let srq = sim.alloc_id();
    let node = node_of(sim, owner);
    ok(
        sim.with_device(node, |d, _, _| d.create_srq(owner, srq, pd, max_wr, limit)),
        "create_srq",
    );
    srq
}

/// Creates a QP in RESET with a fresh QPN.
pub fn create_qp(sim: &mut Sim, init: QpInit) -> Qpn {
    let node = node_of(sim, init.owner);
    let qpn = init.qpn;
    ok(
        sim.with_device(node, |d, _, _| d.create_qp(init)),
        "create_qp",
    );
    qpn
}

/// `ibv_modify_qp` on `owner`'s QP.
pub fn modify_qp(
    sim: &mut Sim,
    owner: OwnerId,
    qpn: Qpn,
    attr: &QpAttr,
    mask: AttrMask,
) -> Result<(), VerbsError> {
    let node = node_of(sim, owner);
    sim.with_device(node, |d, _, now| d.modify_qp(now, qpn, attr, mask))
}

/// An owner on `node` with a PD, two CQs, `tx` and `rx` buffers and a QP
/// in RESET. `srq`, if given, must belong to `owner` (see [`SrqHost`]).
pub fn endpoint(sim: &mut Sim, node: NodeId, qp_type: QpType, opts: &RcOptions) -> Endpoint {
    let owner = sim.new_owner(node);
    let pd = alloc_pd(sim, owner);
    endpoint_in(sim, owner, pd, qp_type, opts, None)
}

fn endpoint_in(
    sim: &mut Sim,
    owner: OwnerId,
    pd: Pdn,
    qp_type: QpType,
    opts: &RcOptions,
    srq: Option<(&SrqHost, Cqn)>,
) -> Endpoint {
    let send_cq = create_cq(sim, owner, CQ_DEPTH);
    let tx = reg_buffer(sim, owner, pd, opts.buf_len, ACCESS_ALL);
    let (recv_cq, rx, srq) = match srq {
        Some((host, recv_cq)) => (recv_cq, host.rx, Some(host.srq)),
        None => (
            create_cq(sim, owner, CQ_DEPTH),
            reg_buffer(sim, owner, pd, opts.buf_len, opts.rx_access),
            None,
        ),
    };
    let qpn = sim.alloc_qpn();
    create_qp(
        sim,
        QpInit {
            owner,
            qpn,
            qp_type,
            pd,
            send_cq,
            recv_cq,
            srq,
            cap: opts.cap,
            sq_sig_all: opts.sq_sig_all,
        },
    );
    Endpoint {
        owner,
        pd,
        qpn,
        qp_type,
        send_cq,
        recv_cq,
        srq,
        tx,
        rx,
        qkey: 0,
    }
}

/// Moves two RESET QPs to RTS, connected to each other, with the verbs
/// attribute masks an application uses.
///
/// # Panics
/// If a transition fails.
pub fn connect_rc(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions) {
    connect_rc_until(sim, a, b, opts, QpState::Rts);
}

/// Like [`connect_rc`], but `b` stops at RTR: a receive-only QP, as a
/// server of a one-way stream may leave it (it never sends a request, so
/// it never needs RTS). `a` goes to RTS.
///
/// # Panics
/// If a transition fails.
pub fn connect_rc_receiver_rtr(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions) {
    connect_rc_until(sim, a, b, opts, QpState::Rtr);
}

/// Connects two RESET QPs: `a` to RTS, `b` to `b_state` (RTR or RTS).
fn connect_rc_until(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions, b_state: QpState) {
    let (psn_a, psn_b) = initial_psns(sim, opts);
    for (ep, peer, sq_psn, rq_psn, until) in [
        (a, b, psn_a, psn_b, QpState::Rts),
        (b, a, psn_b, psn_a, b_state),
    ] {
        let params = RcParams {
            until,
            ..rc_params(sim, opts, peer, sq_psn, rq_psn)
        };
        apply(sim, ep, &params.transitions());
    }
}

/// The shared RC attributes of `opts` towards `peer`.
fn rc_params(sim: &Sim, opts: &RcOptions, peer: &Endpoint, sq_psn: u32, rq_psn: u32) -> RcParams {
    RcParams {
        mtu: opts.mtu,
        sq_psn,
        rq_psn,
        timeout: opts.timeout,
        retry_cnt: opts.retry_cnt,
        rnr_retry: opts.rnr_retry,
        min_rnr_timer: opts.min_rnr_timer,
        max_rd_atomic: opts.max_rd_atomic,
        max_dest_rd_atomic: opts.max_dest_rd_atomic,
        access: opts.access,
        ..RcParams::new(peer.qpn, peer.addr(sim))
    }
}

/// `ibv_modify_qp` with each `(attr, mask)` in order.
///
/// # Panics
/// If a transition fails.
fn apply(sim: &mut Sim, ep: &Endpoint, steps: &[(QpAttr, AttrMask)]) {
    for (attr, mask) in steps {
        if let Err(e) = modify_qp(sim, ep.owner, ep.qpn, attr, *mask) {
            panic!("modify_qp of qp {} to {:?}: {e}", ep.qpn, attr.qp_state);
        }
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

/// Moves two RESET UC QPs to RTS, connected to each other, with the UC
/// attribute masks (no ACK timeout, retries or RDMA READ/atomic depth).
///
/// # Panics
/// If a transition fails.
pub fn connect_uc(sim: &mut Sim, a: &Endpoint, b: &Endpoint, opts: &RcOptions) {
    let (psn_a, psn_b) = initial_psns(sim, opts);
    for (ep, peer, sq_psn, rq_psn) in [(a, b, psn_a, psn_b), (b, a, psn_b, psn_a)] {
        let params = rc_params(sim, opts, peer, sq_psn, rq_psn);
        apply(sim, ep, &params.uc_transitions());
    }
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

/// Moves a RESET UD QP to RTS with Q_Key `qkey`.
///
/// # Panics
/// If a transition fails.
pub fn activate_ud(sim: &mut Sim, ep: &mut Endpoint, qkey: u32) {
    ep.qkey = qkey;
    let sq_psn = sim.rng().gen::<u32>() & 0x00ff_ffff;
    apply(sim, ep, &ud_transitions(qkey, sq_psn));
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

/// An owner with an SRQ, the receive CQ shared by the QPs attached to it,
/// and the buffer its receives land in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrqHost {
    pub owner: OwnerId,
    pub pd: Pdn,
    pub srq: Srqn,
    pub recv_cq: Cqn,
    pub rx: Buffer,
}

impl SrqHost {
    pub fn node(&self, sim: &Sim) -> NodeId {
        node_of(sim, self.owner)
    }

    pub fn post_recv(&self, sim: &mut Sim, wr: RecvWr) -> Result<(), VerbsError> {
        let srq = self.srq;
        sim.with_device(self.node(sim), |d, _, _| d.post_srq_recv(srq, wr))
    }

    /// Posts a receive of `rx[offset..offset+len]`.
    ///
    /// # Panics
    /// If the device refuses it.
    pub fn recv(&self, sim: &mut Sim, wr_id: u64, offset: usize, len: usize) {
        let wr = wr::recv(wr_id, self.rx.sges(offset, len));
        if let Err(e) = self.post_recv(sim, wr) {
            panic!("post_srq_recv on srq {}: {e}", self.srq);
        }
    }

    /// Runs until `n` completions arrived on the shared receive CQ.
    ///
    /// # Panics
    /// If they did not arrive by the deadline.
    pub fn expect_recv(
        &self,
        sim: &mut Sim,
        n: usize,
        deadline: impl Into<Deadline>,
    ) -> Vec<WorkCompletion> {
        expect_completions(sim, self.owner, self.recv_cq, n, deadline)
    }
}

/// A new owner on `node` with an SRQ of `max_wr` receives and limit
/// `limit` (0: disarmed), and an `rx` buffer of `buf_len` bytes.
pub fn srq_host(sim: &mut Sim, node: NodeId, max_wr: u32, limit: u32, buf_len: usize) -> SrqHost {
    let owner = sim.new_owner(node);
    let pd = alloc_pd(sim, owner);
    let srq = create_srq(sim, owner, pd, max_wr, limit);
    let recv_cq = create_cq(sim, owner, CQ_DEPTH);
    let rx = reg_buffer(sim, owner, pd, buf_len, ACCESS_ALL);
    SrqHost {
        owner,
        pd,
        srq,
        recv_cq,
        rx,
    }
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

/// Every completion on `cq` of `owner` right now.
pub fn poll_all(sim: &mut Sim, owner: OwnerId, cq: Cqn) -> Vec<WorkCompletion> {
    let node = node_of(sim, owner);
    let mut out = Vec::new();
    ok(
        sim.with_device(node, |d, _, _| d.poll_cq(cq, usize::MAX, &mut out)),
        "poll_cq",
    );
    out
}

/// Runs the simulation until `n` completions arrived on `cq` of `owner`
/// or the deadline passed; returns what arrived (at most `n`, in CQ
/// order). Completions beyond `n` stay in the CQ.
pub fn wait_completions(
    sim: &mut Sim,
    owner: OwnerId,
    cq: Cqn,
    n: usize,
    deadline: impl Into<Deadline>,
) -> Vec<WorkCompletion> {
    let mut got = Vec::with_capacity(n);
    sim.run_until(deadline, |s| {
        let want = n - got.len();
        if want > 0 {
            let node = node_of(s, owner);
            let r = s.device_mut(node).poll_cq(cq, want, &mut got);
            ok(r, "poll_cq");
        }
        got.len() >= n
    });
    got
}

/// Like [`wait_completions`], but panics (listing what did arrive) when
/// fewer than `n` completions arrived by the deadline.
pub fn expect_completions(
    sim: &mut Sim,
    owner: OwnerId,
    cq: Cqn,
    n: usize,
    deadline: impl Into<Deadline>,
) -> Vec<WorkCompletion> {
    let got = wait_completions(sim, owner, cq, n, deadline);
    assert!(
        got.len() == n,
        "cq {cq}: {} of {n} completions by {:?}; got {got:#?}",
        got.len(),
        sim.now()
    );
    got
}

/// Runs for `duration` and asserts that no completion appears on `cq`
/// (exactly-once checks after the expected ones were taken).
pub fn assert_no_completion(sim: &mut Sim, owner: OwnerId, cq: Cqn, duration: Duration) {
    sim.run_for(duration);
    let extra = poll_all(sim, owner, cq);
    assert!(
        extra.is_empty(),
        "cq {cq}: unexpected completions {extra:#?}"
    );
}

/// Deterministic, position-dependent test data: `len` bytes from `seed`.
/// Different seeds give different data; no run of zeros.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8 ^ (i as u8)
        })
        .collect()
}

/// Writes `pattern(seed, len)` at `buf[offset..]` and returns it.
pub fn fill_pattern(sim: &mut Sim, buf: &Buffer, offset: usize, len: usize, seed: u64) -> Vec<u8> {
    let data = pattern(seed, len);
    assert!(offset + len <= buf.len, "pattern outside the buffer");
    sim.write_mem(buf.owner, buf.at(offset), &data);
    data
}

/// Asserts that `buf[offset..]` holds `expected`, naming the first
/// differing byte.
pub fn assert_buf_eq(sim: &Sim, buf: &Buffer, offset: usize, expected: &[u8]) {
    let got = sim.read_mem(buf.owner, buf.at(offset), expected.len());
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "buffer {:#x}+{offset}: byte {i} of {} is {:#04x}, expected {:#04x}",
            buf.addr,
            expected.len(),
            got[i],
            expected[i]
        );
    }
}

/// Work request builders. Every send WR is signaled.
pub mod wr {
    use super::*;

    fn signaled(wr_id: u64, opcode: WrOpcode, sges: Vec<Sge>) -> SendWr {
        SendWr {
            wr_id,
            opcode,
            flags: SendFlags::SIGNALED,
            data: SendData::Sges(sges),
            ud: None,
        }
    }

    pub fn send(wr_id: u64, sges: Vec<Sge>) -> SendWr {
        signaled(wr_id, WrOpcode::Send, sges)
    }

    pub fn send_imm(wr_id: u64, sges: Vec<Sge>, imm: u32) -> SendWr {
        signaled(wr_id, WrOpcode::SendWithImm { imm }, sges)
    }

    pub fn write(wr_id: u64, sges: Vec<Sge>, remote_addr: u64, rkey: u32) -> SendWr {
        signaled(wr_id, WrOpcode::RdmaWrite { remote_addr, rkey }, sges)
    }

    pub fn write_imm(wr_id: u64, sges: Vec<Sge>, remote_addr: u64, rkey: u32, imm: u32) -> SendWr {
        let op = WrOpcode::RdmaWriteWithImm {
            remote_addr,
            rkey,
            imm,
        };
        signaled(wr_id, op, sges)
    }

    pub fn read(wr_id: u64, sges: Vec<Sge>, remote_addr: u64, rkey: u32) -> SendWr {
        signaled(wr_id, WrOpcode::RdmaRead { remote_addr, rkey }, sges)
    }

    /// `result` is the 8-byte SGE the original value lands in.
    pub fn cmp_swap(
        wr_id: u64,
        result: Sge,
        remote_addr: u64,
        rkey: u32,
        compare: u64,
        swap: u64,
    ) -> SendWr {
        let op = WrOpcode::AtomicCmpSwap {
            remote_addr,
            rkey,
            compare,
            swap,
        };
        signaled(wr_id, op, vec![result])
    }

    /// `result` is the 8-byte SGE the original value lands in.
    pub fn fetch_add(wr_id: u64, result: Sge, remote_addr: u64, rkey: u32, add: u64) -> SendWr {
        let op = WrOpcode::AtomicFetchAdd {
            remote_addr,
            rkey,
            add,
        };
        signaled(wr_id, op, vec![result])
    }

    pub fn ud_send(wr_id: u64, sges: Vec<Sge>, dest: UdDest) -> SendWr {
        SendWr {
            ud: Some(dest),
            ..send(wr_id, sges)
        }
    }

    pub fn recv(wr_id: u64, sges: Vec<Sge>) -> RecvWr {
        RecvWr { wr_id, sges }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        assert_eq!(pattern(1, 64), pattern(1, 64));
        assert_ne!(pattern(1, 64), pattern(2, 64));
        assert_eq!(&pattern(3, 100)[..10], &pattern(3, 10)[..]);
        assert!(pattern(0, 4096)
            .windows(8)
            .all(|w| w.iter().any(|&b| b != 0)));
    }

    #[test]
    fn sges_of_empty_message_is_empty() {
        let b = Buffer {
            owner: 1,
            pd: 2,
            addr: 0x1000,
            len: 100,
            lkey: 3,
            rkey: 4,
            access: ACCESS_ALL,
        };
        assert!(b.sges(0, 0).is_empty());
        assert_eq!(
            b.sges(10, 5),
            [Sge {
                addr: 0x100a,
                length: 5,
                lkey: 3
            }]
        );
    }
}
