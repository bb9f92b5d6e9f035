//! The plugin under real `criu dump` / `criu restore`, against a fake
//! daemon (client and admin sockets served by this test): the hooks run in
//! the documented order, the bytes the process had not read yet (in the
//! socket and held back by the daemon) reach it after the restore exactly
//! once (also into a read(2) that was blocked at the freeze), a failed
//! dump rolls back, an unclaimed daemon socket gets a hint, a corrupt image
//! or a missing plugin fails the restore with a clear message, and a daemon
//! without the CRIU requests (an older one) is ignored when it has nothing
//! of the process. Needs root and `criu`; skipped otherwise.

mod support;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use migros_criu::image;
use migros_proto::admin::{AdminRequest, AdminResponse, DaemonStatus, SessionImage};
use migros_proto::frame;
use migros_proto::msg::{DeviceInfo, Request, Response};
use migros_proto::verbs::Mtu;
use support::*;

const SESSION: u64 = 0xabc0_0000_0000_0def;
const OBJECTS: &[u8] = b"the session's objects";
/// Frames the fake daemon sends: 0..SENT go to the socket at once, the
/// rest it "holds back" when checkpointed.
const SENT: u32 = 10;
const TOTAL: u32 = 12;

fn frame_bytes(n: u32) -> Vec<u8> {
    let msg = Response::Error {
        errno: n as i32,
        message: if n == TOTAL - 1 {
            "last".into()
        } else {
            format!("frame {n}")
        },
    };
    let mut out = Vec::new();
    frame::encode(&msg, &mut out).unwrap();
    out
}

fn frames(range: std::ops::Range<u32>) -> Vec<u8> {
    range.flat_map(frame_bytes).collect()
}

fn device() -> DeviceInfo {
    DeviceInfo {
        name: "fake".into(),
        addr: "127.0.0.189".parse().unwrap(),
        gids: vec!["127.0.0.189".parse().unwrap()],
        port_active: true,
        mtu: Mtu::Mtu1024,
        node_guid: 1,
        max_qp: 1,
        max_qp_wr: 1,
        max_sge: 1,
        max_cq: 1,
        max_cqe: 1,
        max_mr: 1,
        max_mr_size: 1,
        max_pd: 1,
        max_qp_rd_atom: 1,
        max_srq: 1,
        max_srq_wr: 1,
        max_inline_data: 1,
    }
}

/// One client connection the fake daemon accepted.
#[derive(Default)]
struct Conn {
    first: Option<Request>,
    acks: Vec<u32>,
    stream: Option<UnixStream>,
}

#[derive(Default)]
struct State {
    pid: u32,
    /// The checkpoint names another socket than the process's (so the
    /// plugin does not claim it).
    wrong_inode: bool,
    conns: Vec<Conn>,
    admin: Vec<AdminRequest>,
    /// Hello's inode of the first connection.
    inode: u64,
}

/// A fake daemon `fake` in `dir`.
struct Fake {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn start(dir: &Path) -> Fake {
        let state = Arc::new(Mutex::new(State::default()));
        let client = UnixListener::bind(dir.join("fake.sock")).unwrap();
        let admin_dir = migros_proto::paths::admin_dir(dir);
        std::fs::create_dir_all(&admin_dir).unwrap();
        let admin = UnixListener::bind(admin_dir.join("fake.sock")).unwrap();
        let st = state.clone();
        std::thread::spawn(move || {
            for s in client.incoming() {
                let st = st.clone();
                std::thread::spawn(move || serve_client(s.unwrap(), st));
            }
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for s in admin.incoming() {
                let st = st.clone();
                std::thread::spawn(move || serve_admin(s.unwrap(), st));
            }
        });
        // A daemon of an older version, without the CRIU requests and
        // without sessions: the plugin must not fail because of it.
        let old = UnixListener::bind(admin_dir.join("old.sock")).unwrap();
        std::thread::spawn(move || {
            for s in old.incoming() {
                std::thread::spawn(move || serve_old_admin(s.unwrap()));
            }
        });
        Fake {
            dir: dir.to_owned(),
            state,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn sock(&self) -> String {
        self.dir.join("fake.sock").to_string_lossy().into_owned()
    }
}

/// Answers a session's first request with Welcome, then sends `then` (the
/// frames the client reads next) as they are.
fn welcome(s: &mut UnixStream, then: &[u8]) {
    frame::write(
        s,
        &Response::Welcome {
            session: SESSION,
            device: device(),
        },
    )
    .unwrap();
    use std::io::Write;
    s.write_all(then).unwrap();
}

fn serve_client(mut s: UnixStream, st: Arc<Mutex<State>>) {
    let first: Request = frame::read(&mut s).unwrap();
    let idx;
    {
        let mut g = st.lock().unwrap();
        idx = g.conns.len();
        match &first {
            Request::Hello { inode, .. } => {
                g.inode = *inode;
                welcome(&mut s, &frames(0..SENT));
            }
            Request::RestoreSession { replay, .. } => welcome(&mut s, replay),
            other => panic!("fake daemon: unexpected first request {other:?}"),
        }
        g.conns.push(Conn {
            first: Some(first),
            acks: Vec::new(),
            stream: Some(s.try_clone().unwrap()),
        });
    }
    while let Ok(req) = frame::read::<Request>(&mut s) {
        match req {
            Request::SqDoorbell { pi, .. } => st.lock().unwrap().conns[idx].acks.push(pi),
            other => panic!("fake daemon: unexpected {other:?}"),
        }
    }
}

fn serve_admin(mut s: UnixStream, st: Arc<Mutex<State>>) {
    while let Ok(req) = frame::read::<AdminRequest>(&mut s) {
        let mut g = st.lock().unwrap();
        g.admin.push(req.clone());
        let ours = |pid: u32| u32::from(pid == g.pid);
        let resp = match req {
            AdminRequest::Pause { pid } => AdminResponse::Paused {
                sessions: ours(pid),
            },
            AdminRequest::Checkpoint { pid } if pid == g.pid => {
                AdminResponse::Checkpointed(vec![SessionImage {
                    session: SESSION,
                    device: "fake".into(),
                    path: match &g.conns[0].first {
                        Some(Request::Hello { path, .. }) => path.clone(),
                        _ => unreachable!("the first connection said Hello"),
                    },
                    inode: g.inode + u64::from(g.wrong_inode),
                    channels: vec![],
                    objects: OBJECTS.to_vec(),
                    outbox: frames(SENT..TOTAL),
                    qpns: vec![0x42],
                }])
            }
            AdminRequest::Checkpoint { .. } => AdminResponse::Checkpointed(vec![]),
            // The fake process has no librdmacm connection.
            AdminRequest::CheckpointCm { .. } => AdminResponse::CmCheckpointed(vec![]),
            AdminRequest::Resume { pid } => {
                let n = ours(pid);
                // A rollback: the held-back frames go out on the old connection.
                if n == 1 && g.conns.len() == 1 {
                    use std::io::Write;
                    let mut old = g.conns[0].stream.take().unwrap();
                    old.write_all(&frames(SENT..TOTAL)).unwrap();
                }
                AdminResponse::Resumed { sessions: n }
            }
            other => AdminResponse::Error {
                errno: libc::EINVAL,
                message: format!("fake daemon does not do {other:?}"),
            },
        };
        drop(g);
        frame::write(&mut s, &resp).unwrap();
    }
}

fn serve_old_admin(mut s: UnixStream) {
    while let Ok(req) = frame::read::<AdminRequest>(&mut s) {
        let resp = match req {
            AdminRequest::Status => AdminResponse::Status(DaemonStatus {
                version: 1,
                device: device(),
                pid: 1,
                uptime_secs: 1,
                sessions: vec![],
                counters: Default::default(),
                tombstones: vec![],
            }),
            _ => AdminResponse::Error {
                errno: libc::ENOSYS,
                message: "not supported yet".into(),
            },
        };
        frame::write(&mut s, &resp).unwrap();
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    fake: Fake,
    images: PathBuf,
    plugins: PathBuf,
    work: PathBuf,
    pid: i32,
    child: std::process::Child,
    /// The lock of [`serial`], if taken: dropped after everything else.
    serial: Option<MutexGuard<'static, ()>>,
}

/// [`setup`] under [`serial`], held as long as the setup lives; `None`
/// when the test cannot run.
fn setup_if_can(read: u32) -> Option<Setup> {
    let serial = serial();
    if !can_run() {
        return None;
    }
    let mut s = setup(read);
    s.serial = Some(serial);
    Some(s)
}

/// A fake daemon and the test program, which has read `read` frames.
fn setup(read: u32) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let sockets = tmp.path().join("sockets");
    let images = tmp.path().join("images");
    let work = tmp.path().join("work");
    for d in [&sockets, &images, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let fake = Fake::start(&sockets);
    let plugins = plugin_dir(tmp.path());
    let mut cmd = Command::new(example("sock_child"));
    cmd.arg(fake.sock()).arg(&work);
    let child = spawn_session_leader(&mut cmd, &work.join("child.log"));
    let pid = child.id() as i32;
    fake.with(|s| s.pid = pid as u32);
    wait_for("the Hello", || fake.with(|s| s.inode != 0));
    write_atomic(&work.join("allow"), &read.to_string());
    wait_for("the first acks", || {
        fake.with(|s| s.conns[0].acks.len() == read as usize)
    });
    Setup {
        _tmp: tmp,
        fake,
        images,
        plugins,
        work,
        pid,
        child,
        serial: None,
    }
}

impl Setup {
    fn env(&self) -> Vec<(&'static str, String)> {
        // Only this test's daemon (others may run in /run/migros).
        vec![(
            "MIGROS_CRIU_SOCKET_DIRS",
            self.fake.dir.to_string_lossy().into_owned(),
        )]
    }

    fn dump(&self, extra_env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
        let pid = self.pid.to_string();
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra_env);
        criu(
            &["dump", "-t", &pid],
            &self.images,
            &self.plugins,
            "dump.log",
            &all,
        )
    }

    /// `criu dump`, which must succeed; its log.
    fn dump_ok(&self) -> String {
        let (status, log) = self.dump(&[]);
        assert!(status.success(), "criu dump failed:\n{log}");
        log
    }

    fn restore(&self, log: &str) -> (std::process::ExitStatus, String) {
        let env = self.env();
        let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        criu(&["restore", "-d"], &self.images, &self.plugins, log, &all)
    }

    fn got(&self) -> Vec<u32> {
        std::fs::read_to_string(self.work.join("got"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    }

    /// Waits for `pid` (the process, restored) to exit 0, having read
    /// every frame in order, each once.
    fn exits_with_every_frame(&self, pid: i32) {
        assert_eq!(
            reap(pid, WAIT),
            Some(Ended::Exited(0)),
            "child log:\n{}",
            self.child_log()
        );
        assert_eq!(self.got(), (0..TOTAL).collect::<Vec<_>>());
    }

    fn child_log(&self) -> String {
        std::fs::read_to_string(self.work.join("child.log")).unwrap_or_default()
    }
}

#[test]
fn dump_and_restore_replay_every_unread_byte_once() {
    let Some(mut s) = setup_if_can(5) else {
        return;
    };
    let log = s.dump_ok();
    eprintln!("dump:\n{}", hook_lines(&log).join("\n"));
    let inode = s.fake.with(|st| st.inode);
    let pid = s.pid;
    assert_in_order(
        &log,
        &[
            "migros-criu: init (stage 0: dump)",
            &format!("migros-criu: PAUSE_DEVICES pid {pid}"),
            &format!("migros-criu: paused 1 session(s) of pid {pid}"),
            &format!("old.sock, which has no session of pid {pid}: pause: not supported yet"),
            &format!("migros-criu: CHECKPOINT_DEVICES pid {pid}"),
            &format!("migros-criu: checkpointed session {SESSION:#x} of pid {pid}"),
            "migros-criu: DUMP_UNIX_SK fd",
            &format!("migros-criu: socket {inode}: Session of session {SESSION:#x}"),
            "migros-criu: exit (stage 0, ret 0)",
        ],
    );
    // CRIU killed the process after the dump.
    let status = wait_child(&mut s.child, WAIT).expect("killed after the dump");
    assert!(!status.success());

    // The images: the session as the daemon gave it, the socket with every
    // frame the process had not read: 5..10 from the socket, 10..12 held back.
    let sname = image::session_file_name(SESSION);
    let session =
        image::decode_session(&sname, &std::fs::read(s.images.join(&sname)).unwrap()).unwrap();
    assert_eq!((session.inode, &session.objects[..]), (inode, OBJECTS));
    let kname = image::socket_file_name(inode);
    let sk = image::decode_socket(&kname, &std::fs::read(s.images.join(&kname)).unwrap()).unwrap();
    assert_eq!(sk.kind, image::SocketKind::Session);
    assert_eq!(sk.replay, frames(5..TOTAL));
    assert_eq!(sk.status_flags & libc::O_NONBLOCK, 0);

    let (status, log) = s.restore("restore.log");
    assert!(status.success(), "criu restore failed:\n{log}");
    eprintln!("restore:\n{}", hook_lines(&log).join("\n"));
    assert_in_order(
        &log,
        &[
            "migros-criu: init (stage 2: restore)",
            "migros-criu: the images hold migros sessions",
            &format!("migros-criu: RESTORE_UNIX_SK id {inode} in pid {pid}"),
            &format!("migros-criu: restored session {SESSION:#x} of pid {pid}"),
            &format!("migros-criu: RESUME_DEVICES_LATE pid {pid}"),
            &format!("migros-criu: resumed 1 session(s) of pid {pid}"),
            &format!("old.sock, which has no session of pid {pid}: resume: not supported yet"),
            "migros-criu: exit (stage 2, ret 0)",
        ],
    );
    // The fake daemon got the restore request on a new connection.
    s.fake.with(|st| {
        assert_eq!(st.conns.len(), 2);
        match &st.conns[1].first {
            Some(Request::RestoreSession {
                session,
                path,
                image,
                replay,
                inode: new_inode,
                ..
            }) => {
                assert_eq!((*session, &image[..]), (SESSION, OBJECTS));
                assert_eq!(path, &s.fake.sock());
                assert_eq!(replay, &frames(5..TOTAL));
                assert_ne!(*new_inode, inode, "a new socket");
            }
            other => panic!("first request {other:?}"),
        }
        assert_eq!(
            st.admin
                .iter()
                .filter(|r| matches!(r, AdminRequest::Resume { .. }))
                .count(),
            1
        );
    });
    // The restored process reads the rest, in order, each frame once.
    write_atomic(&s.work.join("allow"), &TOTAL.to_string());
    s.exits_with_every_frame(pid);
    s.fake
        .with(|st| assert_eq!(st.conns[1].acks, (5..TOTAL).collect::<Vec<_>>()));
}

#[test]
fn a_failed_dump_rolls_back_and_the_process_runs_on() {
    let Some(mut s) = setup_if_can(3) else {
        return;
    };
    let (status, log) = s.dump(&[("MIGROS_CRIU_FAIL", "checkpoint")]);
    assert!(
        !status.success(),
        "criu dump succeeded despite the injected failure"
    );
    let pid = s.pid;
    assert_in_order(
        &log,
        &[
            &format!("migros-criu: CHECKPOINT_DEVICES pid {pid}"),
            "migros-criu: error: checkpoint: failure injected (MIGROS_CRIU_FAIL=checkpoint)",
            "migros-criu: exit (stage 0, ret",
            &format!("migros-criu: dump did not complete: rolled back 1 session(s) of pid {pid}"),
        ],
    );
    s.fake.with(|st| {
        let kinds: Vec<_> = st
            .admin
            .iter()
            .filter(|r| !matches!(r, AdminRequest::Status))
            .cloned()
            .collect();
        let p = pid as u32;
        assert_eq!(
            kinds,
            [
                AdminRequest::Pause { pid: p },
                AdminRequest::Checkpoint { pid: p },
                AdminRequest::CheckpointCm { pid: p },
                AdminRequest::Resume { pid: p }
            ]
        );
    });
    // Still running, on its original connection, and gets everything.
    write_atomic(&s.work.join("allow"), &TOTAL.to_string());
    let status = wait_child(&mut s.child, WAIT).expect("the process ends");
    assert!(status.success(), "child log:\n{}", s.child_log());
    assert_eq!(s.got(), (0..TOTAL).collect::<Vec<_>>());
    s.fake.with(|st| {
        assert_eq!(st.conns.len(), 1);
        assert_eq!(st.conns[0].acks, (0..TOTAL).collect::<Vec<_>>());
    });
}

#[test]
fn a_corrupt_image_fails_the_restore_clearly_and_a_good_one_still_restores() {
    let Some(mut s) = setup_if_can(2) else {
        return;
    };
    s.dump_ok();
    wait_child(&mut s.child, WAIT).expect("killed after the dump");
    let inode = s.fake.with(|st| st.inode);
    let kname = image::socket_file_name(inode);
    let path = s.images.join(&kname);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x5a;
    std::fs::write(&path, &bad).unwrap();

    // Without the plugin, CRIU itself refuses: the inventory names it.
    let empty = s.images.parent().unwrap().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let (status, log) = criu(
        &["restore", "-d"],
        &s.images,
        &empty,
        "restore-none.log",
        &[],
    );
    assert!(
        !status.success(),
        "criu restore succeeded without the plugin"
    );
    assert_in_order(&log, &["Missing required plugin: migros"]);
    s.fake.with(|st| assert_eq!(st.conns.len(), 1));

    let (status, log) = s.restore("restore-bad.log");
    assert!(
        !status.success(),
        "criu restore succeeded with a corrupt image"
    );
    assert_in_order(
        &log,
        &[&format!(
            "migros-criu: error: restore of socket {inode}: {kname}: checksum mismatch (corrupt image)"
        )],
    );
    // Nothing reached the daemon, and the task CRIU had begun is gone.
    s.fake.with(|st| assert_eq!(st.conns.len(), 1));
    wait_gone(s.pid);

    std::fs::write(&path, &good).unwrap();
    let (status, log) = s.restore("restore-good.log");
    assert!(status.success(), "criu restore failed:\n{log}");
    write_atomic(&s.work.join("allow"), &TOTAL.to_string());
    s.exits_with_every_frame(s.pid);
}

#[test]
fn a_daemon_socket_nobody_claims_fails_the_dump_with_a_hint() {
    let Some(mut s) = setup_if_can(1) else {
        return;
    };
    s.fake.with(|st| st.wrong_inode = true);
    let (status, log) = s.dump(&[]);
    assert!(
        !status.success(),
        "criu dump succeeded with an unclaimed socket"
    );
    let inode = s.fake.with(|st| st.inode);
    assert_in_order(
        &log,
        &[
            &format!(
                "migros-criu: warning: socket {inode} is connected to {}, but no migros daemon reported it",
                s.fake.sock()
            ),
            "migros-criu: dump did not complete: rolled back 1 session(s)",
        ],
    );
    write_atomic(&s.work.join("allow"), &TOTAL.to_string());
    let status = wait_child(&mut s.child, WAIT).expect("the process ends");
    assert!(status.success(), "child log:\n{}", s.child_log());
    assert_eq!(s.got(), (0..TOTAL).collect::<Vec<_>>());
}

#[test]
fn a_process_blocked_in_read_gets_the_held_back_frames_after_restore() {
    // Everything sent is read: the process blocks in read(2) for frame
    // SENT, which the fake daemon holds back until the restore.
    let Some(mut s) = setup_if_can(SENT) else {
        return;
    };
    write_atomic(&s.work.join("allow"), &TOTAL.to_string());
    std::thread::sleep(std::time::Duration::from_millis(200));
    s.dump_ok();
    wait_child(&mut s.child, WAIT).expect("killed after the dump");
    let inode = s.fake.with(|st| st.inode);
    let kname = image::socket_file_name(inode);
    let sk = image::decode_socket(&kname, &std::fs::read(s.images.join(&kname)).unwrap()).unwrap();
    assert_eq!(
        sk.replay,
        frames(SENT..TOTAL),
        "nothing queued, all held back"
    );

    let (status, log) = s.restore("restore.log");
    assert!(status.success(), "criu restore failed:\n{log}");
    // The interrupted read(2) restarts on the new connection.
    s.exits_with_every_frame(s.pid);
    s.fake
        .with(|st| assert_eq!(st.conns[1].acks, (SENT..TOTAL).collect::<Vec<_>>()));
}
