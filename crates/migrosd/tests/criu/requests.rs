//! Requests on their own (this process is the client): identifier checks,
//! a checkpoint that drains requests, bad restores and bad admin input.

use super::*;
use migros_proto::cm::{CmDown, CmQpType, CmRequest, CmResponse, PortSpace};

// ---- requests on their own (this process is the client) ----

#[test]
fn check_identifiers_refuses_a_collision() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = start_daemon(tmp.path(), "a", "127.0.0.198", &[]);
    let (mut c, session) = a.session();
    let pd = match c.request(&Request::AllocPd) {
        Response::Pd { pd } => pd,
        other => panic!("{other:?}"),
    };
    let me = std::process::id();
    let ids = match a.admin(&AdminRequest::Identifiers { pid: me }) {
        AdminResponse::Identifiers(ids) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(ids.len(), 1);
    assert_eq!((ids[0].session, ids[0].pds.clone()), (session, vec![pd]));
    match a.admin(&AdminRequest::CheckIdentifiers(ids.clone())) {
        AdminResponse::Error { errno, message } => {
            assert_eq!(errno, libc::EEXIST);
            assert!(
                message.contains("session") && message.contains("exists"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let other = SessionIds {
        session: session ^ 1,
        owner: ids[0].owner ^ 1,
        pds: vec![pd],
        ..SessionIds::default()
    };
    assert_eq!(
        a.admin(&AdminRequest::CheckIdentifiers(vec![other])),
        AdminResponse::Error {
            errno: libc::EEXIST,
            message: format!("pd {pd:#x} exists on this device"),
        }
    );
    let free = SessionIds {
        session: session ^ 1,
        owner: ids[0].owner ^ 1,
        pds: vec![pd ^ 1],
        qpns: vec![0x12],
        ..SessionIds::default()
    };
    assert_eq!(
        a.admin(&AdminRequest::CheckIdentifiers(vec![free])),
        AdminResponse::Ok
    );
    // Nobody: empty answers.
    assert_eq!(
        a.admin(&AdminRequest::Identifiers { pid: 1 }),
        AdminResponse::Identifiers(vec![])
    );
    checkpoint_drains_requests_and_holds_answers(&a, c, session);
}

/// Paused, the answers to this process's requests are held; Checkpoint
/// handles what it sent and returns the held answers as the outbox. This
/// process is running, so the watchdog then rolls back by itself and the
/// answers arrive.
fn checkpoint_drains_requests_and_holds_answers(a: &Daemon, mut c: common::Client, session: u64) {
    let me = std::process::id();
    assert_eq!(
        a.admin(&AdminRequest::Pause { pid: me }),
        AdminResponse::Paused { sessions: 1 }
    );
    c.send(&Request::AllocPd);
    c.send(&Request::QueryDevice);
    // Paused (no watchdog yet): nothing is written to the socket.
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(std::io::Read::read(&mut c.stream, &mut byte).is_err());
    let images = match a.admin(&AdminRequest::Checkpoint { pid: me }) {
        AdminResponse::Checkpointed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].session, session);
    assert!(images[0].qpns.is_empty());
    let mut outbox = &images[0].outbox[..];
    let pd = match frame::read::<Response>(&mut outbox).unwrap() {
        Response::Pd { pd } => pd,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        frame::read::<Response>(&mut outbox).unwrap(),
        Response::Device(_)
    ));
    assert!(outbox.is_empty());
    // Rolled back by the watchdog: the held answers arrive, in order.
    c.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(c.recv(), Response::Pd { pd });
    assert!(matches!(c.recv(), Response::Device(_)));
    assert_eq!(
        a.admin(&AdminRequest::Resume { pid: me }),
        AdminResponse::Resumed { sessions: 0 }
    );
    assert_eq!(c.request(&Request::DeallocPd { pd }), Response::Ok);
}

/// A dump and a restore on the same daemon (the process's connection
/// closes in between), with a request cut in two by the freeze: its start
/// travels in the image, its end comes on the new connection.
fn restore_on_the_same_daemon_with_a_request_cut_short(a: &Daemon) {
    use std::io::Write as _;
    let me = std::process::id();
    let (mut c, session) = a.session();
    let pd = match c.request(&Request::AllocPd) {
        Response::Pd { pd } => pd,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        a.admin(&AdminRequest::Pause { pid: me }),
        AdminResponse::Paused { sessions: 1 }
    );
    let mut query = Vec::new();
    frame::encode(&Request::QueryDevice, &mut query).unwrap();
    c.stream.write_all(&query[..3]).unwrap();
    let images = match a.admin(&AdminRequest::Checkpoint { pid: me }) {
        AdminResponse::Checkpointed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(images.len(), 1);
    let objects: serde_json::Value = serde_json::from_slice(&images[0].objects).unwrap();
    assert_eq!(objects["inbox"], serde_json::json!(query[..3]));
    drop(c);
    common::wait_until("the old session ends", || status(a).sessions.is_empty());
    let mut n = a.connect();
    match n.request(&Request::RestoreSession {
        version: PROTOCOL_VERSION,
        session,
        path: a.socket().to_string_lossy().into_owned(),
        inode: 1,
        image: images[0].objects.clone(),
        replay: Vec::new(),
    }) {
        Response::Welcome { session: s, .. } => assert_eq!(s, session),
        other => panic!("{other:?}"),
    }
    n.stream.write_all(&query[3..]).unwrap();
    assert!(matches!(n.recv(), Response::Device(_)));
    assert_eq!(
        a.admin(&AdminRequest::Resume { pid: me }),
        AdminResponse::Resumed { sessions: 1 }
    );
    // The same pd, in the same session.
    assert_eq!(n.request(&Request::DeallocPd { pd }), Response::Ok);
    drop(n);
    common::wait_until("the restored session ends", || {
        status(a).sessions.is_empty()
    });
}

#[test]
fn bad_restores_create_nothing_and_bad_admin_input_never_panics() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = start_daemon(tmp.path(), "a", "127.0.0.199", &[]);
    restore_on_the_same_daemon_with_a_request_cut_short(&a);
    let restore = |version, session, image: &[u8]| Request::RestoreSession {
        version,
        session,
        path: a.socket().to_string_lossy().into_owned(),
        inode: 1,
        image: image.to_vec(),
        replay: b"never written".to_vec(),
    };
    let mut c = a.connect();
    match c.request(&restore(PROTOCOL_VERSION, 77, b"not an image")) {
        Response::Error { errno, message } => {
            assert_eq!(errno, libc::EINVAL);
            assert!(message.starts_with("bad image"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.is_closed());
    let mut c = a.connect();
    match c.request(&restore(999, 77, b"{}")) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTONOSUPPORT),
        other => panic!("{other:?}"),
    }
    // A session id in use.
    let (_keep, session) = a.session();
    let mut c = a.connect();
    match c.request(&restore(PROTOCOL_VERSION, session, b"{}")) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EEXIST),
        other => panic!("{other:?}"),
    }
    let st = status(&a);
    assert_eq!(st.sessions.len(), 1, "{:?}", st.sessions);
    // A channel of a session that never comes is answered, then dropped
    // after a minute (not waited for here); a wrong version is refused.
    let mut c = a.connect();
    match c.request(&Request::RestoreChannel {
        version: 0,
        session: 5,
        channel: 6,
        inode: 7,
        replay: vec![],
    }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTONOSUPPORT),
        other => panic!("{other:?}"),
    }
    let mut c = a.connect();
    assert_eq!(
        c.request(&Request::RestoreChannel {
            version: PROTOCOL_VERSION,
            session: 5,
            channel: 6,
            inode: 7,
            replay: vec![],
        }),
        Response::Ok
    );
    admin_requests_from_bad_input_never_panic(&a);
}

/// Admin requests with pids, QPNs and frames that make no sense get an
/// answer (logged), never a crash.
fn admin_requests_from_bad_input_never_panic(a: &Daemon) {
    let me = std::process::id();
    for req in [
        AdminRequest::Pause { pid: 0 },
        AdminRequest::Pause { pid: u32::MAX },
        AdminRequest::Checkpoint { pid: 0 },
        AdminRequest::Checkpoint { pid: u32::MAX },
        AdminRequest::Resume { pid: 0 },
        AdminRequest::Resume { pid: 1 },
        AdminRequest::Identifiers { pid: u32::MAX },
        AdminRequest::CheckIdentifiers(vec![SessionIds::default(); 3]),
        AdminRequest::ForwardTombstones {
            qpns: vec![0, 1, u32::MAX],
            to: "127.0.0.1".parse().unwrap(),
        },
        AdminRequest::ReleaseTombstones {
            qpns: vec![0, u32::MAX],
        },
        // This process: no QP, an empty checkpoint, rolled back.
        AdminRequest::Pause { pid: me },
        AdminRequest::Pause { pid: me },
        AdminRequest::Checkpoint { pid: me },
        AdminRequest::Checkpoint { pid: me },
        AdminRequest::Resume { pid: me },
    ] {
        let resp = a.admin(&req);
        eprintln!("{req:?} -> {resp:?}");
    }
    // Garbage frames: an error, then the connection closes.
    for bytes in [
        &[3u8, 0, 0, 0, 0xff, 0xff, 0xff][..],
        &[1, 0, 0, 0, 200],
        &[6, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ] {
        let mut s = UnixStream::connect(a.admin_socket()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(bytes).unwrap();
        let r: AdminResponse = frame::read(&mut s).expect("an answer");
        eprintln!("{bytes:?} -> {r:?}");
    }
    // Still serving, the session still there.
    let st = status(a);
    assert_eq!(st.sessions.len(), 1);
}

/// A librdmacm connection on `d`: (stream, owner).
fn cm_client(d: &Daemon) -> (UnixStream, u64) {
    let mut s = UnixStream::connect(d.socket()).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    frame::write(
        &mut s,
        &Request::CmHello {
            version: PROTOCOL_VERSION,
            inode: 0,
        },
    )
    .unwrap();
    match frame::read::<Response>(&mut s).expect("welcome") {
        Response::Welcome { session, .. } => (s, session),
        other => panic!("CmHello answered {other:?}"),
    }
}

fn cm_request(s: &mut UnixStream, req: &CmRequest) -> CmResponse {
    frame::write(s, req).unwrap();
    loop {
        match frame::read::<CmDown>(s).expect("cm reply") {
            CmDown::Reply(r) => return r,
            CmDown::Event(_) => {}
        }
    }
}

/// Binds `port` (any address) and listens on it (RC).
fn cm_listen(s: &mut UnixStream, port: u16) {
    let bind = match cm_request(
        s,
        &CmRequest::Bind {
            ps: PortSpace::Tcp,
            addr: None,
            port,
            reuse: false,
        },
    ) {
        CmResponse::Bound { bind, .. } => bind,
        other => panic!("bind answered {other:?}"),
    };
    match cm_request(
        s,
        &CmRequest::Listen {
            bind,
            qp_type: CmQpType::Rc,
        },
    ) {
        CmResponse::Listening { .. } => {}
        other => panic!("listen answered {other:?}"),
    }
}

/// The pre-freeze check covers the connection manager: a process's
/// librdmacm state (here a listener on port 7471) is taken from the source
/// without changing anything, and a destination whose connection manager
/// cannot take it (port 7471 listened on there) says so; one that can
/// answers Ok.
#[test]
fn check_cm_identifiers_refuses_a_port_taken_on_the_destination() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = start_daemon(tmp.path(), "a", "127.0.0.131", &[]);
    let dst = start_daemon(tmp.path(), "b", "127.0.0.132", &[]);
    let (mut a, owner) = cm_client(&src);
    cm_listen(&mut a, 7471);
    let me = std::process::id();
    let ids = match src.admin(&AdminRequest::CmIdentifiers { pid: me }) {
        AdminResponse::CmIdentifiers(ids) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].owner, owner);
    // Free on the destination.
    assert_eq!(
        dst.admin(&AdminRequest::CheckCmIdentifiers(ids.clone())),
        AdminResponse::Ok
    );
    // Not on the source itself (the owner and its port are there).
    assert!(matches!(
        src.admin(&AdminRequest::CheckCmIdentifiers(ids.clone())),
        AdminResponse::Error { .. }
    ));
    // Somebody listens on 7471 at the destination: refused, with why.
    let (mut b, _) = cm_client(&dst);
    cm_listen(&mut b, 7471);
    match dst.admin(&AdminRequest::CheckCmIdentifiers(ids.clone())) {
        AdminResponse::Error { errno, message } => {
            assert_eq!(errno, libc::EADDRINUSE);
            assert!(
                message.contains("cannot take owner") && message.contains("address in use"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The source's process goes on: its connection manager answers as
    // before (another port binds; nothing was held).
    match cm_request(
        &mut a,
        &CmRequest::Bind {
            ps: PortSpace::Tcp,
            addr: None,
            port: 7472,
            reuse: false,
        },
    ) {
        CmResponse::Bound { port, .. } => assert_eq!(port, 7472),
        other => panic!("{other:?}"),
    }
    // A damaged state is refused, not a panic.
    let bad = vec![migros_proto::admin::CmIds {
        owner: 5,
        snapshot: b"{\"version\": 1}".to_vec(),
    }];
    assert!(matches!(
        dst.admin(&AdminRequest::CheckCmIdentifiers(bad)),
        AdminResponse::Error { errno, .. } if errno == libc::EINVAL
    ));
}
