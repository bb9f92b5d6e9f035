//! The runc engine on ssh nodes (`migros node add --ssh`): the node's
//! machine keeps the container's files (in [`STATE`]`/containers/<name>/`:
//! rootfs, bundles, log, migration images; not under `/run/migros`, its
//! device's socket directory, which the container mounts) and runs runc, its supervisor and CRIU; this machine
//! keeps the record and the output of incarnations that left their
//! machine (`log-<gen>`). Every step runs there as one
//! `migros __remote runc '<json op>'` ([`Op`], served by [`serve`]) or a
//! short shell command, over ssh.
//!
//! - the container's namespace has a veth into the machine's own network
//!   namespace (the machine forwards, its FORWARD chain lets `c-*`
//!   through) and its default route through the machine's address; every
//!   ssh node's machine routes the container's /32: through the veth at
//!   home, through the home machine's address elsewhere (the machines
//!   share a link). A migration moves those routes on every ssh node;
//! - prepare: the destination makes the directory, rootfs, bundle and the
//!   locked namespace; checkpoint: `runc checkpoint` (frozen as on one
//!   machine, see `steps`) on the source into `migration-<gen>/source/final`; transfer: that directory
//!   streamed source to destination (`tar | ssh … tar` run on the source,
//!   `crate::remote::stream`); network: the routes; restore: `runc
//!   restore` on the destination; finish: the source's output is kept
//!   here and its files go;
//! - a failure after the checkpoint restores the container on the source
//!   from its image there (same incarnation, same namespace), as the
//!   Docker engine does; only when that fails too is it lost.
//!
//! `--pre-copy` and `--leave-running` stay with this machine's nodes.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{dir, gen_dir, log_path, net, rootfs, runc, runc_id, spec, start, steps, Runc};
use crate::container::{self, Container, Status};
use crate::engine::{Aftermath, Checkpointed, Engine as _, Move, Restored, Step, Transferred};
use crate::node::{self, Node};
use crate::remote::{quote, REMOTE_MIGROS};
use crate::sys;

/// Where an ssh node's machine keeps runc containers (runc's root too).
pub const STATE: &str = "/run/migros-runc";

/// The directory of container `name` on an ssh node's machine.
fn there(name: &str) -> PathBuf {
    Path::new(STATE).join("containers").join(name)
}

/// What `migros __remote runc` does on a node's machine.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Makes incarnation `c.gen`: directory, rootfs, bundle, log, network
    /// namespace (default route through `addr`, the machine's); `run`:
    /// starts it, else locks the namespace for a restore.
    Make {
        c: Container,
        addr: Ipv4Addr,
        run: bool,
    },
    /// The status of incarnation `c.gen`.
    Status { c: Container },
    /// The processes of incarnation `c.gen` (init first), if it runs.
    Tree { c: Container },
    /// Checkpoints incarnation `c.gen` into `migration-<to>/source/final`.
    Checkpoint { c: Container, to: u32 },
    /// Thaws incarnation `c.gen` after a failed checkpoint.
    Thaw { c: Container },
    /// Restores incarnation `c.gen` from `migration-<from>/source/final`;
    /// `after_exit`: once the checkpointed one's supervisor is done.
    Restore {
        c: Container,
        from: u32,
        after_exit: bool,
    },
    /// Stops every incarnation and removes the container's files here.
    Remove { c: Container },
}

/// What an [`Op`] answers (JSON on stdout).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub pids: Vec<i32>,
    /// `starting`, `running`, `exited`, `failed`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub code: i32,
    /// Microseconds from the moment it tells of (the freeze, the
    /// resume) to the reply.
    #[serde(default)]
    pub ago_us: u64,
    #[serde(default)]
    pub stopped_how: String,
}

fn ago(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

/// Runs `op` on this machine (`migros __remote runc`); prints the reply.
pub fn serve(op: &str) -> Result<()> {
    // For this process and the supervisors it starts.
    std::env::set_var(sys::STATE_DIR_ENV, STATE);
    let mut op: Op = serde_json::from_str(op).context("parsing the runc operation")?;
    // Here the container is this machine's, whatever node records say.
    match &mut op {
        Op::Make { c, .. }
        | Op::Status { c }
        | Op::Tree { c }
        | Op::Checkpoint { c, .. }
        | Op::Thaw { c }
        | Op::Restore { c, .. }
        | Op::Remove { c } => c.node.clear(),
    }
    let reply = match op {
        Op::Make { c, addr, run } => make(&c, addr, run)?,
        Op::Status { c } => {
            let (status, pid, code, detail) = match Runc::new(c).status() {
                Status::Running(p) => ("running", p, 0, String::new()),
                Status::Exited(c) => ("exited", 0, c, String::new()),
                Status::Failed(e) => ("failed", 0, 0, e),
                _ => ("starting", 0, 0, String::new()),
            };
            Reply {
                status: status.into(),
                pid,
                code,
                detail,
                ..Reply::default()
            }
        }
        Op::Tree { c } => {
            let r = Runc::new(c);
            match r.pid() {
                Some(p) => Reply {
                    pids: sys::process_tree(p),
                    pid: p,
                    ..Reply::default()
                },
                None => bail!(
                    "container {} is not running ({})",
                    r.c.name,
                    r.status().label()
                ),
            }
        }
        Op::Checkpoint { c, to } => {
            let mut r = Runc::new(c);
            r.mig = steps::Migration::at(dir(&r.c.name).join(format!("migration-{to}")));
            let _ = std::fs::remove_dir_all(&r.mig.dir);
            std::fs::create_dir_all(r.mig.source())?;
            let ck = r.checkpoint_here(false)?;
            Reply {
                detail: ck.detail,
                ago_us: ago(ck.stopped_at),
                stopped_how: ck.stopped_how.into(),
                ..Reply::default()
            }
        }
        Op::Thaw { c } => {
            let id = runc_id(&c.name, c.gen);
            if runc(&["state", &id]).is_ok_and(|st| st.contains("\"paused\"")) {
                runc(&["resume", &id])?;
            }
            net::unlock(&c.name, c.gen);
            Reply::default()
        }
        Op::Restore {
            c,
            from,
            after_exit,
        } => {
            let image = dir(&c.name).join(format!("migration-{from}/source/final"));
            if after_exit {
                // The checkpointed incarnation's supervisor records its
                // end and deletes it from runc: not during the restore.
                let exit = gen_dir(&c.name, c.gen).join("exit");
                let deadline = Instant::now() + Duration::from_secs(10);
                while !exit.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = runc(&["delete", "-f", &runc_id(&c.name, c.gen)]);
            }
            let rs = match steps::restore_here(&c.name, c.gen, &image) {
                Ok(rs) => rs,
                Err(e) => {
                    let log = gen_dir(&c.name, c.gen).join("work/restore.log");
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
                    bail!("{e:#}; CRIU's log ended with:\n{tail}");
                }
            };
            // The dump's lock, if the restore left it.
            net::unlock(&c.name, c.gen);
            Reply {
                detail: rs.detail,
                pid: rs.pid,
                ago_us: ago(rs.resumed_at),
                ..Reply::default()
            }
        }
        Op::Remove { c } => {
            // Routes stay: the caller moves or removes them everywhere.
            let mut r = Runc::new(c);
            if dir(&r.c.name).exists() {
                r.remove()?;
            }
            Reply::default()
        }
    };
    println!("{}", serde_json::to_string(&reply)?);
    Ok(())
}

/// [`Op::Make`] on this machine.
fn make(c: &Container, addr: Ipv4Addr, run: bool) -> Result<Reply> {
    let d = dir(&c.name);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    spec::make_rootfs(&rootfs(&c.name)).context("making the rootfs")?;
    super::write_bundle(c, c.gen, Path::new(crate::agent::SOCKET_DIR), true)?;
    if !log_path(&c.name).exists() {
        std::fs::File::create(log_path(&c.name))?;
    }
    forward_containers()?;
    net::create_in(&c.name, c.gen, c.ip, None, addr)?;
    if !run {
        net::lock(&c.name, c.gen)?;
        return Ok(Reply {
            detail: format!("netns {}, bundle", net::netns(&c.name, c.gen)),
            ..Reply::default()
        });
    }
    sys::run("sh", &["-c", &net::route_command(&c.name, c.ip, None)])?;
    let pid = start(&c.name, c.gen, None)?;
    Ok(Reply {
        pid,
        ..Reply::default()
    })
}

/// This machine forwards its containers' packets (Docker's FORWARD
/// policy may be DROP).
fn forward_containers() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n").context("enabling IPv4 forwarding")?;
    for dir in ["-i", "-o"] {
        let rule = ["-w", "-C", "FORWARD", dir, "c-+", "-j", "ACCEPT"];
        if sys::run("iptables", &rule).is_err() {
            let mut add = rule;
            add[1] = "-I";
            sys::run("iptables", &add)?;
        }
    }
    Ok(())
}

/// Runs `op` on `node`'s machine; its reply.
fn call(node: &Node, op: &Op) -> Result<Reply> {
    let json = serde_json::to_string(op)?;
    let out = node
        .host()
        .run(REMOTE_MIGROS, &["__remote", "runc", &json])?;
    serde_json::from_str(out.trim())
        .with_context(|| format!("node {}: parsing {:?}", node.name, out.trim()))
}

/// When something the reply tells happened: `ago_us` before now.
fn then(r: &Reply) -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_micros(r.ago_us))
        .unwrap_or(now)
}

/// Points the route for `c.ip` on every ssh node's machine at `home`'s
/// (in parallel: a migration does this while the container is stopped).
fn route_everywhere(c: &Container, home: &Node) -> Result<()> {
    let nodes: Vec<Node> = node::all()
        .into_iter()
        .filter(|n| n.ssh.is_some())
        .collect();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let via = (n.name != home.name).then_some(home.addr);
                    n.host()
                        .sh(&net::route_command(&c.name, c.ip, via))
                        .map(|_| ())
                        .with_context(|| format!("routing {} on node {}", c.ip, n.name))
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Removes the route for `ip` on every ssh node's machine (best effort).
fn unroute_everywhere(ip: Ipv4Addr) {
    for n in node::all().into_iter().filter(|n| n.ssh.is_some()) {
        let _ = n
            .host()
            .sh(&format!("ip route del {ip}/32 2>/dev/null || true"));
    }
}

/// The container's record at incarnation `gen`.
fn at(c: &Container, gen: u32) -> Container {
    Container { gen, ..c.clone() }
}

/// Where the output of incarnation `gen` was kept when it left its machine.
fn saved_log(name: &str, gen: u32) -> PathBuf {
    dir(name).join(format!("log-{gen}"))
}

impl Runc {
    pub(super) fn run_ssh(&mut self, node: &Node) -> Result<String> {
        self.c.ip = self.address()?;
        let c = self.c.clone();
        let result = (|| -> Result<i32> {
            std::fs::create_dir_all(dir(&c.name))?;
            c.save()?;
            let r = call(
                node,
                &Op::Make {
                    c: c.clone(),
                    addr: node.addr,
                    run: true,
                },
            )?;
            route_everywhere(&c, node)?;
            Ok(r.pid)
        })();
        match result {
            Ok(pid) => Ok(format!("ip {} pid {pid} (runc{})", c.ip, node.host().at())),
            Err(e) => {
                let _ = self.remove_ssh(node);
                Err(e)
            }
        }
    }

    pub(super) fn status_ssh(&self, node: &Node) -> Status {
        match call(node, &Op::Status { c: self.c.clone() }) {
            Ok(r) => match r.status.as_str() {
                "running" => Status::Running(r.pid),
                "exited" => Status::Exited(r.code),
                "failed" => Status::Failed(r.detail),
                _ => Status::Starting,
            },
            Err(e) => Status::Failed(format!("{e:#}")),
        }
    }

    pub(super) fn logs_ssh(&self, node: &Node, out: &mut dyn Write) -> Result<()> {
        for g in 0..self.c.gen {
            if let Ok(saved) = std::fs::read(saved_log(&self.c.name, g)) {
                out.write_all(&saved)?;
            }
        }
        let log = there(&self.c.name).join("log").display().to_string();
        let o = node.host().output("cat", &[&log])?;
        out.write_all(&o.stdout)?;
        Ok(())
    }

    pub(super) fn remove_ssh(&mut self, node: &Node) -> Result<()> {
        // An interrupted migration may have made the next incarnation on
        // another machine.
        for n in node::all().into_iter().filter(|n| n.ssh.is_some()) {
            let c = if n.name == node.name {
                self.c.clone()
            } else {
                at(&self.c, self.c.gen + 1)
            };
            let r = call(&n, &Op::Remove { c });
            if n.name == node.name {
                r?;
            }
        }
        unroute_everywhere(self.c.ip);
        std::fs::remove_dir_all(dir(&self.c.name))
            .with_context(|| format!("removing {}", dir(&self.c.name).display()))
    }

    pub(super) fn check_ssh(&mut self, m: &Move) -> Result<Vec<i32>> {
        if m.src.ssh.is_none() || m.dst.ssh.is_none() {
            bail!(
                "the runc engine moves containers between this machine's nodes or between ssh nodes, not from node {} to node {}",
                m.src.name,
                m.dst.name
            );
        }
        if m.opts.pre_copy > 0 || m.opts.leave_running {
            bail!("--pre-copy and --leave-running are for runc containers on this machine's nodes");
        }
        if self.c.state != container::State::Active {
            bail!("container {}: {}", self.c.name, self.status().label());
        }
        let r = call(&m.src, &Op::Tree { c: self.c.clone() })?;
        self.mig = steps::Migration::at(there(&self.c.name).join(format!("migration-{}", m.gen)));
        Ok(r.pids)
    }

    pub(super) fn prepare_ssh(&mut self, m: &Move) -> Result<String> {
        let r = call(
            &m.dst,
            &Op::Make {
                c: at(&self.c, m.gen),
                addr: m.dst.addr,
                run: false,
            },
        )?;
        Ok(format!("{}{}", r.detail, m.dst.host().at()))
    }

    pub(super) fn checkpoint_ssh(&mut self, m: &Move) -> Result<Checkpointed> {
        let r = call(
            &m.src,
            &Op::Checkpoint {
                c: self.c.clone(),
                to: m.gen,
            },
        )?;
        Ok(Checkpointed {
            stopped_at: then(&r),
            detail: format!("{}{}", r.detail, m.src.host().at()),
            stopped_how: "stopped (RDMA pause or freeze) to resumed, as the two machines tell",
        })
    }

    pub(super) fn transfer_ssh(&mut self, m: &Move) -> Result<Transferred> {
        let image = self.mig.source();
        let size = crate::remote::stream(&m.src, &image, &m.dst, &image)?;
        Ok(Transferred {
            detail: format!(
                "image {} streamed {} -> {}",
                sys::human_bytes(size),
                m.src.name,
                m.dst.name
            ),
            image_bytes: size,
            image_at: format!("{}{}", image.join("final").display(), m.dst.host().at()),
        })
    }

    pub(super) fn network_ssh(&mut self, m: &Move) -> Result<String> {
        route_everywhere(&self.c, &m.dst)?;
        Ok(format!(
            "{} routed to node {} on every ssh node",
            self.c.ip, m.dst.name
        ))
    }

    pub(super) fn restore_ssh(&mut self, m: &Move) -> Result<Restored> {
        let r = call(
            &m.dst,
            &Op::Restore {
                c: at(&self.c, m.gen),
                from: m.gen,
                after_exit: false,
            },
        )?;
        Ok(Restored {
            resumed_at: then(&r),
            detail: format!("{}{}", r.detail, m.dst.host().at()),
            pid: r.pid,
        })
    }

    pub(super) fn finish_ssh(&mut self, m: &Move) -> Vec<String> {
        let mut notes = Vec::new();
        let src = m.src.host();
        let log = there(&self.c.name).join("log").display().to_string();
        if let Ok(o) = src.output("cat", &[&log]) {
            if o.status.success() {
                let _ = std::fs::write(saved_log(&self.c.name, self.c.gen), o.stdout);
            }
        }
        if call(&m.src, &Op::Remove { c: self.c.clone() }).is_ok() {
            notes.push(format!("source files removed{}", src.at()));
        }
        if !m.opts.keep_image {
            let _ = m.dst.host().sh(&format!(
                "rm -rf {}",
                quote(&self.mig.dir.display().to_string())
            ));
        }
        notes
    }

    pub(super) fn rollback_ssh(&mut self, m: &Move, failed: Step) -> Aftermath {
        let c = self.c.clone();
        let src = &m.src.name;
        let undo_destination = || {
            let _ = call(&m.dst, &Op::Remove { c: at(&c, m.gen) });
        };
        let drop_image = || {
            let _ = m.src.host().sh(&format!(
                "rm -rf {}",
                quote(&self.mig.dir.display().to_string())
            ));
        };
        match failed {
            Step::Check => Aftermath::Source {
                note: "nothing was frozen".into(),
            },
            Step::Prepare | Step::PreCopy(_) => {
                undo_destination();
                Aftermath::Source {
                    note: format!("the container is still running on node {src}"),
                }
            }
            Step::Checkpoint => {
                let _ = call(&m.src, &Op::Thaw { c: c.clone() });
                undo_destination();
                // CRIU's log goes with the image: its end goes in the note.
                let log = self.mig.dir.join("work/final/dump.log");
                let tail = m
                    .src
                    .host()
                    .sh(&format!(
                        "tail -n 12 {} 2>/dev/null || true",
                        quote(&log.display().to_string())
                    ))
                    .unwrap_or_default();
                drop_image();
                let still = match self.status() {
                    Status::Running(_) => format!("the container is still running on node {src}"),
                    s => format!("the container is {}", s.label()),
                };
                Aftermath::Source {
                    note: format!("{still}; CRIU's log ended with:\n{}", tail.trim_end()),
                }
            }
            Step::Transfer | Step::Network | Step::Restore => {
                undo_destination();
                let _ = route_everywhere(&c, &m.src);
                // The image is still on the source: restore it there.
                match call(
                    &m.src,
                    &Op::Restore {
                        c: c.clone(),
                        from: m.gen,
                        after_exit: true,
                    },
                ) {
                    Ok(r) => {
                        drop_image();
                        Aftermath::Source {
                            note: format!(
                                "the container was restored on node {src} from its checkpoint and runs there (pid {})",
                                r.pid
                            ),
                        }
                    }
                    Err(e) => {
                        let image = self.mig.source().join("final");
                        let note = format!(
                            "restoring it on node {src} failed too ({e:#}); the image is kept in {}{}; migros rm -f {} removes it",
                            image.display(),
                            m.src.host().at(),
                            c.name
                        );
                        Aftermath::Lost { image, note }
                    }
                }
            }
        }
    }
}

/// The ssh node of the container's record, if it is on one.
pub(super) fn ssh_node(c: &Container) -> Option<Node> {
    node::load(&c.node).ok().filter(|n| n.ssh.is_some())
}
