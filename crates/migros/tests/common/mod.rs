//! What the tests of the `migros` command (cli, runc, Docker, the multi-host
//! lab) share: running commands with a bound, and watching a node's daemon
//! while a test runs.

#![allow(dead_code)] // each test file uses a part

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use migros_test_support::wait::output_within;
use serde_json::Value;

pub const MIGROS: &str = env!("CARGO_BIN_EXE_migros");

/// Runs `program args…` to completion, killed (and the test failed) after `limit`.
pub fn run_within(program: &str, args: &[&str], limit: Duration) -> Output {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    output_within(child, limit, &format!("{program} {args:?}"))
}

/// The stdout of `program args…` that ran as `out`, which must have
/// succeeded (else the test fails with both streams).
pub fn success_stdout(program: &str, args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `migros stat --json` of node `node`'s daemon: `{device, counters, qps}`.
pub fn node_stat(node: &str) -> Value {
    let dir = format!("/run/migros/nodes/{node}");
    let out = run_within(
        MIGROS,
        &["--socket-dir", &dir, "stat", "--json"],
        Duration::from_secs(30),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v[0].clone()
}

/// The QPs node `node`'s daemon serves now (`migros stat`'s entries:
/// qpn, pid, state, dest, counters).
pub fn node_qps(node: &str) -> Vec<Value> {
    node_stat(node)["qps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What a [`NodeWatch`] saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The last sample of each QP (by QPN) the daemon served.
    pub qps: BTreeMap<u64, Value>,
    /// The largest pause and resume counters of any of its QPs.
    pub pauses: u64,
    pub resumes: u64,
}

/// Samples a node's daemon every 100 ms while a test runs: a program's
/// QPs are gone once it exits, so their counters are read while it runs.
pub struct NodeWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeWatch {
    pub fn start(node: &str) -> NodeWatch {
        let node = node.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for q in node_qps(&node) {
                    let c = &q["counters"];
                    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                    g.pauses = g.pauses.max(c["pauses"].as_u64().unwrap_or(0));
                    g.resumes = g.resumes.max(c["resumes"].as_u64().unwrap_or(0));
                    if let Some(qpn) = q["qpn"].as_u64() {
                        g.qps.insert(qpn, q.clone());
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        NodeWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Waits until node `node`'s daemon carries RDMA traffic: one of its QPs
/// sent and received packets (perftest's own output is block-buffered
/// when it is not a terminal: the daemon says when traffic flows).
pub fn wait_traffic(node: &str, limit: Duration) {
    migros_test_support::wait_until(&format!("RDMA traffic on node {node}"), limit, || {
        node_qps(node).iter().any(|q| {
            let c = &q["counters"];
            c["rx_packets"].as_u64().unwrap_or(0) > 0 && c["tx_packets"].as_u64().unwrap_or(0) > 0
        })
    });
}
