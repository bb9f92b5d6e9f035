//! Acknowledged but not written (issue 14, item 7): a write into client
//! memory that fails ends in a NAK and QP errors, a CQ ring that cannot be
//! written puts the CQ in error (CqError event), and a session paused for
//! a checkpoint that never comes resumes. Needs root; skipped otherwise.

mod common;

use std::time::{Duration, Instant};

use common::verbs::*;
use common::*;
use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::msg::{AsyncEvent, AsyncKind, Event, Request, Response, PROTOCOL_VERSION};
use migros_proto::ring::CQE_SIZE;
use migros_proto::verbs::*;

const LEN: usize = 1 << 16;

/// Anonymous memory this test maps and unmaps itself.
struct Mapping {
    addr: u64,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Mapping {
        let p = anonymous_mapping(len);
        Mapping {
            addr: p as u64,
            len,
        }
    }

    /// Takes the memory away from under the daemon.
    fn unmap(&self) {
        // SAFETY: our own mapping, never touched through Rust references.
        assert_eq!(
            unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) },
            0
        );
    }
}

struct Side {
    c: Client,
    mr: Mr,
    cq: Cq,
    qp: Qp,
    pd: Pdn,
}

fn side(d: &Daemon) -> Side {
    let (mut c, _) = d.session();
    let pd = alloc_pd(&mut c);
    let mr = reg_mr(&mut c, pd, LEN);
    let cq = create_cq(&mut c, 64);
    let qp = create_qp(&mut c, pd, &cq, 32);
    Side { c, mr, cq, qp, pd }
}

fn pair(d: &Daemon, addr: &str) -> (Side, Side) {
    let (mut a, mut b) = (side(d), side(d));
    connect(
        &mut a.c,
        a.qp.qpn,
        addr.parse().unwrap(),
        b.qp.qpn,
        Mtu::Mtu1024,
    );
    connect(
        &mut b.c,
        b.qp.qpn,
        addr.parse().unwrap(),
        a.qp.qpn,
        Mtu::Mtu1024,
    );
    (a, b)
}

/// An RDMA WRITE of a pattern from `a` into `b`, checked byte for byte.
fn write_checked(a: &mut Side, b: &mut Side, round: u8) {
    let pattern: Vec<u8> = (0..LEN)
        .map(|i| (i as u8).wrapping_mul(7) ^ round)
        .collect();
    a.mr.buf.write(0, &pattern);
    let wr = send_wr(
        u64::from(round),
        &a.mr,
        0,
        LEN as u32,
        WrOpcode::RdmaWrite {
            remote_addr: b.mr.buf.addr(),
            rkey: b.mr.rkey,
        },
    );
    a.qp.post_send(&mut a.c, &wr);
    let wc = a.cq.wait(1);
    assert_eq!(wc[0].status, WcStatus::Success, "{wc:?}");
    let mut got = vec![0u8; LEN];
    b.mr.buf.read(0, &mut got);
    assert!(got == pattern, "data differs");
}

fn qp_state(c: &mut Client, qpn: Qpn) -> QpState {
    match c.request(&Request::QueryQp { qpn }) {
        Response::QpAttr(a) => a.qp_state,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_write_that_cannot_land_is_naked_not_acknowledged() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = "127.0.0.151";
    let d = start_daemon(dir.path(), "w0", addr, &["--mtu", "1024"]);
    let (mut x, mut y) = pair(&d, addr);
    let (mut a, mut b) = pair(&d, addr);
    write_checked(&mut x, &mut y, 1);

    // b registers memory, then unmaps it: a's WRITE finds the key valid
    // but nothing to write into.
    let target = Mapping::new(LEN);
    let rkey = match b.c.request(&Request::RegMr {
        pd: b.pd,
        addr: target.addr,
        length: LEN as u64,
        iova: target.addr,
        access: Access::LOCAL_WRITE | Access::REMOTE_WRITE,
    }) {
        Response::Mr { rkey, .. } => rkey,
        other => panic!("{other:?}"),
    };
    target.unmap();
    let wr = send_wr(
        9,
        &a.mr,
        0,
        4096,
        WrOpcode::RdmaWrite {
            remote_addr: target.addr,
            rkey,
        },
    );
    a.qp.post_send(&mut a.c, &wr);
    let wc =
        a.cq.poll_within(Duration::from_secs(10))
            .expect("a completion for the write");
    assert_eq!(wc.status, WcStatus::RemOpErr, "{wc:?}");
    assert_eq!(qp_state(&mut b.c, b.qp.qpn), QpState::Err);
    // The other pair goes on, byte-exact.
    write_checked(&mut x, &mut y, 2);
}

#[test]
fn a_cq_ring_that_cannot_be_written_puts_the_cq_in_error() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = "127.0.0.152";
    let d = start_daemon(dir.path(), "w1", addr, &["--mtu", "1024"]);
    let (mut x, mut y) = pair(&d, addr);
    write_checked(&mut x, &mut y, 1);

    let mut a = side(&d);
    // b: a CQ on a completion channel, with a ring this test unmaps.
    let (mut bc, session) = d.session();
    let channel = match bc.request(&Request::CreateChannel) {
        Response::Channel { channel } => channel,
        other => panic!("{other:?}"),
    };
    let mut events = d.connect();
    events.send(&Request::AttachChannel {
        version: PROTOCOL_VERSION,
        session,
        channel,
        inode: 0,
    });
    // Asynchronous events (CQ_ERR among them) go to that channel.
    match bc.request(&Request::SubscribeAsync { channel }) {
        Response::Ok => {}
        other => panic!("{other:?}"),
    }
    let ring = Mapping::new(64 * CQE_SIZE);
    let ctrl = Pages::new(migros_proto::ring::CQ_CTRL_SIZE);
    let cq = match bc.request(&Request::CreateCq {
        entries: 64,
        ring: ring.addr,
        ctrl: ctrl.addr(),
        channel: Some(channel),
    }) {
        Response::Cq { cq } => cq,
        other => panic!("{other:?}"),
    };
    let bpd = alloc_pd(&mut bc);
    let bmr = reg_mr(&mut bc, bpd, LEN);
    let fake = Cq {
        cq,
        ring: Pages::new(64 * CQE_SIZE),
        ctrl: Pages::new(migros_proto::ring::CQ_CTRL_SIZE),
        entries: 64,
        ci: 0,
    };
    let mut bqp = create_qp(&mut bc, bpd, &fake, 32);
    connect(
        &mut a.c,
        a.qp.qpn,
        addr.parse().unwrap(),
        bqp.qpn,
        Mtu::Mtu1024,
    );
    connect(
        &mut bc,
        bqp.qpn,
        addr.parse().unwrap(),
        a.qp.qpn,
        Mtu::Mtu1024,
    );
    bqp.post_recv(&mut bc, &recv_wr(1, &bmr, 0, 4096));
    ring.unmap();
    a.qp.post_send(&mut a.c, &send_wr(5, &a.mr, 0, 64, WrOpcode::Send));
    // The receive completion cannot be written: CQ error, to the channel.
    match events.recv_event() {
        Event::Async(AsyncEvent {
            kind: AsyncKind::CqErr,
            element,
        }) => assert_eq!(element, cq),
        other => panic!("expected CQ_ERR, got {other:?}"),
    }
    assert_eq!(qp_state(&mut bc, bqp.qpn), QpState::Err);
    // The sender's SEND was acknowledged before (the data landed); its
    // next one finds b's QP in error and fails.
    let first =
        a.cq.poll_within(Duration::from_secs(10))
            .expect("first send completes");
    assert_eq!(first.status, WcStatus::Success, "{first:?}");
    a.qp.post_send(&mut a.c, &send_wr(6, &a.mr, 0, 64, WrOpcode::Send));
    let second =
        a.cq.poll_within(Duration::from_secs(30))
            .expect("second send completes");
    assert_ne!(second.status, WcStatus::Success, "{second:?}");
    write_checked(&mut x, &mut y, 2);
}

#[test]
fn a_pause_whose_checkpoint_never_comes_expires() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addr = "127.0.0.153";
    let d = start_daemon(
        dir.path(),
        "w2",
        addr,
        &["--mtu", "1024", "--checkpoint-hold-ms", "500"],
    );
    let (mut a, mut b) = pair(&d, addr);
    write_checked(&mut a, &mut b, 1);
    // CRIU's PAUSE_DEVICES for this (never frozen) process, then CRIU dies.
    match d.admin(&AdminRequest::Pause {
        pid: std::process::id(),
    }) {
        AdminResponse::Paused { sessions } => assert_eq!(sessions, 2),
        other => panic!("{other:?}"),
    }
    let paused = Instant::now();
    // The write waits while paused, then completes byte-exact.
    write_checked(&mut a, &mut b, 2);
    let waited = paused.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "the pause held only {waited:?}"
    );
    match d.admin(&AdminRequest::Status) {
        AdminResponse::Status(s) => assert!(s.sessions.len() >= 2),
        other => panic!("{other:?}"),
    }
}

trait Events {
    fn recv_event(&mut self) -> Event;
}

impl Events for Client {
    fn recv_event(&mut self) -> Event {
        migros_proto::frame::read(&mut self.stream).expect("an event")
    }
}
