//! `migros demo --swarm`: MigrOS's seed experiment as the seed set it up,
//! on three simulated hosts of this machine (`crate::host`: their own
//! dockerd, containerd, sshd and migrosd; nothing shared but the network).
//!
//! 1. hosts `swarm-a`, `swarm-b`, `swarm-c` (198.18.64.21-23) and a node on
//!    each (`migros node add --ssh`: migrosd installed there, supervised);
//! 2. the swarm: `docker swarm init` on a, `docker swarm join --token …` on
//!    b and c, the attachable overlay `rdma-net` (198.19.64.0/24);
//! 3. the image: `scripts/seed/Dockerfile` built here (FROM
//!    `migros-bookworm`, `scripts/setup-hosts.sh`) and sent to every host
//!    with `docker save | ssh HOST docker load`;
//! 4. the seed's scripts (`scripts/seed/*.sh`, verbatim but for names):
//!    the server `ib_send_bw -b` in `cont-moving` on a, the client in
//!    `cont-static` on b, both on `rdma-net` with fixed addresses; once a
//!    share of the traffic went through, `migrate.sh` runs on c (ssh a
//!    docker checkpoint create, docker create, inspect, scp, rm, docker
//!    start --checkpoint), traced command by command for the timeline.
//!
//! It prints `docker node ls`, the timeline, both programs' result lines,
//! the pause the static side's QP saw (its counters, read over ssh from its
//! host's daemon), and writes the plot. `--move client` moves the client
//! instead. The container's address moves with it through the overlay:
//! migros changes no route.

use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;
use migros_proto::admin::{AdminRequest, AdminResponse, QpStats};

use crate::demo::{last_pause, payload_bytes, progress, run_migros, say, write_plot, DemoArgs};
use crate::node::Node;
use crate::plot::{Sample, Span};
use crate::remote::{quote, Host, Ssh};

/// Which container the seed's migration moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Moving {
    /// The server (`cont-moving`), as in the seed.
    Server,
    /// The client (`cont-static`).
    Client,
}

/// The image the seed's containers run.
pub const IMAGE: &str = "migros-perftest";
/// What it is built from (`scripts/setup-hosts.sh`).
pub const BASE_IMAGE: &str = "migros-bookworm";
/// The overlay network and its subnet.
pub const NETWORK: &str = "rdma-net";
pub const SUBNET: &str = "198.19.64.0/24";
/// The swarm's pool for other overlays (its ingress network).
const ADDR_POOL: &str = "198.19.128.0/18";
const DOCKERFILE: &str = include_str!("../../../scripts/seed/Dockerfile");
/// The seed's scripts, installed in `/root/seed` on every host.
const SCRIPTS: [(&str, &str); 3] = [
    ("server.sh", include_str!("../../../scripts/seed/server.sh")),
    ("client.sh", include_str!("../../../scripts/seed/client.sh")),
    (
        "migrate.sh",
        include_str!("../../../scripts/seed/migrate.sh"),
    ),
];
const HOSTS: [(&str, Ipv4Addr); 3] = [
    ("swarm-a", Ipv4Addr::new(198, 18, 64, 21)),
    ("swarm-b", Ipv4Addr::new(198, 18, 64, 22)),
    ("swarm-c", Ipv4Addr::new(198, 18, 64, 23)),
];
const SERVER_IP: &str = "198.19.64.11";
const CLIENT_IP: &str = "198.19.64.12";
const SERVER: &str = "cont-moving";
const CLIENT: &str = "cont-static";
const DEVICE: &str = "rxe0";
/// How often the static side's counters are read (over ssh).
const SAMPLE: Duration = Duration::from_millis(100);

pub fn demo(a: &DemoArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo makes hosts (namespaces, dockerds, sshds): run it as root");
    }
    if !(0.0..1.0).contains(&a.migrate_at) {
        bail!("--migrate-at must be in [0, 1)");
    }
    let me = std::env::current_exe().context("cannot find the migros executable")?;
    cleanup(&me);
    let result = lab(&me).and_then(|nodes| experiment(a, &nodes));
    if a.keep {
        say("--keep: hosts, nodes and containers stay (migros host list, migros node list)");
    } else {
        cleanup(&me);
    }
    result
}

/// Hosts, nodes, the swarm, the overlay, the image and the scripts.
fn lab(me: &Path) -> Result<[Node; 3]> {
    say("three hosts (network, mount and UTS namespaces; own dockerd, containerd, sshd)");
    let cfg = crate::host::ssh_config();
    for (name, addr) in HOSTS {
        run_migros(me, &["host", "add", name, "--addr", &addr.to_string()])?;
    }
    say("a node on each: migrosd installed over ssh and supervised there");
    for (name, addr) in HOSTS {
        run_migros(
            me,
            &[
                "node",
                "add",
                name,
                "--ssh",
                &format!("root@{name}"),
                "--ssh-config",
                &cfg.display().to_string(),
                "--addr",
                &addr.to_string(),
                "--mtu",
                "4096",
            ],
        )?;
    }
    let nodes = HOSTS.map(|(n, _)| crate::node::load(n));
    let [na, nb, nc] = nodes;
    let nodes = [na?, nb?, nc?];
    let machines: Vec<_> = nodes
        .iter()
        .map(|n| Ok((n.name.clone(), n.addr, n.ssh_target()?)))
        .collect::<Result<_>>()?;
    print!("{}", form(&machines)?);
    for n in &nodes {
        for (file, text) in SCRIPTS {
            let h = n.host();
            h.sh("mkdir -p /root/seed")?;
            write_remote(&n.ssh_target()?, &format!("/root/seed/{file}"), text)?;
        }
    }
    Ok(nodes)
}

/// What [`form`] did.
pub struct Formed {
    pub node_ls: String,
    pub manager: String,
    pub image_bytes: u64,
    pub sent: u64,
    pub hosts: usize,
    pub took: Duration,
}

impl std::fmt::Display for Formed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ docker node ls   (on {})", self.manager)?;
        write!(f, "{}", self.node_ls)?;
        writeln!(
            f,
            "image {IMAGE}: {} ({} bytes) built here; docker save | ssh HOST docker load to {} hosts: {} in {:.1} s",
            crate::sys::human_bytes(self.image_bytes),
            self.image_bytes,
            self.hosts,
            crate::sys::human_bytes(self.sent),
            self.took.as_secs_f64()
        )
    }
}

/// The seed's swarm on `machines` (name, address, ssh): `docker swarm
/// init` on the first, `docker swarm join` on the others, the attachable
/// overlay [`NETWORK`], and [`IMAGE`] built here and loaded on every one.
pub fn form(machines: &[(String, Ipv4Addr, Ssh)]) -> Result<Formed> {
    let Some((manager, manager_addr, _)) = machines.first() else {
        bail!("a swarm needs at least one host");
    };
    let hosts: Vec<Host> = machines.iter().map(|m| Host::Ssh(m.2.clone())).collect();
    say("the swarm: docker swarm init, docker swarm join, overlay rdma-net");
    hosts[0].run(
        "docker",
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &manager_addr.to_string(),
            "--default-addr-pool",
            ADDR_POOL,
            "--default-addr-pool-mask-length",
            "24",
        ],
    )?;
    let token = hosts[0].run("docker", &["swarm", "join-token", "-q", "worker"])?;
    let join = format!("{manager_addr}:2377");
    for h in &hosts[1..] {
        h.run("docker", &["swarm", "join", "--token", token.trim(), &join])?;
    }
    hosts[0].run(
        "docker",
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "--subnet",
            SUBNET,
            NETWORK,
        ],
    )?;
    let node_ls = hosts[0].run("docker", &["node", "ls"])?;
    let image_bytes = build_image()?;
    let t = Instant::now();
    let sent = std::thread::scope(|s| {
        let jobs: Vec<_> = machines
            .iter()
            .map(|m| s.spawn(move || send_image(&m.2)))
            .collect();
        jobs.into_iter()
            .map(|j| j.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?)
            .collect::<Result<Vec<u64>>>()
    })?;
    Ok(Formed {
        node_ls,
        manager: manager.clone(),
        image_bytes,
        sent: sent.iter().sum(),
        hosts: sent.len(),
        took: t.elapsed(),
    })
}

/// Builds [`IMAGE`] in this machine's dockerd; its size.
fn build_image() -> Result<u64> {
    crate::sys::run("docker", &["image", "inspect", BASE_IMAGE])
        .with_context(|| format!("image {BASE_IMAGE} missing (scripts/setup-hosts.sh makes it)"))?;
    let lib =
        crate::env::lib_dir().context("migros' libibverbs is not built (scripts/ibverbs.sh)")?;
    let ctx = tempdir("/var/tmp/migros-seed-image")?;
    let result = (|| {
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE)?;
        crate::sys::copy_tree(&lib, &ctx.join("lib"))?;
        say(&format!("building {IMAGE} (scripts/seed/Dockerfile)"));
        let out = Command::new("docker")
            .args(["build", "-q", "--network", "host", "-t", IMAGE])
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .output()
            .context("running docker build")?;
        if !out.status.success() {
            bail!(
                "docker build failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let size = crate::sys::run("docker", &["image", "inspect", "-f", "{{.Size}}", IMAGE])?;
        size.trim().parse::<u64>().context("image size")
    })();
    let _ = std::fs::remove_dir_all(&ctx);
    result
}

fn tempdir(prefix: &str) -> Result<PathBuf> {
    let p = PathBuf::from(format!("{prefix}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// `docker save IMAGE | ssh HOST docker load`; the bytes sent.
fn send_image(ssh: &Ssh) -> Result<u64> {
    let mut save = Command::new("docker")
        .args(["save", IMAGE])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running docker save")?;
    let mut load = ssh
        .command(&["docker", "load", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ssh")?;
    let mut from = save.stdout.take().context("docker save's output")?;
    let mut to = load.stdin.take().context("ssh's input")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    loop {
        let k = from.read(&mut buf)?;
        if k == 0 {
            break;
        }
        to.write_all(&buf[..k])
            .with_context(|| format!("sending the image to {ssh}"))?;
        sent += k as u64;
    }
    drop(to);
    let (s, l) = (save.wait_with_output()?, load.wait_with_output()?);
    if !s.status.success() || !l.status.success() {
        bail!(
            "docker save | ssh {ssh} docker load failed: {}{}",
            String::from_utf8_lossy(&s.stderr).trim(),
            String::from_utf8_lossy(&l.stderr).trim()
        );
    }
    Ok(sent)
}

/// Writes `text` into `path` on the ssh host.
fn write_remote(ssh: &Ssh, path: &str, text: &str) -> Result<()> {
    let mut c = ssh
        .shell(&format!("cat > {}", quote(path)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    c.stdin
        .take()
        .context("ssh's input")?
        .write_all(text.as_bytes())?;
    let out = c.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "writing {ssh}:{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Node {
    /// The node's ssh destination (swarm nodes are all ssh nodes).
    fn ssh_target(&self) -> Result<Ssh> {
        self.ssh
            .clone()
            .with_context(|| format!("node {} is not an ssh node", self.name))
    }
}

/// One container of the experiment.
struct Side {
    name: &'static str,
    ip: &'static str,
    /// Its node (where its script runs).
    node: usize,
    cmd: String,
}

fn experiment(a: &DemoArgs, nodes: &[Node; 3]) -> Result<()> {
    let n = a.iters.to_string();
    let env = [
        format!("IMAGE={IMAGE}"),
        format!("SERVER_IP={SERVER_IP}"),
        format!("CLIENT_IP={CLIENT_IP}"),
        format!("ITERS={n}"),
    ];
    let bench = format!("stdbuf -oL ib_send_bw -d {DEVICE} -b -n {n}");
    let server = Side {
        name: SERVER,
        ip: SERVER_IP,
        node: 0,
        cmd: bench.clone(),
    };
    let client = Side {
        name: CLIENT,
        ip: CLIENT_IP,
        node: 1,
        cmd: format!("{bench} {SERVER_IP}"),
    };
    let (moving, fixed) = match a.moving {
        Moving::Server => (&server, &client),
        Moving::Client => (&client, &server),
    };
    let script = |side: &Side, file: &str| -> Result<String> {
        let h = nodes[side.node].host();
        let mut args: Vec<&str> = env.iter().map(String::as_str).collect();
        let path = format!("/root/seed/{file}");
        args.extend(["bash", &path]);
        h.run("env", &args)
    };
    say(&format!(
        "server: {} in {SERVER} on {} ({SERVER_IP}, rdma-net)",
        server.cmd, nodes[0].name
    ));
    script(&server, "server.sh")?;
    wait_log(&nodes[0], SERVER, "Waiting for client")?;
    say(&format!(
        "client: {} in {CLIENT} on {} ({CLIENT_IP}, rdma-net)",
        client.cmd, nodes[1].name
    ));
    script(&client, "client.sh")?;

    let watched = &nodes[fixed.node];
    let dst = &nodes[2];
    let expected = 2.0 * a.iters as f64 * 65536.0;
    let start = Instant::now();
    let (mut samples, mut last) = (Vec::new(), None::<(f64, u64)>);
    let mut migration: Option<std::thread::JoinHandle<Result<Trace>>> = None;
    let (mut migrate_started, mut pause, mut resumed_at) = (None, None, None);
    let mut watch = Watch::start(watched)?;
    let (mut most, mut round) = (0u64, 0u64);
    // The remote reading times on this run's clock.
    let mut offset: Option<f64> = None;
    loop {
        let (t, qps) = watch
            .next()
            .with_context(|| format!("the counters' stream from node {} ended", watched.name))?;
        round += 1;
        let now = Instant::now();
        let at = t + *offset.get_or_insert(now.duration_since(start).as_secs_f64() - t);
        let bytes: u64 = qps.iter().map(payload_bytes).sum();
        most = most.max(bytes);
        if let Some((t0, b0)) = last {
            let dt = at - t0;
            if dt > 0.0 {
                samples.push(Sample::rate(at, bytes.saturating_sub(b0), dt));
            }
        }
        if bytes > 0 || last.is_none() {
            last = Some((at, bytes));
        }
        if let Some(p) = last_pause(&qps) {
            resumed_at.get_or_insert(at);
            pause = Some(p);
        }
        let done = (most as f64 / expected).min(1.0);
        let migrating = migration.as_ref().is_some_and(|m| !m.is_finished());
        if !migrating && samples.len() % 5 == 0 {
            progress(done, samples.last().map_or(0.0, |s| s.gbits));
        }
        if migration.is_none() && done >= a.migrate_at {
            eprintln!();
            say(&format!(
                "migrating {}: {} -> {} (scripts/seed/migrate.sh on {})",
                moving.name, nodes[moving.node].name, dst.name, dst.name
            ));
            migrate_started = Some(now.duration_since(start).as_secs_f64());
            let (h, vars) = (
                dst.host(),
                [
                    format!("NAME={}", moving.name),
                    format!("SRC={}", nodes[moving.node].name),
                    format!("IP={}", moving.ip),
                    format!("IMAGE={IMAGE}"),
                    format!("CMD={}", moving.cmd),
                ],
            );
            migration = Some(std::thread::spawn(move || traced_migration(&h, &vars)));
        }
        // Once a second (each look is an ssh round trip).
        if round % 10 == 0
            && !running(watched, fixed.name)
            && migration.as_ref().is_none_or(|m| m.is_finished())
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the benchmark did not finish within 10 minutes");
        }
    }
    drop(watch);
    eprintln!();
    let trace = match migration {
        Some(m) => Some(
            m.join()
                .map_err(|_| anyhow::anyhow!("the migration thread panicked"))??,
        ),
        None => None,
    };
    match &trace {
        Some(t) => {
            print!("{t}");
            let size = dst.host().sh(&format!(
                "du -sb /var/lib/docker/containers/$(docker inspect -f '{{{{.Id}}}}' {})/checkpoints/ckpt1",
                moving.name
            ));
            if let Some(b) = size
                .ok()
                .and_then(|o| o.split_whitespace().next()?.parse::<u64>().ok())
            {
                println!(
                    "checkpoint image (scp -r from {} to {}): {} ({b} bytes)",
                    nodes[moving.node].name,
                    dst.name,
                    crate::sys::human_bytes(b)
                );
            }
        }
        None => println!("(the benchmark ended before the migration point)"),
    }
    let moved_to = if trace.is_some() {
        dst
    } else {
        &nodes[moving.node]
    };
    let codes = [
        docker_wait(moved_to, moving.name),
        docker_wait(watched, fixed.name),
    ];
    for (node, name) in [(&nodes[0], SERVER), (&nodes[1], CLIENT)] {
        let node = if name == moving.name { moved_to } else { node };
        println!("\n--- output of {name} on {} (last lines) ---", node.name);
        let out = node
            .host()
            .output("docker", &["logs", name])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        for l in &lines[lines.len().saturating_sub(4)..] {
            println!("{l}");
        }
    }
    for (code, name) in codes.iter().zip([moving.name, fixed.name]) {
        match code {
            Ok(0) => println!("{name}: exit 0"),
            Ok(c) => bail!("{name} exited with status {c}"),
            Err(e) => bail!("{name}: {e:#}"),
        }
    }
    let served = match dst.admin(&AdminRequest::Stats) {
        Ok(AdminResponse::Stats { device, .. }) => device.rx_packets,
        _ => 0,
    };
    println!(
        "node {}'s migrosd (the destination) received {served} packets",
        dst.name
    );
    let mut spans = Vec::new();
    match (pause, resumed_at) {
        (Some(p), Some(end)) => {
            println!(
                "pause the {} QP saw (pause NAK to RESUME): {:.2} ms",
                fixed.name,
                p.as_secs_f64() * 1e3
            );
            spans.push(Span::pause(p, end));
        }
        _ => println!("the {} QP was not paused", fixed.name),
    }
    if let Some(t) = migrate_started {
        spans.push(Span::instant(t, "migrate"));
    }
    let title = format!(
        "ib_send_bw -b -n {} (Docker Swarm, 3 hosts): {} moved {} -> {}",
        a.iters, moving.name, nodes[moving.node].name, dst.name
    );
    write_plot(&a.out, &title, &samples, &spans)?;
    println!("plot: {}", a.out.display());
    Ok(())
}

/// The QP counters of a node's daemon, streamed from its machine every
/// [`SAMPLE`] (`migros __remote watch`: one ssh connection for the run).
struct Watch {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Watch {
    fn start(node: &Node) -> Result<Watch> {
        let ms = SAMPLE.as_millis().to_string();
        let mut child = node
            .ssh_target()?
            .command(&[
                crate::remote::REMOTE_MIGROS,
                "__remote",
                "watch",
                "--dev",
                &node.dev,
                "--every-ms",
                &ms,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running ssh")?;
        let out = child.stdout.take().context("ssh's output")?;
        Ok(Watch {
            child,
            lines: std::io::BufRead::lines(std::io::BufReader::new(out)),
        })
    }

    /// The next reading and when it was taken (seconds on the remote
    /// watch's clock); `None`: the stream ended.
    fn next(&mut self) -> Option<(f64, Vec<QpStats>)> {
        let line = self.lines.next()?.ok()?;
        let mut v: serde_json::Value = serde_json::from_str(&line).ok()?;
        let t = v["t"].as_f64()?;
        Some((t, serde_json::from_value(v["qps"].take()).ok()?))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether container `name` runs (or is being created) on `node`.
fn running(node: &Node, name: &str) -> bool {
    node.host()
        .run("docker", &["inspect", "-f", "{{.State.Status}}", name])
        .is_ok_and(|s| matches!(s.trim(), "running" | "created" | "restarting"))
}

fn wait_log(node: &Node, name: &str, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = node.host().output("docker", &["logs", name])?;
        if String::from_utf8_lossy(&o.stdout).contains(needle) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{name} never printed {needle:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `docker wait`: the exit status.
fn docker_wait(node: &Node, name: &str) -> Result<i32> {
    let out = node.host().run("docker", &["wait", name])?;
    out.trim()
        .parse()
        .with_context(|| format!("docker wait {name}: {out:?}"))
}

/// The seed's migration as it ran: each command, when it started, how
/// long it took.
#[derive(Debug, Clone)]
pub struct Trace {
    pub steps: Vec<(String, Duration)>,
    /// From the start of `docker checkpoint create` to the end of
    /// `docker start --checkpoint`.
    pub downtime: Duration,
    pub total: Duration,
}

/// Runs `migrate.sh` on `h` with `vars`, traced (bash's xtrace with
/// `$EPOCHREALTIME`).
fn traced_migration(h: &Host, vars: &[String]) -> Result<Trace> {
    let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
    // Root's bash ignores PS4 from the environment: set it inside.
    args.extend([
        "bash",
        "-c",
        "PS4='+ $EPOCHREALTIME '; set -x; . /root/seed/migrate.sh; set +x",
    ]);
    let out = h.output("env", &args)?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("migrate.sh failed ({}):\n{err}", out.status);
    }
    parse_trace(&err).context("reading migrate.sh's trace")
}

/// The trace of `set -x` with `PS4='+ $EPOCHREALTIME '`.
pub fn parse_trace(stderr: &str) -> Result<Trace> {
    let mut lines: Vec<(f64, String)> = Vec::new();
    for l in stderr.lines() {
        let rest = l.trim_start_matches('+');
        if rest.len() == l.len() {
            continue;
        }
        let mut f = rest.trim_start().splitn(2, ' ');
        let (Some(t), cmd) = (f.next(), f.next().unwrap_or("")) else {
            continue;
        };
        if let Ok(t) = t.parse::<f64>() {
            lines.push((t, cmd.to_string()));
        }
    }
    if lines.len() < 2 {
        bail!("no trace lines");
    }
    let mut steps = Vec::new();
    let (mut ck, mut restored) = (None, None);
    for w in lines.windows(2) {
        let ((t, cmd), (next, _)) = (&w[0], &w[1]);
        if cmd.contains("checkpoint create") {
            ck = Some(*t);
        }
        if cmd.contains("start --checkpoint") {
            restored = Some(*next);
        }
        let first = cmd.split_whitespace().next().unwrap_or("");
        if matches!(first, "ssh" | "docker" | "scp") {
            steps.push((cmd.clone(), Duration::from_secs_f64((next - t).max(0.0))));
        }
    }
    let secs = |a: f64, b: f64| Duration::from_secs_f64((b - a).max(0.0));
    let downtime = match (ck, restored) {
        (Some(a), Some(b)) => secs(a, b),
        _ => bail!("no checkpoint or restore in the trace"),
    };
    let total = secs(lines[0].0, lines[lines.len() - 1].0);
    Ok(Trace {
        steps,
        downtime,
        total,
    })
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "the seed's migration (scripts/seed/migrate.sh), command by command:"
        )?;
        let ms = crate::migration::timeline::ms;
        for (cmd, took) in &self.steps {
            let mut c: String = cmd.chars().take(90).collect();
            if c.len() < cmd.len() {
                c += "…";
            }
            writeln!(f, "  {:>10}  {c}", ms(*took))?;
        }
        writeln!(
            f,
            "  {:>10}  downtime: docker checkpoint create (its ssh) to docker start --checkpoint done",
            ms(self.downtime)
        )?;
        writeln!(f, "  {:>10}  total", ms(self.total))
    }
}

/// Removes what an earlier swarm demo left (ignoring what is not there).
fn cleanup(me: &Path) {
    for (name, _) in HOSTS {
        let _ = run_migros(me, &["node", "del", name]);
    }
    for (name, _) in HOSTS {
        let _ = run_migros(me, &["host", "del", name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_gives_steps_and_downtime() {
        let t = "+ 100.000 set -e\n+ 100.001 CONTAINERS=/var/lib/docker/containers\n\
                 + 100.010 ssh a docker checkpoint create cont-moving ckpt1\n\
                 ckpt1\n\
                 + 100.500 docker create --name cont-moving --network rdma-net\n\
                 ++ 100.600 ssh a docker inspect --format '{{.Id}}' cont-moving\n\
                 + 100.650 SRC_ID=abc\n\
                 + 100.700 scp -r a:/x /y\n\
                 + 100.800 ssh a docker rm cont-moving\n\
                 + 100.900 docker start --checkpoint ckpt1 cont-moving\n\
                 + 101.200 set +x\n";
        let tr = parse_trace(t).unwrap();
        assert_eq!(tr.steps.len(), 6, "{tr:?}");
        assert_eq!(tr.steps[0].1, Duration::from_millis(490));
        assert!(tr.steps[2].0.starts_with("ssh a docker inspect"));
        assert_eq!(tr.downtime.as_millis(), 1190);
        assert_eq!(tr.total.as_millis(), 1200);
        assert!(tr.to_string().contains("downtime"));
        assert!(parse_trace("nothing\n").is_err());
    }
}
