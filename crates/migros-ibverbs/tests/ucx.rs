//! Debian's UCX (1.13, ucx-utils and libucx0) on two migros devices,
//! through target/ibverbs: `ucx_info -d` lists the verbs transports
//! (rc_verbs, ud_verbs) on the migros device and none of the mlx5 ones,
//! and `ucx_perftest` runs tag latency and bandwidth and put/get bandwidth
//! over rc_verbs and ud_verbs between the devices, each next to the same
//! test over UCX's tcp transport on the loopback interface in the same
//! run. Every run must end with its `Final:` row; the test prints the
//! table (scripts/figures-ucx.sh runs it for the figures). Needs root and
//! the UCX packages (scripts/setup.sh installs them).

mod common;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{check, ready, Net};
use migros_test_support::require::file;

const A: (&str, &str) = ("ucxA", "127.0.0.175");
const B: (&str, &str) = ("ucxB", "127.0.0.176");
/// The `ucx_info` test's own devices: the two tests run in parallel, and
/// daemons of the same name and address would collide.
const INFO_A: (&str, &str) = ("ucxC", "127.0.0.179");
const INFO_B: (&str, &str) = ("ucxD", "127.0.0.180");
/// The port of ucx_perftest's own TCP exchange (its default is 13337).
const PORT: &str = "18675";

/// The tests, each with its message size and iterations: small messages
/// for latency, 64 KiB for bandwidth (several MTU-sized packets each, so
/// UD fragments and RC segments).
const TESTS: &[(&str, &str, &str)] = &[
    ("tag_lat", "8", "2000"),
    ("tag_bw", "65536", "400"),
    ("ucp_put_bw", "65536", "400"),
    ("ucp_get", "65536", "400"),
];

/// `(transport, UCX_TLS, device of the server, device of the client)`.
/// UCP connects an RC endpoint by sending its address over a datagram
/// transport first: rc_verbs alone fails with "no auxiliary transport",
/// so ud_verbs is allowed as `:aux` (wire-up only; UCX's `rc_v` alias).
fn transports() -> [(&'static str, &'static str, String, String); 3] {
    [
        (
            "rc_verbs",
            "rc_verbs,ud_verbs:aux",
            format!("{}:1", A.0),
            format!("{}:1", B.0),
        ),
        (
            "ud_verbs",
            "ud_verbs",
            format!("{}:1", A.0),
            format!("{}:1", B.0),
        ),
        ("tcp", "tcp", "lo".into(), "lo".into()),
    ]
}

fn ucx_ready() -> Option<std::path::PathBuf> {
    ready(
        &["ucx_info", "ucx_perftest"],
        vec![file(
            "/usr/lib/x86_64-linux-gnu/ucx/libuct_ib.so.0",
            "libucx0 (UCX's InfiniBand transports): scripts/setup.sh installs it",
        )],
    )
}

/// A UCX program on `net` limited to transport `tls` on `device`.
fn ucx(net: &Net, args: &[&str], tls: &str, device: &str) -> Command {
    let mut c = net.cmd(args);
    c.env("UCX_TLS", tls)
        .env("UCX_NET_DEVICES", device)
        // UCX warns on stderr when it cannot find a device's NUMA node or
        // PCI bus (there is none); keep the logs to what matters.
        .env("UCX_LOG_LEVEL", "error");
    c
}

#[test]
fn ucx_info_lists_the_verbs_transports() {
    let Some(bin) = ucx_ready() else { return };
    let net = Net::start(&bin, [INFO_A, INFO_B], &[]);
    let out = net.cmd(&["ucx_info", "-d"]).output().expect("run ucx_info");
    let info = check(&["ucx_info", "-d"], &out);
    let dev = format!("Device: {}:1", INFO_A.0);
    // (transport, device) pairs in the order ucx_info prints them.
    let mut pairs = Vec::new();
    let mut tl = "";
    for line in info.lines() {
        let l = line.trim_start_matches(['#', ' ']);
        if let Some(t) = l.strip_prefix("Transport: ") {
            tl = t.trim();
        } else if l.starts_with("Device: ") {
            pairs.push((tl.to_string(), l.trim().to_string()));
        }
    }
    for want in ["rc_verbs", "ud_verbs"] {
        assert!(
            pairs.iter().any(|(t, d)| t == want && *d == dev),
            "no {want} on {dev} in\n{info}"
        );
    }
    for (t, d) in &pairs {
        assert!(
            !t.contains("mlx5"),
            "{t} on {d}: the stub libmlx5 must hide the mlx5 transports\n{info}"
        );
    }
    eprintln!("ucx_info -d:");
    for (t, d) in pairs.iter().filter(|(_, d)| d.contains("ucx")) {
        eprintln!("  {t:<10} {d}");
    }
}

/// The figures of a `Final:` row of ucx_perftest: iterations, then
/// latency (typical, average, overall; µs), bandwidth (average, overall;
/// MB/s), message rate (average, overall; msg/s).
#[derive(Debug)]
struct Final {
    latency_avg_us: f64,
    bandwidth_mb_s: f64,
    msg_rate: f64,
}

fn final_row(out: &str) -> Option<Final> {
    let line = out.lines().find(|l| l.contains("Final:"))?;
    let nums: Vec<f64> = line
        .split(|c: char| c.is_whitespace() || c == '|')
        .filter_map(|w| w.parse().ok())
        .collect();
    // iterations, typical, avg, overall, bw avg, bw overall, rate avg, rate overall
    (nums.len() >= 8).then(|| Final {
        latency_avg_us: nums[2],
        bandwidth_mb_s: nums[5],
        msg_rate: nums[7],
    })
}

#[test]
fn ucx_perftest_over_rc_ud_and_tcp() {
    let Some(bin) = ucx_ready() else { return };
    let net = Net::start(&bin, [A, B], &[]);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<10} {:<11} {:>7} {:>12} {:>12} {:>12}",
        "transport", "test", "bytes", "lat avg us", "bw MB/s", "msg/s"
    );
    let mut failures = Vec::new();
    for (test, size, iters) in TESTS {
        for (name, tls, srv_dev, cli_dev) in transports() {
            let base = [
                "ucx_perftest",
                "-t",
                test,
                "-s",
                size,
                "-n",
                iters,
                "-p",
                PORT,
            ];
            let server = ucx(&net, &base, tls, &srv_dev)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ucx_perftest server");
            std::thread::sleep(Duration::from_millis(700));
            let mut client_args = vec!["ucx_perftest", "127.0.0.1"];
            client_args.extend_from_slice(&base[1..]);
            let client = ucx(&net, &client_args, tls, &cli_dev)
                .output()
                .expect("run ucx_perftest client");
            let server = server.wait_with_output().expect("server");
            let c_out = String::from_utf8_lossy(&client.stdout).into_owned();
            let ok = client.status.success() && server.status.success();
            match final_row(&c_out).filter(|_| ok) {
                Some(f) => {
                    let _ = writeln!(
                        table,
                        "{name:<10} {test:<11} {size:>7} {:>12.2} {:>12.2} {:>12.0}",
                        f.latency_avg_us, f.bandwidth_mb_s, f.msg_rate
                    );
                }
                None => failures.push(format!(
                    "{name} {test}: client {} server {}\n--- client\n{c_out}{}\n--- server\n{}{}",
                    client.status,
                    server.status,
                    String::from_utf8_lossy(&client.stderr),
                    String::from_utf8_lossy(&server.stdout),
                    String::from_utf8_lossy(&server.stderr),
                )),
            }
        }
    }
    eprintln!(
        "ucx_perftest, {} and {} (migros) and lo (tcp):\n{table}",
        A.0, B.0
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
