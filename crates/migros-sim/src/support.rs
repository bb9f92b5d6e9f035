//! Test support: verbs objects set up the way an application does it
//! (bring-up and connected pairs in `connect`), work request builders
//! ([`wr`]), completion waiting and data patterns.
//!
//! Setup helpers panic with a clear message when a verbs call fails (a
//! test cannot go on without its objects); data-path helpers
//! ([`Endpoint::post_send`], …) return the device's `Result` so tests can
//! check errors. Every identifier comes from [`Sim::alloc_id`], unique
//! across the whole simulation.

use std::net::IpAddr;
use std::time::Duration;

use migros_transport::{
    Access, AttrMask, Cqn, MemoryWindow, Mtu, MwType, OwnerId, Pdn, QpAttr, QpCap, QpInit, QpState,
    QpType, Qpn, RecvWr, SendWr, Sge, Srqn, UdDest, VerbsError, WorkCompletion,
};

use crate::sim::{Deadline, NodeId, Sim};

mod connect;
pub mod wr;

pub use connect::{
    activate_ud, connect_rc, connect_rc_receiver_rtr, connect_uc, rc_pair, rc_pair_on_srq,
    rc_pair_receiver_rtr, uc_pair, ud_endpoint, ud_pair,
};
/// Size of the GRH area at the start of every UD receive buffer.
pub use migros_transport::GRH_LEN;

/// Every access right a memory region can have here: the shared tests'
/// set, and memory windows may be bound to it.
pub const ACCESS_ALL: Access = Access(migros_test_support::ALL_ACCESS.0 | Access::MW_BIND.0);

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
        sim.with_device(self.node(sim), |d, _, _| d.post_send(qpn, wr))
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
        iova: addr,
        lkey,
        rkey,
        access,
    };
    let node = node_of(sim, owner);
    ok(sim.with_device(node, |d, _, _| d.reg_mr(mr)), "reg_mr");
    buf
}

/// Allocates a memory window of `pd`; returns its rkey (key byte 0).
pub fn alloc_mw(sim: &mut Sim, owner: OwnerId, pd: Pdn, mw_type: MwType) -> u32 {
    let rkey = sim.alloc_id() << 8;
    let node = node_of(sim, owner);
    ok(
        sim.with_device(node, |d, _, _| d.alloc_mw(owner, pd, mw_type, rkey)),
        "alloc_mw",
    );
    rkey
}

/// The memory window with `rkey`'s index as `owner`'s device has it now.
///
/// # Panics
/// If there is none.
pub fn query_mw(sim: &Sim, owner: OwnerId, rkey: u32) -> MemoryWindow {
    let node = node_of(sim, owner);
    match sim.device(node).query_mw(rkey) {
        Some(w) => w,
        None => panic!("no memory window {rkey:#x} on {node}"),
    }
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

/// A new QP, CQs and buffers for the owner and PD of `other` (a second
/// connection of the same process).
pub fn endpoint_beside(sim: &mut Sim, other: &Endpoint, opts: &RcOptions) -> Endpoint {
    endpoint_in(sim, other.owner, other.pd, other.qp_type, opts, None)
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

/// Posts `n` receives of `len` bytes on `b` (receive `i` at `i * len`)
/// and `n` SENDs of as many fresh bytes from `a` (SEND `i` from `i * len`,
/// filled with seed `seed + i`); the data sent, SEND by SEND.
pub fn post_send_stream(
    sim: &mut Sim,
    a: &Endpoint,
    b: &Endpoint,
    n: usize,
    len: usize,
    seed: u64,
) -> Vec<Vec<u8>> {
    let mut data = Vec::new();
    for i in 0..n {
        b.recv(sim, i as u64, i * len, len);
        data.push(a.fill_tx(sim, i * len, len, seed + i as u64));
        a.post_send(sim, wr::send(i as u64, a.tx.sges(i * len, len)))
            .expect("posted");
    }
    data
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
