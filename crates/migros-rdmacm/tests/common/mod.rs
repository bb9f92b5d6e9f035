//! Two hosts for the programs: two network namespaces joined by a veth
//! pair (198.18.212.1/24 and .2/24), each with its own migros device
//! `rxe0` (a migrosd on its address, sockets in its own directory), as two
//! machines with one RDMA NIC each. Programs run inside a namespace with
//! that host's socket directory and the drop-in libraries; each is bounded
//! by `timeout`, so a hang is a failure, not a stuck test.
#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use migros_test_support::daemon::drop_in_ready;
use migros_test_support::net::ip;
use migros_test_support::require;

pub const ADDR: [&str; 2] = ["198.18.212.1", "198.18.212.2"];

pub fn root() -> PathBuf {
    migros_test_support::daemon::workspace_root()
}

/// Whether the test runs (see `migros_test_support::require`): root, the
/// Debian `programs` installed; then target/ibverbs and the release
/// migrosd built. Returns the daemon's path.
pub fn ready(programs: &[&str]) -> Option<PathBuf> {
    let mut checks = vec![require::root()];
    checks.extend(programs.iter().map(|p| require::installed(p)));
    checks.push(require::program("ip", "iproute2"));
    drop_in_ready(checks)
}

/// Two hosts; torn down on drop.
pub struct Hosts {
    pub ns: [String; 2],
    pub dir: tempfile::TempDir,
    pub daemons: Vec<Option<Child>>,
}

impl Hosts {
    /// Makes the namespaces (names from `tag`), the link and the daemons
    /// (`extra` arguments for both).
    pub fn new(bin: &Path, tag: &str, extra: &[&str]) -> Hosts {
        let id = std::process::id() % 100_000;
        let ns = [format!("mcm-{tag}-{id}-a"), format!("mcm-{tag}-{id}-b")];
        let veth = [
            format!("mc{id}{}a", &tag[..tag.len().min(3)]),
            format!("mc{id}{}b", &tag[..tag.len().min(3)]),
        ];
        for n in &ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            ip(&["netns", "add", n]);
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut daemons = Vec::new();
        for i in 0..2 {
            ip(&["link", "set", &veth[i], "netns", &ns[i]]);
            ip(&[
                "-n",
                &ns[i],
                "addr",
                "add",
                &format!("{}/24", ADDR[i]),
                "dev",
                &veth[i],
            ]);
            ip(&["-n", &ns[i], "link", "set", &veth[i], "up"]);
            ip(&["-n", &ns[i], "link", "set", "lo", "up"]);
            let sockets = dir.path().join(&ns[i]);
            std::fs::create_dir_all(&sockets).expect("socket dir");
            let log =
                std::fs::File::create(dir.path().join(format!("{}.log", ns[i]))).expect("log");
            let child = Command::new("ip")
                .args(["netns", "exec", &ns[i]])
                .arg(bin)
                .args(["--name", "rxe0", "--addr", ADDR[i]])
                .args(extra)
                .arg("--socket-dir")
                .arg(&sockets)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn migrosd");
            daemons.push(Some(child));
            let sock = sockets.join("rxe0.sock");
            let start = Instant::now();
            while std::os::unix::net::UnixStream::connect(&sock).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "migrosd {i} did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Hosts { ns, dir, daemons }
    }

    /// The socket directory of host `i`.
    pub fn sockets(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.ns[i])
    }

    /// A program on host `i` with the drop-in libraries, bounded by
    /// `secs` seconds.
    pub fn cmd(&self, i: usize, secs: u32, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[i], "timeout", &secs.to_string()])
            .args(args)
            .env("LD_LIBRARY_PATH", root().join("target/ibverbs"))
            .env("MIGROS_SOCKET_DIR", self.sockets(i))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: killing it kills the program too, not
        // only `ip`/`timeout` (an orphan would hold the output pipes and
        // the test lock).
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c
    }

    /// Server on host `s`, then (after it is up) the client on the other;
    /// both outputs.
    pub fn pair(&self, s: usize, server: &[&str], client: &[&str]) -> (Output, Output) {
        let (srv, cli, _) = self.pair_timed(s, server, client);
        (srv, cli)
    }

    /// As [`Hosts::pair`], with the time the client ran (start to exit).
    pub fn pair_timed(
        &self,
        s: usize,
        server: &[&str],
        client: &[&str],
    ) -> (Output, Output, Duration) {
        let srv = spawn(self.cmd(s, 120, server));
        std::thread::sleep(Duration::from_millis(700));
        let start = std::time::Instant::now();
        let cli = self.cmd(1 - s, 120, client).output().expect("run client");
        let took = start.elapsed();
        let srv = wait_or_kill(srv, Duration::from_secs(20));
        (srv, cli, took)
    }

    /// As [`Hosts::pair`] for a server that serves for ever: it is
    /// stopped once the client is done.
    pub fn pair_serving(&self, s: usize, server: &[&str], client: &[&str]) -> (Output, Output) {
        let srv = spawn(self.cmd(s, 120, server));
        std::thread::sleep(Duration::from_millis(700));
        let cli = self.cmd(1 - s, 120, client).output().expect("run client");
        let srv = wait_or_kill(srv, Duration::from_millis(300));
        (srv, cli)
    }

    /// Kills host `i`'s daemon.
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// The daemon's log of host `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.ns[i])))
            .unwrap_or_default()
    }
}

/// A program started with [`Hosts::cmd`], its output read as it comes
/// (a server whose output nobody reads would block on a full pipe).
pub struct Running {
    child: Child,
    readers: [std::thread::JoinHandle<Vec<u8>>; 2],
}

/// Starts `c` and reads its output meanwhile.
pub fn spawn(mut c: Command) -> Running {
    let mut child = c.spawn().expect("spawn");
    let read = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = child
        .stdout
        .take()
        .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>);
    Running {
        child,
        readers: [read(out), read(err)],
    }
}

/// Waits for a program (the leader of its own process group, see
/// [`Hosts::cmd`]) at most `d`, then kills its group; its output either
/// way.
pub fn wait_or_kill(r: Running, d: Duration) -> Output {
    let Running { mut child, readers } = r;
    let start = Instant::now();
    let mut status = None;
    while start.elapsed() < d {
        if let Ok(Some(s)) = child.try_wait() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let status = match status {
        Some(s) => s,
        None => {
            let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
            child.wait().expect("wait")
        }
    };
    // Whatever the program left behind in its group goes too.
    let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
    let [o, e] = readers;
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..2 {
            self.kill_daemon(i);
        }
        if std::thread::panicking() {
            for i in 0..2 {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- daemon {i} log (last 40 lines)");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
