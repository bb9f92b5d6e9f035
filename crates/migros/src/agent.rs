//! `migros __remote …`: what `migros` does on an ssh node's machine when
//! the CLI of another machine asks (over ssh, as root). The node's device
//! is the machine's own: sockets in its `/run/migros` (where containers
//! and the CRIU plugin find them), its files in `/var/lib/migros`:
//! `bin/` (the programs `node add --ssh` installed), `<dev>.pid`,
//! `migrosd.log` and `keep.log`.
//!
//! - `start`: starts the supervisor (`keep`) detached, which runs migrosd
//!   and restarts it when it dies abnormally (a signal, an error exit; at
//!   most 5 times a minute); a clean exit (admin Shutdown, SIGTERM) ends
//!   it;
//! - `stop`: admin Shutdown, and waits until the daemon is gone;
//! - `status`: exits 0 when the device answers;
//! - `admin`: one admin request in JSON, the answer in JSON (the CLI's
//!   migrations ask the daemons through this);
//! - `runc`: one step of a runc container on this machine
//!   (`crate::engine::runc::ssh`);
//! - `watch`: the QPs' counters as a JSON line every so often, for as long
//!   as the reader reads (`demo --swarm` samples the bandwidth with it).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use migros_proto::admin::AdminRequest;

use crate::cli::{DevAddArgs, RemoteCommand};
use crate::daemon;
use crate::remote::REMOTE_DIR;

/// The socket directory of the machine's device.
pub const SOCKET_DIR: &str = migros_proto::paths::DEFAULT_SOCKET_DIR;
/// Restarts allowed within [`RESTART_WINDOW`].
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

fn pid_file(dev: &str) -> PathBuf {
    Path::new(REMOTE_DIR).join(format!("{dev}.pid"))
}

pub fn run(cmd: RemoteCommand) -> Result<()> {
    let dir = Path::new(SOCKET_DIR);
    match cmd {
        RemoteCommand::Start { dev, addr, mtu } => {
            let pid = start(&dev, addr, mtu)?;
            println!("{pid}");
            Ok(())
        }
        RemoteCommand::Stop { dev } => stop(&dev),
        RemoteCommand::Status { dev } => {
            if !daemon::answers(dir, &dev) {
                bail!("device {dev} does not answer in {SOCKET_DIR}");
            }
            println!(
                "{}",
                daemon::recorded_pid(Path::new(REMOTE_DIR), &dev).unwrap_or(0)
            );
            Ok(())
        }
        RemoteCommand::Admin { dev, request } => {
            let req: AdminRequest =
                serde_json::from_str(&request).context("parsing the admin request")?;
            let resp = crate::admin::request_raw(dir, &dev, &req)?;
            println!("{}", serde_json::to_string(&resp)?);
            Ok(())
        }
        RemoteCommand::Keep { argv } => keep(&argv),
        RemoteCommand::Runc { op } => crate::engine::runc::ssh::serve(&op),
        RemoteCommand::Watch { dev, every_ms } => watch(&dev, Duration::from_millis(every_ms)),
    }
}

fn start(dev: &str, addr: std::net::Ipv4Addr, mtu: Option<u32>) -> Result<i32> {
    if !migros_proto::paths::valid_device_name(dev) {
        bail!("invalid device name {dev:?}");
    }
    let dir = Path::new(SOCKET_DIR);
    if daemon::answers(dir, dev) {
        bail!("device {dev} already runs on this machine ({SOCKET_DIR})");
    }
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(REMOTE_DIR)?;
    let _ = std::fs::remove_file(pid_file(dev));
    let bin = daemon::find_daemon()?;
    let args = daemon::daemon_args(
        dir,
        &DevAddArgs {
            name: dev.to_string(),
            addr: IpAddr::V4(addr),
            mtu,
            fault: None,
        },
    );
    let exe = std::env::current_exe().context("locating the migros executable")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(REMOTE_DIR).join("keep.log"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["__remote", "keep", "--"])
        .arg(&bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    crate::sys::detach(&mut cmd);
    let mut child = cmd.spawn().context("starting the supervisor")?;
    let deadline = Instant::now() + daemon::START_TIMEOUT * 2;
    loop {
        if daemon::answers(dir, dev) {
            if let Some(pid) = daemon::recorded_pid(Path::new(REMOTE_DIR), dev) {
                return Ok(pid);
            }
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "the supervisor exited ({st}); migrosd's log ends with:\n{}",
                daemon::log_tail(&Path::new(REMOTE_DIR).join("migrosd.log"))
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "migrosd did not answer within {:?}; its log ends with:\n{}",
                daemon::START_TIMEOUT * 2,
                daemon::log_tail(&Path::new(REMOTE_DIR).join("migrosd.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(dev: &str) -> Result<()> {
    let dir = Path::new(SOCKET_DIR);
    let pid = daemon::recorded_pid(Path::new(REMOTE_DIR), dev);
    if let Err(e) = crate::admin::shutdown(dir, dev) {
        match pid {
            Some(p) if crate::sys::alive(p) => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .with_context(|| format!("signalling migrosd (pid {p})"))?;
            }
            _ => bail!("device {dev} does not answer ({e:#}) and no migrosd runs"),
        }
    }
    if let Some(p) = pid {
        daemon::wait_gone(p, dir, dev)?;
    }
    Ok(())
}

/// One line per `every`: `{"t": seconds since the first, "qps": [...]}`
/// (each QP's counters), until
/// the output closes.
fn watch(dev: &str, every: Duration) -> Result<()> {
    let dir = Path::new(SOCKET_DIR);
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    loop {
        let qps = crate::admin::stats(dir, dev)
            .map(|(_, q)| q)
            .unwrap_or_default();
        // When it was read: ssh may deliver lines in bursts.
        let t = start.elapsed().as_secs_f64();
        let line = serde_json::json!({ "t": t, "qps": qps });
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // The reader went away.
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// The supervisor: `argv` is migrosd's command line.
fn keep(argv: &[String]) -> Result<()> {
    let dev = argv
        .iter()
        .position(|a| a == "--name")
        .and_then(|i| argv.get(i + 1))
        .context("migrosd's command line has no --name")?
        .clone();
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(REMOTE_DIR).join("migrosd.log"))?;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env(migros_proto::paths::SOCKET_DIR_ENV, SOCKET_DIR)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", argv[0]))?;
        std::fs::write(pid_file(&dev), format!("{}\n", child.id()))?;
        let status = child.wait()?;
        let now = Instant::now();
        println!("keep: migrosd (pid {}) exited: {status}", child.id());
        let _ = std::io::stdout().flush();
        if status.success() {
            let _ = std::fs::remove_file(pid_file(&dev));
            return Ok(());
        }
        restarts.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        if restarts.len() >= MAX_RESTARTS {
            let _ = std::fs::remove_file(pid_file(&dev));
            bail!("migrosd died {MAX_RESTARTS} times within {RESTART_WINDOW:?}: not restarting it");
        }
        restarts.push(now);
        std::thread::sleep(Duration::from_secs(1));
        println!("keep: restarting migrosd");
    }
}
