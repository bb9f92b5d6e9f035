//! End-to-end tests of nodes, containers and their live migration:
//! `migros node …`, `run`, `ps`, `logs`, `wait`, `rm`, `migrate`.
//!
//! They need root (network namespaces, runc, CRIU), `runc` and `criu` on
//! PATH (`scripts/setup-criu.sh`) and a built `migrosd` next to `migros`;
//! the RDMA ones also the drop-in libibverbs (`scripts/ibverbs.sh`), the
//! CRIU plugin and perftest. Without them they skip, saying why, or fail
//! with `MIGROS_TESTS_REQUIRED=1`. Each test uses its own nodes
//! (198.18.1.x) and containers (198.19.1.x), removed at the end.

#[path = "../common/mod.rs"]
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
        let mut checks = Lab::rdma_checks();
        if checks.iter().all(Result::is_ok) {
            for p in programs {
                checks.push(program(p, "perftest and ibverbs-utils: scripts/setup.sh"));
            }
        }
        require(checks).then(Lab::empty)
    }

    /// [`Lab::checks`], then (when those pass) what every RDMA container
    /// test needs: the drop-in libibverbs and the CRIU plugin.
    fn rdma_checks() -> Vec<Check> {
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
        }
        checks
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
        common::success_stdout("migros", args, &self.run(args))
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

mod mpi;
mod nodes_and_containers;
mod rdma;
mod sysfs;
mod tcp_and_failures;

fn wait_bounded(child: Child, what: &[&str]) -> Output {
    output_within(child, COMMAND_TIMEOUT, &format!("migros {what:?}"))
}
