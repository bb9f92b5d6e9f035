//! The unmodified Debian 12 `ibv_ud_pingpong`, `ibv_srq_pingpong` and
//! `ibv_uc_pingpong` (ibverbs-utils) on two daemons on loopback addresses,
//! through target/ibverbs (built by scripts/ibverbs.sh). Needs root (the
//! daemons reach the programs' memory) and the Debian package
//! (scripts/setup.sh installs it). Its own addresses and ports, so it runs
//! beside tests/programs.rs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const A: (&str, &str) = ("devA", "127.0.0.171");
const B: (&str, &str) = ("devB", "127.0.0.172");
/// The devices' active MTU: UD messages go up to this many bytes.
const MTU: &str = "2048";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the test can run; builds target/ibverbs and migrosd.
fn ready() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    for bin in ["ibv_ud_pingpong", "ibv_srq_pingpong", "ibv_uc_pingpong"] {
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
struct Net {
    dir: tempfile::TempDir,
    daemons: Vec<Child>,
}

impl Net {
    fn start(bin: &Path) -> Net {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut daemons = Vec::new();
        for (name, addr) in [A, B] {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log");
            daemons.push(
                Command::new(bin)
                    .args(["--name", name, "--addr", addr, "--mtu", MTU, "--socket-dir"])
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
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.arg("30")
            .args(args)
            .env("LD_LIBRARY_PATH", root().join("target/ibverbs"))
            .env("MIGROS_SOCKET_DIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Server on devA, then client on devB; both must succeed.
    fn pair(&self, server: &[&str], client: &[&str]) -> (String, String) {
        let srv = self.cmd(server).spawn().expect("spawn server");
        std::thread::sleep(Duration::from_millis(500));
        let c = self.cmd(client).output().expect("run client");
        let s = srv.wait_with_output().expect("server");
        (check(server, &s), check(client, &c))
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

fn check(args: &[&str], out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn ud_srq_uc_pingpong_run_unmodified() {
    let Some(bin) = ready() else { return };
    let net = Net::start(&bin);
    // (program, size, extra flag). UD messages are at most the path MTU
    // (ibv_ud_pingpong adds 40 bytes of GRH room to its receive buffers);
    // ibv_srq_pingpong uses its default 16 QPs on one SRQ.
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("ibv_ud_pingpong", "512", None),
        ("ibv_ud_pingpong", "1024", None),
        ("ibv_ud_pingpong", "1024", Some("-e")),
        // Larger than the default path MTU: a UD QP may fill the port's MTU.
        ("ibv_ud_pingpong", "2008", None),
        ("ibv_srq_pingpong", "1024", None),
        ("ibv_srq_pingpong", "4096", None),
        ("ibv_srq_pingpong", "4096", Some("-e")),
        ("ibv_uc_pingpong", "1024", None),
        ("ibv_uc_pingpong", "65536", None),
        ("ibv_uc_pingpong", "4096", Some("-e")),
    ];
    for (i, &(prog, size, extra)) in cases.iter().enumerate() {
        let port = (18800 + i).to_string();
        let args = |dev| {
            let mut v = vec![
                prog,
                "-d",
                dev,
                "-g",
                "0",
                "-p",
                port.as_str(),
                "-s",
                size,
                "-n",
                "100",
            ];
            v.extend(extra);
            v
        };
        let mut c = args("devB");
        c.push("127.0.0.1");
        let (so, co) = net.pair(&args("devA"), &c);
        assert!(
            so.contains("100 iters in") && co.contains("100 iters in"),
            "{prog} -s {size} {extra:?}:\n{so}\n{co}"
        );
        eprintln!(
            "{prog} -s {size} {extra:?}: {}",
            co.lines().last().unwrap_or_default()
        );
    }
}
