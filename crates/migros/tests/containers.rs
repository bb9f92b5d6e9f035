//! End-to-end tests of nodes, containers and their live migration:
//! `migros node …`, `run`, `ps`, `logs`, `wait`, `rm`, `migrate`.
//!
//! They need root (network namespaces, runc, CRIU), `runc` and `criu` on
//! PATH (`scripts/setup-criu.sh`) and a built `migrosd` next to `migros`;
//! without them they print why and pass. Each test uses its own nodes
//! (198.18.1.x) and containers (198.19.1.x), removed at the end.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MIGROS: &str = env!("CARGO_BIN_EXE_migros");
/// Upper bound of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The nodes and containers of one test, removed when dropped.
struct Lab {
    nodes: Vec<String>,
    containers: Vec<String>,
}

impl Lab {
    /// `None` (after saying why) when the tests cannot run here.
    fn new() -> Option<Lab> {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return None;
        }
        let daemon = Path::new(MIGROS).with_file_name("migrosd");
        if !daemon.is_file() {
            println!(
                "skipped: {} not built (cargo build -p migrosd)",
                daemon.display()
            );
            return None;
        }
        for p in ["runc", "criu", "ip", "python3"] {
            if !have(p) {
                println!("skipped: {p} not on PATH (scripts/setup-criu.sh installs runc and criu)");
                return None;
            }
        }
        Some(Lab {
            nodes: Vec::new(),
            containers: Vec::new(),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        let child = Command::new(MIGROS)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migros");
        wait_bounded(child, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "migros {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "migros {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let s = self.ok(args);
        serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{args:?}: not json ({e}): {s}"))
    }

    fn node(&mut self, name: &str, addr: &str) {
        self.clean_node(name);
        self.nodes.push(name.to_string());
        self.ok(&["node", "add", name, "--addr", addr]);
    }

    /// Removes what a killed run of this test may have left of node `name`.
    fn clean_node(&self, name: &str) {
        let ps = self.json(&["ps", "--json"]);
        for c in ps.as_array().into_iter().flatten() {
            if c["node"] == name {
                let _ = self.run(&["rm", "-f", c["name"].as_str().unwrap_or_default()]);
            }
        }
        let _ = self.run(&["node", "del", name]);
    }

    fn container(&mut self, node: &str, name: &str, ip: &str, cmd: &[&str]) {
        self.containers.push(name.to_string());
        let mut args = vec!["run", "--node", node, "--name", name, "--ip", ip, "--"];
        args.extend_from_slice(cmd);
        self.ok(&args);
    }

    fn ps(&self, name: &str) -> Option<Value> {
        let v = self.json(&["ps", "--json"]);
        v.as_array()
            .expect("ps --json is an array")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    }

    fn logs(&self, name: &str) -> String {
        self.ok(&["logs", name])
    }

    /// Waits until the container's output contains `needle`.
    fn wait_log(&self, name: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.logs(name).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{name} never printed {needle:?}:\n{}",
                self.logs(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `migros wait`: the container's exit status.
    fn wait(&self, name: &str) -> i32 {
        let out = self.run(&["wait", name, "--timeout", "120"]);
        out.status
            .code()
            .unwrap_or_else(|| panic!("wait {name}: {out:?}"))
    }

    fn migrate(&self, name: &str, to: &str) -> String {
        let out = self.ok(&["migrate", name, "--to", to]);
        eprintln!("{out}");
        assert!(out.contains("downtime"), "{out}");
        assert!(out.contains(&format!("to {to}")), "{out}");
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in std::mem::take(&mut self.containers) {
            let _ = self.run(&["rm", "-f", &c]);
        }
        for n in std::mem::take(&mut self.nodes) {
            let out = self.run(&["node", "del", &n]);
            if !out.status.success() {
                eprintln!("node del {n}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn wait_bounded(mut child: Child, what: &[&str]) -> Output {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "migros {what:?} timed out after {COMMAND_TIMEOUT:?}\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn nodes_add_list_del_and_errors() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k1a", "198.18.1.11");
    lab.node("k1b", "198.18.1.12");
    let list = lab.json(&["node", "list", "--json"]);
    for (n, a) in [("k1a", "198.18.1.11"), ("k1b", "198.18.1.12")] {
        let e = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed: {list}"));
        assert_eq!(e["addr"], a, "{e}");
        assert_eq!(e["state"], "running", "{e}");
        assert_eq!(e["dev"], "rxe0", "{e}");
        assert!(Path::new(&format!("/run/netns/migros-{n}")).exists());
        assert!(Path::new(&format!("/run/migros/nodes/{n}/rxe0.sock")).exists());
        assert!(Path::new(&format!("/run/migros/state/nodes/{n}/migrosd.log")).exists());
    }
    assert!(lab
        .fails(&["node", "add", "k1a", "--addr", "198.18.1.13"])
        .contains("exists"));
    assert!(lab
        .fails(&["node", "add", "k1x", "--addr", "198.18.1.11"])
        .contains("taken by node k1a"));
    assert!(lab
        .fails(&["node", "add", "k1x", "--addr", "10.1.2.3"])
        .contains("198.18.0.0/16"));
    assert!(lab
        .fails(&["node", "add", "K1/x", "--addr", "198.18.1.14"])
        .contains("invalid node name"));
    assert!(lab.fails(&["node", "del", "k1nope"]).contains("not found"));
    // Not root: a clear refusal before anything is touched.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", MIGROS])
        .args(["node", "add", "k1u", "--addr", "198.18.1.15"])
        .output();
    if let Ok(out) = out {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs root"), "{err}");
    }

    lab.ok(&["node", "del", "k1a"]);
    lab.nodes.retain(|n| n != "k1a");
    assert!(!Path::new("/run/netns/migros-k1a").exists());
    assert!(!Path::new("/run/migros/nodes/k1a").exists());
    assert!(!Path::new("/sys/class/net/mh-k1a").exists());
    let list = lab.json(&["node", "list", "--json"]);
    assert!(
        !list.as_array().unwrap().iter().any(|e| e["name"] == "k1a"),
        "{list}"
    );
    assert!(lab.fails(&["node", "del", "k1a"]).contains("not found"));
    // The name and the address are free again.
    lab.node("k1a", "198.18.1.11");
}

#[test]
fn containers_run_ps_logs_wait_rm() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k2a", "198.18.1.21");
    lab.node("k2b", "198.18.1.22");
    lab.containers.push("k2once".into());
    lab.ok(&[
        "run", "--node", "k2a", "--name", "k2once", "--ip", "198.19.1.21", "--env", "X=42",
        "--", "sh", "-c",
        "echo out; echo err >&2; echo x=$X; ls /run/migros; ls /usr/bin/python3; cat /etc/hostname 2>/dev/null; ip -4 -o addr show dev eth0; exit 7",
    ]);
    assert_eq!(lab.wait("k2once"), 7);
    let logs = lab.logs("k2once");
    for want in [
        "out",
        "err",
        "x=42",
        "rxe0.sock",
        "/usr/bin/python3",
        "198.19.1.21/32",
    ] {
        assert!(logs.contains(want), "{want:?} missing from\n{logs}");
    }
    let ps = lab.ps("k2once").expect("listed");
    assert_eq!(ps["status"], "exited(7)", "{ps}");
    assert_eq!(ps["exit_code"], 7, "{ps}");
    assert_eq!(
        (ps["node"].as_str(), ps["ip"].as_str()),
        (Some("k2a"), Some("198.19.1.21"))
    );
    // An exited container is removed without -f.
    lab.ok(&["rm", "k2once"]);
    assert!(lab.ps("k2once").is_none());

    // Two containers on two nodes talk TCP over the overlay.
    lab.container(
        "k2b",
        "k2srv",
        "198.19.1.22",
        &[
            "python3",
            "-c",
            "import socket\ns=socket.socket(); s.bind(('198.19.1.22',7100)); s.listen(1)\n\
             print('listening', flush=True)\nc,a=s.accept(); print('peer', a[0], c.recv(100).decode(), flush=True)",
        ],
    );
    lab.wait_log("k2srv", "listening");
    lab.container(
        "k2a",
        "k2cli",
        "198.19.1.23",
        &[
            "python3",
            "-c",
            "import socket\nc=socket.create_connection(('198.19.1.22',7100)); c.sendall(b'hello')",
        ],
    );
    assert_eq!(lab.wait("k2cli"), 0, "{}", lab.logs("k2cli"));
    assert_eq!(lab.wait("k2srv"), 0, "{}", lab.logs("k2srv"));
    assert!(
        lab.logs("k2srv").contains("peer 198.19.1.23 hello"),
        "{}",
        lab.logs("k2srv")
    );

    // A running container: auto address, rm needs -f, names and addresses
    // are checked.
    lab.containers.push("k2sleep".into());
    lab.ok(&[
        "run", "--node", "k2a", "--name", "k2sleep", "--", "sleep", "600",
    ]);
    let ps = lab.ps("k2sleep").expect("listed");
    assert_eq!(ps["status"], "running", "{ps}");
    assert!(ps["pid"].as_i64().is_some_and(|p| p > 1), "{ps}");
    assert!(
        ps["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("198.19.")),
        "{ps}"
    );
    assert!(lab
        .fails(&["run", "--node", "k2a", "--name", "k2sleep", "--", "true"])
        .contains("exists"));
    assert!(lab
        .fails(&[
            "run",
            "--node",
            "k2a",
            "--name",
            "k2x",
            "--ip",
            "198.19.1.22",
            "--",
            "true"
        ])
        .contains("taken"));
    assert!(lab
        .fails(&["run", "--node", "k2a", "--name", "k2x", "--ip", "10.0.0.2", "--", "true"])
        .contains("198.19.0.0/16"));
    assert!(lab
        .fails(&["run", "--node", "k2nope", "--name", "k2x", "--", "true"])
        .contains("not found"));
    assert!(lab
        .fails(&["node", "del", "k2a"])
        .contains("still has containers"));
    assert!(lab.fails(&["rm", "k2sleep"]).contains("running"));
    lab.ok(&["rm", "-f", "k2sleep"]);
    assert!(lab.ps("k2sleep").is_none());
    assert!(lab.fails(&["rm", "k2sleep"]).contains("not found"));
}

/// An echo server; prints how many lines it echoed.
const ECHO_SERVER: &str = "import socket,sys
ip,port=sys.argv[1],int(sys.argv[2])
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind((ip,port)); s.listen(1)
print('listening',flush=True)
c,_=s.accept(); f=c.makefile('rwb'); n=0
for line in f:
    f.write(line); f.flush(); n+=1
print('server echoed',n,flush=True)";

/// Sends numbered lines over one TCP connection, checks every echo.
const ECHO_CLIENT: &str = "import socket,sys,time
ip,port,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
c=socket.create_connection((ip,port)); f=c.makefile('rwb')
print('connected',flush=True)
for i in range(n):
    f.write(b'%d\\n'%i); f.flush(); l=f.readline()
    assert l==b'%d\\n'%i,(i,l)
    time.sleep(0.02)
print('client ok',n,flush=True)";

/// A TCP client in a container on `a` talking to a server on `b`, migrated
/// along `hops`, keeps its connection: both end with status 0.
fn tcp_client_migrates(prefix: &str, octet: u8, hops: &[&str]) {
    let Some(mut lab) = Lab::new() else { return };
    let (a, b, c) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}c"),
    );
    for (i, n) in [&a, &b, &c].into_iter().enumerate() {
        lab.node(n, &format!("198.18.1.{}", octet + i as u8));
    }
    let srv_ip = format!("198.19.1.{octet}");
    let cli_ip = format!("198.19.1.{}", octet + 1);
    let (srv, cli) = (format!("{prefix}srv"), format!("{prefix}cli"));
    lab.container(
        &b,
        &srv,
        &srv_ip,
        &["python3", "-c", ECHO_SERVER, &srv_ip, "7200"],
    );
    lab.wait_log(&srv, "listening");
    // Long enough for the migrations even when other tests hold the lock.
    let lines = "300";
    lab.container(
        &a,
        &cli,
        &cli_ip,
        &["python3", "-c", ECHO_CLIENT, &srv_ip, "7200", lines],
    );
    lab.wait_log(&cli, "connected");
    for hop in hops {
        let to = format!("{prefix}{hop}");
        std::thread::sleep(Duration::from_millis(300));
        lab.migrate(&cli, &to);
        let ps = lab.ps(&cli).expect("listed");
        assert_eq!(ps["node"], to.as_str(), "{ps}");
        assert_eq!(ps["ip"], cli_ip.as_str(), "{ps}");
        assert_eq!(
            ps["status"],
            "running",
            "{ps}\nclient:\n{}\nserver:\n{}",
            lab.logs(&cli),
            lab.logs(&srv)
        );
    }
    assert_eq!(lab.wait(&cli), 0, "client:\n{}", lab.logs(&cli));
    assert_eq!(lab.wait(&srv), 0, "server:\n{}", lab.logs(&srv));
    assert!(
        lab.logs(&cli).contains(&format!("client ok {lines}")),
        "{}",
        lab.logs(&cli)
    );
    assert!(
        lab.logs(&srv).contains(&format!("server echoed {lines}")),
        "{}",
        lab.logs(&srv)
    );
}

#[test]
fn tcp_connection_survives_migration() {
    tcp_client_migrates("k3", 31, &["c"]);
}

#[test]
fn migrate_there_and_back() {
    tcp_client_migrates("k4", 41, &["c", "a"]);
}

#[test]
fn migrate_errors_leave_the_container_running() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k5a", "198.18.1.51");
    lab.container("k5a", "k5sleep", "198.19.1.51", &["sleep", "600"]);
    assert!(lab
        .fails(&["migrate", "k5sleep", "--to", "k5a"])
        .contains("already runs"));
    assert!(lab
        .fails(&["migrate", "k5sleep", "--to", "k5nope"])
        .contains("not found"));
    assert!(lab
        .fails(&["migrate", "k5nope", "--to", "k5a"])
        .contains("not found"));
    let ps = lab.ps("k5sleep").expect("listed");
    assert_eq!(ps["status"], "running", "{ps}");
}

/// RDMA runs one at a time: two cores, and a daemon starved of CPU makes
/// the peers' retry counters run out.
static RDMA: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Why RDMA in containers cannot be tested here, if it cannot.
fn rdma_missing(programs: &[&str]) -> Option<String> {
    // Build (or refresh) the drop-in libibverbs once, as its own tests do.
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ibverbs.sh");
        match Command::new(&script).status() {
            Ok(s) if s.success() => {}
            r => eprintln!("{} failed: {r:?}", script.display()),
        }
    });
    let lib = Path::new(MIGROS)
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("ibverbs/libibverbs.so.1"));
    if !lib.as_ref().is_some_and(|l| l.is_file()) {
        return Some("target/ibverbs/libibverbs.so.1 not built (scripts/ibverbs.sh)".into());
    }
    if !Path::new("/usr/lib/criu/migros_criu.so").is_file() {
        return Some("the CRIU plugin is not installed (scripts/install-criu-plugin.sh)".into());
    }
    programs
        .iter()
        .find(|p| !have(p))
        .map(|p| format!("{p} not on PATH (perftest)"))
}

/// Which end moves.
#[derive(Clone, Copy, PartialEq)]
enum Moves {
    Server,
    Client,
}

/// A server container on node A and a client container on node B run
/// `server` and `client` (the server's overlay address appended to the
/// client's command); once traffic flows, one end migrates along `hops`
/// (node suffixes: `c`, then maybe `a`); both must exit 0. `started` is what the server prints when traffic flows.
fn rdma_migration(
    prefix: &str,
    octet: u8,
    server: &[&str],
    client: &[&str],
    started: &str,
    (moves, hops): (Moves, &[&str]),
    volume: Option<&str>,
) -> Option<(String, String)> {
    let mut lab = Lab::new()?;
    let programs: Vec<&str> = [server, client]
        .into_iter()
        .flat_map(|c| c.iter().copied().take(3))
        .filter(|p| !p.starts_with('/') && !p.starts_with('-'))
        .collect();
    if let Some(why) = rdma_missing(&programs) {
        println!("skipped: {why}");
        return None;
    }
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b, c) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}c"),
    );
    for (i, n) in [&a, &b, &c].into_iter().enumerate() {
        let addr = format!("198.18.1.{}", octet + i as u8);
        lab.clean_node(n);
        lab.nodes.push(n.clone());
        lab.ok(&["node", "add", n, "--addr", &addr, "--mtu", "4096"]);
    }
    let srv_ip = format!("198.19.1.{octet}");
    let cli_ip = format!("198.19.1.{}", octet + 1);
    let (srv, cli) = (format!("{prefix}srv"), format!("{prefix}cli"));
    let run = |lab: &mut Lab, node: &str, name: &str, ip: &str, cmd: &[&str]| {
        lab.containers.push(name.to_string());
        let mut args = vec!["run", "--node", node, "--name", name, "--ip", ip];
        if let Some(v) = volume {
            args.extend(["--volume", v]);
        }
        args.push("--");
        args.extend_from_slice(cmd);
        lab.ok(&args);
    };
    run(&mut lab, &a, &srv, &srv_ip, server);
    std::thread::sleep(Duration::from_millis(500));
    let mut client = client.to_vec();
    client.push(&srv_ip);
    run(&mut lab, &b, &cli, &cli_ip, &client);
    lab.wait_log(&srv, started);
    std::thread::sleep(Duration::from_millis(700));
    let who = if moves == Moves::Server { &srv } else { &cli };
    for hop in hops {
        let to = format!("{prefix}{hop}");
        let out = lab.migrate(who, &to);
        assert!(out.contains("QP(s) forwarded"), "{out}");
        let ps = lab.ps(who).expect("listed");
        assert_eq!(ps["node"], to.as_str(), "{ps}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (cs, ss) = (lab.wait(&cli), lab.wait(&srv));
    let (cl, sl) = (lab.logs(&cli), lab.logs(&srv));
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    for l in [&cl, &sl] {
        assert!(!l.contains("Completion with error"), "{l}");
    }
    Some((sl, cl))
}

/// perftest's result line: size, iterations, peak, average, rate.
fn perftest_result(log: &str, size: &str) {
    assert!(
        log.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 4 && f[0] == size && f[3].parse::<f64>().is_ok_and(|bw| bw > 0.0)
        }),
        "no result line:\n{log}"
    );
}

/// perftest's command line: device, GID index 0, then `extra`, with its
/// output line-buffered.
fn perftest<'a>(prog: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    // Line-buffered: perftest's output says when traffic flows.
    let mut v = vec!["stdbuf", "-oL", prog, "-d", "rxe0", "-x", "0"];
    v.extend_from_slice(extra);
    v
}

/// The seed experiment: `ib_send_bw -n 100000 -b` (16 KiB messages) with
/// the server migrated while both directions stream.
#[test]
fn rdma_send_bw_bidirectional_server_migrates() {
    let cmd = perftest("ib_send_bw", &["-s", "16384", "-n", "100000", "-b"]);
    let Some((s, c)) = rdma_migration(
        "k6",
        61,
        &cmd,
        &cmd,
        "remote address",
        (Moves::Server, &["c"]),
        None,
    ) else {
        return;
    };
    perftest_result(&s, "16384");
    perftest_result(&c, "16384");
}

/// The seed experiment exactly: `ib_send_bw -n 100000 -b` (64 KiB), 13 GB
/// moved. `scripts/test.sh` runs the container tests with release daemons
/// (`MIGROSD=target/release/migrosd`); a debug daemon is ~20 times slower.
#[test]
fn rdma_seed_experiment_exact() {
    let cmd = perftest("ib_send_bw", &["-n", "100000", "-b"]);
    let Some((s, c)) = rdma_migration(
        "k14",
        141,
        &cmd,
        &cmd,
        "remote address",
        (Moves::Server, &["c"]),
        None,
    ) else {
        return;
    };
    perftest_result(&s, "65536");
    perftest_result(&c, "65536");
}

/// The client moves, and its RDMA process is not the container's init (a
/// shell's child): `migrate` finds it in the container's process tree.
#[test]
fn rdma_send_bw_client_migrates() {
    let cmd = perftest("ib_send_bw", &["-D", "6"]);
    let script = format!("{} \"$0\"; echo client exit $?", cmd.join(" "));
    let client = ["sh", "-c", script.as_str()];
    let Some((s, c)) = rdma_migration(
        "k7",
        71,
        &cmd,
        &client,
        "remote address",
        (Moves::Client, &["c"]),
        None,
    ) else {
        return;
    };
    perftest_result(&s, "65536");
    perftest_result(&c, "65536");
    assert!(c.contains("client exit 0"), "{c}");
}

/// `ibv_rc_pingpong -e`: completion events through a completion channel
/// (a second daemon connection the plugin restores too).
#[test]
fn rdma_rc_pingpong_events_server_migrates() {
    let cmd = [
        "stdbuf",
        "-oL",
        "ibv_rc_pingpong",
        "-d",
        "rxe0",
        "-g",
        "0",
        "-n",
        "10000",
        "-e",
    ];
    let Some((s, c)) = rdma_migration(
        "k15",
        151,
        &cmd,
        &cmd,
        "remote address",
        (Moves::Server, &["c"]),
        None,
    ) else {
        return;
    };
    for l in [&s, &c] {
        assert!(l.contains("10000 iters in"), "{l}");
    }
}

/// Four QPs, the server migrated there and back (A to C to A: onto the
/// daemon that holds their tombstones).
#[test]
fn rdma_write_bw_four_qps_there_and_back() {
    let cmd = perftest("ib_write_bw", &["-D", "8", "-q", "4"]);
    let Some((_, c)) = rdma_migration(
        "k16",
        161,
        &cmd,
        &cmd,
        "remote address",
        (Moves::Server, &["c", "a"]),
        None,
    ) else {
        return;
    };
    perftest_result(&c, "65536");
}

#[test]
fn rdma_write_bw_server_migrates() {
    let cmd = perftest("ib_write_bw", &["-D", "6"]);
    let Some((_, c)) = rdma_migration(
        "k8",
        81,
        &cmd,
        &cmd,
        "remote address",
        (Moves::Server, &["c"]),
        None,
    ) else {
        return;
    };
    perftest_result(&c, "65536");
}

#[test]
fn rdma_read_bw_server_migrates() {
    let cmd = perftest("ib_read_bw", &["-D", "6"]);
    let Some((_, c)) = rdma_migration(
        "k9",
        91,
        &cmd,
        &cmd,
        "remote address",
        (Moves::Server, &["c"]),
        None,
    ) else {
        return;
    };
    perftest_result(&c, "65536");
}

/// `migros bench --verify` (the Rust verbs API, not libibverbs) in
/// containers: every byte written checked across the migration.
#[test]
fn bench_verify_in_containers_server_migrates() {
    // A copy of this build's migros: a rebuild must not delete a binary
    // CRIU has to dump.
    let bin = tempfile::tempdir().expect("temp dir");
    std::fs::copy(MIGROS, bin.path().join("migros")).expect("copy migros");
    let vol = format!("{}:/opt/bin:ro", bin.path().display());
    let bench = [
        "/opt/bin/migros",
        "bench",
        "write-bw",
        "-d",
        "rxe0",
        "--verify",
        "-D",
        "6",
        "-s",
        "16384",
    ];
    let Some((s, c)) = rdma_migration(
        "k10",
        101,
        &bench,
        &bench,
        "connected",
        (Moves::Server, &["c"]),
        Some(&vol),
    ) else {
        return;
    };
    for l in [&s, &c] {
        assert!(l.contains("verified        : every byte"), "{l}");
    }
}

/// `--leave-running` keeps the source until the restore is done, then stops
/// it; `--pre-copy` works where the kernel tracks dirty memory and is
/// refused clearly (nothing frozen) where it does not.
#[test]
fn migrate_leave_running_and_pre_copy() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k11a", "198.18.1.111");
    lab.node("k11b", "198.18.1.112");
    lab.container(
        "k11a",
        "k11count",
        "198.19.1.111",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 60 ]; do echo n=$i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    lab.wait_log("k11count", "n=3");
    let out = lab.ok(&["migrate", "k11count", "--to", "k11b", "--leave-running"]);
    assert!(out.contains("source stopped"), "{out}");
    let tracking = Command::new("criu")
        .args(["check", "--feature", "mem_dirty_track"])
        .output()
        .map(|o| {
            o.status.success()
                && !String::from_utf8_lossy(&o.stderr).contains("OFF")
                && !String::from_utf8_lossy(&o.stdout).contains("OFF")
        })
        .unwrap_or(false);
    let pre = lab.run(&["migrate", "k11count", "--to", "k11a", "--pre-copy", "2"]);
    if tracking {
        assert!(pre.status.success(), "{pre:?}");
        let out = String::from_utf8_lossy(&pre.stdout);
        assert!(out.contains("pre-copy 2"), "{out}");
    } else {
        let err = String::from_utf8_lossy(&pre.stderr);
        assert!(err.contains("dirty tracking"), "{err}");
        assert_eq!(lab.ps("k11count").unwrap()["node"], "k11b");
    }
    assert_eq!(lab.wait("k11count"), 0, "{}", lab.logs("k11count"));
    let logs = lab.logs("k11count");
    // Every number is there (the source, left running during the restore,
    // may have printed a few the restored copy prints again), the last once.
    for i in 0..60 {
        assert!(logs.contains(&format!("n={i}\n")), "n={i} missing:\n{logs}");
    }
    assert_eq!(logs.matches("n=59\n").count(), 1, "{logs}");
}

/// A checkpoint CRIU refuses (a deleted file bigger than its ghost limit is
/// open) leaves the container running where it was, and says so.
#[test]
fn failed_checkpoint_leaves_the_container_running() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k12a", "198.18.1.121");
    lab.node("k12b", "198.18.1.122");
    let vol = tempfile::tempdir().expect("temp dir");
    let big = vol.path().join("big");
    std::fs::write(&big, vec![7u8; 4 << 20]).expect("write big file");
    let v = format!("{}:/vol", vol.path().display());
    lab.containers.push("k12ghost".into());
    lab.ok(&[
        "run",
        "--node",
        "k12a",
        "--name",
        "k12ghost",
        "--ip",
        "198.19.1.121",
        "--volume",
        &v,
        "--",
        "sh",
        "-c",
        "exec 3</vol/big; echo ready; sleep 600",
    ]);
    lab.wait_log("k12ghost", "ready");
    std::fs::remove_file(&big).expect("remove big file");
    let err = lab.fails(&["migrate", "k12ghost", "--to", "k12b"]);
    assert!(err.contains("checkpoint failed"), "{err}");
    assert!(err.contains("still running on node k12a"), "{err}");
    let ps = lab.ps("k12ghost").expect("listed");
    assert_eq!(
        (ps["status"].as_str(), ps["node"].as_str()),
        (Some("running"), Some("k12a")),
        "{ps}"
    );
    lab.ok(&["rm", "-f", "k12ghost"]);
}

/// A restore that fails after a good checkpoint (a damaged image, by fault
/// injection) keeps the image and says where; the container is "lost"
/// until removed.
#[test]
fn failed_restore_keeps_the_image() {
    let Some(mut lab) = Lab::new() else { return };
    lab.node("k13a", "198.18.1.131");
    lab.node("k13b", "198.18.1.132");
    lab.container("k13a", "k13lost", "198.19.1.131", &["sleep", "600"]);
    let child = Command::new(MIGROS)
        .args(["migrate", "k13lost", "--to", "k13b"])
        .env("MIGROS_FAULT", "restore")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn migros");
    let out = wait_bounded(child, &["migrate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("restore on node k13b failed"), "{err}");
    let kept = err
        .split("the image is kept in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no image path in {err}"));
    assert!(Path::new(kept).join("final/pages-1.img").exists(), "{kept}");
    let ps = lab.ps("k13lost").expect("listed");
    assert_eq!(ps["status"], "lost", "{ps}");
    assert!(lab.run(&["wait", "k13lost"]).status.code() != Some(0));
    lab.ok(&["rm", "-f", "k13lost"]);
    assert!(!Path::new(kept).exists());
}
