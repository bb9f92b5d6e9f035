#![allow(dead_code)] // each test binary uses a part of it
//! What the multi-host tests share: running the CLI, the prerequisites
//! (skipped with the reason, or failed under `MIGROS_TESTS_REQUIRED=1`),
//! and a lab of hosts and ssh nodes removed when dropped.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MIGROS: &str = env!("CARGO_BIN_EXE_migros");
/// This machine's ssh configuration for the hosts (`migros host add`).
pub const SSH_CONFIG: &str = "/var/lib/migros-hosts/ssh_config";
/// Upper bound of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(400);

/// Whether the calling test can run: every prerequisite of hosts (with
/// RDMA: also the daemon, the drop-in library and the plugin) is here.
/// Otherwise it skips saying why, or fails under `MIGROS_TESTS_REQUIRED=1`
/// (`migros_test_support::require`, which also records the run or skip).
pub fn ready(with_rdma: bool) -> bool {
    migros_test_support::require([missing(with_rdma).map_or(Ok(()), Err)])
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why hosts cannot be made here, if they cannot.
pub fn missing(with_rdma: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for p in [
        "ip",
        "nsenter",
        "unshare",
        "ssh",
        "ssh-keygen",
        "dockerd",
        "docker",
    ] {
        if !have(p) {
            return Some(format!("{p} not on PATH (scripts/setup.sh)"));
        }
    }
    if !Path::new("/usr/sbin/sshd").is_file() {
        return Some("no /usr/sbin/sshd (scripts/setup-hosts.sh installs openssh-server)".into());
    }
    if !with_rdma {
        return None;
    }
    if std::env::var_os("MIGROSD").is_none()
        && !Path::new(MIGROS).with_file_name("migrosd").is_file()
    {
        return Some("migrosd not built (cargo build -p migrosd, or $MIGROSD)".into());
    }
    for p in ["criu", "ib_send_bw"] {
        if !have(p) {
            return Some(format!("{p} not on PATH (scripts/setup.sh)"));
        }
    }
    if !Path::new("/usr/lib/criu/migros_criu.so").is_file() {
        return Some("the CRIU plugin is not installed (scripts/install-criu-plugin.sh)".into());
    }
    for script in ["setup-docker.sh", "setup-hosts.sh"] {
        let p = repo().join("scripts").join(script);
        match Command::new(&p).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Some(format!(
                    "{} failed: {}",
                    p.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return Some(format!("cannot run {}: {e}", p.display())),
        }
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(
        || match Command::new(repo().join("scripts/ibverbs.sh")).status() {
            Ok(s) if s.success() => {}
            r => eprintln!("scripts/ibverbs.sh failed: {r:?}"),
        },
    );
    let lib = Path::new(MIGROS)
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("ibverbs/libibverbs.so.1"));
    if !lib.is_some_and(|l| l.is_file()) {
        return Some("target/ibverbs/libibverbs.so.1 not built (scripts/ibverbs.sh)".into());
    }
    None
}

pub fn run(program: &str, args: &[&str]) -> Output {
    run_env(program, args, &[])
}

pub fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{program} {args:?} timed out after {COMMAND_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Runs a command that must succeed; its stdout.
pub fn ok(program: &str, args: &[&str]) -> String {
    common::success_stdout(program, args, &run(program, args))
}

pub fn migros(args: &[&str]) -> String {
    ok(MIGROS, args)
}

/// `ssh -F <hosts' config> root@host <script>`.
pub fn ssh(host: &str, script: &str) -> Output {
    run("ssh", &["-F", SSH_CONFIG, host, script])
}

/// The node and status `migros ps` shows for the container `name`.
pub fn on(name: &str) -> (String, String) {
    let ps = migros(&["ps", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let c = v
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {ps}"))
        .clone();
    (
        c["node"].as_str().unwrap().to_string(),
        c["status"].as_str().unwrap().to_string(),
    )
}

/// Waits (60 s at most) until `migros logs name` shows `needle`.
pub fn wait_for(name: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = migros(&["logs", name]);
        if l.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: no {needle:?}:\n{l}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `migros wait` (300 s at most): the container's exit code, -1 without one.
pub fn exit_code(name: &str) -> i32 {
    run(MIGROS, &["wait", name, "--timeout", "300"])
        .status
        .code()
        .unwrap_or(-1)
}

/// The ssh node `host` (the host's daemon at `addr`) deleted and added
/// again: its record goes, the machine stays.
pub fn readd_node(host: &str, addr: &str) {
    migros(&["node", "del", host]);
    migros(&[
        "node",
        "add",
        host,
        "--ssh",
        &format!("root@{host}"),
        "--ssh-config",
        SSH_CONFIG,
        "--addr",
        addr,
        "--mtu",
        "4096",
    ]);
}

/// `migros migrate name --to to`: it must say it moved `name` from
/// `from`, its image streamed host to host and its QPs forwarded; `name`
/// then runs on `to`.
pub fn migrate_streamed(name: &str, from: &str, to: &str) {
    let t = Instant::now();
    let out = migros(&["migrate", name, "--to", to]);
    eprintln!("{out}({:?})", t.elapsed());
    assert!(out.contains(&format!("from {from} to {to}")), "{out}");
    assert!(out.contains(&format!("streamed {from} -> {to}")), "{out}");
    assert!(out.contains("QP(s) forwarded"), "{out}");
    assert_eq!(on(name), (to.to_string(), "running".to_string()), "{name}");
}

/// Hosts, ssh nodes and migros containers of one test, removed when dropped.
pub struct Lab {
    pub hosts: Vec<String>,
    nodes: Vec<String>,
    containers: Vec<String>,
}

impl Lab {
    /// Hosts `names` at 198.18.64.<first>, +1, …
    pub fn hosts(names: &[&str], first: u8) -> Lab {
        let mut lab = Lab {
            hosts: Vec::new(),
            nodes: Vec::new(),
            containers: Vec::new(),
        };
        for (i, n) in names.iter().enumerate() {
            let _ = run(MIGROS, &["node", "del", n]);
            let _ = run(MIGROS, &["host", "del", n]);
            lab.hosts.push(n.to_string());
            migros(&[
                "host",
                "add",
                n,
                "--addr",
                &format!("198.18.64.{}", first + i as u8),
            ]);
        }
        lab
    }

    /// An ssh node on every host, named as it.
    pub fn nodes(&mut self) {
        for h in self.hosts.clone() {
            let v: serde_json::Value =
                serde_json::from_str(&migros(&["host", "list", "--json"])).unwrap();
            let addr = v
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == h.as_str())
                .and_then(|x| x["addr"].as_str())
                .unwrap()
                .to_string();
            self.nodes.push(h.clone());
            migros(&[
                "node",
                "add",
                &h,
                "--ssh",
                &format!("root@{h}"),
                "--ssh-config",
                SSH_CONFIG,
                "--addr",
                &addr,
                "--mtu",
                "4096",
            ]);
        }
    }

    /// Remembers to remove migros container `name`.
    pub fn container(&mut self, name: &str) {
        let _ = run(MIGROS, &["rm", "-f", name]);
        self.containers.push(name.to_string());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.containers) {
            let _ = run(MIGROS, &["rm", "-f", &c]);
        }
        for n in std::mem::take(&mut self.nodes) {
            let _ = run(MIGROS, &["node", "del", &n]);
        }
        for h in std::mem::take(&mut self.hosts) {
            let out = run(MIGROS, &["host", "del", &h]);
            if !out.status.success() {
                eprintln!("host del {h}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

/// perftest's result line: 65536 bytes, `iters` iterations, a positive
/// bandwidth; no completion errors.
pub fn assert_result(who: &str, log: &str, iters: u64) {
    assert!(
        log.contains("Send Bidirectional BW Test") && log.contains("#bytes"),
        "{who}: no perftest header:\n{log}"
    );
    assert!(
        log.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5
                && f[0] == "65536"
                && f[1] == iters.to_string()
                && f[3].parse::<f64>().is_ok_and(|bw| bw > 0.0)
        }),
        "{who}: no result line:\n{log}"
    );
    assert!(!log.contains("Completion with error"), "{who}:\n{log}");
    assert!(!log.contains("Couldn't"), "{who}:\n{log}");
}
