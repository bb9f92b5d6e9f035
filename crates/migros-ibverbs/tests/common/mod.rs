//! What the tests running the Debian programs share: building the drop-in
//! library and the daemon, two daemons in a temporary socket directory, and
//! running a program against them with a timeout.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the test can run (root, the Debian `programs` installed); builds
/// target/ibverbs and migrosd and returns the daemon's path.
pub fn ready(programs: &[&str]) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    for bin in programs {
        if !Path::new("/usr/bin").join(bin).is_file() {
            eprintln!("skipped: /usr/bin/{bin} missing (scripts/setup.sh installs it)");
            return None;
        }
    }
    let status = Command::new(root().join("scripts/ibverbs.sh"))
        .status()
        .expect("run scripts/ibverbs.sh");
    assert!(status.success(), "scripts/ibverbs.sh failed");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let status = Command::new(cargo)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "migrosd",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .status()
        .expect("build migrosd");
    assert!(status.success(), "migrosd does not build");
    Some(root().join("target/release/migrosd"))
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
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log");
            daemons.push(
                Command::new(bin)
                    .args(["--name", name, "--addr", addr])
                    .args(extra)
                    .arg("--socket-dir")
                    .arg(dir.path())
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .spawn()
                    .expect("spawn migrosd"),
            );
            let sock = dir.path().join(format!("{name}.sock"));
            let start = Instant::now();
            while std::os::unix::net::UnixStream::connect(&sock).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "migrosd {name} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Net { dir, daemons }
    }

    /// A program with the replacement library, bounded by `timeout`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        // Generous: perftest -a takes ~15 s on a loaded 2-core machine.
        c.arg("90")
            .args(args)
            .env("LD_LIBRARY_PATH", root().join("target/ibverbs"))
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
