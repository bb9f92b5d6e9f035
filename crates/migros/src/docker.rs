//! The Docker engine: `migros run --engine docker` and `migros migrate
//! --engine docker` drive Docker (20.10, experimental checkpoints) with the
//! commands of the seed experiment (`migros logs|wait|rm|ps` recognise
//! these containers by their record); the migros CRIU plugin, which CRIU
//! loads when containerd's runc calls it, moves the RDMA state.
//!
//! A container `<name>` runs on a node as the Docker container `<name>`
//! (incarnation 0), then `<name>-1`, `<name>-2`… after each migration
//! (Docker names are unique; the stopped ones keep their output). Its
//! record, `/run/migros/state/docker/<name>/container.json`, names the
//! current one. Every incarnation is
//!
//! ```text
//! docker run|create --name <name>[-<n>] --network migros-dock --ip <ip>
//!     -v /run/migros/nodes/<node>:/run/migros
//!     -v <state>/docker/<name>/lib:/opt/migros/lib:ro -v /usr:/usr:ro
//!     -e LD_LIBRARY_PATH=/opt/migros/lib migros-base <cmd…>
//! ```
//!
//! (`scripts/setup-docker.sh` makes the image and the network; `lib` is the
//! container's own copy of `target/ibverbs`: a rebuild replaces those files
//! and CRIU cannot dump a process mapping a deleted library).
//!
//! A migration: (1) the RDMA identifiers of the container's processes on
//! the source daemon (admin `Identifiers`) must be free on the destination
//! (`CheckIdentifiers`), before anything is frozen; (2) `docker create` of
//! the next incarnation, same `--ip`, against the destination node's
//! sockets; (3) `docker checkpoint create <cur> <ck>` (a fresh checkpoint
//! name every time: Docker 20.10 fails to restore a checkpoint containerd
//! already holds); (4) copy `/var/lib/docker/containers/<old id>/checkpoints/<ck>`
//! into the new container's `checkpoints/`; (5) `docker start --checkpoint
//! <ck> <new>`; (6) admin `ForwardTombstones` on the source daemon for
//! every QP the checkpoint turned into a tombstone there.
//! containerd removes CRIU's work directory (logs, stats), so the timeline
//! shows wall-clock times: the downtime is measured from the start of the
//! checkpoint (the freeze comes a few ms later) to the end of the restore.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use migros_proto::admin::{AdminRequest, AdminResponse, SessionIds};
use serde::{Deserialize, Serialize};

use crate::node::{self, Node};
use crate::sys;

/// The image and network `scripts/setup-docker.sh` makes.
pub const IMAGE: &str = "migros-base";
pub const NETWORK: &str = "migros-dock";
/// `migros-dock`'s subnet: 198.19.240.0/24.
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 240, 0), 24);
/// Where Docker keeps containers (and their checkpoints).
pub const DOCKER_ROOT: &str = "/var/lib/docker/containers";

/// What `run` recorded (and migrations update).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerContainer {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub volumes: Vec<String>,
    /// The current incarnation (0 at `run`, +1 per migration).
    pub gen: u32,
    /// A migration is under way (the current incarnation may have exited
    /// because it was checkpointed).
    pub migrating: bool,
}

impl DockerContainer {
    /// The Docker name of incarnation `gen`.
    pub fn docker_name(&self, gen: u32) -> String {
        docker_name(&self.name, gen)
    }

    /// The Docker name of the current incarnation.
    pub fn current(&self) -> String {
        self.docker_name(self.gen)
    }

    fn save(&self) -> Result<()> {
        sys::write_json(&dir(&self.name).join("container.json"), self)
    }

    /// `docker run|create` options of incarnation `gen` on `node`, up to
    /// the image (the command follows).
    fn options(&self, gen: u32, node: &Node) -> Result<Vec<String>> {
        let lib = snapshot_lib(&self.name)?;
        let mut v = vec![
            "--name".to_string(),
            self.docker_name(gen),
            "--hostname".into(),
            self.name.clone(),
            "--network".into(),
            NETWORK.into(),
            "--ip".into(),
            self.ip.to_string(),
            "-v".into(),
            format!("{}:/run/migros", node.socket_dir().display()),
            "-v".into(),
            "/usr:/usr:ro".into(),
        ];
        if let Some(lib) = lib {
            v.extend([
                "-v".into(),
                format!("{}:/opt/migros/lib:ro", lib.display()),
                "-e".into(),
                "LD_LIBRARY_PATH=/opt/migros/lib".into(),
            ]);
        }
        for e in &self.env {
            v.extend(["-e".into(), e.clone()]);
        }
        for m in &self.volumes {
            v.extend(["-v".into(), m.clone()]);
        }
        v.push(IMAGE.into());
        Ok(v)
    }
}

pub fn docker_name(name: &str, gen: u32) -> String {
    if gen == 0 {
        name.to_string()
    } else {
        format!("{name}-{gen}")
    }
}

pub fn dir(name: &str) -> PathBuf {
    sys::state_dir().join("docker").join(name)
}

/// Whether `name` is a Docker-engine container of migros.
pub fn exists(name: &str) -> bool {
    dir(name).join("container.json").is_file()
}

pub fn load(name: &str) -> Result<DockerContainer> {
    let p = dir(name).join("container.json");
    if !p.exists() {
        bail!("docker container {name} not found (see `migros ps`)");
    }
    sys::read_json(&p)
}

/// Every Docker-engine container, sorted by name.
pub fn all() -> Vec<DockerContainer> {
    let Ok(entries) = std::fs::read_dir(sys::state_dir().join("docker")) else {
        return Vec::new();
    };
    let mut v: Vec<DockerContainer> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| sys::read_json(&e.path().join("container.json")).ok())
        .collect();
    v.sort_by(|a: &DockerContainer, b| a.name.cmp(&b.name));
    v
}

/// `docker args…`: its stdout, or an error with its stderr.
pub fn docker(args: &[&str]) -> Result<String> {
    sys::run("docker", args)
}

fn docker_owned(args: &[String]) -> Result<String> {
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&v)
}

/// `docker inspect -f <format> <name>`, trimmed.
fn inspect(name: &str, format: &str) -> Result<String> {
    Ok(docker(&["inspect", "-f", format, name])?.trim().to_string())
}

/// Whether `ip` is in migros-dock's subnet (not its network, gateway or
/// broadcast address).
pub fn valid_ip(ip: Ipv4Addr) -> bool {
    let (net, len) = SUBNET;
    let mask = u32::MAX << (32 - len);
    let host = u32::from(ip) & !mask;
    u32::from(ip) & mask == u32::from(net) && host > 1 && host < !mask
}

/// Docker, the image and the network are there.
fn check_docker() -> Result<()> {
    docker(&["info", "--format", "{{.ServerVersion}}"])
        .context("dockerd does not answer (scripts/setup-docker.sh starts it)")?;
    docker(&["image", "inspect", IMAGE])
        .with_context(|| format!("image {IMAGE} missing (scripts/setup-docker.sh makes it)"))?;
    docker(&["network", "inspect", NETWORK])
        .with_context(|| format!("network {NETWORK} missing (scripts/setup-docker.sh makes it)"))?;
    Ok(())
}

/// The container's own copy of migros' libibverbs directory, made once.
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

/// `migros run --engine docker`: starts incarnation 0 on `node`.
pub fn run(
    node_name: &str,
    name: &str,
    ip: Option<Ipv4Addr>,
    env: &[String],
    volumes: &[String],
    cmd: &[String],
) -> Result<()> {
    sys::need_root("migros run --engine docker")?;
    if !sys::valid_name(name, 40) {
        bail!("bad container name {name:?}: lowercase letters, digits, '-', '_'");
    }
    if let Some(ip) = ip {
        if !valid_ip(ip) {
            bail!(
                "--ip {ip}: Docker containers take addresses of network {NETWORK}, {}/{}",
                SUBNET.0,
                SUBNET.1
            );
        }
    }
    let _lock = sys::lock()?;
    if exists(name) || crate::container::load(name).is_ok() {
        bail!("container {name} exists (migros rm {name})");
    }
    let node = node::load(node_name)?;
    if !node.running() {
        bail!("node {}: its migrosd is not running", node.name);
    }
    check_docker()?;
    std::fs::create_dir_all(dir(name))?;
    let mut c = DockerContainer {
        name: name.to_string(),
        node: node.name.clone(),
        ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        args: cmd.to_vec(),
        env: env.to_vec(),
        volumes: volumes.to_vec(),
        gen: 0,
        migrating: false,
    };
    let mut args = vec!["run".to_string(), "-d".into()];
    let mut opts = c.options(0, &node)?;
    if ip.is_none() {
        // Docker picks the address; it is kept from then on.
        let i = opts.iter().position(|o| o == "--ip").expect("--ip");
        opts.drain(i..i + 2);
    }
    args.extend(opts);
    args.extend(cmd.iter().cloned());
    if let Err(e) = docker_owned(&args) {
        let _ = docker(&["rm", "-f", name]);
        let _ = std::fs::remove_dir_all(dir(name));
        return Err(e);
    }
    if ip.is_none() {
        let got = inspect(
            name,
            &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").IPAddress}}}}"),
        )?;
        c.ip = got
            .parse()
            .with_context(|| format!("docker gave {name} address {got:?}"))?;
    }
    c.save()?;
    println!(
        "container {name} (docker) on node {}: address {}",
        node.name, c.ip
    );
    Ok(())
}

/// `docker inspect` state of one incarnation: (status, exit code, pid).
fn state(docker_name: &str) -> Result<(String, i32, i32)> {
    let s = inspect(
        docker_name,
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}",
    )?;
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 3 {
        bail!("docker inspect {docker_name}: {s:?}");
    }
    Ok((f[0].to_string(), f[1].parse()?, f[2].parse()?))
}

/// `migros ps` lines of Docker-engine containers, in its columns (the
/// pid column shows the current Docker container's name).
pub fn ps_lines() -> Vec<String> {
    all()
        .into_iter()
        .map(|c| {
            let status = if c.migrating {
                "migrating".to_string()
            } else {
                match state(&c.current()) {
                    Ok((s, code, _)) if s == "exited" => format!("exited({code})"),
                    Ok((s, _, _)) => s,
                    Err(_) => "gone".into(),
                }
            };
            let mut cmd = c.args.join(" ").replace('\n', " ");
            if cmd.chars().count() > 40 {
                cmd = cmd.chars().take(37).collect::<String>() + "...";
            }
            format!(
                "{:<14} {:<12} {:<16} {:<12} {:>8}  docker: {cmd}",
                c.name,
                c.node,
                c.ip.to_string(),
                status,
                c.current()
            )
        })
        .collect()
}

/// `migros logs`: the output of every incarnation, oldest first.
pub fn logs(name: &str) -> Result<()> {
    let c = load(name)?;
    for g in 0..=c.gen {
        let out = Command::new("docker")
            .args(["logs", &c.docker_name(g)])
            .stdin(Stdio::null())
            .output()
            .context("running docker logs")?;
        // Docker keeps stdout and stderr apart; both are the container's output.
        use std::io::Write as _;
        std::io::stdout().write_all(&out.stdout)?;
        std::io::stdout().write_all(&out.stderr)?;
    }
    Ok(())
}

/// `migros wait`: the exit status of the container, wherever it moved.
pub fn wait(name: &str, timeout: Option<f64>) -> Result<i32> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t));
    loop {
        let c = load(name)?;
        if !c.migrating {
            let (s, code, _) = state(&c.current())?;
            if s == "exited" || s == "dead" {
                // Checkpointed by a migration that started meanwhile?
                let again = load(name)?;
                if !again.migrating && again.gen == c.gen {
                    return Ok(code);
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            bail!(
                "container {name} still runs after {:.1} s",
                timeout.unwrap_or(0.0)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `migros rm`: removes every incarnation and the record (`force`: kills
/// a running one first).
pub fn rm(name: &str, force: bool) -> Result<()> {
    sys::need_root("migros rm")?;
    let _lock = sys::lock()?;
    let c = load(name)?;
    if !force {
        if let Ok((s, _, _)) = state(&c.current()) {
            if s == "running" || s == "restarting" || s == "paused" {
                bail!("container {name} is running (migros rm -f {name})");
            }
        }
    }
    for g in 0..=c.gen {
        let _ = docker(&["rm", "-f", &c.docker_name(g)]);
    }
    // An interrupted migration may have created the next one.
    let _ = docker(&["rm", "-f", &c.docker_name(c.gen + 1)]);
    std::fs::remove_dir_all(dir(name))
        .with_context(|| format!("removing {}", dir(name).display()))?;
    println!("container {name} removed");
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `migros migrate --engine docker`.
pub fn migrate(name: &str, to: &str, keep_image: bool) -> Result<()> {
    sys::need_root("migros migrate")?;
    let _lock = sys::lock()?;
    let c = load(name)?;
    if c.migrating {
        bail!("container {name}: a migration is under way (or was interrupted)");
    }
    let cur = c.current();
    let (status, _, pid) = state(&cur)?;
    if status != "running" || pid <= 0 {
        bail!("container {name} is not running ({status})");
    }
    let src = node::load(&c.node)?;
    let dst = node::load(to)?;
    if src.name == dst.name {
        bail!("container {name} already runs on node {}", dst.name);
    }
    if !dst.running() {
        bail!(
            "node {}: its migrosd (pid {}) is not running",
            dst.name,
            dst.pid
        );
    }
    let t_start = Instant::now();
    let mut steps: Vec<(&str, Duration, String)> = Vec::new();
    let step = |what: &str| eprintln!("migrate {name}: {what}");

    // 1. identifiers
    step("checking RDMA identifiers");
    let t = Instant::now();
    let pids = crate::migrate::process_tree(pid);
    let sessions = identifiers(&src, &pids)?;
    let qpns: Vec<u32> = sessions.iter().flat_map(|s| s.qpns.clone()).collect();
    if !sessions.is_empty() {
        check_identifiers(&dst, &sessions)?;
    }
    steps.push((
        "check identifiers",
        t.elapsed(),
        if sessions.is_empty() {
            format!("no RDMA sessions in {} process(es)", pids.len())
        } else {
            format!(
                "{} session(s), {} QP(s) free on {}",
                sessions.len(),
                qpns.len(),
                dst.name
            )
        },
    ));

    // 2. the next incarnation, created against the destination's sockets
    step(&format!("docker create on node {}", dst.name));
    let t = Instant::now();
    let gen = c.gen + 1;
    let new = c.docker_name(gen);
    let _ = docker(&["rm", "-f", &new]);
    let mut args = vec!["create".to_string()];
    args.extend(c.options(gen, &dst)?);
    args.extend(c.args.iter().cloned());
    docker_owned(&args).with_context(|| format!("docker create {new}; nothing was frozen"))?;
    let new_id = inspect(&new, "{{.Id}}")?;
    steps.push((
        "prepare destination",
        t.elapsed(),
        format!("docker create {new}"),
    ));

    // 3. checkpoint
    let mut moving = c.clone();
    moving.migrating = true;
    moving.save()?;
    step("docker checkpoint create (freeze, RDMA pause + dump, memory)");
    let old_id = inspect(&cur, "{{.Id}}")?;
    // The source's tombstones before: the checkpoint's are the new ones
    // (QPs made after the identifier check included).
    let tombstones_before = crate::migrate::tombstones(&src);
    let ck = format!(
        "migros-{gen}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let t_ck = Instant::now();
    if let Err(e) = docker(&["checkpoint", "create", &cur, &ck]) {
        c.save()?;
        let _ = docker(&["rm", "-f", &new]);
        let still = match state(&cur) {
            Ok((s, _, _)) if s == "running" => {
                format!("the container is still running on node {}", src.name)
            }
            Ok((s, code, _)) => format!("the container is {s} (exit code {code})"),
            Err(_) => "the container is gone".into(),
        };
        bail!(
            "checkpoint failed: {e:#}\n{still} (dockerd's log: {}/dockerd.log)",
            sys::state_dir().display()
        );
    }
    let ck_took = t_ck.elapsed();
    let from = Path::new(DOCKER_ROOT)
        .join(&old_id)
        .join("checkpoints")
        .join(&ck);
    let size = sys::dir_size(&from);
    steps.push((
        "checkpoint",
        ck_took,
        format!("docker checkpoint create {cur} {ck}"),
    ));

    // 4. transfer
    step("transfer");
    let t = Instant::now();
    let to_dir = Path::new(DOCKER_ROOT)
        .join(&new_id)
        .join("checkpoints")
        .join(&ck);
    let copied = sys::copy_tree(&from, &to_dir);
    steps.push((
        "transfer",
        t.elapsed(),
        format!(
            "image {} copied into {new}'s checkpoints",
            sys::human_bytes(size)
        ),
    ));

    // 5. restore
    step(&format!("docker start --checkpoint on node {}", dst.name));
    let t_rs = Instant::now();
    let started = copied.and_then(|_| start_checkpoint(&cur, &ck, &new));
    let resumed = Instant::now();
    if let Err(e) = started {
        // The image stays in the new container's checkpoints (and the old one's).
        bail!(
            "restore on node {} failed: {e:#}\nthe checkpoint is kept in {} (and {}); container {name} stays marked migrating (migros rm -f {name} removes it)",
            dst.name,
            to_dir.display(),
            from.display()
        );
    }
    let new_pid = state(&new).map(|s| s.2).unwrap_or(0);
    steps.push((
        "restore",
        t_rs.elapsed(),
        format!("docker start --checkpoint {ck} {new}"),
    ));

    // 6. tombstones, the record
    step("forwarding tombstones");
    let t = Instant::now();
    let mut notes = Vec::new();
    notes.extend(crate::migrate::forward_tombstones(
        &src,
        &dst,
        qpns,
        tombstones_before.as_deref(),
    ));
    let mut done = c.clone();
    done.node = dst.name.clone();
    done.gen = gen;
    done.migrating = false;
    done.save()?;
    if !keep_image {
        let _ = docker(&["checkpoint", "rm", &cur, &ck]);
        let _ = std::fs::remove_dir_all(&from);
        let _ = std::fs::remove_dir_all(&to_dir);
    }
    steps.push((
        "finish",
        t.elapsed(),
        if notes.is_empty() {
            "no RDMA".to_string()
        } else {
            notes.join(", ")
        },
    ));

    println!(
        "migrated {name} from {} to {} (docker {cur} -> {new}): pid {pid} -> {new_pid}",
        src.name, dst.name
    );
    for (n, took, detail) in &steps {
        println!("  {n:<20} {:>10}  {detail}", ms(*took));
    }
    println!(
        "  {:<20} {:>10}  checkpoint start to restored (freeze within the checkpoint + transfer + restore)",
        "downtime",
        ms(resumed - t_ck)
    );
    println!(
        "  {:<20} {:>10}  image {}{}",
        "total",
        ms(t_start.elapsed()),
        sys::human_bytes(size),
        if keep_image {
            format!(" kept in {}", to_dir.display())
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `docker start --checkpoint <ck> <new>` once dockerd has seen the
/// checkpointed container `old` stop: until then its address is taken
/// ("Address already in use"; `docker checkpoint create` returns before
/// dockerd has handled the exit).
fn start_checkpoint(old: &str, ck: &str, new: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stopped = !matches!(state(old), Ok((s, _, _)) if s == "running");
        if stopped {
            match docker(&["start", "--checkpoint", ck, new]) {
                Ok(_) => return Ok(()),
                Err(e)
                    if format!("{e:#}").contains("Address already in use")
                        && Instant::now() < deadline => {}
                Err(e) if Instant::now() < deadline => match held_content(&format!("{e:#}")) {
                    // Docker 20.10 refuses a checkpoint whose content
                    // containerd still holds from an earlier restore
                    // ("commit failed: content sha256:… already exists"):
                    // drop that blob from containerd's store and retry.
                    Some(digest) => {
                        drop_content(&digest).with_context(|| format!("after: {e:#}"))?
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        } else if Instant::now() >= deadline {
            bail!("container {old} still runs 10 s after its checkpoint");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The digest in Docker 20.10's "content sha256:… already exists" error.
fn held_content(error: &str) -> Option<String> {
    let rest = &error[error.find("content sha256:")? + "content ".len()..];
    if !rest.contains("already exists") {
        return None;
    }
    let hex: String = rest
        .strip_prefix("sha256:")?
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (hex.len() == 64).then(|| format!("sha256:{hex}"))
}

/// Removes a blob from the content store of dockerd's containerd.
fn drop_content(digest: &str) -> Result<()> {
    let out = std::process::Command::new("ctr")
        .args([
            "--address",
            "/var/run/docker/containerd/containerd.sock",
            "--namespace",
            "moby",
            "content",
            "rm",
            digest,
        ])
        .output()
        .context("running ctr (containerd's client) to drop a stale checkpoint blob")?;
    if !out.status.success() {
        bail!(
            "ctr content rm {digest} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The RDMA identifiers of each process on the node's daemon.
fn identifiers(node: &Node, pids: &[i32]) -> Result<Vec<SessionIds>> {
    let mut v = Vec::new();
    for &p in pids {
        match crate::admin::request_raw(
            &node.socket_dir(),
            &node.dev,
            &AdminRequest::Identifiers { pid: p as u32 },
        )
        .with_context(|| {
            format!(
                "asking node {}'s daemon for pid {p}'s identifiers",
                node.name
            )
        })? {
            AdminResponse::Identifiers(ids) => v.extend(ids),
            AdminResponse::Error { errno, message } => {
                bail!(
                    "node {}: Identifiers for pid {p}: {message} (errno {errno})",
                    node.name
                )
            }
            r => bail!("node {}: unexpected answer {r:?} to Identifiers", node.name),
        }
    }
    Ok(v)
}

fn check_identifiers(node: &Node, sessions: &[SessionIds]) -> Result<()> {
    match crate::admin::request(
        &node.socket_dir(),
        &node.dev,
        &AdminRequest::CheckIdentifiers(sessions.to_vec()),
    ) {
        Ok(AdminResponse::Ok) => Ok(()),
        Ok(r) => bail!(
            "node {}: unexpected answer {r:?} to CheckIdentifiers",
            node.name
        ),
        Err(e) => bail!(
            "node {} cannot take the container's RDMA identifiers: {e:#}; nothing was frozen",
            node.name
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn held_content_digest_is_found_only_in_that_error() {
        let d = "6b9b6924df5be36c7d67a98a2ee7d424b3c0cd942082e1a6b823667ddac5d8a6";
        let e = format!("Error response from daemon: failed to upload checkpoint to containerd: commit failed: content sha256:{d}: already exists");
        assert_eq!(super::held_content(&e), Some(format!("sha256:{d}")));
        assert_eq!(super::held_content("Address already in use"), None);
        assert_eq!(
            super::held_content("content sha256:abc: already exists"),
            None
        );
    }

    use super::*;

    #[test]
    fn names_and_addresses() {
        assert_eq!(docker_name("srv", 0), "srv");
        assert_eq!(docker_name("srv", 3), "srv-3");
        assert!(valid_ip("198.19.240.11".parse().unwrap()));
        assert!(!valid_ip("198.19.240.0".parse().unwrap()));
        assert!(!valid_ip("198.19.240.1".parse().unwrap()));
        assert!(!valid_ip("198.19.240.255".parse().unwrap()));
        assert!(!valid_ip("198.19.1.11".parse().unwrap()));
    }
}
