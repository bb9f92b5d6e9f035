//! The plugin with real daemons: a process (examples/verbs_app.rs, `app`)
//! exchanging RDMA traffic with a peer process on a third daemon is
//! dumped by `criu dump` from daemon A and restored by `criu restore`
//! attached to daemon B (`MIGROS_RESTORE_SOCKET_DIR`): the traffic goes on
//! byte-exact and the peer only pauses; a restored process moves again
//! (B to D). A dump that fails (injected in the plugin, or CRIU killed in
//! the middle) or leaves the task running (`--leave-running`) leaves the
//! app running on A; a corrupt image fails the restore with a clear
//! message. (`criu pre-dump` is not tested: it needs soft-dirty memory
//! tracking, which this machine lacks.)
//!
//! Daemons on 127.0.0.181..189, a temporary socket directory per daemon
//! (each device is `rxe0`). Needs root and `criu`; skipped otherwise.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use migros_criu::daemons;
use migros_criu::image;
use migros_proto::admin::{AdminRequest, AdminResponse};
use support::*;

/// Rounds the app must make after each event before the test goes on.
const ROUNDS: u32 = 150;

struct Daemon {
    dir: PathBuf,
    log: PathBuf,
    child: Child,
}

struct World {
    tmp: tempfile::TempDir,
    daemons: Vec<(String, Daemon)>,
    work: PathBuf,
    images: PathBuf,
    plugins: PathBuf,
    app: Option<Child>,
    app_pid: i32,
    peer: Option<Child>,
    /// The lock of [`serial`], if taken: dropped after everything else.
    serial: Option<MutexGuard<'static, ()>>,
}

fn can_run_e2e() -> bool {
    can_run_with(&["-p", "migrosd"])
}

impl World {
    /// [`World::start_with`] under [`serial`], held as long as the world
    /// lives; `None` when the test cannot run.
    fn start_if_can(
        devs: &[(&str, &str)],
        app_on: &str,
        peer_on: &str,
        under_shell: bool,
    ) -> Option<World> {
        let serial = serial();
        if !can_run_e2e() {
            return None;
        }
        let mut w = World::start_with(devs, app_on, peer_on, under_shell);
        w.serial = Some(serial);
        Some(w)
    }

    /// [`World::start_if_can`] with the app on daemon a and the peer on c.
    fn on(devs: &[(&str, &str)]) -> Option<World> {
        World::start_if_can(devs, "a", "c", false)
    }

    /// Daemons `(name, addr)` (each in its own socket dir `<tmp>/<name>`);
    /// the app on `app_on`, the peer on `peer_on`; waits until the app has
    /// made [`ROUNDS`] rounds. With `under_shell`, the app is the child of a
    /// shell (a tree of two tasks for CRIU, `app_pid` is the shell's).
    fn start_with(devs: &[(&str, &str)], app_on: &str, peer_on: &str, under_shell: bool) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        let images = tmp.path().join("images");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&images).unwrap();
        let plugins = plugin_dir(tmp.path());
        let mut w = World {
            daemons: Vec::new(),
            work,
            images,
            plugins,
            app: None,
            app_pid: 0,
            peer: None,
            tmp,
            serial: None,
        };
        for (name, addr) in devs {
            w.add_daemon(name, addr);
        }
        let mut peer = Command::new(example("verbs_app"));
        peer.arg("peer").arg(w.dir(peer_on)).arg(&w.work);
        let log = std::fs::File::create(w.tmp.path().join("peer.log")).unwrap();
        w.peer = Some(
            peer.stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let mut app = if under_shell {
            let mut sh = Command::new("sh");
            sh.args(["-c", "\"$@\"; exit $?", "sh"])
                .arg(example("verbs_app"));
            sh
        } else {
            Command::new(example("verbs_app"))
        };
        app.arg("app").arg(w.dir(app_on)).arg(&w.work);
        let app = spawn_session_leader(&mut app, &w.tmp.path().join("app.log"));
        w.app_pid = app.id() as i32;
        w.app = Some(app);
        w.wait_rounds(ROUNDS);
        w
    }

    fn add_daemon(&mut self, name: &str, addr: &str) {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let log = self.tmp.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(profile_dir().join("migrosd"))
            .args(["--name", "rxe0", "--addr", addr, "--socket-dir"])
            .arg(&dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let sock = dir.join("rxe0.sock");
        wait_for(&format!("daemon {name}"), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        self.daemons
            .push((name.to_owned(), Daemon { dir, log, child }));
    }

    fn dir(&self, name: &str) -> &Path {
        &self.daemons.iter().find(|(n, _)| n == name).unwrap().1.dir
    }

    fn dir_str(&self, name: &str) -> String {
        self.dir(name).to_string_lossy().into_owned()
    }

    fn progress(&self, role: &str) -> u32 {
        std::fs::read_to_string(self.work.join(format!("{role}.progress")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the app has made `n` more rounds than now.
    fn wait_rounds(&self, n: u32) {
        let from = self.progress("app");
        let start = Instant::now();
        while self.progress("app") < from + n {
            if let Ok(e) = std::fs::read_to_string(self.work.join("app.error")) {
                panic!("app failed: {e}\n{}", self.logs());
            }
            if let Ok(e) = std::fs::read_to_string(self.work.join("peer.error")) {
                panic!("peer failed: {e}\n{}", self.logs());
            }
            assert!(
                start.elapsed() < WAIT,
                "the app made no {n} rounds in {WAIT:?} (at {})\n{}",
                self.progress("app"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn dump(&self, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
        self.dump_with(&self.images, &[], env)
    }

    /// `criu dump` of the app (daemon a's socket directory given to the
    /// plugin), which must succeed; its log.
    fn dump_from_a(&self) -> String {
        let a = self.dir_str("a");
        let (status, log) = self.dump(&[("MIGROS_CRIU_SOCKET_DIRS", &a)]);
        assert!(
            status.success(),
            "criu dump failed:\n{log}\n{}",
            self.logs()
        );
        log
    }

    /// The app runs on where it was: [`ROUNDS`] more rounds, then it stops
    /// with its data checked and at least `2 * ROUNDS` rounds made.
    fn assert_runs_on(&mut self) {
        self.wait_rounds(ROUNDS);
        let rounds = self.stop_and_check(false);
        assert!(rounds >= 2 * ROUNDS);
    }

    /// `criu dump` of the app into `images` with `extra` options.
    fn dump_with(
        &self,
        images: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> (std::process::ExitStatus, String) {
        std::fs::create_dir_all(images).unwrap();
        let pid = self.app_pid.to_string();
        let mut args = vec!["dump", "-t", &pid];
        args.extend_from_slice(extra);
        criu(&args, images, &self.plugins, "dump.log", env)
    }

    /// Restores the app onto daemon `to`.
    fn restore(&self, to: &str, log: &str) -> (std::process::ExitStatus, String) {
        self.restore_from(&self.images, to, log)
    }

    /// Restores the app from `images` onto daemon `to`.
    fn restore_from(
        &self,
        images: &Path,
        to: &str,
        log: &str,
    ) -> (std::process::ExitStatus, String) {
        let dir = self.dir_str(to);
        criu(
            &["restore", "-d"],
            images,
            &self.plugins,
            log,
            &[
                ("MIGROS_CRIU_SOCKET_DIRS", &dir),
                ("MIGROS_RESTORE_SOCKET_DIR", &dir),
            ],
        )
    }

    /// After a good dump: the app was killed by CRIU; reap it.
    fn reap_dumped_app(&mut self) {
        let mut app = self.app.take().unwrap();
        let status = wait_child(&mut app, WAIT).expect("the app is killed after the dump");
        assert!(!status.success());
    }

    /// Stops the traffic; both sides end well and agree on the rounds.
    fn stop_and_check(&mut self, restored: bool) -> u32 {
        write_atomic(&self.work.join("stop"), "");
        if restored {
            let ended = reap(self.app_pid, WAIT);
            assert_eq!(ended, Some(Ended::Exited(0)), "{}", self.logs());
        } else {
            let mut app = self.app.take().unwrap();
            let status = wait_child(&mut app, WAIT).expect("app ends");
            assert!(status.success(), "{}", self.logs());
        }
        let mut peer = self.peer.take().unwrap();
        let status = wait_child(&mut peer, WAIT).expect("peer ends");
        assert!(status.success(), "{}", self.logs());
        let done = |role: &str| -> u32 {
            std::fs::read_to_string(self.work.join(format!("{role}.done")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        assert_eq!(done("app"), done("peer"));
        done("app")
    }

    fn status(&self, name: &str) -> migros_proto::admin::DaemonStatus {
        match daemons::ask(
            &migros_proto::paths::admin_socket(self.dir(name), "rxe0"),
            &AdminRequest::Status,
        ) {
            Ok(AdminResponse::Status(s)) => s,
            other => panic!("status of {name}: {other:?}"),
        }
    }

    /// The counters of the peer's QP on daemon `name`.
    fn peer_qp(&self, name: &str) -> migros_proto::admin::QpStats {
        match daemons::ask(
            &migros_proto::paths::admin_socket(self.dir(name), "rxe0"),
            &AdminRequest::Stats,
        ) {
            Ok(AdminResponse::Stats { mut qps, .. }) => {
                assert_eq!(qps.len(), 1, "{qps:?}");
                qps.remove(0)
            }
            other => panic!("stats of {name}: {other:?}"),
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["app.log", "peer.log"] {
            let text = std::fs::read_to_string(self.tmp.path().join(f)).unwrap_or_default();
            out += &format!("--- {f} ---\n{text}\n");
        }
        for (name, d) in &self.daemons {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("--- daemon {name} (last lines) ---\n");
            for l in tail.iter().rev() {
                out += l;
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.app.take() {
            let _ = c.kill();
            let _ = c.wait();
        } else if self.app_pid > 0 && Path::new(&format!("/proc/{}", self.app_pid)).exists() {
            kill_and_reap(self.app_pid);
        }
        if let Some(mut c) = self.peer.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, d) in &mut self.daemons {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

#[test]
fn criu_moves_a_process_with_rdma_traffic_to_another_daemon() {
    let Some(mut w) = World::on(&[
        ("a", "127.0.0.181"),
        ("b", "127.0.0.182"),
        ("c", "127.0.0.183"),
    ]) else {
        return;
    };
    let pid = w.app_pid;
    let log = w.dump_from_a();
    eprintln!("dump:\n{}", hook_lines(&log).join("\n"));
    assert_in_order(
        &log,
        &[
            &format!("migros-criu: PAUSE_DEVICES pid {pid}"),
            &format!("migros-criu: paused 1 session(s) of pid {pid}"),
            &format!("migros-criu: CHECKPOINT_DEVICES pid {pid}"),
            "migros-criu: checkpointed session",
            ": Session of session",
            "migros-criu: exit (stage 0, ret 0)",
        ],
    );
    assert!(log.contains(": Channel("), "the channel socket was claimed");
    w.reap_dumped_app();
    let dumped_at = w.progress("app");
    // The peer waits, paused or idle, with nothing failed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(w.peer.as_mut().unwrap().try_wait().unwrap().is_none());
    assert!(!w.work.join("peer.error").exists());

    let (status, log) = w.restore("b", "restore.log");
    assert!(
        status.success(),
        "criu restore failed:\n{log}\n{}",
        w.logs()
    );
    eprintln!("restore:\n{}", hook_lines(&log).join("\n"));
    assert_in_order(
        &log,
        &[
            "migros-criu: init (stage 2: restore)",
            "migros-criu: RESTORE_UNIX_SK id",
            &format!("migros-criu: RESUME_DEVICES_LATE pid {pid}"),
            &format!("migros-criu: resumed 1 session(s) of pid {pid}"),
            "migros-criu: exit (stage 2, ret 0)",
        ],
    );
    assert!(log.contains("migros-criu: restored session"));
    assert!(log.contains("migros-criu: restored channel"));
    // The app goes on from where it was, now on daemon B.
    w.wait_rounds(ROUNDS);
    let b = w.status("b");
    assert!(
        b.sessions
            .iter()
            .any(|s| s.pid == pid as u32 && s.qps == 1 && s.channels == 1),
        "daemon B: {:?}",
        b.sessions
    );
    assert!(w.status("a").sessions.iter().all(|s| s.pid != pid as u32));
    let peer_qp = w.peer_qp("c");
    eprintln!("peer QP after the move: {peer_qp:?}");
    assert_eq!(peer_qp.state, migros_proto::verbs::QpState::Rts);
    assert!(peer_qp.counters.resumes >= 1, "the peer heard the RESUME");
    assert_eq!(
        peer_qp.dest.map(|d| d.0),
        Some("127.0.0.182".parse().unwrap()),
        "the peer follows the app to B"
    );
    let rounds = w.stop_and_check(true);
    assert!(rounds >= dumped_at + ROUNDS);
}

#[test]
fn a_dump_failing_after_the_checkpoint_leaves_the_app_running() {
    let Some(mut w) = World::on(&[("a", "127.0.0.184"), ("c", "127.0.0.185")]) else {
        return;
    };
    let a = w.dir_str("a");
    let (status, log) = w.dump(&[
        ("MIGROS_CRIU_SOCKET_DIRS", &a),
        ("MIGROS_CRIU_FAIL", "dump_unix_sk"),
    ]);
    assert!(!status.success(), "criu dump succeeded despite the failure");
    assert_in_order(
        &log,
        &[
            "migros-criu: checkpointed session",
            "migros-criu: error: dump_unix_sk: failure injected",
            "migros-criu: exit (stage 0, ret",
            "migros-criu: dump did not complete: rolled back 1 session(s)",
        ],
    );
    w.assert_runs_on();
}

#[test]
fn criu_killed_in_the_middle_of_a_dump_leaves_the_app_running() {
    let Some(mut w) = World::on(&[("a", "127.0.0.186"), ("c", "127.0.0.187")]) else {
        return;
    };
    let a = w.dir_str("a");
    let pid = w.app_pid.to_string();
    let log = w.images.join("dump.log");
    let mut criu = Command::new("criu")
        .args(["dump", "-t", &pid, "-v4", "-o", "dump.log", "-D"])
        .arg(&w.images)
        .arg("-L")
        .arg(&w.plugins)
        .env("MIGROS_CRIU_SOCKET_DIRS", &a)
        .env("MIGROS_CRIU_SLEEP", "dump_unix_sk:20000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while the app is frozen and checkpointed on its daemon.
    wait_for("the plugin's sleep in DUMP_UNIX_SK", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("dump_unix_sk: sleeping"))
    });
    criu.kill().unwrap();
    criu.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!("dump (killed):\n{}", hook_lines(&text).join("\n"));
    // The daemon sees the app run again and rolls back by itself.
    w.assert_runs_on();
}

#[test]
fn a_corrupt_session_image_fails_the_restore_and_a_good_one_restores() {
    let Some(mut w) = World::on(&[
        ("a", "127.0.0.188"),
        ("b", "127.0.0.189"),
        ("c", "127.0.0.183"),
    ]) else {
        return;
    };
    w.dump_from_a();
    w.reap_dumped_app();
    let session = std::fs::read_dir(&w.images)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("migros-session-"))
        .expect("a session image");
    let path = w.images.join(&session);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    let (status, log) = w.restore("b", "restore-bad.log");
    assert!(
        !status.success(),
        "criu restore succeeded with a corrupt image"
    );
    assert!(
        log.contains(&format!("{session}: checksum mismatch (corrupt image)")),
        "{}",
        hook_lines(&log).join("\n")
    );
    eprintln!("restore (corrupt):\n{}", hook_lines(&log).join("\n"));
    wait_gone(w.app_pid);
    assert!(image::decode_session(&session, &good).is_ok());
    // The plugin checks the image before it asks the daemon for anything.
    assert!(w.status("b").sessions.is_empty());

    std::fs::write(&path, &good).unwrap();
    let (status, log) = w.restore("b", "restore.log");
    assert!(
        status.success(),
        "criu restore failed:\n{log}\n{}",
        w.logs()
    );
    w.wait_rounds(ROUNDS);
    w.stop_and_check(true);
}

#[test]
fn a_restored_process_moves_again() {
    let Some(mut w) = World::on(&[
        ("a", "127.0.0.181"),
        ("b", "127.0.0.182"),
        ("d", "127.0.0.184"),
        ("c", "127.0.0.183"),
    ]) else {
        return;
    };
    let pid = w.app_pid;
    let first = w.tmp.path().join("images-1");
    let second = w.tmp.path().join("images-2");
    let a = w.dir_str("a");
    let (status, log) = w.dump_with(&first, &[], &[("MIGROS_CRIU_SOCKET_DIRS", &a)]);
    assert!(status.success(), "first dump failed:\n{log}\n{}", w.logs());
    w.reap_dumped_app();
    let (status, log) = w.restore_from(&first, "b", "restore.log");
    assert!(
        status.success(),
        "first restore failed:\n{log}\n{}",
        w.logs()
    );
    w.wait_rounds(ROUNDS);

    // The restored process is ours (subreaper); CRIU finds its new sockets
    // by the inodes the plugin gave the daemon at restore.
    let b = w.dir_str("b");
    let (status, log) = w.dump_with(&second, &[], &[("MIGROS_CRIU_SOCKET_DIRS", &b)]);
    assert!(status.success(), "second dump failed:\n{log}\n{}", w.logs());
    assert!(log.contains(": Session of session") && log.contains(": Channel("));
    assert_eq!(reap(pid, WAIT), Some(Ended::Signaled(libc::SIGKILL)));
    let (status, log) = w.restore_from(&second, "d", "restore.log");
    assert!(
        status.success(),
        "second restore failed:\n{log}\n{}",
        w.logs()
    );
    w.wait_rounds(ROUNDS);
    assert!(w.status("d").sessions.iter().any(|s| s.pid == pid as u32));
    let peer_qp = w.peer_qp("c");
    assert_eq!(
        peer_qp.dest.map(|d| d.0),
        Some("127.0.0.184".parse().unwrap())
    );
    assert!(peer_qp.counters.resumes >= 2, "{peer_qp:?}");
    let rounds = w.stop_and_check(true);
    assert!(rounds >= 3 * ROUNDS);
}

#[test]
fn a_dump_with_leave_running_rolls_back_and_the_app_runs_on() {
    let Some(mut w) = World::on(&[("a", "127.0.0.185"), ("c", "127.0.0.186")]) else {
        return;
    };
    let a = w.dir_str("a");
    let images = w.images.clone();
    let (status, log) = w.dump_with(
        &images,
        &["--leave-running"],
        &[("MIGROS_CRIU_SOCKET_DIRS", &a)],
    );
    assert!(
        status.success(),
        "criu dump -R failed:\n{log}\n{}",
        w.logs()
    );
    assert!(log.contains("migros-criu: exit (stage 0, ret 0)"));
    // The daemon sees the process run with its connection open: it rolls back.
    w.assert_runs_on();
}

#[test]
fn a_process_tree_moves_with_the_app_inside() {
    let Some(mut w) = World::start_if_can(
        &[
            ("a", "127.0.0.181"),
            ("b", "127.0.0.182"),
            ("c", "127.0.0.183"),
        ],
        "a",
        "c",
        true,
    ) else {
        return;
    };
    let shell = w.app_pid;
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let app: i32 = children.trim().parse().expect("one child: the app");
    let log = w.dump_from_a();
    // Both tasks are paused and checkpointed; only the app has a session.
    assert_in_order(
        &log,
        &[
            &format!("migros-criu: PAUSE_DEVICES pid {shell}"),
            &format!("migros-criu: PAUSE_DEVICES pid {app}"),
            &format!("migros-criu: paused 1 session(s) of pid {app}"),
            &format!("migros-criu: CHECKPOINT_DEVICES pid {shell}"),
            &format!("migros-criu: checkpoint pid {shell}: no migros session"),
            &format!("migros-criu: CHECKPOINT_DEVICES pid {app}"),
            "migros-criu: checkpointed session",
        ],
    );
    w.reap_dumped_app();
    // The app was re-parented to us when CRIU killed the shell: reap it, or
    // its session id keeps the shell's pid taken.
    wait_gone(app);
    let (status, log) = w.restore("b", "restore.log");
    assert!(
        status.success(),
        "criu restore failed:\n{log}\n{}",
        w.logs()
    );
    assert!(log.contains(&format!("migros-criu: resumed 1 session(s) of pid {app}")));
    w.wait_rounds(ROUNDS);
    w.stop_and_check(true);
}
