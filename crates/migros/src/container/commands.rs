//! `migros run|ps|logs|wait|rm`: each reads the container's record, opens
//! it with its engine ([`crate::engine`]) and does the rest through the
//! engine's trait.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use super::{Container, State, Status, Volume};
use crate::cli::RunArgs;
use crate::engine::{self, Engine};
use crate::node;
use crate::sys;

/// How often `wait` looks at a container.
const POLL: Duration = Duration::from_millis(100);
/// How long `wait` gives a container whose init is gone to record its
/// exit status.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// `migros run`.
pub fn run(a: &RunArgs) -> Result<()> {
    let kind = a.engine;
    sys::need_root(&format!("migros run --engine {}", kind.name()))?;
    if !sys::valid_name(&a.name, kind.max_name()) {
        bail!(
            "invalid container name {:?}: 1 to {} of a-z 0-9 - _, starting with a letter or digit",
            a.name,
            kind.max_name()
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
        .map(|v| v.parse::<Volume>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    for v in &volumes {
        if !v.host.exists() {
            bail!(
                "volume {}: no such file or directory on the host",
                v.host.display()
            );
        }
    }
    let _lock = sys::lock()?;
    let node = node::load(&a.node)?;
    if !node.running() {
        bail!(
            "node {}: its migrosd (pid {}) is not running",
            node.name,
            node.pid
        );
    }
    if let Ok(old) = super::load(&a.name) {
        let old = engine::open(old);
        let r = old.record();
        bail!(
            "container {} exists ({} on node {}; migros rm it first)",
            r.name,
            old.status().label(),
            r.node
        );
    }
    let record = Container {
        name: a.name.clone(),
        engine: kind,
        node: node.name.clone(),
        ip: a.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        args: a.cmd.clone(),
        env: a.env.clone(),
        volumes,
        gen: 0,
        state: State::Active,
        image: a.image.clone(),
        network: a.network.clone(),
    };
    if kind != crate::engine::EngineKind::Docker && (a.image.is_some() || a.network.is_some()) {
        bail!("--image and --network are for --engine docker");
    }
    let mut c = engine::open(record);
    let what = c
        .run(&node)
        .with_context(|| format!("starting container {}", a.name))?;
    println!(
        "container {} started on node {} with {}: {what}",
        a.name,
        node.name,
        kind.name()
    );
    Ok(())
}

/// `migros ps`.
pub fn ps(json_out: bool) -> Result<()> {
    let all: Vec<Box<dyn Engine>> = super::all().into_iter().map(engine::open).collect();
    if json_out {
        let v: Vec<_> = all
            .iter()
            .map(|c| {
                let (r, st) = (c.record(), c.status());
                json!({
                    "name": r.name,
                    "engine": r.engine.name(),
                    "id": c.id(r.gen),
                    "node": r.node,
                    "ip": r.ip.to_string(),
                    "status": st.label(),
                    "pid": match st { Status::Running(p) => Some(p), _ => None },
                    "exit_code": match st { Status::Exited(c) => Some(c), _ => None },
                    "error": match &st { Status::Failed(e) | Status::Lost(e) => Some(e.clone()), _ => None },
                    "generation": r.gen,
                    "command": r.args,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<14} {:<12} {:<16} {:<12} {:>8}  {:<7} {:<16} COMMAND",
        "NAME", "NODE", "IP", "STATUS", "PID", "ENGINE", "ID"
    );
    for c in all {
        let (r, st) = (c.record(), c.status());
        let mut cmd = r.args.join(" ").replace('\n', " ");
        if cmd.chars().count() > 40 {
            cmd = cmd.chars().take(37).collect::<String>() + "...";
        }
        let pid = match st {
            Status::Running(p) => p.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<14} {:<12} {:<16} {:<12} {:>8}  {:<7} {:<16} {}",
            r.name,
            r.node,
            r.ip,
            st.label(),
            pid,
            r.engine.name(),
            c.id(r.gen),
            cmd
        );
    }
    Ok(())
}

/// `migros logs`.
pub fn logs(name: &str) -> Result<()> {
    engine::load(name)?.logs(&mut std::io::stdout().lock())
}

/// `migros wait`: the container's exit status, wherever it moved.
pub fn wait(name: &str, timeout: Option<f64>) -> Result<i32> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
    // Since when the container's init is gone without an exit status.
    let mut gone_since: Option<(i32, Instant)> = None;
    loop {
        let c = engine::load(name)?;
        match c.status() {
            Status::Exited(code) => {
                // Not the checkpoint of a migration that started meanwhile?
                let again = super::load(name)?;
                if again.gen == c.record().gen && again.state == State::Active {
                    return Ok(code);
                }
            }
            Status::Failed(e) => bail!("container {name} failed to start: {e}"),
            Status::Lost(e) => bail!("container {name} was lost in a migration: {e}"),
            Status::Running(pid) if !sys::alive(pid) => match gone_since {
                Some((p, since)) if p == pid && since.elapsed() >= EXIT_GRACE => {
                    bail!("container {name} (pid {pid}) is gone and no exit status was recorded")
                }
                Some((p, _)) if p == pid => {}
                _ => gone_since = Some((pid, Instant::now())),
            },
            _ => gone_since = None,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "container {name} still running after {}s",
                timeout.unwrap_or(0.0)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// `migros rm`.
pub fn rm(name: &str, force: bool) -> Result<()> {
    sys::need_root("migros rm")?;
    let _lock = sys::lock()?;
    let mut c = engine::load(name)?;
    match c.status() {
        Status::Running(pid) if !force && sys::alive(pid) => {
            bail!("container {name} is running (pid {pid}); use migros rm -f")
        }
        Status::Migrating if !force => {
            bail!("container {name} is being migrated; use migros rm -f")
        }
        _ => {}
    }
    c.remove()?;
    println!("container {name} removed");
    Ok(())
}
