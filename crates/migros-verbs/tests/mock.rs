//! The client's side of the protocol against a scripted stand-in daemon
//! (no root, no real device): requests and doorbells sent, the migration
//! sequence, channels re-attached with the same descriptor. What the real
//! daemon does with them is covered by `tests/e2e/`.

mod support;

use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migros_proto::frame;
use migros_proto::msg::{DeviceInfo, Event, Request, Response};
use migros_test_support::rc::signaled_send;
use migros_verbs::*;
use support::{rc_attr, small_cap, stand_in};

const QPN: Qpn = 0x42;
const CQ: Cqn = 5;
const CHANNEL: ChannelId = 9;

#[derive(Default)]
struct Seen {
    requests: Vec<Request>,
    channels: Vec<UnixStream>,
}

/// A stand-in daemon answering every request with a fixed response.
#[derive(Clone)]
struct Mock {
    seen: Arc<Mutex<Seen>>,
}

impl Mock {
    fn start(dir: &Path, name: &str, addr: &str) -> Mock {
        let mock = Mock {
            seen: Arc::default(),
        };
        let info = stand_in::device(name, addr, 4096);
        let m = mock.clone();
        stand_in::listen(dir, name, move |stream| m.serve(stream, &info));
        mock
    }

    fn serve(&self, mut s: UnixStream, info: &DeviceInfo) {
        while let Ok(req) = frame::read::<Request>(&mut s) {
            let resp = match &req {
                Request::AttachChannel { .. } => {
                    let mut seen = self.seen.lock().unwrap();
                    seen.requests.push(req);
                    seen.channels.push(s);
                    return;
                }
                Request::CreateChannel => Some(Response::Channel { channel: CHANNEL }),
                Request::Checkpoint => Some(Response::Image {
                    image: b"image".to_vec(),
                    qpns: vec![QPN],
                }),
                Request::ModifySrq { .. } => Some(Response::Error {
                    errno: 95,
                    message: "not supported".into(),
                }),
                _ => stand_in::answer(&req, info, 7, CQ, QPN),
            };
            self.seen.lock().unwrap().requests.push(req);
            if let Some(resp) = resp {
                if frame::write(&mut s, &resp).is_err() {
                    return;
                }
            }
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap().requests.clone()
    }

    /// Waits until a request matching `f` arrived.
    fn wait_for(&self, what: &str, f: impl Fn(&Request) -> bool) {
        let start = Instant::now();
        while !self.requests().iter().any(&f) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no {what} in {:?}",
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends `ev` on the newest attached channel. The client attaches a
    /// channel without waiting for an answer, so the attach may still be
    /// on its way: wait for it.
    fn event(&self, ev: Event) {
        self.wait_for("attached channel", |r| {
            matches!(r, Request::AttachChannel { .. })
        });
        let mut seen = self.seen.lock().unwrap();
        let s = seen.channels.last_mut().expect("an attached channel");
        frame::write(s, &ev).unwrap();
    }
}

fn write_wr(mr: &Mr) -> SendWr {
    let opcode = WrOpcode::RdmaWrite {
        remote_addr: 0x1000,
        rkey: 9,
    };
    signaled_send(1, opcode, vec![mr.sge(0, 8)])
}

struct Objects {
    ch: CompChannel,
    cq: Cq,
    qp: Qp,
    mr: Mr,
    _pd: Pd,
}

fn rts(qp: &Qp) {
    let attr = QpAttr {
        qp_state: QpState::Rts,
        ..QpAttr::default()
    };
    qp.modify(&attr, AttrMask::STATE).unwrap();
}

fn objects(ctx: &Context) -> Objects {
    let ch = ctx.create_comp_channel().unwrap();
    let cq = ctx.create_cq(3, Some(&ch)).unwrap();
    assert_eq!(cq.entries(), 4);
    let pd = ctx.alloc_pd().unwrap();
    let mr = pd.alloc_mr(100, Access::LOCAL_WRITE).unwrap();
    assert_eq!((mr.len(), mr.addr() % 4096), (100, 0));
    let qp = pd.create_qp(&rc_attr(&cq, None, small_cap(3, 2))).unwrap();
    // Posting needs RTS (the stand-in daemon accepts any transition).
    rts(&qp);
    Objects {
        ch,
        cq,
        qp,
        mr,
        _pd: pd,
    }
}

#[test]
fn requests_and_doorbells_reach_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mock::start(dir.path(), "m1", "127.0.0.1");
    assert_eq!(devices_in(dir.path()), ["m1"]);
    let ctx = Context::open_in(dir.path(), "m1").unwrap();
    assert_eq!((ctx.device().name.as_str(), ctx.session()), ("m1", 7));
    let o = objects(&ctx);
    let reqs = m.requests();
    let create = reqs
        .iter()
        .find_map(|r| match r {
            Request::CreateQp {
                cap,
                ctrl,
                sq_ring,
                rq_ring,
                ..
            } => Some((*cap, *ctrl, *sq_ring, *rq_ring)),
            _ => None,
        })
        .unwrap();
    assert_eq!((create.0.max_send_wr, create.0.max_recv_wr), (4, 2));
    assert!(create.1 % 4096 == 0 && create.2 % 4096 == 0 && create.3 % 4096 == 0);
    assert!(reqs.iter().any(|r| matches!(
        r,
        Request::CreateCq {
            entries: 4,
            channel: Some(CHANNEL),
            ..
        }
    )));

    // The daemon never consumes: the 4-entry ring fills, the batch's
    // first four WRs are posted with one doorbell, the fifth is refused.
    let wrs = vec![write_wr(&o.mr); 5];
    assert!(matches!(o.qp.post_send(&wrs), Err(Error::QueueFull)));
    m.wait_for("doorbell", |r| {
        *r == Request::SqDoorbell { qpn: QPN, pi: 4 }
    });
    let too_many = SendWr {
        data: SendData::Sges(vec![o.mr.sge(0, 1); 2]),
        ..write_wr(&o.mr)
    };
    assert_eq!(o.qp.post_send(&[too_many]).unwrap_err().errno(), 22);
    o.qp.post_recv(&[RecvWr {
        wr_id: 1,
        sges: vec![o.mr.sge(0, 8)],
    }])
    .unwrap();
    m.wait_for("receive doorbell", |r| {
        *r == Request::RqDoorbell { qpn: QPN, pi: 1 }
    });

    // Nothing completed: polling finds nothing, without a request.
    let n = m.requests().len();
    let mut out = Vec::new();
    assert_eq!(o.cq.poll(&mut out, 8).unwrap(), 0);
    assert_eq!(m.requests().len(), n);

    o.cq.req_notify(true).unwrap();
    assert!(m.requests().contains(&Request::ReqNotifyCq {
        cq: CQ,
        solicited_only: true
    }));
    let fatal = AsyncEvent {
        kind: AsyncKind::QpFatal,
        element: QPN,
    };
    m.event(Event::Async(fatal));
    m.event(Event::Completion { cq: CQ });
    assert_eq!(
        o.ch.get_event_timeout(Duration::from_secs(5)).unwrap(),
        Some(CQ)
    );
    assert_eq!(
        o.ch.get_async_event_timeout(Duration::from_secs(5))
            .unwrap(),
        Some(fatal)
    );
    assert_eq!(
        o.ch.get_event_timeout(Duration::from_millis(20)).unwrap(),
        None
    );

    let err = ctx.alloc_pd().unwrap().create_srq(4, 1, 0).unwrap();
    let e = err.modify_limit(1).unwrap_err();
    assert_eq!(e.errno(), 95);
    assert!(e.to_string().contains("not supported"), "{e}");

    drop(o);
    m.wait_for("destroy qp", |r| *r == Request::DestroyQp { qpn: QPN });
    m.wait_for("destroy cq", |r| *r == Request::DestroyCq { cq: CQ });
    m.wait_for("dereg", |r| *r == Request::DeregMr { lkey: 3 });
    m.wait_for("destroy channel", |r| {
        *r == Request::DestroyChannel { channel: CHANNEL }
    });
    // The QP goes before the CQ it uses.
    let reqs = m.requests();
    let pos = |want: &Request| reqs.iter().position(|r| r == want).unwrap();
    assert!(pos(&Request::DestroyQp { qpn: QPN }) < pos(&Request::DestroyCq { cq: CQ }));
}

#[test]
fn migration_moves_the_session_and_channels_to_the_new_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = Mock::start(dir.path(), "m1", "127.0.0.1");
    let m2 = Mock::start(dir.path(), "m2", "127.0.0.2");
    let ctx = Context::open_in(dir.path(), "m1").unwrap();
    let o = objects(&ctx);
    let fd = o.ch.fd();
    let before = ctx.device();
    assert!(matches!(
        ctx.migrate_to("m1"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(ctx.migrate_to("nowhere"), Err(Error::NoDevice(_))));
    assert!(!m1.requests().contains(&Request::Checkpoint));

    let report = ctx.migrate_to("m2").unwrap();
    assert_eq!((report.from.as_str(), report.to.as_str()), ("m1", "m2"));
    assert_eq!(
        (report.qpns.as_slice(), report.image_bytes),
        (&[QPN][..], 5)
    );
    assert!(report.downtime < Duration::from_secs(5));
    let to: IpAddr = "127.0.0.2".parse().unwrap();
    let r1 = m1.requests();
    assert!(r1.contains(&Request::Checkpoint));
    m1.wait_for("forward", |r| {
        *r == Request::ForwardTombstones {
            qpns: vec![QPN],
            to,
        }
    });
    let r2 = m2.requests();
    let pos = |want: &Request| r2.iter().position(|r| r == want).unwrap();
    assert!(
        pos(&Request::Restore {
            image: b"image".to_vec()
        }) < pos(&Request::Resume)
    );
    m2.wait_for("channel attach", |r| {
        matches!(
            r,
            Request::AttachChannel {
                channel: CHANNEL,
                session: 7,
                ..
            }
        )
    });
    assert_eq!(ctx.device().name, "m2");
    assert_eq!(ctx.addr(), to);
    // The old reference is still valid and still names the old device.
    assert_eq!(before.name, "m1");

    // Doorbells and requests now go to m2; the channel keeps its fd and
    // hears m2.
    o.qp.post_send(&[write_wr(&o.mr)]).unwrap();
    m2.wait_for("doorbell", |r| {
        *r == Request::SqDoorbell { qpn: QPN, pi: 1 }
    });
    assert!(!m1
        .requests()
        .iter()
        .any(|r| matches!(r, Request::SqDoorbell { .. })));
    assert_eq!(o.ch.fd(), fd);
    m2.event(Event::Completion { cq: CQ });
    assert_eq!(
        o.ch.get_event_timeout(Duration::from_secs(5)).unwrap(),
        Some(CQ)
    );
    ctx.stats().unwrap_err(); // the mock answers Ok: a protocol error
    drop(o);
    m2.wait_for("destroy qp", |r| *r == Request::DestroyQp { qpn: QPN });
    assert!(!m1
        .requests()
        .iter()
        .any(|r| matches!(r, Request::DestroyQp { .. })));
}
