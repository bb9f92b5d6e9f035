//! Test support: daemons on loopback addresses in a temporary socket
//! directory (migros-test-support's), and helpers to connect QPs and wait
//! for completions.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use migros_test_support::daemon::{daemon_bin, Daemon};
use migros_test_support::require::{require, root};
use migros_test_support::RcParams;
use migros_verbs::*;

/// `send_wr` and `recv_wr` work requests of one SGE, no inline data.
#[allow(unused_imports)] // not every test binary uses it
pub use migros_test_support::rc::cap as small_cap;
pub use migros_test_support::ALL_ACCESS;

pub mod stand_in;

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Whether the test runs: root (the daemon reaches this process's memory
/// with process_vm_readv/writev) and a daemon binary (built if needed).
/// See `migros_test_support::require`.
pub fn can_run() -> bool {
    match root() {
        Ok(()) => require([Ok(()), daemon_bin().map(|_| ())]),
        Err(e) => require([Err(e)]),
    }
}

/// Daemons sharing one temporary socket directory; killed on drop.
pub struct Net {
    pub dir: tempfile::TempDir,
    daemons: Vec<Daemon>,
}

impl Net {
    /// Starts one daemon per `(name, addr)` (addresses 127.0.0.x).
    pub fn start(devs: &[(&str, &str)]) -> Net {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = daemon_bin().expect("checked by can_run");
        let daemons = devs
            .iter()
            .map(|(name, addr)| Daemon::start(&bin, dir.path(), name, addr, &[]))
            .collect();
        Net { dir, daemons }
    }

    /// [`Net::start`] when the test can run ([`can_run`]), else `None`.
    pub fn start_if_can(devs: &[(&str, &str)]) -> Option<Net> {
        can_run().then(|| Net::start(devs))
    }

    pub fn open(&self, name: &str) -> Context {
        Context::open_in(self.dir.path(), name).expect("open device")
    }

    /// Kills daemon `name` (SIGKILL) and reaps it.
    pub fn kill(&mut self, name: &str) {
        for d in self.daemons.iter_mut().filter(|d| d.name == name) {
            d.kill();
        }
    }

    /// The daemon `name`.
    pub fn daemon(&self, name: &str) -> &Daemon {
        self.daemons
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemon {name}"))
    }
}

/// One side of a connection: its context, PD, CQ, QP and an MR.
pub struct Side {
    pub ctx: Context,
    pub pd: Pd,
    pub cq: Cq,
    pub qp: Qp,
    pub mr: Mr,
}

impl Side {
    pub fn new(ctx: Context, pd: Pd, cq: Cq, qp: Qp, mr: Mr) -> Side {
        Side {
            ctx,
            pd,
            cq,
            qp,
            mr,
        }
    }
}

/// An RC QP's attributes: both queues complete on `cq`, receives come
/// from `srq` if there is one, and only the send WRs that ask for a
/// completion get one.
pub fn rc_attr<'a>(cq: &'a Cq, srq: Option<&'a Srq>, cap: QpCap) -> QpInitAttr<'a> {
    QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: cq,
        recv_cq: cq,
        srq,
        cap,
        sq_sig_all: false,
    }
}

pub fn cap(wr: u32) -> QpCap {
    QpCap {
        max_send_wr: wr,
        max_recv_wr: wr,
        max_send_sge: 2,
        max_recv_sge: 2,
        max_inline_data: 64,
    }
}

/// A side with an RC QP (not connected yet) and an MR of `mr_len` bytes.
pub fn rc_side(ctx: Context, mr_len: usize) -> Side {
    rc_side_with(ctx, mr_len, None)
}

/// Like [`rc_side`], the CQ reporting to `channel`.
pub fn rc_side_with(ctx: Context, mr_len: usize, channel: Option<&CompChannel>) -> Side {
    rc_side_sized(ctx, 256, cap(64), mr_len, channel)
}

/// Like [`rc_side_with`], with a CQ of `cqe` entries and the QP
/// capacities `cap`.
pub fn rc_side_sized(
    ctx: Context,
    cqe: u32,
    cap: QpCap,
    mr_len: usize,
    channel: Option<&CompChannel>,
) -> Side {
    let pd = ctx.alloc_pd().expect("pd");
    let cq = ctx.create_cq(cqe, channel).expect("cq");
    let qp = pd.create_qp(&rc_attr(&cq, None, cap)).expect("qp");
    let mr = pd.alloc_mr(mr_len, ALL_ACCESS).expect("mr");
    Side::new(ctx, pd, cq, qp, mr)
}

/// Moves an RC QP to RTS towards `(remote_qpn, remote_addr)` (PSNs 0x100,
/// path MTU 1024), with migros-test-support's attributes.
pub fn connect_rc(qp: &Qp, remote_qpn: Qpn, remote_addr: IpAddr, timeout: u8, retry_cnt: u8) {
    let p = RcParams {
        timeout,
        retry_cnt,
        ..RcParams::new(remote_qpn, remote_addr)
    };
    for (attr, mask) in p.transitions() {
        if let Err(e) = qp.modify(&attr, mask) {
            panic!("modify qp {} to {:?}: {e}", qp.qpn, attr.qp_state);
        }
    }
}

/// Connects two RC sides to each other.
pub fn connect_pair(a: &Side, b: &Side) {
    connect_rc(&a.qp, b.qp.qpn, b.ctx.addr(), 12, 7);
    connect_rc(&b.qp, a.qp.qpn, a.ctx.addr(), 12, 7);
}

/// Polls `cq` until `n` completions arrived (panics after [`WAIT`]).
pub fn wait_n(cq: &Cq, n: usize) -> Vec<WorkCompletion> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n {
        let want = n - out.len();
        if cq.poll(&mut out, want).expect("poll") == 0 {
            assert!(
                start.elapsed() < WAIT,
                "timed out with {}/{n} completions: {out:?}",
                out.len()
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    out
}

/// Waits for one successful completion.
pub fn wait_ok(cq: &Cq) -> WorkCompletion {
    let wc = wait_n(cq, 1).remove(0);
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    wc
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
