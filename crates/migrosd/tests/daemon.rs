//! The daemon as a process: protocol handshake, object creation, bad
//! clients, the admin socket. Needs root (process_vm_* into this test
//! process, port 4791 on loopback addresses); skipped otherwise.

mod common;

use std::io::Write;
use std::time::Duration;

use common::verbs::*;
use common::*;
use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::msg::{Request, Response};
use migros_proto::verbs::*;

fn admin_qp_count(d: &Daemon) -> usize {
    match d.admin(&AdminRequest::Stats) {
        AdminResponse::Stats { qps, .. } => qps.len(),
        other => panic!("admin stats: {other:?}"),
    }
}

#[test]
fn hello_query_and_objects() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "t0", "127.0.0.101", &["--mtu", "4096"]);
    let (mut c, _) = d.session();
    match c.request(&Request::QueryDevice) {
        Response::Device(info) => {
            assert_eq!(info.name, "t0");
            assert_eq!(info.mtu, Mtu::Mtu4096);
            assert_eq!(info.addr.to_string(), "127.0.0.101");
            assert!(info.max_qp_wr >= 1024);
        }
        other => panic!("{other:?}"),
    }
    let pd = alloc_pd(&mut c);
    let mr = reg_mr(&mut c, pd, 1 << 16);
    assert_ne!(mr.lkey, mr.rkey);
    let cq = create_cq(&mut c, 64);
    let qp = create_qp(&mut c, pd, &cq, 16);
    assert!((2..=MAX_QPN).contains(&qp.qpn));
    // A loopback QP connected to itself.
    connect(
        &mut c,
        qp.qpn,
        "127.0.0.101".parse().unwrap(),
        qp.qpn,
        Mtu::Mtu4096,
    );
    match c.request(&Request::QueryQp { qpn: qp.qpn }) {
        Response::QpAttr(a) => assert_eq!(a.qp_state, QpState::Rts),
        other => panic!("{other:?}"),
    }
    // Errors come back as errnos.
    match c.request(&Request::DeallocPd { pd }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EBUSY),
        other => panic!("{other:?}"),
    }
    match c.request(&Request::QueryQp { qpn: 1 }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::ENOENT),
        other => panic!("{other:?}"),
    }
    match c.request(&Request::CreateCq {
        entries: 3,
        ring: cq.ring.addr(),
        ctrl: cq.ctrl.addr(),
        channel: None,
    }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EINVAL),
        other => panic!("{other:?}"),
    }
    // An MR over unmapped memory is refused.
    match c.request(&Request::RegMr {
        pd,
        addr: 4096,
        length: 4096,
        iova: 4096,
        access: Access::LOCAL_WRITE,
    }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EFAULT),
        other => panic!("{other:?}"),
    }
    match c.request(&Request::Stats) {
        Response::Stats { qps, .. } => assert_eq!(qps.len(), 1),
        other => panic!("{other:?}"),
    }
    c.ok(&Request::DestroyQp { qpn: qp.qpn });
    c.ok(&Request::DestroyCq { cq: cq.cq });
    c.ok(&Request::DeregMr { lkey: mr.lkey });
    c.ok(&Request::DeallocPd { pd });
}

#[test]
fn garbage_disconnects_only_that_client() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "t1", "127.0.0.102", &[]);
    let (mut good, _) = d.session();
    let mut bad = d.connect();
    bad.stream.write_all(&5u32.to_le_bytes()).unwrap();
    bad.stream.write_all(&[0xff; 5]).unwrap();
    match bad.recv() {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTO),
        other => panic!("{other:?}"),
    }
    assert!(bad.is_closed());
    // An oversized length is refused too.
    let mut bad2 = d.connect();
    bad2.stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(matches!(bad2.recv(), Response::Error { .. }));
    assert!(bad2.is_closed());
    // The others go on.
    assert!(matches!(
        good.request(&Request::AllocPd),
        Response::Pd { .. }
    ));
    let (mut second, _) = d.session();
    assert!(matches!(
        second.request(&Request::QueryDevice),
        Response::Device(_)
    ));
}

#[test]
fn request_before_hello_is_refused() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "t2", "127.0.0.103", &[]);
    let mut c = d.connect();
    match c.request(&Request::AllocPd) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTO),
        other => panic!("{other:?}"),
    }
    assert!(c.is_closed());
    let mut c = d.connect();
    match c.request(&Request::Hello {
        version: 999,
        path: String::new(),
        inode: 0,
    }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTONOSUPPORT),
        other => panic!("{other:?}"),
    }
    assert!(c.is_closed());
}

#[test]
fn doorbell_for_another_sessions_qp_is_refused() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "t3", "127.0.0.104", &[]);
    let (mut a, _) = d.session();
    let pd = alloc_pd(&mut a);
    let cq = create_cq(&mut a, 16);
    let qp = create_qp(&mut a, pd, &cq, 16);
    let (mut b, _) = d.session();
    // B may not touch A's objects through requests...
    match b.request(&Request::QueryQp { qpn: qp.qpn }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::ENOENT),
        other => panic!("{other:?}"),
    }
    // ...nor through a doorbell: that is a protocol violation.
    b.send(&Request::SqDoorbell { qpn: qp.qpn, pi: 1 });
    match b.recv() {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPERM),
        other => panic!("{other:?}"),
    }
    assert!(b.is_closed());
    // A's QP did not move.
    assert_eq!(qp.sq_ci(), 0);
    match a.request(&Request::QueryQp { qpn: qp.qpn }) {
        Response::QpAttr(attr) => assert_eq!(attr.qp_state, QpState::Reset),
        other => panic!("{other:?}"),
    }
    // A doorbell claiming more entries than the ring holds is refused.
    a.send(&Request::SqDoorbell {
        qpn: qp.qpn,
        pi: 17,
    });
    assert!(matches!(a.recv(), Response::Error { errno, .. } if errno == libc::EINVAL));
}

#[test]
fn a_client_that_goes_away_loses_its_qps() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "t4", "127.0.0.105", &[]);
    let (mut a, _) = d.session();
    let pd = alloc_pd(&mut a);
    let cq = create_cq(&mut a, 16);
    let _q1 = create_qp(&mut a, pd, &cq, 16);
    let _q2 = create_qp(&mut a, pd, &cq, 16);
    let (mut b, _) = d.session();
    let pdb = alloc_pd(&mut b);
    let cqb = create_cq(&mut b, 16);
    let _qb = create_qp(&mut b, pdb, &cqb, 16);
    assert_eq!(admin_qp_count(&d), 3);
    match d.admin(&AdminRequest::Status) {
        AdminResponse::Status(s) => {
            assert_eq!(s.sessions.len(), 2);
            assert!(s.sessions.iter().all(|x| x.pid == std::process::id()));
            let mut qps: Vec<u32> = s.sessions.iter().map(|x| x.qps).collect();
            qps.sort();
            assert_eq!(qps, vec![1, 2]);
        }
        other => panic!("{other:?}"),
    }
    drop(a);
    wait_until("a's qps to go", || admin_qp_count(&d) == 1);
    assert!(matches!(
        b.request(&Request::QueryDevice),
        Response::Device(_)
    ));
}

#[test]
fn admin_shutdown_exits_cleanly_and_removes_sockets() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_daemon(dir.path(), "t5", "127.0.0.106", &[]);
    assert_eq!(d.admin(&AdminRequest::Shutdown), AdminResponse::Ok);
    assert!(d.wait_exit(TIMEOUT));
    assert!(d.child.try_wait().unwrap().unwrap().success());
    assert!(!d.socket().exists() && !d.admin_socket().exists());
}

#[test]
fn sigterm_exits_cleanly() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_daemon(dir.path(), "t6", "127.0.0.107", &[]);
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(d.wait_exit(TIMEOUT));
    assert!(d.child.try_wait().unwrap().unwrap().success());
    assert!(!d.socket().exists());
}

#[test]
fn unbindable_address_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_migrosd"))
        .args(["--name", "t7", "--addr", "192.0.2.1", "--socket-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot bind udp 192.0.2.1:4791"), "{err}");
}

#[test]
fn socket_directories_others_may_write_are_refused() {
    if !can_run() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |what: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_migrosd"))
            .args(["--name", "t9", "--addr", "127.0.0.109", "--socket-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: the daemon started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // World-writable (a /tmp-like directory): anyone could replace the socket.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = run("mode 777");
    assert!(err.contains("has mode 777"), "{err}");
    // Another user's directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let err = run("owned by nobody");
    assert!(err.contains("belongs to uid 65534"), "{err}");
    nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    // An admin directory others can enter.
    let admin = migros_proto::paths::admin_dir(dir.path());
    std::fs::create_dir(&admin).unwrap();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = run("admin dir 755");
    assert!(err.contains("has mode 755"), "{err}");
    std::fs::remove_dir(&admin).unwrap();
}

/// Runs in a child as `nobody` (see `admin_socket_refuses_non_root`).
#[test]
fn admin_probe_child() {
    let Ok(path) = std::env::var("MIGROSD_ADMIN_PROBE") else {
        return;
    };
    let mode = std::env::var("MIGROSD_ADMIN_PROBE_MODE").unwrap();
    let r = std::os::unix::net::UnixStream::connect(&path);
    match mode.as_str() {
        "denied-by-mode" => assert!(r.is_err(), "nobody could connect"),
        "denied-by-cred" => {
            let mut s = r.expect("connect with open permissions");
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let _ = migros_proto::frame::write(&mut s, &AdminRequest::Shutdown);
            match migros_proto::frame::read::<AdminResponse>(&mut s) {
                Ok(AdminResponse::Error { errno, .. }) => assert_eq!(errno, libc::EACCES),
                other => panic!("{other:?}"),
            }
        }
        _ => panic!("unknown mode"),
    }
}

#[test]
fn admin_socket_refuses_non_root() {
    if !can_run() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = start_daemon(dir.path(), "t8", "127.0.0.108", &[]);
    let probe = |mode: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "admin_probe_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MIGROSD_ADMIN_PROBE", d.admin_socket())
            .env("MIGROSD_ADMIN_PROBE_MODE", mode)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{mode}: {stdout}");
        assert!(
            stdout.contains("1 passed"),
            "{mode}: the probe did not run: {stdout}"
        );
    };
    // The socket's mode keeps nobody out...
    probe("denied-by-mode");
    // ...and with the modes opened up, SO_PEERCRED does.
    let admin_dir = migros_proto::paths::admin_dir(dir.path());
    std::fs::set_permissions(&admin_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.admin_socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    probe("denied-by-cred");
    assert!(matches!(
        d.admin(&AdminRequest::Status),
        AdminResponse::Status(_)
    ));
    std::thread::sleep(Duration::from_millis(10));
}

/// Restoring an image needs root: an unprivileged client that edits its
/// own image must not make the daemon recreate it (issue 14, item 4).
/// Restore and Resume on a session, RestoreSession and RestoreChannel as
/// a first request: each EPERM for `nobody`, while a root client's session
/// on the same daemon keeps working.
#[test]
fn restore_needs_root() {
    if !can_run() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = start_daemon(dir.path(), "t9", "127.0.0.110", &[]);
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut root = Client::connect(&d.socket());
    let sid = match root.request(&hello()) {
        Response::Welcome { session, .. } => session,
        other => panic!("{other:?}"),
    };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "restore_probe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MIGROSD_RESTORE_PROBE", d.socket())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 passed"),
        "the probe did not run: {stdout}"
    );
    // Root's session is untouched and still answers.
    assert!(matches!(
        root.request(&Request::AllocPd),
        Response::Pd { .. }
    ));
    assert_ne!(sid, 0);
}

fn hello() -> Request {
    Request::Hello {
        version: migros_proto::PROTOCOL_VERSION,
        path: String::new(),
        inode: 0,
    }
}

/// Runs in a child as `nobody` (see `restore_needs_root`).
#[test]
fn restore_probe_child() {
    let Ok(path) = std::env::var("MIGROSD_RESTORE_PROBE") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let eperm = |r: Response| match r {
        Response::Error { errno, message } => {
            assert_eq!(errno, libc::EPERM, "{message}");
            assert!(message.contains("needs root"), "{message}");
        }
        other => panic!("{other:?}"),
    };
    let mut c = Client::connect(&path);
    assert!(matches!(c.request(&hello()), Response::Welcome { .. }));
    eperm(c.request(&Request::Restore {
        image: b"{}".to_vec(),
    }));
    eperm(c.request(&Request::Resume));
    let mut c = Client::connect(&path);
    eperm(c.request(&Request::RestoreSession {
        version: migros_proto::PROTOCOL_VERSION,
        session: 7,
        path: String::new(),
        inode: 0,
        image: b"{}".to_vec(),
        replay: Vec::new(),
    }));
    let mut c = Client::connect(&path);
    eperm(c.request(&Request::RestoreChannel {
        version: migros_proto::PROTOCOL_VERSION,
        session: 7,
        channel: 1,
        inode: 0,
        replay: Vec::new(),
    }));
}
