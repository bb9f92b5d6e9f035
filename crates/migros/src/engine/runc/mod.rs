//! The runc engine: containers run by runc on a node, from bundles migros
//! writes; the migration steps are in [`steps`].
//!
//! Besides its record, a container keeps in its directory
//! (`/run/migros/state/containers/<name>/`) `rootfs/` (mount points and
//! symlinks; the content is read-only bind mounts of the host), `log` (its
//! output), its CRIU configuration and action script, and one directory
//! `gen-<g>/` per incarnation (0 at `run`, +1 per migration) with the OCI
//! bundle (`config.json`), runc's log and the supervisor's files (see
//! [`supervise`]). The incarnation `g` is the runc container `<name>.<g>`
//! (runc root `/run/migros/state/runc`) in the network namespace
//! `migros-c-<name>-<g>` ([`net`]).

pub mod freezer;
pub mod net;
pub mod spec;
pub mod ssh;
mod steps;
pub mod supervise;
pub mod sysfs;

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::Engine;
use crate::container::{self, dir, Container, Status};
use crate::node::Node;
use crate::sys;

/// How long `run` (and a migration's restore) waits for runc.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Writes the OCI bundle of incarnation `gen` of `c` on this machine,
/// the device sockets of `sock` mounted at `/run/migros` (`flat`: the
/// host directories without their submounts, see `spec::Spec`), and for
/// the devices there that answer their `/sys/class` directory
/// (`gen-<g>/sys-class`, [`sysfs`]) and device nodes.
pub fn write_bundle(c: &Container, gen: u32, sock: &Path, flat: bool) -> Result<PathBuf> {
    let gd = gen_dir(&c.name, gen);
    std::fs::create_dir_all(&gd).with_context(|| format!("creating {}", gd.display()))?;
    let root = rootfs(&c.name);
    let lib = container::snapshot_lib(&c.name)?;
    let d = dir(&c.name);
    let (criu_conf, script) = (d.join("criu.conf"), d.join("criu-action.sh"));
    std::fs::write(&script, spec::ACTION_SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(&criu_conf, spec::criu_config(&script))?;
    let devices = sysfs::devices(sock);
    let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
    let class = gd.join("sys-class");
    sysfs::build(
        &class,
        &sysfs::host_classes(),
        &devices,
        &sysfs::host_ib_devices(),
    )
    .with_context(|| format!("writing {}", class.display()))?;
    let s = spec::Spec {
        hostname: &c.name,
        rootfs: &root,
        args: &c.args,
        env: &c.env,
        netns: net::netns_path(&c.name, gen),
        socket_dir: sock,
        lib_dir: lib.as_deref(),
        criu_config: Some(&criu_conf),
        volumes: &c.volumes,
        flat_host_dirs: flat,
        ib_devices: &names,
        sys_class: Some(&class),
    };
    sys::write_json(&gd.join("config.json"), &s.to_json())?;
    Ok(gd)
}

/// A container run by runc.
pub struct Runc {
    c: Container,
    /// The migration under way, if any.
    mig: steps::Migration,
}

impl Runc {
    pub fn new(c: Container) -> Runc {
        Runc {
            c,
            mig: steps::Migration::default(),
        }
    }

    /// Writes the OCI bundle of incarnation `gen` on `node`.
    fn write_bundle(&self, gen: u32, node: &Node) -> Result<PathBuf> {
        write_bundle(&self.c, gen, &node.socket_dir(), false)
    }

    /// The container's init (host pid) while it runs.
    fn pid(&self) -> Option<i32> {
        match self.status() {
            Status::Running(p) if sys::alive(p) => Some(p),
            _ => None,
        }
    }

    /// The address `run` gives the container: the record's, checked, or
    /// the first free one.
    fn address(&self) -> Result<Ipv4Addr> {
        let others: Vec<Container> = container::all()
            .into_iter()
            .filter(|o| o.name != self.c.name)
            .collect();
        let taken: Vec<Ipv4Addr> = others.iter().map(|o| o.ip).collect();
        match self.c.ip {
            Ipv4Addr::UNSPECIFIED => {
                net::allocate(&taken).context("no free address in 198.19.0.0/16")
            }
            ip if !net::valid_ip(ip) => bail!("container address {ip} is not in 198.19.0.0/16"),
            ip => match others.iter().find(|o| o.ip == ip) {
                Some(o) => bail!("address {ip} is taken by container {}", o.name),
                None => Ok(ip),
            },
        }
    }
}

impl Engine for Runc {
    fn record(&self) -> &Container {
        &self.c
    }

    fn id(&self, gen: u32) -> String {
        runc_id(&self.c.name, gen)
    }

    fn run(&mut self, node: &Node) -> Result<String> {
        if node.ssh.is_some() {
            return self.run_ssh(node);
        }
        self.c.ip = self.address()?;
        let c = &self.c;
        let result = (|| -> Result<i32> {
            let d = dir(&c.name);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            spec::make_rootfs(&rootfs(&c.name)).context("making the rootfs")?;
            self.write_bundle(0, node)?;
            std::fs::File::create(log_path(&c.name))?;
            c.save()?;
            net::create(&c.name, 0, c.ip, node)?;
            net::route_to(&c.name, c.ip, node)?;
            start(&c.name, 0, None)
        })();
        match result {
            Ok(pid) => Ok(format!("ip {} pid {pid}", c.ip)),
            Err(e) => {
                let _ = self.remove();
                Err(e)
            }
        }
    }

    fn status(&self) -> Status {
        if let Some(s) = Status::from_state(&self.c.state) {
            return s;
        }
        if let Some(n) = ssh::ssh_node(&self.c) {
            return self.status_ssh(&n);
        }
        let d = gen_dir(&self.c.name, self.c.gen);
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

    fn logs(&self, out: &mut dyn Write) -> Result<()> {
        if let Some(n) = ssh::ssh_node(&self.c) {
            return self.logs_ssh(&n, out);
        }
        let mut f = std::fs::File::open(log_path(&self.c.name)).context("opening the log")?;
        std::io::copy(&mut f, out)?;
        Ok(())
    }

    fn remove(&mut self) -> Result<()> {
        if let Some(n) = ssh::ssh_node(&self.c) {
            return self.remove_ssh(&n);
        }
        let c = &self.c;
        if let Some(pid) = self.pid() {
            let _ = runc(&["kill", &runc_id(&c.name, c.gen), "KILL"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.status(), Status::Running(_)) && sys::alive(pid) {
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
        // An interrupted migration may have made the next incarnation.
        for g in 0..=c.gen + 1 {
            let _ = runc(&["delete", "-f", &runc_id(&c.name, g)]);
            let _ = net::destroy(&c.name, g);
        }
        net::unroute(c.ip);
        std::fs::remove_dir_all(dir(&c.name))
            .with_context(|| format!("removing {}", dir(&c.name).display()))
    }

    fn check(&mut self, m: &super::Move) -> Result<Vec<i32>> {
        if m.src.ssh.is_some() || m.dst.ssh.is_some() {
            return self.check_ssh(m);
        }
        self.check_step(m)
    }

    fn prepare(&mut self, m: &super::Move) -> Result<String> {
        if m.src.ssh.is_some() {
            return self.prepare_ssh(m);
        }
        self.prepare_step(m)
    }

    fn pre_copy(&mut self, m: &super::Move, round: u32) -> Result<String> {
        self.pre_copy_step(m, round)
    }

    fn checkpoint(&mut self, m: &super::Move) -> Result<super::Checkpointed> {
        if m.src.ssh.is_some() {
            return self.checkpoint_ssh(m);
        }
        self.checkpoint_step(m)
    }

    fn transfer(&mut self, m: &super::Move) -> Result<super::Transferred> {
        if m.src.ssh.is_some() {
            return self.transfer_ssh(m);
        }
        self.transfer_step(m)
    }

    fn network(&mut self, m: &super::Move) -> Result<String> {
        if m.src.ssh.is_some() {
            return self.network_ssh(m);
        }
        self.network_step(m)
    }

    fn restore(&mut self, m: &super::Move) -> Result<super::Restored> {
        if m.src.ssh.is_some() {
            return self.restore_ssh(m);
        }
        self.restore_step(m)
    }

    fn finish(&mut self, m: &super::Move) -> Vec<String> {
        if m.src.ssh.is_some() {
            return self.finish_ssh(m);
        }
        self.finish_step(m)
    }

    fn rollback(&mut self, m: &super::Move, failed: super::Step) -> super::Aftermath {
        if m.src.ssh.is_some() {
            return self.rollback_ssh(m, failed);
        }
        self.rollback_steps(m, failed)
    }
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
    sys::detach(&mut cmd);
    let mut child = cmd.spawn().context("starting the supervisor")?;
    let started = || {
        std::fs::read_to_string(gd.join("started"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(pid) = started() {
            return Ok(pid);
        }
        if let Ok(e) = std::fs::read_to_string(gd.join("failed")) {
            let _ = child.wait();
            bail!("{}", e.trim());
        }
        if let Some(st) = child.try_wait()? {
            // It may have written `started` just before exiting.
            if let Some(pid) = started() {
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
