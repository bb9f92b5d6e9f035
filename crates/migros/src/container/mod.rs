//! `migros run|ps|logs|wait|rm`: containers run by runc on a node.
//!
//! A container `<name>` keeps its state in `/run/migros/state/containers/<name>/`:
//! `container.json` (its record), `rootfs/` (mount points and symlinks; the
//! content is read-only bind mounts of the host), `log` (its output), and one
//! directory `gen-<g>/` per incarnation (0 at `run`, +1 per migration) with
//! the OCI bundle (`config.json`), runc's log and the supervisor's files
//! (see [`supervise`]). The incarnation `g` is the runc container
//! `<name>.<g>` (runc root `/run/migros/state/runc`) in the network namespace
//! `migros-c-<name>-<g>`.

pub mod net;
pub mod spec;
pub mod supervise;

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::RunArgs;
use crate::node::{self, Node};
use crate::sys;

/// How long `run` (and a migration's restore) waits for runc.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What `run` recorded (and migrations update).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub args: Vec<String>,
    pub env: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<spec::Volume>,
    /// The current incarnation.
    pub gen: u32,
    pub state: State,
}

/// Where a container is in its life, as far as migrations go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started (or starting, or exited: see its incarnation's files).
    Active,
    /// A migration is under way.
    Migrating,
    /// A migration failed after the checkpoint: the image is kept here.
    Lost { image: PathBuf, error: String },
}

/// What `ps` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Starting,
    Running(i32),
    Exited(i32),
    Failed(String),
    Migrating,
    Lost(String),
}

impl Status {
    pub fn label(&self) -> String {
        match self {
            Status::Starting => "starting".into(),
            Status::Running(_) => "running".into(),
            Status::Exited(c) => format!("exited({c})"),
            Status::Failed(_) => "failed".into(),
            Status::Migrating => "migrating".into(),
            Status::Lost(_) => "lost".into(),
        }
    }
}

pub fn dir(name: &str) -> PathBuf {
    sys::state_dir().join("containers").join(name)
}

pub fn gen_dir(name: &str, gen: u32) -> PathBuf {
    dir(name).join(format!("gen-{gen}"))
}

pub fn log_path(name: &str) -> PathBuf {
    dir(name).join("log")
}

pub fn rootfs(name: &str) -> PathBuf {
    dir(name).join("rootfs")
}

pub fn runc_root() -> PathBuf {
    sys::state_dir().join("runc")
}

pub fn runc_id(name: &str, gen: u32) -> String {
    format!("{name}.{gen}")
}

/// `runc --root <ours> args…`.
pub fn runc(args: &[&str]) -> Result<String> {
    let root = runc_root();
    let mut v = vec!["--root", root.to_str().context("runc root path")?];
    v.extend_from_slice(args);
    sys::run("runc", &v)
}

impl Container {
    pub fn status(&self) -> Status {
        match &self.state {
            State::Migrating => return Status::Migrating,
            State::Lost { error, .. } => return Status::Lost(error.clone()),
            State::Active => {}
        }
        let d = gen_dir(&self.name, self.gen);
        let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
        if let Some(code) = read("exit").and_then(|s| s.trim().parse().ok()) {
            return Status::Exited(code);
        }
        if let Some(e) = read("failed") {
            return Status::Failed(e.trim().to_string());
        }
        match read("started").and_then(|s| s.trim().parse().ok()) {
            Some(pid) => Status::Running(pid),
            None => Status::Starting,
        }
    }

    /// The container's init (host pid) while it runs.
    pub fn pid(&self) -> Option<i32> {
        match self.status() {
            Status::Running(p) if sys::alive(p) => Some(p),
            _ => None,
        }
    }

    pub fn save(&self) -> Result<()> {
        sys::write_json(&dir(&self.name).join("container.json"), self)
    }

    /// Writes the OCI bundle of incarnation `gen` on `node`.
    pub fn write_bundle(&self, gen: u32, node: &Node) -> Result<PathBuf> {
        let gd = gen_dir(&self.name, gen);
        std::fs::create_dir_all(&gd).with_context(|| format!("creating {}", gd.display()))?;
        let root = rootfs(&self.name);
        let lib = snapshot_lib(&self.name)?;
        let sock = node.socket_dir();
        let d = dir(&self.name);
        let (criu_conf, script) = (d.join("criu.conf"), d.join("criu-action.sh"));
        std::fs::write(&script, spec::ACTION_SCRIPT)?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(&criu_conf, spec::criu_config(&script))?;
        let s = spec::Spec {
            hostname: &self.name,
            rootfs: &root,
            args: &self.args,
            env: &self.env,
            netns: net::netns_path(&self.name, gen),
            socket_dir: &sock,
            lib_dir: lib.as_deref(),
            criu_config: Some(&criu_conf),
            volumes: &self.volumes,
        };
        sys::write_json(&gd.join("config.json"), &s.to_json())?;
        Ok(gd)
    }
}

/// The container's own copy of migros' libibverbs directory (hard links
/// where possible), made once: a rebuild of `target/ibverbs` replaces the
/// files, and CRIU cannot dump a process mapping a deleted library.
fn snapshot_lib(name: &str) -> Result<Option<PathBuf>> {
    let snap = dir(name).join("lib");
    if snap.is_dir() {
        return Ok(Some(snap));
    }
    let Some(src) = crate::env::lib_dir() else {
        return Ok(None);
    };
    let tmp = dir(name).join("lib.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for e in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        if !e.file_type()?.is_file() {
            continue;
        }
        let to = tmp.join(e.file_name());
        if std::fs::hard_link(e.path(), &to).is_err() {
            std::fs::copy(e.path(), &to)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    std::fs::rename(&tmp, &snap)?;
    Ok(Some(snap))
}

pub fn load(name: &str) -> Result<Container> {
    let p = dir(name).join("container.json");
    if !p.exists() {
        bail!("container {name} not found (see `migros ps`)");
    }
    sys::read_json(&p)
}

/// Every container, sorted by name.
pub fn all() -> Vec<Container> {
    let Ok(entries) = std::fs::read_dir(sys::state_dir().join("containers")) else {
        return Vec::new();
    };
    let mut v: Vec<Container> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| sys::read_json(&e.path().join("container.json")).ok())
        .collect();
    v.sort_by(|a: &Container, b| a.name.cmp(&b.name));
    v
}

/// Starts the supervisor of incarnation `gen` and waits until runc has
/// started (or restored) it; the container's host pid.
pub fn start(name: &str, gen: u32, restore: Option<&Path>) -> Result<i32> {
    let gd = gen_dir(name, gen);
    for f in ["started", "failed", "exit", "pid"] {
        let _ = std::fs::remove_file(gd.join(f));
    }
    let exe = std::env::current_exe().context("locating the migros executable")?;
    let out = std::fs::File::create(gd.join("supervise.log"))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(exe);
    cmd.args(["__supervise", name, &gen.to_string()]);
    if let Some(image) = restore {
        cmd.arg("--restore").arg(image);
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the supervisor")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(pid) = std::fs::read_to_string(gd.join("started"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return Ok(pid);
        }
        if let Ok(e) = std::fs::read_to_string(gd.join("failed")) {
            let _ = child.wait();
            bail!("{}", e.trim());
        }
        if let Some(st) = child.try_wait()? {
            // It may have written `started` just before exiting.
            if let Some(pid) = std::fs::read_to_string(gd.join("started"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Ok(pid);
            }
            bail!(
                "the supervisor exited ({st}): {}",
                std::fs::read_to_string(gd.join("supervise.log")).unwrap_or_default()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "runc did not start the container within {START_TIMEOUT:?} (see {})",
                gd.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn run(a: &RunArgs) -> Result<()> {
    sys::need_root("migros run")?;
    if !sys::valid_name(&a.name, net::MAX_NAME) {
        bail!(
            "invalid container name {:?}: 1 to {} of a-z 0-9 - _, starting with a letter or digit",
            a.name,
            net::MAX_NAME
        );
    }
    for e in &a.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env {e:?} is not KEY=VALUE");
        }
    }
    let volumes = a
        .volume
        .iter()
        .map(|v| v.parse::<spec::Volume>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    for v in &volumes {
        if !v.host.exists() {
            bail!(
                "volume {}: no such file or directory on the host",
                v.host.display()
            );
        }
    }
    let lock = sys::lock()?;
    let node = node::load(&a.node)?;
    if !node.running() {
        bail!(
            "node {}: its migrosd (pid {}) is not running",
            node.name,
            node.pid
        );
    }
    if let Ok(old) = load(&a.name) {
        bail!(
            "container {} exists ({} on node {}; migros rm it first)",
            old.name,
            old.status().label(),
            old.node
        );
    }
    let taken: Vec<Ipv4Addr> = all().iter().map(|c| c.ip).collect();
    let ip = match a.ip {
        Some(ip) if !net::valid_ip(ip) => bail!("container address {ip} is not in 198.19.0.0/16"),
        Some(ip) if taken.contains(&ip) => {
            let who = all().into_iter().find(|c| c.ip == ip).map(|c| c.name);
            bail!(
                "address {ip} is taken by container {}",
                who.unwrap_or_default()
            )
        }
        Some(ip) => ip,
        None => net::allocate(&taken).context("no free address in 198.19.0.0/16")?,
    };
    let c = Container {
        name: a.name.clone(),
        node: node.name.clone(),
        ip,
        args: a.cmd.clone(),
        env: a.env.clone(),
        volumes,
        gen: 0,
        state: State::Active,
    };
    let result = (|| -> Result<i32> {
        let d = dir(&c.name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        spec::make_rootfs(&rootfs(&c.name)).context("making the rootfs")?;
        c.write_bundle(0, &node)?;
        std::fs::File::create(log_path(&c.name))?;
        c.save()?;
        net::create(&c.name, 0, ip, &node)?;
        net::route_to(&c.name, ip, &node)?;
        start(&c.name, 0, None)
    })();
    drop(lock);
    match result {
        Ok(pid) => {
            println!(
                "container {} started on node {}: ip {} pid {}",
                c.name, c.node, c.ip, pid
            );
            Ok(())
        }
        Err(e) => {
            remove(&c);
            Err(e.context(format!("starting container {}", c.name)))
        }
    }
}

/// Removes everything of a container (best effort): runc state, network,
/// routes, files.
fn remove(c: &Container) {
    for g in 0..=c.gen + 1 {
        let _ = runc(&["delete", "-f", &runc_id(&c.name, g)]);
        let _ = net::destroy(&c.name, g);
    }
    net::unroute(c.ip);
    let _ = std::fs::remove_dir_all(dir(&c.name));
}

pub fn rm(name: &str, force: bool) -> Result<()> {
    sys::need_root("migros rm")?;
    let _lock = sys::lock()?;
    let c = load(name)?;
    match c.status() {
        Status::Running(pid) if sys::alive(pid) => {
            if !force {
                bail!("container {name} is running (pid {pid}); use migros rm -f");
            }
            let _ = runc(&["kill", &runc_id(name, c.gen), "KILL"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.status(), Status::Running(_)) && sys::alive(pid) {
                if Instant::now() >= deadline {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Status::Migrating if !force => {
            bail!("container {name} is being migrated; use migros rm -f")
        }
        _ => {}
    }
    remove(&c);
    println!("container {name} removed");
    Ok(())
}

pub fn ps(json_out: bool) -> Result<()> {
    let all = all();
    if json_out {
        let v: Vec<_> = all
            .iter()
            .map(|c| {
                let st = c.status();
                json!({
                    "name": c.name,
                    "node": c.node,
                    "ip": c.ip.to_string(),
                    "status": st.label(),
                    "pid": match st { Status::Running(p) => Some(p), _ => None },
                    "exit_code": match st { Status::Exited(c) => Some(c), _ => None },
                    "error": match &st { Status::Failed(e) | Status::Lost(e) => Some(e.clone()), _ => None },
                    "generation": c.gen,
                    "command": c.args,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<12} {:<16} {:<12} {:>8}  COMMAND",
        "NAME", "NODE", "IP", "STATUS", "PID"
    );
    for c in all {
        let st = c.status();
        let mut cmd = c.args.join(" ").replace('\n', " ");
        if cmd.chars().count() > 48 {
            cmd = cmd.chars().take(45).collect::<String>() + "...";
        }
        let pid = match st {
            Status::Running(p) => p.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<14} {:<12} {:<16} {:<12} {:>8}  {}",
            c.name,
            c.node,
            c.ip,
            st.label(),
            pid,
            cmd
        );
    }
    Ok(())
}

pub fn logs(name: &str) -> Result<()> {
    load(name)?;
    let mut f = std::fs::File::open(log_path(name)).context("opening the log")?;
    std::io::copy(&mut f, &mut std::io::stdout().lock())?;
    Ok(())
}

/// Waits until the container exits; its exit status.
pub fn wait(name: &str, timeout: Option<f64>) -> Result<i32> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
    loop {
        let c = load(name)?;
        match c.status() {
            Status::Exited(code) => return Ok(code),
            Status::Failed(e) => bail!("container {name} failed to start: {e}"),
            Status::Lost(e) => bail!("container {name} was lost in a migration: {e}"),
            Status::Running(pid) if !sys::alive(pid) => {
                // Exited just now: the supervisor writes `exit` next, unless
                // it was killed; give it a moment.
                std::thread::sleep(Duration::from_millis(200));
                let c = load(name)?;
                if let Status::Running(p) = c.status() {
                    if p == pid && c.state == State::Active && !sys::alive(pid) {
                        bail!(
                            "container {name} (pid {pid}) is gone and no exit status was recorded"
                        );
                    }
                }
            }
            _ => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "container {name} still running after {}s",
                timeout.unwrap_or(0.0)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
