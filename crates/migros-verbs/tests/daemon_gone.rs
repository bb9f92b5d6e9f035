//! A daemon that goes away: posts fail with an I/O error instead of a
//! SIGPIPE, and the work requests still outstanding come out of their CQs
//! as flush errors. A stand-in daemon answers the setup and then hangs up
//! (no root needed). SIGPIPE is set back to its default (the Rust runtime
//! ignores it) so that a write raising it kills this test binary; this
//! file has one test so nothing else runs under that disposition.

mod support;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use migros_proto::frame;
use migros_proto::msg::Request;
use migros_verbs::*;
use support::{rc_attr, small_cap, stand_in};

/// Answers requests until the first `Stats`, then closes the session.
fn serve(mut s: UnixStream) {
    let device = stand_in::device("gone", "127.0.0.1", 4096);
    while let Ok(req) = frame::read::<Request>(&mut s) {
        if matches!(req, Request::Stats) {
            return;
        }
        let Some(resp) = stand_in::answer(&req, &device, 1, 5, 0x42) else {
            continue;
        };
        if frame::write(&mut s, &resp).is_err() {
            return;
        }
    }
}

#[test]
fn posts_fail_and_outstanding_wrs_flush_when_the_daemon_hangs_up() {
    // SAFETY: no other thread of this binary handles signals; the default
    // disposition only makes a SIGPIPE fatal, which is what is tested.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    stand_in::listen(dir.path(), "gone", serve);
    let ctx = Context::open_in(dir.path(), "gone").unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let mr = pd.alloc_mr(64, Access::LOCAL_WRITE).unwrap();
    let cq = ctx.create_cq(16, None).unwrap();
    let qp = pd.create_qp(&rc_attr(&cq, None, small_cap(8, 8))).unwrap();
    // Posting needs RTS (the stand-in daemon accepts any transition).
    let rts = QpAttr {
        qp_state: QpState::Rts,
        ..QpAttr::default()
    };
    qp.modify(&rts, AttrMask::STATE).unwrap();
    let send = |wr_id, flags| SendWr {
        wr_id,
        opcode: WrOpcode::Send,
        flags,
        data: SendData::Sges(vec![mr.sge(0, 8)]),
        ud: None,
    };
    qp.post_recv(&[10, 11].map(|wr_id| RecvWr {
        wr_id,
        sges: vec![mr.sge(0, 64)],
    }))
    .unwrap();
    qp.post_send(&[send(1, SendFlags::SIGNALED), send(2, SendFlags(0))])
        .unwrap();
    let mut wcs = Vec::new();
    assert_eq!(
        cq.poll(&mut wcs, 8).unwrap(),
        0,
        "nothing flushed while alive"
    );

    // The daemon hangs up.
    assert!(ctx.stats().is_err());
    let start = Instant::now();
    while !ctx.connection_lost() {
        assert!(start.elapsed() < Duration::from_secs(5), "hang-up not seen");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Posting is an error, not a SIGPIPE.
    let err = qp.post_send(&[send(3, SendFlags::SIGNALED)]).unwrap_err();
    assert_eq!(err.errno(), 5, "{err}");
    assert!(qp.post_recv(&[]).is_err());

    // Everything outstanding flushes, in posting order, in small polls.
    assert_eq!(cq.poll(&mut wcs, 3).unwrap(), 3);
    assert_eq!(cq.poll(&mut wcs, 8).unwrap(), 1);
    let got: Vec<_> = wcs.iter().map(|w| (w.wr_id, w.opcode)).collect();
    assert_eq!(
        got,
        [
            (1, WcOpcode::Send),
            (2, WcOpcode::Send),
            (10, WcOpcode::Recv),
            (11, WcOpcode::Recv)
        ]
    );
    assert!(wcs
        .iter()
        .all(|w| w.status == WcStatus::WrFlushErr && w.qp_num == 0x42));
    assert_eq!(cq.poll(&mut wcs, 8).unwrap(), 0);

    // A doorbell written straight after the hang-up is not a SIGPIPE
    // either (the lost flag is not yet known to this fresh context).
    let ctx2 = Context::open_in(dir.path(), "gone").unwrap();
    assert!(ctx2.stats().is_err());
    assert!(ctx2.alloc_pd().is_err());
}
