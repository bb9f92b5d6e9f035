//! End-to-end tests of nodes, containers and their live migration:
//! `migros node …`, `run`, `ps`, `logs`, `wait`, `rm`, `migrate`.
//!
//! They need root (network namespaces, runc, CRIU), `runc` and `criu` on
//! PATH (`scripts/setup-criu.sh`) and a built `migrosd` next to `migros`;
//! the RDMA ones also the drop-in libibverbs (`scripts/ibverbs.sh`), the
//! CRIU plugin and perftest. Without them they skip, saying why, or fail
//! with `MIGROS_TESTS_REQUIRED=1`. Each test uses its own nodes
//! (198.18.1.x) and containers (198.19.1.x), removed at the end.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{node_qps, node_stat, wait_traffic, NodeWatch, Seen, MIGROS};
use migros_test_support::daemon::script_once;
use migros_test_support::perftest;
use migros_test_support::require::{file, program, require, root, Check};
use migros_test_support::wait::output_within;
use serde_json::Value;

/// Upper bound of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// The nodes and containers of one test, removed when dropped.
struct Lab {
    nodes: Vec<String>,
    containers: Vec<String>,
}

impl Lab {
    /// What every container test needs.
    fn checks() -> Vec<Check> {
        let daemon = Path::new(MIGROS).with_file_name("migrosd");
        let mut v = vec![root(), file(&daemon, "cargo build -p migrosd")];
        for p in ["runc", "criu"] {
            v.push(program(p, "scripts/setup-criu.sh installs runc and criu"));
        }
        v.push(program("ip", "iproute2"));
        v.push(program("python3", "the TCP tests' programs"));
        v
    }

    /// `None` when the test skips (see `migros_test_support::require`).
    fn new() -> Option<Lab> {
        require(Lab::checks()).then(Lab::empty)
    }

    /// Like [`Lab::new`], for a test running RDMA `programs` in containers:
    /// the drop-in libibverbs built (scripts/ibverbs.sh), the CRIU plugin
    /// installed and the programs on PATH too.
    fn rdma(programs: &[&str]) -> Option<Lab> {
        let mut checks = Lab::checks();
        if checks.iter().all(Result::is_ok) {
            checks.push(script_once("ibverbs.sh"));
            let lib = Path::new(MIGROS)
                .parent()
                .and_then(Path::parent)
                .map(|t| t.join("ibverbs/libibverbs.so.1"))
                .expect("target dir");
            checks.push(file(lib, "scripts/ibverbs.sh builds it"));
            checks.push(file(
                "/usr/lib/criu/migros_criu.so",
                "scripts/install-criu-plugin.sh installs the CRIU plugin",
            ));
            for p in programs {
                checks.push(program(p, "perftest and ibverbs-utils: scripts/setup.sh"));
            }
        }
        require(checks).then(Lab::empty)
    }

    fn empty() -> Lab {
        Lab {
            nodes: Vec::new(),
            containers: Vec::new(),
        }
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

/// From inside a container, as its root: the admin socket is nowhere to
/// be found or reached (no shutdown, pause or checkpoint of anyone), the
/// socket directory is read-only (no replacing the device's socket), and
/// the client socket still serves the device (issue 14, item 3).
#[test]
fn a_container_reaches_the_client_socket_but_no_admin_socket() {
    let Some(mut lab) = Lab::rdma(&["ibv_devinfo"]) else {
        return;
    };
    lab.node("k9a", "198.18.1.91");
    let probe = "\
import os, socket, stat
found = []
for root, dirs, files in os.walk('/'):
    if root in ('/proc', '/sys', '/dev'):
        dirs[:] = []
        continue
    for f in files + dirs:
        p = os.path.join(root, f)
        try:
            if stat.S_ISSOCK(os.lstat(p).st_mode):
                found.append(p)
        except OSError:
            pass
print('SOCKETS', sorted(found))
for p in ('/run/migros/rxe0.admin.sock', '/run/migros.admin/rxe0.sock'):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(p)
        print('ADMIN REACHED', p)
    except OSError as e:
        print('ADMIN UNREACHABLE', p, e.errno)
try:
    os.rename('/run/migros/rxe0.sock', '/run/migros/x')
    print('SOCKET REPLACED')
except OSError as e:
    print('SOCKET KEPT', e.errno)
";
    lab.containers.push("k9probe".into());
    let script = format!("python3 -c \"{probe}\"; ibv_devinfo -d rxe0");
    lab.ok(&[
        "run",
        "--node",
        "k9a",
        "--name",
        "k9probe",
        "--ip",
        "198.19.1.91",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(lab.wait("k9probe"), 0, "{}", lab.logs("k9probe"));
    let logs = lab.logs("k9probe");
    for want in [
        "SOCKETS ['/run/migros/rxe0.sock']",
        "ADMIN UNREACHABLE /run/migros/rxe0.admin.sock 2",
        "ADMIN UNREACHABLE /run/migros.admin/rxe0.sock 2",
        "SOCKET KEPT 30",
        "hca_id:\trxe0",
        "PORT_ACTIVE",
    ] {
        assert!(logs.contains(want), "{want:?} missing from\n{logs}");
    }
    assert!(
        !logs.contains("ADMIN REACHED") && !logs.contains("SOCKET REPLACED"),
        "{logs}"
    );
    // The node's daemon still runs.
    let list = lab.json(&["node", "list", "--json"]);
    let e = list
        .as_array()
        .and_then(|l| l.iter().find(|e| e["name"] == "k9a"))
        .unwrap_or_else(|| panic!("k9a not listed: {list}"));
    assert_eq!(e["state"], "running", "{e}");
}

fn wait_bounded(child: Child, what: &[&str]) -> Output {
    output_within(child, COMMAND_TIMEOUT, &format!("migros {what:?}"))
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
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");

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

/// Which end moves.
#[derive(Clone, Copy, PartialEq)]
enum Moves {
    Server,
    Client,
}

/// An RDMA run across containers: a server container on node A, a client
/// container on node B running `server` and `client` (the server's
/// overlay address appended to the client's command, or node A's device
/// address with `server_at_node`); once RDMA traffic flows, `moves`
/// migrates along `hops` (node suffixes: `c`, then maybe `a`). Both must
/// exit 0 without completion errors.
struct RdmaRun<'a> {
    prefix: &'a str,
    octet: u8,
    server: &'a [&'a str],
    client: &'a [&'a str],
    moves: Moves,
    hops: &'a [&'a str],
    volume: Option<&'a str>,
    /// The client names the server by node A's device address: an RDMA CM
    /// connection is made between daemons, and a container's own address
    /// has none (the REQ would land in the container's network namespace).
    server_at_node: bool,
}

/// What an [`RdmaRun`] saw.
struct Ran {
    /// The programs' output.
    srv: String,
    cli: String,
    /// The QPs on the moving end's node just before its first migration.
    before: Vec<Value>,
    /// The node of the end that stayed, and the first hop's destination,
    /// sampled while the programs ran.
    partner: Seen,
    dest: Seen,
    /// The destination node's device counters at the end.
    dest_counters: Value,
    /// The first hop's destination node's address.
    dest_addr: String,
}

impl<'a> RdmaRun<'a> {
    /// The same command on both ends; the server moves from A to C.
    fn server_to_c(prefix: &'a str, octet: u8, cmd: &'a [&'a str]) -> RdmaRun<'a> {
        RdmaRun {
            prefix,
            octet,
            server: cmd,
            client: cmd,
            moves: Moves::Server,
            hops: &["c"],
            volume: None,
            server_at_node: false,
        }
    }

    fn run(&self) -> Option<Ran> {
        // The programs the containers run (a path is part of the test).
        let programs: Vec<&str> = [self.server, self.client]
            .into_iter()
            .filter_map(|c| c.first().copied())
            .filter(|p| !p.starts_with('/'))
            .collect();
        let mut lab = Lab::rdma(&programs)?;
        let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.prefix;
        let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
        let addr = |i: u8| format!("198.18.1.{}", self.octet + i);
        for (i, n) in [&a, &b, &c].into_iter().enumerate() {
            lab.clean_node(n);
            lab.nodes.push(n.clone());
            lab.ok(&["node", "add", n, "--addr", &addr(i as u8), "--mtu", "4096"]);
        }
        let srv_ip = format!("198.19.1.{}", self.octet);
        let cli_ip = format!("198.19.1.{}", self.octet + 1);
        let (srv, cli) = (format!("{p}srv"), format!("{p}cli"));
        let volume = self.volume;
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
        run(&mut lab, &a, &srv, &srv_ip, self.server);
        std::thread::sleep(Duration::from_millis(500));
        let mut client = self.client.to_vec();
        let srv_node_addr = addr(0);
        client.push(if self.server_at_node {
            &srv_node_addr
        } else {
            &srv_ip
        });
        run(&mut lab, &b, &cli, &cli_ip, &client);
        // The daemon, not the program's (buffered) output, says when RDMA
        // traffic flows.
        wait_traffic(&a, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(700));
        let (who, from, partner_node) = match self.moves {
            Moves::Server => (&srv, &a, &b),
            Moves::Client => (&cli, &b, &a),
        };
        let partner = NodeWatch::start(partner_node);
        let dest = NodeWatch::start(&c);
        let before = node_qps(from);
        for hop in self.hops {
            let to = format!("{p}{hop}");
            let out = lab.migrate(who, &to);
            assert!(out.contains("QP(s) forwarded"), "{out}");
            let ps = lab.ps(who).expect("listed");
            assert_eq!(ps["node"], to.as_str(), "{ps}");
            std::thread::sleep(Duration::from_millis(300));
        }
        let (cs, ss) = (lab.wait(&cli), lab.wait(&srv));
        let (partner, dest) = (partner.finish(), dest.finish());
        let (cl, sl) = (lab.logs(&cli), lab.logs(&srv));
        assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
        for l in [&cl, &sl] {
            assert!(!l.contains("Completion with error"), "{l}");
            assert!(!l.contains("Couldn't"), "{l}");
        }
        Some(Ran {
            srv: sl,
            cli: cl,
            before,
            partner,
            dest,
            dest_counters: node_stat(&c)["counters"].clone(),
            dest_addr: addr(2),
        })
    }
}

impl Ran {
    /// The end that stayed was paused by the migration (its requests got
    /// the pause NAK) and resumed.
    fn assert_partner_paused_and_resumed(&self) {
        assert!(
            self.partner.pauses >= 1 && self.partner.resumes >= 1,
            "the partner's QP saw pauses {} resumes {}",
            self.partner.pauses,
            self.partner.resumes
        );
    }

    /// The end that stayed heard the moved end's RESUME (an end that sent
    /// nothing while the other was away, a receiver or a ping-pong
    /// waiting for its answer, is never paused: nothing of it reached the
    /// tombstone).
    fn assert_partner_resumed(&self) {
        assert!(
            self.partner.resumes >= 1,
            "the partner's QP saw pauses {} resumes {}",
            self.partner.pauses,
            self.partner.resumes
        );
    }

    /// The destination's daemon served the moved QPs (same QPNs), with
    /// traffic, and counted it.
    fn assert_destination_served(&self) {
        assert!(!self.before.is_empty(), "no QP before the migration");
        for q in &self.before {
            let qpn = q["qpn"].as_u64().expect("qpn");
            let there = self.dest.qps.get(&qpn).unwrap_or_else(|| {
                panic!(
                    "qp {qpn:#x} never showed on the destination: {:?}",
                    self.dest.qps
                )
            });
            let c = &there["counters"];
            assert!(
                c["rx_packets"].as_u64().unwrap_or(0) > 0,
                "qp {qpn:#x} received nothing on the destination: {there}"
            );
        }
        for k in ["rx_packets", "tx_packets"] {
            assert!(
                self.dest_counters[k].as_u64().unwrap_or(0) > 0,
                "destination daemon {k}: {}",
                self.dest_counters
            );
        }
    }
}

/// perftest's command line: device, GID index 0, then `extra`.
fn perftest<'a>(prog: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![prog, "-d", "rxe0", "-x", "0"];
    v.extend_from_slice(extra);
    v
}

/// `ib_send_bw -n 100000 -b` with 16 KiB messages, the server migrated
/// while both directions stream.
#[test]
fn rdma_send_bw_bidirectional_server_migrates() {
    let cmd = perftest("ib_send_bw", &["-s", "16384", "-n", "100000", "-b"]);
    let Some(r) = RdmaRun::server_to_c("k6", 61, &cmd).run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 16384, Some(100000));
    perftest::assert_bw("client", &r.cli, 16384, Some(100000));
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
}

/// perftest's RDMA CM mode (`-R`: both its own exchange and the test's
/// connection are made with librdmacm, no TCP) in the seed experiment's
/// shape: `ib_send_bw -R -b` with 16 KiB messages, the server migrated
/// from A to C while both directions stream. The server's librdmacm
/// connection (its CM ids, listener and connections, its event channel's
/// socket) moves with it; at the end the client's disconnect (DREQ) goes
/// to node A, whose tombstone forwards it to C, and both ends finish with
/// their result lines.
#[test]
fn rdma_cm_send_bw_bidirectional_server_migrates() {
    let cmd = perftest("ib_send_bw", &["-R", "-s", "16384", "-n", "100000", "-b"]);
    let Some(r) = (RdmaRun {
        prefix: "k21",
        octet: 211,
        server: &cmd,
        client: &cmd,
        moves: Moves::Server,
        hops: &["c"],
        volume: None,
        server_at_node: true,
    })
    .run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 16384, Some(100000));
    perftest::assert_bw("client", &r.cli, 16384, Some(100000));
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
}

/// The seed's command, exactly: `ib_send_bw -d rxe0 -n 100000 -b`
/// (64 KiB, 13 GB moved), the server migrated from A to C while both
/// directions stream. Checked as the Docker seed test checks it: both
/// result lines with 100000 iterations, the client's QP paused and
/// resumed, node C's daemon serving the server's QP (its QPN, its
/// traffic) and counting packets. `scripts/test.sh` runs the container
/// tests with release daemons (`MIGROSD=target/release/migrosd`); a debug
/// daemon is ~20 times slower.
#[test]
fn rdma_seed_experiment_exact() {
    const SEED: &[&str] = &["ib_send_bw", "-d", "rxe0", "-n", "100000", "-b"];
    let Some(r) = RdmaRun::server_to_c("k14", 141, SEED).run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 65536, Some(100000));
    perftest::assert_bw("client", &r.cli, 65536, Some(100000));
    assert!(r.srv.contains("Send Bidirectional BW Test"), "{}", r.srv);
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
}

/// One-way `ib_send_bw`: the server only receives, and perftest leaves its
/// QP in RTR. The server migrates from RTR: it must be in RTR when it
/// moves, be restored in RTR on node C, and its RESUME (sent from RTR)
/// must move the client to node C.
#[test]
fn rdma_send_bw_one_way_server_migrates_from_rtr() {
    let cmd = perftest("ib_send_bw", &["-D", "6"]);
    let Some(r) = RdmaRun::server_to_c("k17", 171, &cmd).run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 65536, None);
    perftest::assert_bw("client", &r.cli, 65536, None);
    assert!(!r.before.is_empty());
    for q in &r.before {
        assert_eq!(q["state"], "Rtr", "the server's QP when it moved: {q}");
    }
    for q in r.dest.qps.values() {
        assert_eq!(
            q["state"], "Rtr",
            "restored in RTR, never moved to RTS: {q}"
        );
    }
    r.assert_destination_served();
    r.assert_partner_paused_and_resumed();
    let client_qp = r.partner.qps.values().last().expect("the client's QP");
    assert_eq!(client_qp["state"], "Rts", "{client_qp}");
    assert_eq!(
        client_qp["dest"][0], r.dest_addr,
        "the RESUME from RTR moved the client to node C: {client_qp}"
    );
}

/// The client moves, and its RDMA process is not the container's init (a
/// shell's child): `migrate` finds it in the container's process tree.
#[test]
fn rdma_send_bw_client_migrates() {
    let cmd = perftest("ib_send_bw", &["-D", "6"]);
    let script = format!("{} \"$0\"; echo client exit $?", cmd.join(" "));
    let client = ["sh", "-c", script.as_str()];
    let Some(r) = (RdmaRun {
        prefix: "k7",
        octet: 71,
        server: &cmd,
        client: &client,
        moves: Moves::Client,
        hops: &["c"],
        volume: None,
        server_at_node: false,
    })
    .run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 65536, None);
    perftest::assert_bw("client", &r.cli, 65536, None);
    assert!(r.cli.contains("client exit 0"), "{}", r.cli);
    r.assert_partner_resumed();
    r.assert_destination_served();
}

/// `ibv_rc_pingpong -e`: completion events through a completion channel
/// (a second daemon connection the plugin restores too).
#[test]
fn rdma_rc_pingpong_events_server_migrates() {
    let cmd = [
        "ibv_rc_pingpong",
        "-d",
        "rxe0",
        "-g",
        "0",
        "-n",
        "10000",
        "-e",
    ];
    let Some(r) = RdmaRun::server_to_c("k15", 151, &cmd).run() else {
        return;
    };
    for l in [&r.srv, &r.cli] {
        assert!(l.contains("10000 iters in"), "{l}");
    }
    r.assert_partner_resumed();
    r.assert_destination_served();
}

/// Four QPs, the server migrated there and back (A to C to A: onto the
/// daemon that holds their tombstones).
#[test]
fn rdma_write_bw_four_qps_there_and_back() {
    let cmd = perftest("ib_write_bw", &["-D", "8", "-q", "4"]);
    let Some(r) = (RdmaRun {
        prefix: "k16",
        octet: 161,
        server: &cmd,
        client: &cmd,
        moves: Moves::Server,
        hops: &["c", "a"],
        volume: None,
        server_at_node: false,
    })
    .run() else {
        return;
    };
    perftest::assert_bw("client", &r.cli, 65536, None);
    assert_eq!(r.before.len(), 4, "{:?}", r.before);
    r.assert_partner_paused_and_resumed();
    assert!(r.partner.pauses >= 2, "paused by each of the two moves");
    r.assert_destination_served();
}

#[test]
fn rdma_write_bw_server_migrates() {
    let cmd = perftest("ib_write_bw", &["-D", "6"]);
    let Some(r) = RdmaRun::server_to_c("k8", 81, &cmd).run() else {
        return;
    };
    perftest::assert_bw("client", &r.cli, 65536, None);
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
}

#[test]
fn rdma_read_bw_server_migrates() {
    let cmd = perftest("ib_read_bw", &["-D", "6"]);
    let Some(r) = RdmaRun::server_to_c("k9", 91, &cmd).run() else {
        return;
    };
    perftest::assert_bw("client", &r.cli, 65536, None);
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
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
    let Some(r) = (RdmaRun {
        prefix: "k10",
        octet: 101,
        server: &bench,
        client: &bench,
        moves: Moves::Server,
        hops: &["c"],
        volume: Some(&vol),
        server_at_node: false,
    })
    .run() else {
        return;
    };
    for l in [&r.srv, &r.cli] {
        assert!(l.contains("verified        : every byte"), "{l}");
    }
    // The verifying writer waits for the server's checks of its batches:
    // it may have nothing in flight while the server is away.
    r.assert_partner_resumed();
    r.assert_destination_served();
}

/// Real checkpoints of an RDMA container that fail half-way, by a failure
/// injected into the CRIU plugin (`MIGROS_CRIU_FAIL`, test only: the
/// environment of `migros migrate` reaches CRIU through runc): first in
/// CHECKPOINT_DEVICES (the daemon has paused and checkpointed the QPs),
/// then in DUMP_UNIX_SK (the plugin has claimed the daemon sockets). Each
/// time the container was frozen and its RDMA state taken; each time
/// `migrate` says the checkpoint failed and the container still runs on
/// node A; the client's QP was paused and resumed by each rollback; and
/// the benchmark finishes with its result line on both ends.
#[test]
fn rdma_failed_checkpoints_roll_back_and_the_benchmark_finishes() {
    let cmd = perftest("ib_send_bw", &["-D", "12", "-b"]);
    let Some(mut lab) = Lab::rdma(&["ib_send_bw"]) else {
        return;
    };
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b, c) = ("k18a", "k18b", "k18c");
    for (n, addr) in [
        (a, "198.18.1.181"),
        (b, "198.18.1.182"),
        (c, "198.18.1.183"),
    ] {
        lab.clean_node(n);
        lab.nodes.push(n.to_string());
        lab.ok(&["node", "add", n, "--addr", addr, "--mtu", "4096"]);
    }
    lab.container(a, "k18srv", "198.19.1.181", &cmd);
    std::thread::sleep(Duration::from_millis(500));
    let mut client = cmd.clone();
    client.push("198.19.1.181");
    lab.container(b, "k18cli", "198.19.1.182", &client);
    wait_traffic(a, Duration::from_secs(60));
    let watch = NodeWatch::start(b);
    let qps_on_a = node_qps(a);
    assert_eq!(qps_on_a.len(), 1, "{qps_on_a:?}");
    for hook in ["checkpoint", "dump_unix_sk"] {
        std::thread::sleep(Duration::from_millis(700));
        let child = Command::new(MIGROS)
            .args(["migrate", "k18srv", "--to", c])
            .env("MIGROS_CRIU_FAIL", hook)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migros");
        let out = wait_bounded(child, &["migrate"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{hook}: the checkpoint must fail");
        assert!(err.contains("checkpoint failed"), "{hook}: {err}");
        assert!(err.contains("still running on node k18a"), "{hook}: {err}");
        // CRIU's log (named by migrate) shows the plugin's injected failure.
        let log = err
            .split("CRIU's log: ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{hook}: no CRIU log named: {err}"));
        let log = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{log}: {e}"));
        assert!(
            log.contains(&format!("{hook}: failure injected")),
            "{hook}: the plugin's injected failure is what failed the dump:\n{log}"
        );
        let ps = lab.ps("k18srv").expect("listed");
        assert_eq!(
            (ps["status"].as_str(), ps["node"].as_str()),
            (Some("running"), Some(a)),
            "{ps}"
        );
        // The QP runs on where it was; nothing reached node C.
        let now: Vec<_> = node_qps(a).iter().map(|q| q["qpn"].clone()).collect();
        assert_eq!(now, [qps_on_a[0]["qpn"].clone()], "{hook}");
        assert!(node_qps(c).is_empty(), "{hook}");
    }
    let (cs, ss) = (lab.wait("k18cli"), lab.wait("k18srv"));
    let seen = watch.finish();
    let (cl, sl) = (lab.logs("k18cli"), lab.logs("k18srv"));
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    perftest::assert_bw("server", &sl, 65536, None);
    perftest::assert_bw("client", &cl, 65536, None);
    for l in [&cl, &sl] {
        assert!(!l.contains("Completion with error"), "{l}");
    }
    assert!(
        seen.pauses >= 2 && seen.resumes >= 2,
        "each failed checkpoint paused the client's QP and its rollback resumed it: \
         pauses {} resumes {}",
        seen.pauses,
        seen.resumes
    );
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
