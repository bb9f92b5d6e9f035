//! The seed experiment with Docker: `ib_send_bw -d rxe0 -n 100000 -b`, the
//! server in a container on node A, the client in a container on node B,
//! the server moved to node C while both directions stream; both must exit
//! 0 with perftest's result table.
//!
//! - `seed_commands_server_migrates` moves the server with the seed's own
//!   commands, typed as they were (`docker checkpoint create`, `cp -r` of
//!   the checkpoint directory into a container created against node C's
//!   sockets, `docker start --checkpoint`): with the migros CRIU plugin
//!   installed nothing else is needed;
//! - `migros_migrate_engine_docker` does the same through
//!   `migros run --engine docker` and `migros migrate --engine docker`.
//!
//! They need root, `docker` with a dockerd that `scripts/setup-docker.sh`
//! can start (image `migros-base`, network `migros-dock`), `criu`, the
//! migros CRIU plugin, perftest and a built `migrosd`; without them they
//! skip, saying why, or fail with `MIGROS_TESTS_REQUIRED=1`. Nodes are
//! 198.18.2.x, containers 198.19.240.x.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{run_within, NodeWatch, MIGROS};
use migros_test_support::daemon::script_once;
use migros_test_support::perftest;
use migros_test_support::require::{file, program, require, root, Check};
use serde_json::Value;
/// Upper bound of one command (`docker wait` of a whole perftest run included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(400);
/// The seed's perftest command, line-buffered so its output says when
/// traffic flows.
const SEED: &[&str] = &[
    "stdbuf",
    "-oL",
    "ib_send_bw",
    "-d",
    "rxe0",
    "-n",
    "100000",
    "-b",
];

/// One test at a time: two cores, and a starved daemon makes peers retry.
static RDMA: Mutex<()> = Mutex::new(());

/// A running dockerd with experimental features (checkpoints), the image
/// `migros-base` and the network `migros-dock`: what
/// `scripts/setup-docker.sh` (run by `scripts/setup.sh`) prepares. The
/// test does not start dockerd itself: a stopped Docker is a missing
/// prerequisite.
fn dockerd_ready() -> Check {
    let ok = |args: &[&str]| run("docker", args).status.success();
    let experimental = run(
        "docker",
        &["version", "--format", "{{.Server.Experimental}}"],
    );
    if !experimental.status.success() {
        return Err("a running dockerd (scripts/setup-docker.sh starts it)".into());
    }
    if String::from_utf8_lossy(&experimental.stdout).trim() != "true" {
        return Err("dockerd with experimental features (scripts/setup-docker.sh)".into());
    }
    if !ok(&["image", "inspect", "migros-base"]) || !ok(&["network", "inspect", "migros-dock"]) {
        return Err(
            "the image migros-base and network migros-dock (scripts/setup-docker.sh)".into(),
        );
    }
    Ok(())
}

/// Whether the test runs (see `migros_test_support::require`): root, a
/// built daemon, CRIU, perftest, the CRIU plugin, a ready dockerd, the
/// drop-in libibverbs.
fn ready() -> bool {
    let daemon = Path::new(MIGROS).with_file_name("migrosd");
    let mut checks: Vec<Check> = vec![root(), file(&daemon, "cargo build -p migrosd")];
    for (p, hint) in [
        ("criu", "scripts/setup-criu.sh"),
        ("ip", "iproute2"),
        ("ib_send_bw", "perftest: scripts/setup.sh"),
        ("stdbuf", "coreutils"),
    ] {
        checks.push(program(p, hint));
    }
    checks.push(file(
        "/usr/lib/criu/migros_criu.so",
        "scripts/install-criu-plugin.sh installs the CRIU plugin",
    ));
    if checks.iter().all(Result::is_ok) {
        checks.push(program(
            "docker",
            "scripts/setup-docker.sh installs docker.io",
        ));
        checks.push(dockerd_ready());
        checks.push(script_once("ibverbs.sh"));
        checks.push(file(
            lib_dir().join("libibverbs.so.1"),
            "scripts/ibverbs.sh builds it",
        ));
    }
    require(checks)
}

/// `target/ibverbs`, next to the build's `debug/` or `release/`.
fn lib_dir() -> PathBuf {
    Path::new(MIGROS)
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ibverbs")
}

fn run(program: &str, args: &[&str]) -> Output {
    run_within(program, args, COMMAND_TIMEOUT)
}

fn ok(program: &str, args: &[&str]) -> String {
    common::success_stdout(program, args, &run(program, args))
}

fn docker(args: &[&str]) -> String {
    ok("docker", args)
}

fn migros(args: &[&str]) -> String {
    ok(MIGROS, args)
}

/// Output of every container named (stdout and stderr), in order.
fn docker_logs(names: &[String]) -> String {
    names
        .iter()
        .map(|n| {
            let o = run("docker", &["logs", n]);
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .collect()
}

/// Nodes, docker containers and files of one test, removed when dropped.
struct Lab {
    nodes: Vec<String>,
    containers: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            nodes: Vec::new(),
            containers: Vec::new(),
            dirs: Vec::new(),
        }
    }

    /// Three nodes `<prefix>a|b|c` at 198.18.2.<octet>, +1, +2.
    fn nodes(&mut self, prefix: &str, octet: u8) -> [String; 3] {
        let names = ["a", "b", "c"].map(|s| format!("{prefix}{s}"));
        for (i, n) in names.iter().enumerate() {
            let _ = run("docker", &["rm", "-f", n]);
            let _ = run(MIGROS, &["node", "del", n]);
            self.nodes.push(n.clone());
            let addr = format!("198.18.2.{}", octet + i as u8);
            migros(&["node", "add", n, "--addr", &addr, "--mtu", "4096"]);
        }
        names
    }

    /// Removes leftovers of an earlier run and remembers to remove `name`.
    fn container(&mut self, name: &str) {
        let _ = run("docker", &["rm", "-f", name]);
        self.containers.push(name.to_string());
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.containers) {
            let _ = run("docker", &["rm", "-f", &c]);
        }
        for n in std::mem::take(&mut self.nodes) {
            let out = run(MIGROS, &["node", "del", &n]);
            if !out.status.success() {
                eprintln!("node del {n}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        for d in std::mem::take(&mut self.dirs) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The `docker run|create` options of a container using `node`'s device:
/// its fixed address, the node's sockets at /run/migros, the libibverbs
/// snapshot `lib`, the host's /usr.
fn container_opts(name: &str, ip: &str, node: &str, lib: &Path) -> Vec<String> {
    [
        "--name",
        name,
        "--network",
        "migros-dock",
        "--ip",
        ip,
        "-v",
        &format!("/run/migros/nodes/{node}:/run/migros"),
        "-v",
        &format!("{}:/opt/migros/lib:ro", lib.display()),
        "-v",
        "/usr:/usr:ro",
        "-e",
        "LD_LIBRARY_PATH=/opt/migros/lib",
        "migros-base",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Waits until the output of `names` contains `needle`.
fn wait_log(names: &[String], needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = docker_logs(names);
        if l.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never printed {needle:?}:\n{l}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker wait`: the exit status.
fn docker_wait(name: &str) -> i32 {
    docker(&["wait", name])
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("docker wait {name}: {e}"))
}

/// perftest's result line: 65536 (the default size) 100000 iterations and
/// a positive bandwidth; no completion errors.
fn assert_result(who: &str, log: &str) {
    assert!(
        log.contains("Send Bidirectional BW Test") && log.contains("#bytes"),
        "{who}: no perftest header:\n{log}"
    );
    perftest::assert_bw(who, log, 65536, Some(100000));
    assert!(!log.contains("Completion with error"), "{who}:\n{log}");
    assert!(!log.contains("Couldn't"), "{who}:\n{log}");
}

/// A `migros run --engine docker` pair: nodes `<p>a|b|c` (see
/// [`Lab::nodes`]); the server container `<p>srv` (`<p>srv-1` once moved)
/// at 198.19.240.<octet> on node A, then, once it waits for a client, the
/// client `<p>cli` at 198.19.240.<octet+1> on node B, running `cmd` with
/// the server's address appended: its container's, or with
/// `server_at_node` node A's. Its containers go when it is dropped, then
/// its lab.
struct MigrosPair {
    srv: String,
    cli: String,
    nodes: [String; 3],
    _lab: Lab,
    /// One test at a time, released last.
    _one: std::sync::MutexGuard<'static, ()>,
}

impl MigrosPair {
    /// The pair once RDMA traffic flows (the server printed the remote
    /// address, a second more), and a watch on the client's node, started
    /// before it connected; `None` if the test skips.
    fn start(p: &str, octet: u8, cmd: &[&str], server_at_node: bool) -> Option<(Self, NodeWatch)> {
        if !ready() {
            return None;
        }
        let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
        let mut lab = Lab::new();
        let nodes = lab.nodes(p, octet);
        let srv_ip = format!("198.19.240.{octet}");
        let cli_ip = format!("198.19.240.{}", octet + 1);
        let (srv, cli) = (format!("{p}srv"), format!("{p}cli"));
        for n in [&srv, &format!("{srv}-1"), &cli] {
            lab.container(n);
        }
        let _ = run(MIGROS, &["rm", "-f", &srv]);
        let _ = run(MIGROS, &["rm", "-f", &cli]);
        let mrun = |node: &str, name: &str, ip: &str, server: Option<&str>| {
            let mut args = vec![
                "run", "--engine", "docker", "--node", node, "--name", name, "--ip", ip, "--",
            ];
            args.extend_from_slice(cmd);
            if let Some(s) = server {
                args.push(s);
            }
            migros(&args);
        };
        let pair = MigrosPair {
            srv,
            cli,
            nodes,
            _lab: lab,
            _one,
        };
        let (a, b) = (&pair.nodes[0], &pair.nodes[1]);
        mrun(a, &pair.srv, &srv_ip, None);
        pair.wait_for(&pair.srv, "Waiting for client");
        let server_addr = match server_at_node {
            true => format!("198.18.2.{octet}"),
            false => srv_ip,
        };
        mrun(b, &pair.cli, &cli_ip, Some(&server_addr));
        let watch = NodeWatch::start(b);
        pair.wait_for(&pair.srv, "remote address");
        std::thread::sleep(Duration::from_millis(1000));
        Some((pair, watch))
    }

    /// `migros logs` of the container `name`.
    fn logs(&self, name: &str) -> String {
        migros(&["logs", name])
    }

    /// Waits (60 s at most) until the output of `name` contains `needle`.
    fn wait_for(&self, name: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.logs(name).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{name}: no {needle:?}:\n{}",
                self.logs(name)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the client, then the server, to exit 0, their QPs seen
    /// paused and resumed by `watch`: their output, the client's first.
    fn finish(&self, watch: NodeWatch) -> (String, String) {
        let code = |n: &str| {
            let o = run(MIGROS, &["wait", n, "--timeout", "300"]);
            o.status.code().unwrap_or(-1)
        };
        let (cs, ss) = (code(&self.cli), code(&self.srv));
        let seen = watch.finish();
        let (pauses, resumes) = (seen.pauses, seen.resumes);
        let (cl, sl) = (self.logs(&self.cli), self.logs(&self.srv));
        eprintln!("server:\n{sl}\nclient:\n{cl}");
        assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
        assert!(
            pauses >= 1 && resumes >= 1,
            "the client's QP saw pauses {pauses} resumes {resumes}"
        );
        (cl, sl)
    }
}

impl Drop for MigrosPair {
    fn drop(&mut self) {
        for n in [&self.srv, &self.cli] {
            let _ = run(MIGROS, &["rm", "-f", n]);
        }
    }
}

/// The seed experiment, the server moved with the seed's own commands.
#[test]
fn seed_commands_server_migrates() {
    if !ready() {
        return;
    }
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    let [a, b, c] = lab.nodes("dk1", 11);
    let lib = PathBuf::from("/run/migros/state/docker-test-dk1-lib");
    let _ = std::fs::remove_dir_all(&lib);
    ok(
        "cp",
        &["-a", lib_dir().to_str().unwrap(), lib.to_str().unwrap()],
    );
    lab.dirs.push(lib.clone());
    let (srv_ip, cli_ip) = ("198.19.240.11", "198.19.240.12");
    let (srv, srv2, cli) = ("dk1srv", "dk1srv-1", "dk1cli");
    for n in [srv, srv2, cli] {
        lab.container(n);
    }

    let mut args = vec!["run".to_string(), "-d".into()];
    args.extend(container_opts(srv, srv_ip, &a, &lib));
    args.extend(SEED.iter().map(|s| s.to_string()));
    docker(&strs(&args));
    wait_log(&[srv.into()], "Waiting for client");
    let mut args = vec!["run".to_string(), "-d".into()];
    args.extend(container_opts(cli, cli_ip, &b, &lib));
    args.extend(SEED.iter().map(|s| s.to_string()));
    args.push(srv_ip.into());
    docker(&strs(&args));
    let watch = NodeWatch::start(&b);
    wait_log(&[srv.into()], "remote address");
    std::thread::sleep(Duration::from_millis(1000));

    // The seed's commands.
    let ck = format!("ck-{}", std::process::id());
    let t = Instant::now();
    docker(&["checkpoint", "create", srv, &ck]);
    let mut args = vec!["create".to_string()];
    args.extend(container_opts(srv2, srv_ip, &c, &lib));
    args.extend(SEED.iter().map(|s| s.to_string()));
    docker(&strs(&args));
    let id = |n: &str| docker(&["inspect", "-f", "{{.Id}}", n]).trim().to_string();
    let (old, new) = (id(srv), id(srv2));
    let from = format!("/var/lib/docker/containers/{old}/checkpoints/{ck}");
    let to = format!("/var/lib/docker/containers/{new}/checkpoints");
    std::fs::create_dir_all(&to).unwrap();
    ok("cp", &["-r", &from, &format!("{to}/")]);
    docker(&["start", "--checkpoint", &ck, srv2]);
    eprintln!(
        "server moved from {a} to {c} with docker checkpoint/cp/start in {:?}",
        t.elapsed()
    );

    let (cs, ss) = (docker_wait(cli), docker_wait(srv2));
    let seen = watch.finish();
    let (pauses, resumes) = (seen.pauses, seen.resumes);
    let cl = docker_logs(&[cli.into()]);
    let sl = docker_logs(&[srv.into(), srv2.into()]);
    eprintln!("server:\n{sl}\nclient:\n{cl}");
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    assert_result("client", &cl);
    assert_result("server", &sl);
    assert!(
        pauses >= 1 && resumes >= 1,
        "the client's QP saw pauses {pauses} resumes {resumes}"
    );
    // The restored server used node C's daemon: its QP is gone from A
    // (checkpointed, then a tombstone) and C served it.
    let st = migros(&[
        "--socket-dir",
        &format!("/run/migros/nodes/{c}"),
        "stat",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&st).unwrap();
    assert!(
        v[0]["counters"]["rx_packets"].as_u64().unwrap_or(0) > 0,
        "node {c} never received: {st}"
    );
}

/// The same through `migros run --engine docker` and `migros migrate
/// --engine docker`.
#[test]
fn migros_migrate_engine_docker() {
    let Some((pair, watch)) = MigrosPair::start("dk2", 21, SEED, false) else {
        return;
    };
    let srv = pair.srv.as_str();
    let [a, _, c] = &pair.nodes;

    // Refused before anything is frozen: the traffic goes on.
    let same = run(MIGROS, &["migrate", "--engine", "docker", srv, "--to", a]);
    assert!(!same.status.success());
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(err.contains("already runs on node"), "{err}");
    let none = run(
        MIGROS,
        &["migrate", "--engine", "docker", srv, "--to", "dk2none"],
    );
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("not found"));

    let out = migros(&["migrate", "--engine", "docker", srv, "--to", c]);
    eprintln!("{out}");
    assert!(out.contains(&format!("from {a} to {c}")), "{out}");
    assert!(out.contains("downtime"), "{out}");
    assert!(out.contains("1 QP(s) forwarded"), "{out}");
    assert!(out.contains("image"), "{out}");
    let ps = migros(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(srv) && l.contains(c.as_str()) && l.contains("dk2srv-1")),
        "{ps}"
    );

    let (cl, sl) = pair.finish(watch);
    assert_result("client", &cl);
    assert_result("server", &sl);
}

/// perftest's RDMA CM mode (`ib_send_bw -R -b`: its exchange and its
/// connection made with librdmacm) through `migros run --engine docker`,
/// the server moved with `migros migrate --engine docker` while both
/// directions stream. The client names the server by node A's device
/// address (a CM peer is a daemon; see ARCHITECTURE "CM state and
/// migration"); its disconnect at the end reaches the server on node C
/// through A's tombstone, and both ends print their result lines.
#[test]
fn rdma_cm_migros_migrate_engine_docker() {
    const CMD: &[&str] = &[
        "stdbuf",
        "-oL",
        "ib_send_bw",
        "-d",
        "rxe0",
        "-R",
        "-s",
        "16384",
        "-n",
        "100000",
        "-b",
    ];
    let Some((pair, watch)) = MigrosPair::start("dk3", 31, CMD, true) else {
        return;
    };
    let srv = pair.srv.as_str();
    let [a, _, c] = &pair.nodes;

    let out = migros(&["migrate", "--engine", "docker", srv, "--to", c]);
    eprintln!("{out}");
    assert!(out.contains(&format!("from {a} to {c}")), "{out}");
    assert!(out.contains("downtime"), "{out}");
    assert!(out.contains("QP(s) forwarded"), "{out}");

    let (cl, sl) = pair.finish(watch);
    for (who, log) in [("client", &cl), ("server", &sl)] {
        assert!(log.contains("Send Bidirectional BW Test"), "{who}:\n{log}");
        perftest::assert_bw(who, log, 16384, Some(100000));
        assert!(!log.contains("Completion with error"), "{who}:\n{log}");
        assert!(!log.contains("Couldn't"), "{who}:\n{log}");
    }
}
