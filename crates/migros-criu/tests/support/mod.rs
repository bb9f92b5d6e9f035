//! Test support: building the plugin and the test programs, running
//! `criu dump` / `criu restore` with the plugin, reaping restored tasks.
//! The CRIU tests need root and a `criu` on PATH; without them they skip,
//! saying why, or fail with `MIGROS_TESTS_REQUIRED=1`.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// One CRIU test at a time (restores reuse pids; logs stay readable).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

pub use migros_test_support::daemon::{cargo_build, profile_dir};
use migros_test_support::require::{program, require, root, Check};

/// Root, a working `criu`, and the plugin and examples built, plus
/// `more` (checked only when those are there); skips (or, with
/// `MIGROS_TESTS_REQUIRED=1`, fails) otherwise. See
/// `migros_test_support::require`.
pub fn can_run_with(more: &[&str]) -> bool {
    let mut checks: Vec<Check> = vec![root()];
    if checks.iter().all(Result::is_ok) {
        checks.push(program("criu", "scripts/setup-criu.sh installs it"));
    }
    if checks.iter().all(Result::is_ok) {
        checks.push(cargo_build(&["-p", "migros-criu", "--lib", "--examples"]));
        if !more.is_empty() {
            checks.push(cargo_build(more));
        }
    }
    if !require(checks) {
        return false;
    }
    // Restored tasks are re-parented to us when `criu restore -d` exits,
    // so that we can reap them and see how they ended.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    true
}

/// [`can_run_with`] nothing more.
pub fn can_run() -> bool {
    can_run_with(&[])
}

pub fn example(name: &str) -> PathBuf {
    profile_dir().join("examples").join(name)
}

/// A directory holding only this build of the plugin, for `criu -L`.
pub fn plugin_dir(under: &Path) -> PathBuf {
    let dir = under.join("plugins");
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(
        profile_dir().join("libmigros_criu.so"),
        dir.join("migros_criu.so"),
    )
    .expect("copy the plugin");
    dir
}

/// Spawns `cmd` as the leader of a new session (what `criu dump` wants of
/// a tree's root without --shell-job), stdin from /dev/null, stdout and
/// stderr to `log`.
pub fn spawn_session_leader(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("spawn")
}

/// Runs criu with `args` and the plugin dir, its log in `images/<log>`;
/// returns its exit status and the log. Killed after [`WAIT`].
pub fn criu(
    args: &[&str],
    images: &Path,
    plugins: &Path,
    log: &str,
    env: &[(&str, &str)],
) -> (ExitStatus, String) {
    let mut cmd = Command::new("criu");
    cmd.args(args)
        .arg("-D")
        .arg(images)
        .arg("-L")
        .arg(plugins)
        .args(["-v4", "-o", log])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn criu");
    let status = wait_child(&mut child, WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("criu {args:?} did not finish in {WAIT:?}");
    });
    let log = std::fs::read_to_string(images.join(log)).unwrap_or_default();
    (status, log)
}

pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How a process that is our child (or re-parented to us) ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// Reaps `pid`, waiting up to `limit`; `None` if it still runs.
pub fn reap(pid: i32, limit: Duration) -> Option<Ended> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                Ended::Exited(libc::WEXITSTATUS(status))
            } else {
                Ended::Signaled(libc::WTERMSIG(status))
            });
        }
        assert!(
            r == 0,
            "waitpid({pid}): {}",
            std::io::Error::last_os_error()
        );
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills `pid` (SIGKILL) and reaps it, if it is still there.
pub fn kill_and_reap(pid: i32) {
    // SAFETY: kill with a signal number.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = reap(pid, Duration::from_secs(5));
}

/// Writes `text` to `path` atomically (rename).
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Waits until `f` holds (panics with `what` after [`WAIT`]).
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lines of `log` that mention the plugin's hooks, in order.
pub fn hook_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("migros-criu:")).collect()
}

/// Panics unless `needles` appear in `log` in this order.
pub fn assert_in_order(log: &str, needles: &[&str]) {
    let mut at = 0;
    for n in needles {
        match log[at..].find(n) {
            Some(i) => at += i + n.len(),
            None => panic!(
                "{n:?} missing (or out of order) in the CRIU log; its plugin lines:\n{}",
                hook_lines(log).join("\n")
            ),
        }
    }
}

/// Waits until `pid` is gone, reaping it if it became our child (a task
/// a failed `criu restore -d` left behind).
pub fn wait_gone(pid: i32) {
    wait_for(&format!("pid {pid} to go away"), || {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with WNOHANG.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}
