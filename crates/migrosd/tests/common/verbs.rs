//! A hand-rolled verbs client over the raw protocol (rings in this process).

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use migros_proto::msg::{Request, Response};
use migros_proto::ring::{self, CQE_PHASE, CQE_SIZE, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_proto::verbs::*;
use migros_test_support::rc::signaled_send;

use super::{Client, Daemon, Pages, Raw, TIMEOUT};

pub struct Cq {
    pub cq: Cqn,
    pub ring: Pages,
    pub ctrl: Pages,
    pub entries: u32,
    pub ci: u32,
}

pub struct Qp {
    pub qpn: Qpn,
    pub sq: Pages,
    pub rq: Pages,
    pub ctrl: Pages,
    pub entries: u32,
    pub sq_pi: u32,
    pub rq_pi: u32,
}

pub struct Mr {
    pub buf: Pages,
    pub lkey: u32,
    pub rkey: u32,
}

pub fn alloc_pd(c: &mut Client) -> Pdn {
    match c.request(&Request::AllocPd) {
        Response::Pd { pd } => pd,
        other => panic!("alloc pd: {other:?}"),
    }
}

pub fn reg_mr(c: &mut Client, pd: Pdn, len: usize) -> Mr {
    let buf = Pages::new(len);
    match c.request(&Request::RegMr {
        pd,
        addr: buf.addr(),
        length: len as u64,
        iova: buf.addr(),
        access: Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
    }) {
        Response::Mr { lkey, rkey } => Mr { buf, lkey, rkey },
        other => panic!("reg mr: {other:?}"),
    }
}

pub fn create_cq(c: &mut Client, entries: u32) -> Cq {
    let ring = Pages::new(entries as usize * CQE_SIZE);
    let ctrl = Pages::new(ring::CQ_CTRL_SIZE);
    match c.request(&Request::CreateCq {
        entries,
        ring: ring.addr(),
        ctrl: ctrl.addr(),
        channel: None,
    }) {
        Response::Cq { cq } => Cq {
            cq,
            ring,
            ctrl,
            entries,
            ci: 0,
        },
        other => panic!("create cq: {other:?}"),
    }
}

/// The request creating an RC QP of `pd` with capacities `cap` whose send
/// and receive completions go to `cq` (every send signaled), its send
/// ring, receive ring and control block in `pages`.
pub fn create_rc_qp(pd: Pdn, cq: &Cq, cap: QpCap, pages: [&Pages; 3]) -> Request {
    let [sq, rq, ctrl] = pages;
    Request::CreateQp {
        pd,
        qp_type: QpType::Rc,
        send_cq: cq.cq,
        recv_cq: cq.cq,
        srq: None,
        cap,
        sq_sig_all: true,
        sq_ring: sq.addr(),
        rq_ring: rq.addr(),
        ctrl: ctrl.addr(),
    }
}

pub fn create_qp(c: &mut Client, pd: Pdn, cq: &Cq, entries: u32) -> Qp {
    let sq = Pages::new(entries as usize * SQ_WQE_SIZE);
    let rq = Pages::new(entries as usize * RQ_WQE_SIZE);
    let ctrl = Pages::new(ring::QP_CTRL_SIZE);
    let cap = QpCap {
        max_send_wr: entries,
        max_recv_wr: entries,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 64,
    };
    match c.request(&create_rc_qp(pd, cq, cap, [&sq, &rq, &ctrl])) {
        Response::Qp { qpn } => Qp {
            qpn,
            sq,
            rq,
            ctrl,
            entries,
            sq_pi: 0,
            rq_pi: 0,
        },
        other => panic!("create qp: {other:?}"),
    }
}

/// RESET → INIT → RTR → RTS towards `dest`/`dest_qpn` (PSNs 100, ACK
/// timeout 10), with migros-test-support's attributes.
pub fn connect(c: &mut Client, qpn: Qpn, dest: IpAddr, dest_qpn: Qpn, mtu: Mtu) {
    let p = migros_test_support::RcParams {
        mtu,
        sq_psn: 100,
        rq_psn: 100,
        timeout: 10,
        ..migros_test_support::RcParams::new(dest_qpn, dest)
    };
    for (attr, mask) in p.transitions() {
        c.ok(&Request::ModifyQp { qpn, attr, mask });
    }
}

impl Qp {
    /// Writes a send WQE and rings the doorbell.
    pub fn post_send(&mut self, c: &mut Client, wr: &SendWr) {
        self.write_send(wr);
        self.sq_doorbell(c);
    }

    /// Writes a send WQE without a doorbell.
    pub fn write_send(&mut self, wr: &SendWr) {
        let mut e = [0u8; SQ_WQE_SIZE];
        ring::encode_send(wr, &mut e).unwrap();
        let slot = (self.sq_pi % self.entries) as usize;
        self.sq.write(slot * SQ_WQE_SIZE, &e);
        self.sq_pi = self.sq_pi.wrapping_add(1);
    }

    pub fn sq_doorbell(&mut self, c: &mut Client) {
        c.send(&Request::SqDoorbell {
            qpn: self.qpn,
            pi: self.sq_pi,
        });
    }

    pub fn post_recv(&mut self, c: &mut Client, wr: &RecvWr) {
        let mut e = [0u8; RQ_WQE_SIZE];
        ring::encode_recv(wr, &mut e).unwrap();
        let slot = (self.rq_pi % self.entries) as usize;
        self.rq.write(slot * RQ_WQE_SIZE, &e);
        self.rq_pi = self.rq_pi.wrapping_add(1);
        c.send(&Request::RqDoorbell {
            qpn: self.qpn,
            pi: self.rq_pi,
        });
    }

    /// The daemon's send queue consumer index.
    pub fn sq_ci(&self) -> u32 {
        self.ctrl.u32_at(ring::QP_CTRL_SQ_CI as usize)
    }
}

impl Cq {
    /// The next completion, if one is there.
    pub fn poll(&mut self) -> Option<WorkCompletion> {
        let slot = (self.ci % self.entries) as usize;
        let at = slot * CQE_SIZE;
        if self.ring.get(at + CQE_PHASE) != ring::phase(self.ci, self.entries) {
            return None;
        }
        let mut e = [0u8; CQE_SIZE];
        self.ring.read(at, &mut e);
        self.ci = self.ci.wrapping_add(1);
        self.ctrl.set_u32(ring::CQ_CTRL_CI as usize, self.ci);
        Some(ring::decode_cqe(&e).expect("valid cqe"))
    }

    /// Polls for up to `within` (every millisecond): the first completion,
    /// or `None` when none came.
    pub fn poll_within(&mut self, within: Duration) -> Option<WorkCompletion> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Some(wc) = self.poll() {
                return Some(wc);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }

    /// Waits (bounded) for `n` completions.
    pub fn wait(&mut self, n: usize) -> Vec<WorkCompletion> {
        let end = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        while out.len() < n {
            match self.poll() {
                Some(wc) => out.push(wc),
                None => {
                    assert!(
                        Instant::now() < end,
                        "timed out waiting for completions: got {out:?}"
                    );
                    // Two CPUs may serve two daemons and this client: yield.
                    std::thread::yield_now();
                }
            }
        }
        out
    }
}

pub fn send_wr(wr_id: u64, mr: &Mr, offset: u64, len: u32, opcode: WrOpcode) -> SendWr {
    let sge = Sge {
        addr: mr.buf.addr() + offset,
        length: len,
        lkey: mr.lkey,
    };
    signaled_send(wr_id, opcode, vec![sge])
}

pub fn recv_wr(wr_id: u64, mr: &Mr, offset: u64, len: u32) -> RecvWr {
    RecvWr {
        wr_id,
        sges: vec![Sge {
            addr: mr.buf.addr() + offset,
            length: len,
            lkey: mr.lkey,
        }],
    }
}

/// The size of each bystander's region (and of its WRITEs).
const BYSTANDER_LEN: usize = 1 << 16;

/// Two QPs of two sessions on the daemon at `addr`, connected to each
/// other, moving data while a test does something else to the daemon.
pub struct Bystanders {
    a: (Client, Mr, Cq, Qp),
    b: (Client, Mr, Cq, Qp),
    round: u8,
}

impl Bystanders {
    pub fn new(d: &Daemon, addr: &str) -> Bystanders {
        let side = || {
            let (mut c, _) = d.session();
            let pd = alloc_pd(&mut c);
            let mr = reg_mr(&mut c, pd, BYSTANDER_LEN);
            let cq = create_cq(&mut c, 64);
            let qp = create_qp(&mut c, pd, &cq, 32);
            (c, mr, cq, qp)
        };
        let (mut a, mut b) = (side(), side());
        connect(
            &mut a.0,
            a.3.qpn,
            addr.parse().unwrap(),
            b.3.qpn,
            Mtu::Mtu1024,
        );
        connect(
            &mut b.0,
            b.3.qpn,
            addr.parse().unwrap(),
            a.3.qpn,
            Mtu::Mtu1024,
        );
        Bystanders { a, b, round: 0 }
    }

    /// An RDMA WRITE of a fresh pattern, checked byte for byte.
    pub fn check(&mut self) {
        self.round = self.round.wrapping_add(1);
        let pattern: Vec<u8> = (0..BYSTANDER_LEN)
            .map(|i| (i as u8).wrapping_mul(31) ^ self.round)
            .collect();
        let (a, b) = (&mut self.a, &mut self.b);
        a.1.buf.write(0, &pattern);
        let wr = send_wr(
            u64::from(self.round),
            &a.1,
            0,
            BYSTANDER_LEN as u32,
            WrOpcode::RdmaWrite {
                remote_addr: b.1.buf.addr(),
                rkey: b.1.rkey,
            },
        );
        a.3.post_send(&mut a.0, &wr);
        let wc = a.2.wait(1);
        assert_eq!(wc[0].status, WcStatus::Success, "bystander write: {wc:?}");
        let mut got = vec![0u8; BYSTANDER_LEN];
        b.1.buf.read(0, &mut got);
        assert!(got == pattern, "bystander data differs");
    }
}
