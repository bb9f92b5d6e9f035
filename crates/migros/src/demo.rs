//! `migros demo`: the seed experiment of MigrOS on one machine, end to end.
//!
//! Three nodes (`demo-a`, `demo-b`, `demo-c`: network namespaces with a
//! migrosd each, device `rxe0`); the unmodified `ib_send_bw -d rxe0 -b -n N`
//! server runs in container `cont-moving` on node a, its client in
//! `cont-static` on node b. Once a share of the traffic has gone through,
//! the server's container is live-migrated to node c (`migros migrate`:
//! runc + CRIU + the migros plugin). Both programs must finish normally.
//!
//! While it runs, the demo samples node b's per-QP counters (admin `Stats`)
//! every [`SAMPLE`], shows a progress line, and at the end writes the
//! client's bandwidth over time as an SVG with the pause its QP saw
//! (counter `last_pause_nanos`) marked.
//!
//! The demo drives the same `migros` subcommands a user types (it runs this
//! executable), so what it shows is what they get.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use migros_proto::admin::QpStats;

use crate::admin;
use crate::plot::{self, Sample, Span};

/// How often node b's counters are read (the progress line shows every
/// tenth reading).
const SAMPLE: Duration = Duration::from_millis(20);
const DEVICE: &str = "rxe0";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Iterations of ib_send_bw (each side sends this many 64 KiB messages).
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub iters: u64,
    /// Migrate once this share of the expected bytes went through.
    #[arg(long, default_value_t = 0.3)]
    pub migrate_at: f64,
    /// Where to write the bandwidth plot.
    #[arg(long, default_value = "migros-demo.svg")]
    pub out: PathBuf,
    /// Leave the nodes and containers in place afterwards.
    #[arg(long)]
    pub keep: bool,
    /// The seed's own set-up: three simulated hosts (`migros host`) in a
    /// Docker Swarm, the overlay network rdma-net, the seed's perftest
    /// image and scripts (`crate::swarm`).
    #[arg(long)]
    pub swarm: bool,
    /// With --swarm: which container the seed's migration moves.
    #[arg(long = "move", value_enum, default_value_t = crate::swarm::Moving::Server, requires = "swarm")]
    pub moving: crate::swarm::Moving,
}

struct Names {
    nodes: [(&'static str, Ipv4Addr); 3],
    server_ip: Ipv4Addr,
}

const NAMES: Names = Names {
    nodes: [
        ("demo-a", Ipv4Addr::new(198, 18, 0, 11)),
        ("demo-b", Ipv4Addr::new(198, 18, 0, 12)),
        ("demo-c", Ipv4Addr::new(198, 18, 0, 13)),
    ],
    server_ip: Ipv4Addr::new(198, 19, 0, 11),
};
const SERVER: &str = "cont-moving";
const CLIENT: &str = "cont-static";

pub fn run(a: &DemoArgs) -> Result<()> {
    if a.swarm {
        return crate::swarm::demo(a);
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo makes network namespaces and containers: run it as root");
    }
    if !(0.0..1.0).contains(&a.migrate_at) {
        bail!("--migrate-at must be in [0, 1)");
    }
    let me = std::env::current_exe().context("cannot find the migros executable")?;
    let migros = |args: &[&str]| -> Result<String> { run_migros(&me, args) };

    say("setting up three nodes (network namespaces with a migrosd each)");
    cleanup(&me);
    for (name, addr) in NAMES.nodes {
        migros(&[
            "node",
            "add",
            name,
            "--addr",
            &addr.to_string(),
            "--dev",
            DEVICE,
        ])?;
    }
    let result = experiment(a, &migros);
    if a.keep {
        say("--keep: nodes and containers stay (migros ps, migros node list)");
    } else {
        cleanup(&me);
    }
    result
}

fn experiment(a: &DemoArgs, migros: &dyn Fn(&[&str]) -> Result<String>) -> Result<()> {
    let [(node_a, _), (node_b, _), (node_c, _)] = NAMES.nodes;
    let n = a.iters.to_string();
    let ip = NAMES.server_ip.to_string();
    say(&format!(
        "server: ib_send_bw -d {DEVICE} -b -n {n} in container {SERVER} on {node_a} ({ip})"
    ));
    let bench = ["ib_send_bw", "-d", DEVICE, "-b", "-n", &n];
    let mut server = vec!["run", "--node", node_a, "--name", SERVER, "--ip", &ip, "--"];
    server.extend(bench);
    migros(&server)?;
    // The server listens once its device is open; give it that moment.
    std::thread::sleep(Duration::from_millis(500));
    say(&format!(
        "client: ib_send_bw -d {DEVICE} -b -n {n} {ip} in container {CLIENT} on {node_b}"
    ));
    let mut client = vec!["run", "--node", node_b, "--name", CLIENT, "--"];
    client.extend(bench);
    client.push(&ip);
    migros(&client)?;

    let dir_b = PathBuf::from(format!("/run/migros/nodes/{node_b}"));
    // Both directions: each side sends n messages of 64 KiB (payload only).
    let expected = 2.0 * a.iters as f64 * 65536.0;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut last: Option<(Instant, u64)> = None;
    let mut migration: Option<std::thread::JoinHandle<Result<String>>> = None;
    let mut migrate_started = None;
    let mut pause = None;
    let mut resumed_at = None;
    let mut sampler = crate::bench::steady::Sampler::new();
    loop {
        std::thread::sleep(SAMPLE);
        let qps = admin::stats(&dir_b, DEVICE)
            .map(|(_, q)| q)
            .unwrap_or_default();
        let now = Instant::now();
        let bytes: u64 = qps.iter().map(payload_bytes).sum();
        sampler.record(
            now,
            bytes,
            qps.iter().map(|q| q.counters.resumes).sum(),
            qps.iter()
                .map(|q| q.counters.last_pause_nanos)
                .max()
                .unwrap_or(0),
        );
        if let Some((t0, b0)) = last {
            let dt = now.duration_since(t0).as_secs_f64();
            let t = now.duration_since(start).as_secs_f64();
            samples.push(Sample::rate(t, bytes.saturating_sub(b0), dt));
        }
        last = Some((now, bytes));
        if let Some(p) = last_pause(&qps) {
            resumed_at.get_or_insert(now.duration_since(start).as_secs_f64());
            pause = Some(p);
        }
        let done = (bytes as f64 / expected).min(1.0);
        let migrating = migration.as_ref().is_some_and(|m| !m.is_finished());
        if !migrating && samples.len() % 10 == 0 {
            progress(done, samples.last().map_or(0.0, |s| s.gbits));
        }
        if migration.is_none() && done >= a.migrate_at {
            eprintln!();
            say(&format!("migrating {SERVER}: {node_a} -> {node_c}"));
            let me = std::env::current_exe()?;
            let node_c = node_c.to_owned();
            migrate_started = Some(now.duration_since(start).as_secs_f64());
            // Its progress bar (stderr) shows while it works; ours waits.
            migration = Some(std::thread::spawn(move || {
                run_migros_showing_progress(&me, &["migrate", SERVER, "--to", &node_c])
            }));
        }
        let client_done = !container_running(CLIENT);
        if client_done && migration.as_ref().is_none_or(|m| m.is_finished()) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the benchmark did not finish within 10 minutes");
        }
    }
    eprintln!();
    let timeline = match migration {
        Some(m) => m
            .join()
            .map_err(|_| anyhow::anyhow!("the migration thread panicked"))??,
        None => String::from("(the benchmark ended before the migration point)\n"),
    };
    print!("{timeline}");

    let server_status = migros(&["wait", SERVER, "--timeout", "60"]);
    let client_status = migros(&["wait", CLIENT, "--timeout", "60"]);
    for name in [SERVER, CLIENT] {
        println!("\n--- output of {name} (last lines) ---");
        let out = migros(&["logs", name]).unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        for l in &lines[lines.len().saturating_sub(6)..] {
            println!("{l}");
        }
    }
    server_status.context("the server did not finish normally")?;
    client_status.context("the client did not finish normally")?;

    let mut spans = Vec::new();
    match (pause, resumed_at) {
        (Some(p), Some(end)) => {
            println!(
                "\npause the client's QP saw (pause NAK to RESUME): {:.2} ms",
                p.as_secs_f64() * 1e3
            );
            spans.push(Span::pause(p, end));
        }
        _ => println!("\nthe client's QP was not paused (did the migration happen mid-run?)"),
    }
    if let Some(t) = migrate_started {
        spans.push(Span::instant(t, "migrate"));
    }
    match crate::bench::steady::steady(&sampler.readings) {
        Ok(st) => println!(
            "steady state on {node_b}: {:.2} Gbit/s the 1 s before the pause, {:.2} the 1 s after the RESUME: ratio {:.3} (without a move: {})",
            st.before_gbps,
            st.after_gbps,
            st.ratio,
            st.ratio_without_move
                .map_or("-".into(), |r| format!("{r:.3}"))
        ),
        Err(e) => println!("steady state on {node_b}: not measured ({e})"),
    }
    let title = format!(
        "ib_send_bw -b -n {}: client on {node_b}, server moved {node_a} -> {node_c}",
        a.iters
    );
    write_plot(&a.out, &title, &samples, &spans)?;
    println!("plot: {}", a.out.display());
    Ok(())
}

/// Payload bytes a QP moved in both directions (wire bytes minus the
/// RoCE v2 headers are not separable here: this counts what the device
/// counted, so the plot shows the device's view).
pub(crate) fn payload_bytes(q: &QpStats) -> u64 {
    q.counters.tx_bytes + q.counters.rx_bytes
}

/// The last pause (pause NAK to RESUME) of the first of `qps` that got a
/// RESUME; `None` while none did.
pub(crate) fn last_pause(qps: &[QpStats]) -> Option<Duration> {
    qps.iter()
        .find(|q| q.counters.resumes > 0)
        .map(|q| Duration::from_nanos(q.counters.last_pause_nanos))
}

pub(crate) fn write_plot(
    out: &Path,
    title: &str,
    samples: &[Sample],
    spans: &[Span],
) -> Result<()> {
    let svg = plot::bandwidth_svg(title, samples, spans);
    std::fs::write(out, svg).with_context(|| format!("cannot write {}", out.display()))
}

fn container_running(name: &str) -> bool {
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(_) => return false,
    };
    run_migros(&me, &["ps", "--json"])
        .ok()
        .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("name").and_then(|n| n.as_str()) == Some(name)
                    && c.get("status")
                        .and_then(|s| s.as_str())
                        .is_some_and(|s| matches!(s, "starting" | "running" | "migrating"))
            })
        })
}

pub(crate) fn progress(done: f64, gbits: f64) {
    let width = 40;
    let filled = ((done * width as f64) as usize).min(width);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{}{}] {:5.1}%  {:6.2} Gbit/s ",
        "#".repeat(filled),
        ".".repeat(width - filled),
        done * 100.0,
        gbits,
    );
    let _ = err.flush();
}

pub(crate) fn say(what: &str) {
    eprintln!("demo: {what}");
}

pub(crate) fn run_migros(me: &Path, args: &[&str]) -> Result<String> {
    crate::sys::run(&me.to_string_lossy(), args)
}

fn run_migros_showing_progress(me: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(me)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run migros {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("migros {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes what an earlier demo left (ignoring what is not there).
fn cleanup(me: &Path) {
    for c in [SERVER, CLIENT] {
        let _ = run_migros(me, &["rm", "-f", c]);
    }
    for (n, _) in NAMES.nodes {
        let _ = run_migros(me, &["node", "del", n]);
    }
}
