//! One client cannot exhaust the daemon (issue 14, item 5): per-session
//! and per-uid quotas fail clearly, QP capabilities are bounded on create
//! and on modify, a connection that never says hello is dropped, while
//! another pair's transfers go on byte-exact. Needs root; skipped
//! otherwise.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::verbs::*;
use common::*;
use migros_proto::msg::{Request, Response};
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_proto::verbs::*;

const ADDR: &str = "127.0.0.161";

fn error_of(r: Response) -> (i32, String) {
    match r {
        Response::Error { errno, message } => (errno, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn quotas_fail_clearly_and_others_keep_working() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "q0", ADDR, &["--mtu", "1024"]);
    let mut pair = Bystanders::new(&d, ADDR);
    pair.check();

    // One session takes PDs until its quota (1024) refuses: the pair's
    // two sessions hold one each.
    let (mut greedy, _) = d.session();
    let mut n = 0;
    let (errno, message) = loop {
        match greedy.request(&Request::AllocPd) {
            Response::Pd { .. } => n += 1,
            r => break error_of(r),
        }
        assert!(n <= 1024, "no session quota");
    };
    assert_eq!(n, 1024);
    assert_eq!(errno, libc::ENOMEM);
    assert!(
        message.contains("session quota: at most 1024 protection domains"),
        "{message}"
    );
    pair.check();

    // More sessions of the same uid, until the uid's quota (4096).
    let mut others = Vec::new();
    let (errno, message) = 'outer: loop {
        let (mut c, _) = d.session();
        loop {
            match c.request(&Request::AllocPd) {
                Response::Pd { .. } => n += 1,
                Response::Error { errno, message } if message.contains("session quota") => {
                    let _ = errno;
                    break;
                }
                r => break 'outer error_of(r),
            }
        }
        others.push(c);
        assert!(others.len() < 8, "no uid quota");
    };
    assert_eq!(errno, libc::ENOMEM);
    assert!(
        message.contains("uid quota: at most 4096 protection domains"),
        "{message}"
    );
    assert_eq!(n + 2, 4096, "the pair holds two");
    pair.check();
    // Freed quota is usable again.
    drop(others);
    drop(greedy);
    let (mut c, _) = d.session();
    wait_until("the quota to free", || {
        matches!(c.request(&Request::AllocPd), Response::Pd { .. })
    });
    pair.check();
}

#[test]
fn qp_capabilities_are_bounded_on_create_and_modify() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "q1", "127.0.0.162", &[]);
    let (mut c, _) = d.session();
    let pd = alloc_pd(&mut c);
    let cq = create_cq(&mut c, 16);
    let sq = Pages::new(16 * SQ_WQE_SIZE);
    let rq = Pages::new(16 * RQ_WQE_SIZE);
    let ctrl = Pages::new(ring::QP_CTRL_SIZE);
    let create = |c: &mut Client, max_recv_wr: u32| {
        let cap = QpCap {
            max_send_wr: 16,
            max_recv_wr,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        c.request(&create_rc_qp(pd, &cq, cap, [&sq, &rq, &ctrl]))
    };
    let (errno, message) = error_of(create(&mut c, u32::MAX));
    assert_eq!(errno, libc::EINVAL);
    assert!(message.contains("exceed the device's limits"), "{message}");
    let qpn = match create(&mut c, 16) {
        Response::Qp { qpn } => qpn,
        other => panic!("{other:?}"),
    };
    // RESET → INIT asking for an unbounded receive queue.
    let mut attr = QpAttr {
        qp_state: QpState::Init,
        ..QpAttr::default()
    };
    attr.cap.max_recv_wr = u32::MAX;
    attr.cap.max_send_wr = 16;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    let (errno, message) = error_of(c.request(&Request::ModifyQp {
        qpn,
        attr: attr.clone(),
        mask: AttrMask(AttrMask::STATE.0 | AttrMask::CAP.0),
    }));
    assert_eq!(errno, libc::EINVAL);
    assert!(message.contains("exceed"), "{message}");
    // Within what it was created with: fine.
    attr.cap.max_recv_wr = 8;
    let mut p = migros_test_support::RcParams::new(qpn, "127.0.0.162".parse().unwrap());
    p.until = QpState::Init;
    let (mut init, mut mask) = p.transitions().remove(0);
    init.cap = attr.cap;
    mask = AttrMask(mask.0 | AttrMask::CAP.0);
    assert_eq!(
        c.request(&Request::ModifyQp {
            qpn,
            attr: init,
            mask
        }),
        Response::Ok
    );
}

#[test]
fn a_connection_that_never_says_hello_is_dropped() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "q2", "127.0.0.163", &[]);
    let mut silent = d.connect();
    silent
        .stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let start = Instant::now();
    let r: Response = migros_proto::frame::read(&mut silent.stream).expect("an error frame");
    let (errno, message) = error_of(r);
    assert_eq!(errno, libc::ETIMEDOUT);
    assert!(message.contains("no first request"), "{message}");
    let mut b = [0u8; 1];
    assert_eq!(silent.stream.read(&mut b).unwrap(), 0, "then closed");
    assert!(start.elapsed() >= Duration::from_secs(9));
    // The daemon still serves others.
    let (mut c, _) = d.session();
    assert!(matches!(
        c.request(&Request::QueryDevice),
        Response::Device(_)
    ));
}
