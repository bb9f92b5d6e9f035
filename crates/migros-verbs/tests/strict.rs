//! The posting and creation rules of the Rust API, as the kernel's rxe
//! applies them, against a stand-in daemon that answers every request
//! and never consumes a ring (no root): QP states that forbid posting,
//! how many WRs of a list were posted when one fails, all-or-nothing
//! batches, a full queue, CQs larger than the device allows, and what
//! the daemon's refusals become (a region that cannot be deregistered).

mod support;

use std::os::unix::net::UnixStream;
use std::path::Path;

use migros_proto::frame;
use migros_proto::msg::{Request, Response};
use migros_test_support::rc::signaled_send;
use migros_verbs::*;
use support::{rc_attr, small_cap, stand_in};

const MAX_CQE: u32 = 64;

/// Answers every request; refuses DeregMr of lkey 3 with EINVAL (as a
/// daemon does while memory windows are bound to the region).
fn serve(mut s: UnixStream) {
    let device = stand_in::device("strict", "127.0.0.1", MAX_CQE);
    while let Ok(req) = frame::read::<Request>(&mut s) {
        let resp = match req {
            Request::DeregMr { .. } => Response::Error {
                errno: 22,
                message: "memory windows are bound to the region".into(),
            },
            // The device moved the QP back to RESET behind the client.
            Request::QueryQp { .. } => Response::QpAttr(QpAttr::default()),
            _ => match stand_in::answer(&req, &device, 1, 5, 0x42) {
                Some(resp) => resp,
                None => continue,
            },
        };
        if frame::write(&mut s, &resp).is_err() {
            return;
        }
    }
}

fn open(dir: &Path) -> Context {
    stand_in::listen(dir, "strict", serve);
    Context::open_in(dir, "strict").unwrap()
}

fn qp(pd: &Pd, cq: &Cq, srq: Option<&Srq>) -> Qp {
    pd.create_qp(&rc_attr(cq, srq, small_cap(4, 4))).unwrap()
}

fn to(qp: &Qp, qp_state: QpState) {
    let attr = QpAttr {
        qp_state,
        ..QpAttr::default()
    };
    qp.modify(&attr, AttrMask::STATE).unwrap();
}

fn send(mr: &Mr, wr_id: u64, sges: usize) -> SendWr {
    signaled_send(wr_id, WrOpcode::Send, vec![mr.sge(0, 8); sges])
}

fn recv(mr: &Mr, wr_id: u64, sges: usize) -> RecvWr {
    RecvWr {
        wr_id,
        sges: vec![mr.sge(0, 8); sges],
    }
}

#[test]
fn posting_follows_the_qp_state() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = open(dir.path());
    let pd = ctx.alloc_pd().unwrap();
    let mr = pd.alloc_mr(64, Access::LOCAL_WRITE).unwrap();
    let cq = ctx.create_cq(16, None).unwrap();
    let qp = qp(&pd, &cq, None);
    assert_eq!(qp.state(), QpState::Reset);
    let einval = |r: Result<()>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(einval(qp.post_send(&[send(&mr, 1, 1)])), "RESET: no sends");
    assert!(
        einval(qp.post_recv(&[recv(&mr, 1, 1)])),
        "RESET: no receives"
    );
    to(&qp, QpState::Init);
    qp.post_recv(&[recv(&mr, 1, 1)])
        .expect("INIT takes receives");
    assert!(einval(qp.post_send(&[send(&mr, 1, 1)])), "INIT: no sends");
    assert!(einval(qp.post_send_all(&[send(&mr, 1, 1)])));
    to(&qp, QpState::Rtr);
    assert!(einval(qp.post_send(&[send(&mr, 1, 1)])), "RTR: no sends");
    to(&qp, QpState::Rts);
    qp.post_send(&[send(&mr, 1, 1)]).expect("RTS sends");
    // ERR accepts both (the device flushes them).
    to(&qp, QpState::Err);
    qp.post_send(&[send(&mr, 2, 1)]).expect("ERR takes sends");
    qp.post_recv(&[recv(&mr, 2, 1)])
        .expect("ERR takes receives");
    // A query tells the client what the device did to its QP.
    assert_eq!(
        qp.query().unwrap().qp_state,
        QpState::Reset,
        "the stand-in says RESET"
    );
    assert_eq!(qp.state(), QpState::Reset);
    assert!(einval(qp.post_send(&[send(&mr, 1, 1)])));
}

#[test]
fn a_failing_wr_says_how_many_before_it_were_posted() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = open(dir.path());
    let pd = ctx.alloc_pd().unwrap();
    let mr = pd.alloc_mr(64, Access::LOCAL_WRITE).unwrap();
    let cq = ctx.create_cq(16, None).unwrap();
    let srq = pd.create_srq(8, 1, 0).unwrap();
    let q = qp(&pd, &cq, None);
    to(&q, QpState::Rts);

    let e = q
        .post_send_counted(&[send(&mr, 1, 1), send(&mr, 2, 2), send(&mr, 3, 1)])
        .unwrap_err();
    assert_eq!((e.posted, e.error.errno()), (1, 22), "{e}");
    // The ring holds 4 (one is used): three more fit, the fourth is refused.
    let four: Vec<_> = (10..14).map(|i| send(&mr, i, 1)).collect();
    let e = q.post_send_counted(&four).unwrap_err();
    assert_eq!((e.posted, e.error.errno()), (3, 12), "ENOMEM: {e}");

    let e = q
        .post_recv_counted(&[recv(&mr, 1, 1), recv(&mr, 2, 1), recv(&mr, 3, 2)])
        .unwrap_err();
    assert_eq!((e.posted, e.error.errno()), (2, 22), "{e}");
    let e = srq
        .post_recv_counted(&[recv(&mr, 1, 2), recv(&mr, 2, 1)])
        .unwrap_err();
    assert_eq!((e.posted, e.error.errno()), (0, 22), "{e}");
}

#[test]
fn a_batch_is_posted_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = open(dir.path());
    let pd = ctx.alloc_pd().unwrap();
    let mr = pd.alloc_mr(64, Access::LOCAL_WRITE).unwrap();
    let cq = ctx.create_cq(16, None).unwrap();
    let q = qp(&pd, &cq, None);
    to(&q, QpState::Rts);
    // A bad WR at the end: nothing goes, so all four slots stay free.
    let bad = [send(&mr, 1, 1), send(&mr, 2, 1), send(&mr, 3, 5)];
    assert_eq!(q.post_send_all(&bad).unwrap_err().errno(), 22);
    let five: Vec<_> = (10..15).map(|i| send(&mr, i, 1)).collect();
    assert!(matches!(q.post_send_all(&five), Err(Error::QueueFull)));
    q.post_send_all(&five[..4])
        .expect("four fit: the refused batches took nothing");
    assert!(matches!(q.post_send_all(&five[..1]), Err(Error::QueueFull)));
}

#[test]
fn cqs_larger_than_the_device_allows_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = open(dir.path());
    for entries in [0, MAX_CQE + 1, u32::MAX] {
        let err = ctx.create_cq(entries, None).unwrap_err();
        assert_eq!(err.errno(), 22, "{entries}: {err}");
    }
    assert_eq!(ctx.create_cq(MAX_CQE, None).unwrap().entries(), MAX_CQE);
}

#[test]
fn a_region_the_daemon_keeps_stays_registered() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = open(dir.path());
    let pd = ctx.alloc_pd().unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` outlives the region (dropped after it, at the end).
    let mr =
        unsafe { pd.reg_mr_raw(buf.as_mut_ptr() as u64, buf.len(), Access::LOCAL_WRITE) }.unwrap();
    let (mr, err) = mr.deregister().unwrap_err();
    assert_eq!(err.errno(), 22, "{err}");
    assert_eq!(mr.lkey, 3, "handed back, still registered");
    drop(mr);
    drop(buf);
}
