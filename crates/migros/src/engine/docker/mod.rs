//! The Docker engine: Docker (20.10, experimental checkpoints) driven with
//! the commands of the seed experiment; the migros CRIU plugin, which CRIU
//! loads when containerd's runc calls it, moves the RDMA state. The
//! migration steps are in [`steps`].
//!
//! A container `<name>` runs on a node as the Docker container `<name>`
//! (incarnation 0), then `<name>-1`, `<name>-2`… after each migration
//! (Docker names are unique; the stopped ones keep their output). Every
//! incarnation is
//!
//! ```text
//! docker run|create --name <name>[-<n>] --network migros-dock --ip <ip>
//!     -v /run/migros/nodes/<node>:/run/migros
//!     -v <state>/containers/<name>/lib:/opt/migros/lib:ro -v /usr:/usr:ro
//!     -e LD_LIBRARY_PATH=/opt/migros/lib migros-base <cmd…>
//! ```
//!
//! (`scripts/setup-docker.sh` makes the image and the network; `lib` is the
//! container's own copy of `target/ibverbs`: a rebuild replaces those files
//! and CRIU cannot dump a process mapping a deleted library).
//!
//! A container may name another image and network (`migros run --image
//! --network`): such an image brings its own libraries (as the seed's
//! `scripts/seed/Dockerfile`), and only the node's sockets are mounted.
//! On an ssh node (`migros node add --ssh`) every `docker` command runs on
//! the node's machine over ssh, its dockerd being that machine's; the
//! network must then span the machines (an attachable swarm overlay).

mod steps;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use super::Engine;
use crate::container::{self, Container, Status};
use crate::node::Node;
use crate::remote::Host;

/// The image and network `scripts/setup-docker.sh` makes.
pub const IMAGE: &str = "migros-base";
pub const NETWORK: &str = "migros-dock";
/// `migros-dock`'s subnet: 198.19.240.0/24.
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 240, 0), 24);
/// Where Docker keeps containers (and their checkpoints).
pub const DOCKER_ROOT: &str = "/var/lib/docker/containers";
/// Longest container name (Docker's names have room; ours stay short).
pub const MAX_NAME: usize = 40;

/// The Docker name of incarnation `gen` of container `name`.
pub fn docker_name(name: &str, gen: u32) -> String {
    if gen == 0 {
        name.to_string()
    } else {
        format!("{name}-{gen}")
    }
}

/// `docker args…` on `h`: its stdout, or an error with its stderr.
pub fn docker(h: &Host, args: &[&str]) -> Result<String> {
    h.run("docker", args)
}

fn docker_owned(h: &Host, args: &[String]) -> Result<String> {
    let v: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(h, &v)
}

/// `docker inspect -f <format> <name>` on `h`, trimmed.
fn inspect(h: &Host, name: &str, format: &str) -> Result<String> {
    Ok(docker(h, &["inspect", "-f", format, name])?
        .trim()
        .to_string())
}

/// `docker inspect` state of one incarnation on `h`: (status, exit code, pid).
fn state(h: &Host, docker_name: &str) -> Result<(String, i32, i32)> {
    let s = inspect(
        h,
        docker_name,
        "{{.State.Status}} {{.State.ExitCode}} {{.State.Pid}}",
    )?;
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 3 {
        bail!("docker inspect {docker_name}: {s:?}");
    }
    Ok((f[0].to_string(), f[1].parse()?, f[2].parse()?))
}

/// The machine of node `name` (this one when the node is gone).
fn host_of(name: &str) -> Host {
    crate::node::load(name)
        .map(|n| n.host())
        .unwrap_or(Host::Local)
}

/// Whether `ip` is in migros-dock's subnet (not its network, gateway or
/// broadcast address).
pub fn valid_ip(ip: Ipv4Addr) -> bool {
    let (net, len) = SUBNET;
    let mask = u32::MAX << (32 - len);
    let host = u32::from(ip) & !mask;
    u32::from(ip) & mask == u32::from(net) && host > 1 && host < !mask
}

/// Docker, the image and the network are there (on `h`).
fn check_docker(h: &Host, image: &str, network: &str) -> Result<()> {
    let at = h.at();
    docker(h, &["info", "--format", "{{.ServerVersion}}"]).with_context(|| {
        format!("dockerd does not answer{at} (scripts/setup-docker.sh starts it)")
    })?;
    docker(h, &["image", "inspect", image]).with_context(|| {
        format!("image {image} missing{at} (scripts/setup-docker.sh makes migros-base)")
    })?;
    // A swarm worker sees an attachable overlay only once a container of
    // its uses it: only the local network is checked beforehand.
    if network == NETWORK {
        docker(h, &["network", "inspect", network]).with_context(|| {
            format!("network {network} missing{at} (scripts/setup-docker.sh makes it)")
        })?;
    }
    Ok(())
}

/// A container run by Docker.
pub struct Docker {
    c: Container,
    /// The migration under way, if any.
    mig: steps::Migration,
}

impl Docker {
    pub fn new(c: Container) -> Docker {
        Docker {
            c,
            mig: steps::Migration::default(),
        }
    }

    /// The Docker name of the current incarnation.
    fn current(&self) -> String {
        self.id(self.c.gen)
    }

    /// The machine the current incarnation runs on.
    fn here(&self) -> Host {
        host_of(&self.c.node)
    }

    fn image(&self) -> &str {
        self.c.image.as_deref().unwrap_or(IMAGE)
    }

    fn net_name(&self) -> &str {
        self.c.network.as_deref().unwrap_or(NETWORK)
    }

    /// Where the output of incarnation `gen` was kept when it left its
    /// machine.
    fn saved_log(&self, gen: u32) -> std::path::PathBuf {
        container::dir(&self.c.name).join(format!("log-{gen}"))
    }

    /// `docker run|create` options of incarnation `gen` on `node`, up to
    /// the image (the command follows); without `--ip` when the record has
    /// no address yet (Docker picks one).
    fn options(&self, gen: u32, node: &Node) -> Result<Vec<String>> {
        let c = &self.c;
        // migros-base runs the host's /usr with our libibverbs mounted;
        // other images bring their own.
        let base = self.image() == IMAGE;
        let lib = if base {
            container::snapshot_lib(&c.name)?
        } else {
            None
        };
        let mut v = vec![
            "--name".to_string(),
            self.id(gen),
            "--hostname".into(),
            c.name.clone(),
            "--network".into(),
            self.net_name().into(),
        ];
        if !c.ip.is_unspecified() {
            v.extend(["--ip".into(), c.ip.to_string()]);
        }
        v.extend([
            "-v".into(),
            format!("{}:/run/migros", node.socket_dir().display()),
        ]);
        if base {
            v.extend(["-v".into(), "/usr:/usr:ro".into()]);
        }
        if let Some(lib) = lib {
            v.extend([
                "-v".into(),
                format!("{}:/opt/migros/lib:ro", lib.display()),
                "-e".into(),
                "LD_LIBRARY_PATH=/opt/migros/lib".into(),
            ]);
        }
        for e in &c.env {
            v.extend(["-e".into(), e.clone()]);
        }
        for m in &c.volumes {
            v.extend(["-v".into(), m.to_string()]);
        }
        v.push(self.image().into());
        Ok(v)
    }
}

impl Engine for Docker {
    fn record(&self) -> &Container {
        &self.c
    }

    fn id(&self, gen: u32) -> String {
        docker_name(&self.c.name, gen)
    }

    fn run(&mut self, node: &Node) -> Result<String> {
        let ip = self.c.ip;
        let h = node.host();
        if !ip.is_unspecified() && self.net_name() == NETWORK && !valid_ip(ip) {
            bail!(
                "--ip {ip}: Docker containers take addresses of network {NETWORK}, {}/{}",
                SUBNET.0,
                SUBNET.1
            );
        }
        check_docker(&h, self.image(), self.net_name())?;
        let name = self.c.name.clone();
        std::fs::create_dir_all(container::dir(&name))?;
        let mut args = vec!["run".to_string(), "-d".into()];
        args.extend(self.options(0, node)?);
        args.extend(self.c.args.iter().cloned());
        let net = self.net_name().to_string();
        let started = docker_owned(&h, &args).and_then(|_| {
            if ip.is_unspecified() {
                // Docker picked the address; it is kept from then on.
                let got = inspect(
                    &h,
                    &name,
                    &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
                )?;
                self.c.ip = got
                    .parse()
                    .with_context(|| format!("docker gave {name} address {got:?}"))?;
            }
            self.c.save()
        });
        if let Err(e) = started {
            let _ = docker(&h, &["rm", "-f", &name]);
            let _ = std::fs::remove_dir_all(container::dir(&name));
            return Err(e);
        }
        let pid = state(&h, &name).map(|s| s.2).unwrap_or(0);
        Ok(format!(
            "ip {} pid {pid} (docker {name}{})",
            self.c.ip,
            h.at()
        ))
    }

    fn status(&self) -> Status {
        if let Some(s) = Status::from_state(&self.c.state) {
            return s;
        }
        match state(&self.here(), &self.current()) {
            Ok((s, code, _)) if s == "exited" || s == "dead" => Status::Exited(code),
            Ok((s, _, _)) if s == "created" => Status::Starting,
            Ok((_, _, pid)) => Status::Running(pid),
            Err(e) => Status::Failed(format!("{e:#}")),
        }
    }

    fn logs(&self, out: &mut dyn Write) -> Result<()> {
        let here = self.here();
        for g in 0..=self.c.gen {
            if let Ok(saved) = std::fs::read(self.saved_log(g)) {
                // It ran on another machine, which kept nothing of it.
                out.write_all(&saved)?;
                continue;
            }
            let o = match &here {
                Host::Local => Command::new("docker")
                    .args(["logs", &self.id(g)])
                    .stdin(Stdio::null())
                    .output()
                    .context("running docker logs")?,
                h => h.output("docker", &["logs", &self.id(g)])?,
            };
            // Docker keeps stdout and stderr apart; both are the container's output.
            out.write_all(&o.stdout)?;
            out.write_all(&o.stderr)?;
        }
        Ok(())
    }

    fn remove(&mut self) -> Result<()> {
        // An interrupted migration may have created the next one.
        let h = self.here();
        for g in 0..=self.c.gen + 1 {
            let _ = docker(&h, &["rm", "-f", &self.id(g)]);
        }
        let dir = container::dir(&self.c.name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
    }

    fn check(&mut self, m: &super::Move) -> Result<Vec<i32>> {
        self.check_step(m)
    }

    fn prepare(&mut self, m: &super::Move) -> Result<String> {
        self.prepare_step(m)
    }

    fn checkpoint(&mut self, m: &super::Move) -> Result<super::Checkpointed> {
        self.checkpoint_step(m)
    }

    fn transfer(&mut self, m: &super::Move) -> Result<super::Transferred> {
        self.transfer_step(m)
    }

    fn network(&mut self, _m: &super::Move) -> Result<String> {
        // The address belongs to the Docker network, which spans the nodes.
        Ok(format!(
            "{} stays on Docker network {}",
            self.c.ip,
            self.net_name()
        ))
    }

    fn restore(&mut self, m: &super::Move) -> Result<super::Restored> {
        self.restore_step(m)
    }

    fn finish(&mut self, m: &super::Move) -> Vec<String> {
        self.finish_step(m)
    }

    fn rollback(&mut self, m: &super::Move, failed: super::Step) -> super::Aftermath {
        self.rollback_steps(m, failed)
    }
}

#[cfg(test)]
mod tests {
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
