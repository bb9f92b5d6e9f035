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
//! print why and pass. Nodes are 198.18.2.x, containers 198.19.240.x.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const MIGROS: &str = env!("CARGO_BIN_EXE_migros");
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

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    let daemon = Path::new(MIGROS).with_file_name("migrosd");
    if !daemon.is_file() {
        return Some(format!(
            "{} not built (cargo build -p migrosd)",
            daemon.display()
        ));
    }
    for p in ["criu", "ip", "ib_send_bw", "stdbuf"] {
        if !have(p) {
            return Some(format!(
                "{p} not on PATH (scripts/setup-criu.sh, scripts/setup-docker.sh, perftest)"
            ));
        }
    }
    if !Path::new("/usr/lib/criu/migros_criu.so").is_file() {
        return Some("the CRIU plugin is not installed (scripts/install-criu-plugin.sh)".into());
    }
    let setup = repo().join("scripts/setup-docker.sh");
    match Command::new(&setup).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Some(format!(
                "dockerd is not usable ({} failed: {})",
                setup.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Some(format!("cannot run {}: {e}", setup.display())),
    }
    if !have("docker") {
        return Some("no docker client on PATH".into());
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(
        || match Command::new(repo().join("scripts/ibverbs.sh")).status() {
            Ok(s) if s.success() => {}
            r => eprintln!("scripts/ibverbs.sh failed: {r:?}"),
        },
    );
    if !lib_dir().join("libibverbs.so.1").is_file() {
        return Some("target/ibverbs/libibverbs.so.1 not built (scripts/ibverbs.sh)".into());
    }
    None
}

/// `target/ibverbs`, next to the build's `debug/` or `release/`.
fn lib_dir() -> PathBuf {
    Path::new(MIGROS)
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("ibverbs")
}

fn wait_bounded(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "{what} timed out after {COMMAND_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    wait_bounded(child, &format!("{program} {args:?}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// The largest pause and resume counters seen on the QPs of a node's
/// daemon, sampled every 100 ms while the test runs.
struct QpWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QpWatch {
    fn start(node: &str) -> QpWatch {
        let dir = format!("/run/migros/nodes/{node}");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0, 0)));
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let out = run(MIGROS, &["--socket-dir", &dir, "stat", "--json"]);
                if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                    for q in v[0]["qps"].as_array().into_iter().flatten() {
                        let c = &q["counters"];
                        let mut g = m.lock().unwrap();
                        g.0 = g.0.max(c["pauses"].as_u64().unwrap_or(0));
                        g.1 = g.1.max(c["resumes"].as_u64().unwrap_or(0));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        QpWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// (pauses, resumes).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.seen.lock().unwrap()
    }
}

/// perftest's result line: 65536 (the default size) 100000 iterations and
/// a positive bandwidth; no completion errors.
fn assert_result(who: &str, log: &str) {
    assert!(
        log.contains("Send Bidirectional BW Test") && log.contains("#bytes"),
        "{who}: no perftest header:\n{log}"
    );
    assert!(
        log.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5
                && f[0] == "65536"
                && f[1] == "100000"
                && f[3].parse::<f64>().is_ok_and(|bw| bw > 0.0)
        }),
        "{who}: no result line:\n{log}"
    );
    assert!(!log.contains("Completion with error"), "{who}:\n{log}");
    assert!(!log.contains("Couldn't"), "{who}:\n{log}");
}

/// The seed experiment, the server moved with the seed's own commands.
#[test]
fn seed_commands_server_migrates() {
    if let Some(why) = missing() {
        println!("skipped: {why}");
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
    let watch = QpWatch::start(&b);
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
    let (pauses, resumes) = watch.finish();
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
    if let Some(why) = missing() {
        println!("skipped: {why}");
        return;
    }
    let help = run(MIGROS, &["migrate", "--help"]);
    if !String::from_utf8_lossy(&help.stdout).contains("docker") {
        println!("skipped: this migros has no `migrate --engine docker`");
        return;
    }
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new();
    let [a, b, c] = lab.nodes("dk2", 21);
    let (srv_ip, cli_ip) = ("198.19.240.21", "198.19.240.22");
    let (srv, cli) = ("dk2srv", "dk2cli");
    for n in [srv, "dk2srv-1", cli] {
        lab.container(n);
    }
    let _ = run(MIGROS, &["rm", "-f", srv]);
    let _ = run(MIGROS, &["rm", "-f", cli]);
    let mrun = |node: &str, name: &str, ip: &str, server: Option<&str>| {
        let mut args = vec![
            "run", "--engine", "docker", "--node", node, "--name", name, "--ip", ip, "--",
        ];
        args.extend_from_slice(SEED);
        if let Some(s) = server {
            args.push(s);
        }
        migros(&args);
    };
    struct Rm(&'static [&'static str]);
    impl Drop for Rm {
        fn drop(&mut self) {
            for n in self.0 {
                let _ = run(MIGROS, &["rm", "-f", n]);
            }
        }
    }
    let _rm = Rm(&["dk2srv", "dk2cli"]);
    mrun(&a, srv, srv_ip, None);
    let logs = |n: &str| migros(&["logs", n]);
    let wait_for = |n: &str, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !logs(n).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{n}: no {needle:?}:\n{}",
                logs(n)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(srv, "Waiting for client");
    mrun(&b, cli, cli_ip, Some(srv_ip));
    let watch = QpWatch::start(&b);
    wait_for(srv, "remote address");
    std::thread::sleep(Duration::from_millis(1000));

    // Refused before anything is frozen: the traffic goes on.
    let same = run(MIGROS, &["migrate", "--engine", "docker", srv, "--to", &a]);
    assert!(!same.status.success());
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(err.contains("already runs on node"), "{err}");
    let none = run(
        MIGROS,
        &["migrate", "--engine", "docker", srv, "--to", "dk2none"],
    );
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("not found"));

    let out = migros(&["migrate", "--engine", "docker", srv, "--to", &c]);
    eprintln!("{out}");
    assert!(out.contains(&format!("from {a} to {c}")), "{out}");
    assert!(out.contains("downtime"), "{out}");
    assert!(out.contains("1 QP(s) forwarded"), "{out}");
    assert!(out.contains("image"), "{out}");
    let ps = migros(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(srv) && l.contains(&c) && l.contains("dk2srv-1")),
        "{ps}"
    );

    let code = |n: &str| {
        let o = run(MIGROS, &["wait", n, "--timeout", "300"]);
        o.status.code().unwrap_or(-1)
    };
    let (cs, ss) = (code(cli), code(srv));
    let (pauses, resumes) = watch.finish();
    let (cl, sl) = (logs(cli), logs(srv));
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    assert_result("client", &cl);
    assert_result("server", &sl);
    assert!(
        pauses >= 1 && resumes >= 1,
        "the client's QP saw pauses {pauses} resumes {resumes}"
    );
}
