//! What the tests running the Debian programs share: building the drop-in
//! library and the daemon, two daemons in a temporary socket directory, and
//! running a program against them with a timeout; for the C tests of
//! tests/c, building them with `cc`.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use migros_test_support::daemon::drop_in_ready;
pub use migros_test_support::daemon::workspace_root as root_dir;
pub use migros_test_support::require::Check;
use migros_test_support::require::{file, installed, program, root};

/// Whether the test runs (see `migros_test_support::require`): root, the
/// Debian `programs` installed and `more` met; then target/ibverbs and the
/// release migrosd built. Returns the daemon's path.
pub fn ready(programs: &[&str], more: Vec<Check>) -> Option<PathBuf> {
    let mut checks = vec![root()];
    checks.extend(programs.iter().map(|p| installed(p)));
    checks.extend(more);
    drop_in_ready(checks)
}

/// A C test of tests/c, built with `cc` against the system's
/// `<infiniband/verbs.h>` (as a user's program is) into a temporary
/// directory, removed on drop.
pub struct CProgram {
    _dir: tempfile::TempDir,
    pub exe: String,
}

/// Whether a C test runs: [`ready`] with libibverbs-dev's header and a C
/// compiler. Then builds `sources` (files of tests/c, with its common.c)
/// into the program `name`. Returns the daemon's path and the program.
pub fn c_program(name: &str, sources: &[&str]) -> Option<(PathBuf, CProgram)> {
    c_program_with(name, sources, Vec::new())
}

/// [`c_program`] with `more` prerequisites.
pub fn c_program_with(
    name: &str,
    sources: &[&str],
    more: Vec<Check>,
) -> Option<(PathBuf, CProgram)> {
    let header = file(
        "/usr/include/infiniband/verbs.h",
        "libibverbs-dev: scripts/setup.sh installs it",
    );
    let mut checks = vec![header, program("cc", "a C compiler (gcc)")];
    checks.extend(more);
    let bin = ready(&[], checks)?;
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let out = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(&exe)
        .args(sources.iter().chain(&["common.c"]).map(|s| src.join(s)))
        .arg("-libverbs")
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc {sources:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = exe.into_os_string().into_string().expect("utf-8 path");
    Some((bin, CProgram { _dir: dir, exe }))
}

/// Starts the daemon `daemon` (a command naming migrosd, with any
/// arguments of its own) as device `name` on `addr` in socket directory
/// `dir`, its output in `dir/<name>.log`, and waits until its socket answers.
pub fn spawn_daemon(mut daemon: Command, dir: &Path, name: &str, addr: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let child = daemon
        .args(["--name", name, "--addr", addr])
        .arg("--socket-dir")
        .arg(dir)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn migrosd");
    let sock = dir.join(format!("{name}.sock"));
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "migrosd {name} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Two daemons in a temporary socket directory; killed on drop.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub daemons: Vec<Child>,
}

impl Net {
    /// Starts a daemon per `(name, addr)`, each with `extra` arguments.
    pub fn start(bin: &Path, devices: [(&str, &str); 2], extra: &[&str]) -> Net {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut daemons = Vec::new();
        for (name, addr) in devices {
            let mut daemon = Command::new(bin);
            daemon.args(extra);
            daemons.push(spawn_daemon(daemon, dir.path(), name, addr));
        }
        Net { dir, daemons }
    }

    /// A program with the replacement library, bounded by `timeout`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        // Generous: perftest -a takes ~15 s on a loaded 2-core machine.
        c.arg("90")
            .args(args)
            .env("LD_LIBRARY_PATH", root_dir().join("target/ibverbs"))
            .env("MIGROS_SOCKET_DIR", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run program");
        check(args, &out)
    }

    /// Server on devA, then client on devB; both must succeed.
    pub fn pair(&self, server: &[&str], client: &[&str]) -> (String, String) {
        let srv = self
            .cmd(server)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        std::thread::sleep(Duration::from_millis(500));
        let c = self.run(client);
        let s = check(server, &srv.wait_with_output().expect("server"));
        (s, c)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

pub fn check(args: &[&str], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
