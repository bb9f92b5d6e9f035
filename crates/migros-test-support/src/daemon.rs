//! Workspace binaries from a test, and `migrosd` daemons on loopback
//! addresses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use migros_proto::paths;

use crate::require::Check;
use crate::wait::poll_until;

/// How long a daemon may take to open its sockets.
pub const START_LIMIT: Duration = Duration::from_secs(10);

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>` of the running test binary (it lives in `deps/`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test binary>")
        .to_owned()
}

/// `cargo build -q <args>` in the profile of the running test (once per
/// distinct `args` in this process); `Err` says what failed.
pub fn cargo_build(args: &[&str]) -> Check {
    static DONE: Mutex<Vec<(Vec<String>, Check)>> = Mutex::new(Vec::new());
    let key: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = done.iter().find(|(k, _)| *k == key) {
        return r.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-q"])
        .args(args)
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"));
    if profile_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let r = match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`cargo build {}` to succeed ({s})", args.join(" "))),
        Err(e) => Err(format!("cargo to build {} ({e})", args.join(" "))),
    };
    done.push((key, r.clone()));
    r
}

/// The `migrosd` of this test's profile, built if needed.
pub fn daemon_bin() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(&["-p", "migrosd", "--bin", "migrosd"])?;
        let bin = profile_dir().join("migrosd");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{} after building it", bin.display()))
        }
    })
    .clone()
}

/// Runs a script of the workspace (`scripts/<name>`) once per process;
/// `Err` says that it failed.
pub fn script_once(name: &'static str) -> Check {
    static DONE: Mutex<Vec<(&'static str, Check)>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = done.iter().find(|(n, _)| *n == name) {
        return r.clone();
    }
    let script = workspace_root().join("scripts").join(name);
    let r = match Command::new(&script).stdin(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("scripts/{name} to succeed ({s})")),
        Err(e) => Err(format!("scripts/{name} to run ({e})")),
    };
    done.push((name, r.clone()));
    r
}

/// Whether a test of the drop-in libraries runs (see
/// [`crate::require::require`]): `checks` met, then target/ibverbs
/// (`scripts/ibverbs.sh`) and the release `migrosd` built. Returns the
/// daemon's path.
pub fn drop_in_ready(mut checks: Vec<Check>) -> Option<PathBuf> {
    if checks.iter().all(Result::is_ok) {
        checks.push(script_once("ibverbs.sh"));
        checks.push(cargo_build(&[
            "--release",
            "-p",
            "migrosd",
            "--bin",
            "migrosd",
        ]));
    }
    if !crate::require::require(checks) {
        return None;
    }
    Some(workspace_root().join("target/release/migrosd"))
}

/// A running `migrosd`, killed on drop; its output goes to
/// `<dir>/<name>.log`, printed when the test panics.
pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub name: String,
    pub addr: String,
}

impl Daemon {
    /// Starts `bin --name <name> --addr <addr> --socket-dir <dir> <extra…>`
    /// and waits until its device socket accepts connections. Panics (with
    /// the log) if it exits or does not come up within [`START_LIMIT`].
    pub fn start(bin: &Path, dir: &Path, name: &str, addr: &str, extra: &[&str]) -> Daemon {
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("the daemon's log file");
        let child = Command::new(bin)
            .args(["--name", name, "--addr", addr, "--socket-dir"])
            .arg(dir)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("MIGROSD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the daemon's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut d = Daemon {
            child,
            dir: dir.to_path_buf(),
            name: name.into(),
            addr: addr.into(),
        };
        let sock = d.socket();
        let mut exited = None;
        let up = poll_until(START_LIMIT, || {
            if let Ok(Some(s)) = d.child.try_wait() {
                exited = Some(s);
                return true;
            }
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        if let Some(s) = exited {
            panic!("migrosd {name} exited ({s}):\n{}", d.log());
        }
        assert!(up, "migrosd {name} did not start:\n{}", d.log());
        d
    }

    pub fn socket(&self) -> PathBuf {
        paths::device_socket(&self.dir, &self.name)
    }

    pub fn admin_socket(&self) -> PathBuf {
        paths::admin_socket(&self.dir, &self.name)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// Kills the daemon (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (at most `limit`) for the process to exit; whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        crate::wait::wait_child(&mut self.child, limit).is_some()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- migrosd {} log ---\n{}", self.name, self.log());
        }
    }
}
