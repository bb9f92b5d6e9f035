//! The runc engine's migration steps (`crate::engine` lists them):
//!
//! - prepare: the next incarnation's network namespace (same overlay
//!   address) on the destination node, locked, and its bundle, which mounts
//!   the destination node's socket directory at `/run/migros`;
//! - pre-copy: `runc checkpoint --pre-dump` rounds;
//! - checkpoint: `runc checkpoint --tcp-established`, the container
//!   running until CRIU's `pre-dump` action freezes its cgroup-v1 freezer
//!   (see [`freezer`]; `runc pause` before the checkpoint where there is
//!   none): the migros CRIU plugin pauses and dumps its RDMA state, the
//!   container's CRIU action script locks its network namespace, CRIU dumps
//!   memory and kills it (with `--leave-running` it stays, frozen, until
//!   the restore succeeded);
//! - transfer: the image directory is copied (one machine);
//! - network: routes on every node point at the destination, the source
//!   namespace goes;
//! - restore: `runc restore -d --tcp-established` under a new supervisor,
//!   then a thaw (the container was dumped frozen, so it comes back frozen:
//!   its freezer is written directly, `runc resume` without one);
//! - finish: with `--leave-running` the source is stopped now; the
//!   migration's directory goes unless `--keep-image`.
//!
//! A migration works in `<container>/migration-<gen>/`: `source/` (the
//! images CRIU writes: `pre-<n>/`, `final/`), `work/` (CRIU's logs and
//! stats), `image/` (the transferred copy the restore reads).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::{freezer, gen_dir, net, runc, runc_id, start, Runc};
use crate::container::{dir, State};
use crate::engine::{Aftermath, Checkpointed, Engine as _, Move, Restored, Step, Transferred};
use crate::migration::criu;
use crate::migration::timeline::ms;
use crate::sys;

/// Test only: `MIGROS_FAULT=restore` damages the transferred image, so the
/// restore fails after a good checkpoint.
pub const FAULT_ENV: &str = "MIGROS_FAULT";

/// What the steps of one migration share.
#[derive(Debug, Default)]
pub(super) struct Migration {
    /// The container's init on the source.
    pid: i32,
    /// `<container>/migration-<gen>`.
    pub(super) dir: PathBuf,
    /// How the final checkpoint froze the container, once it did.
    froze: Option<Freeze>,
    /// The last pre-copy round's image (`pre-<n>`), the next one's parent.
    parent: Option<String>,
}

/// How the final checkpoint freezes the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freeze {
    /// `runc pause` before `runc checkpoint`.
    RuncPause,
    /// CRIU's `pre-dump` action writes the cgroup-v1 freezer.
    PreDump,
}

impl Migration {
    /// A migration working in `dir` (`<container>/migration-<gen>`).
    pub(super) fn at(dir: PathBuf) -> Migration {
        Migration {
            dir,
            ..Migration::default()
        }
    }

    pub(super) fn source(&self) -> PathBuf {
        self.dir.join("source")
    }

    fn image(&self) -> PathBuf {
        self.dir.join("image")
    }

    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

impl Runc {
    pub(super) fn check_step(&mut self, m: &Move) -> Result<Vec<i32>> {
        let c = &self.c;
        if c.state != State::Active {
            bail!("container {}: {}", c.name, self.status().label());
        }
        let Some(pid) = self.pid() else {
            bail!(
                "container {} is not running ({})",
                c.name,
                self.status().label()
            );
        };
        if m.opts.pre_copy > 0 {
            check_dirty_tracking()?;
        }
        self.mig = Migration {
            pid,
            dir: dir(&c.name).join(format!("migration-{}", m.gen)),
            ..Migration::default()
        };
        Ok(sys::process_tree(pid))
    }

    pub(super) fn prepare_step(&mut self, m: &Move) -> Result<String> {
        let (c, mig) = (&self.c, &self.mig);
        let _ = std::fs::remove_dir_all(&mig.dir);
        std::fs::create_dir_all(mig.source())?;
        std::fs::create_dir_all(mig.work())?;
        self.write_bundle(m.gen, &m.dst)?;
        net::create(&c.name, m.gen, c.ip, &m.dst)?;
        net::lock(&c.name, m.gen)?;
        Ok(format!("netns {}, bundle", net::netns(&c.name, m.gen)))
    }

    pub(super) fn pre_copy_step(&mut self, _m: &Move, round: u32) -> Result<String> {
        let name = format!("pre-{round}");
        let img = self.mig.source().join(&name);
        let work = self.mig.work().join(&name);
        std::fs::create_dir_all(&work)?;
        self.checkpoint_into(&img, &work, &["--pre-dump"], &[])?;
        let st = criu::read_stats(&work.join("stats-dump")).unwrap_or_default();
        self.mig.parent = Some(name);
        Ok(format!(
            "{} pages written, {}",
            st.pages_written,
            sys::human_bytes(sys::dir_size(&img))
        ))
    }

    /// `runc checkpoint <flags>` of the current incarnation into `image`
    /// (CRIU's logs and stats in `work`), on top of the last pre-copy;
    /// `env` for runc, CRIU and its action script.
    fn checkpoint_into(
        &self,
        image: &Path,
        work: &Path,
        flags: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<String> {
        let (image, work) = (image.display().to_string(), work.display().to_string());
        let parent = self.mig.parent.as_ref().map(|p| format!("../{p}"));
        let id = self.id(self.c.gen);
        let mut args = vec!["checkpoint", "--image-path", &image, "--work-path", &work];
        args.extend_from_slice(flags);
        if let Some(p) = &parent {
            args.extend(["--parent-path", p]);
        }
        args.push(&id);
        if env.is_empty() {
            return runc(&args);
        }
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(super::runc_root())
            .args(&args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .context("running runc")?;
        if !out.status.success() {
            bail!(
                "runc {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(super) fn checkpoint_step(&mut self, m: &Move) -> Result<Checkpointed> {
        self.checkpoint_here(m.opts.leave_running)
    }

    /// The checkpoint on this machine into `source/final`.
    pub(super) fn checkpoint_here(&mut self, leave_running: bool) -> Result<Checkpointed> {
        let id = self.id(self.c.gen);
        let t_ck = Instant::now();
        let img = self.mig.source().join("final");
        let work = self.mig.work().join("final");
        std::fs::create_dir_all(&work)?;
        let frozen_at_file = work.join("frozen-at");
        // CRIU re-polls a cgroup still freezing only every 100 ms and takes
        // a frozen one as it is (leaving it frozen with --leave-running):
        // the cgroup-v1 freezer is frozen by CRIU's pre-dump action, just
        // before CRIU would freeze (see `freezer`); without one, runc's
        // freezer, which polls far more often, freezes before runc starts.
        let state = freezer::state_file(self.mig.pid);
        let mut env = Vec::new();
        if let Some(state) = &state {
            env.push((freezer::FREEZE_ENV, state.as_path()));
            env.push((freezer::FROZEN_AT_ENV, frozen_at_file.as_path()));
            self.mig.froze = Some(Freeze::PreDump);
        } else if runc(&["pause", &id]).is_ok() {
            self.mig.froze = Some(Freeze::RuncPause);
        }
        let leave = if leave_running {
            &["--tcp-established", "--leave-running"][..]
        } else {
            &["--tcp-established"]
        };
        self.checkpoint_into(&img, &work, leave, &env)?;
        let ck_end = Instant::now();
        let stats = criu::read_stats(&work.join("stats-dump")).unwrap_or_default();
        let log = criu::read_log(&work.join("dump.log"));
        // The freeze happened (log end - freeze) before runc returned.
        // (The pre-dump action wrote when it asked the freeze.)
        let pre_dump = match self.mig.froze {
            Some(Freeze::PreDump) => freezer::frozen_at(&frozen_at_file),
            _ => None,
        };
        let stopped_at = match (self.mig.froze, pre_dump, log.stopped(), log.end) {
            (Some(Freeze::RuncPause), ..) => t_ck,
            (_, Some(at), ..) => at.clamp(t_ck, ck_end),
            (_, None, Some(f), Some(e)) if e >= f => ck_end - Duration::from_secs_f64(e - f),
            _ => t_ck,
        };
        let us = Duration::from_micros;
        let mut detail = format!(
            "{}criu: freeze {}, frozen {}, memory dump {} + write {}, {} pages",
            match self.mig.froze {
                Some(Freeze::RuncPause) => "runc pause, ",
                Some(Freeze::PreDump) => "frozen by CRIU's pre-dump action, ",
                None => "",
            },
            ms(us(stats.freezing_time)),
            ms(us(stats.frozen_time)),
            ms(us(stats.memdump_time)),
            ms(us(stats.memwrite_time)),
            stats.pages_written
        );
        detail += &log.plugin_steps(&[
            ("PAUSE_DEVICES", "paused", "RDMA pause"),
            ("CHECKPOINT_DEVICES", "checkpointed", "RDMA dump"),
        ]);
        Ok(Checkpointed {
            detail,
            stopped_at,
            stopped_how: "stopped (RDMA pause or freeze) to resumed",
        })
    }

    pub(super) fn transfer_step(&mut self, m: &Move) -> Result<Transferred> {
        let (source, image) = (self.mig.source(), self.mig.image());
        sys::copy_tree(&source, &image)?;
        // The source copy goes only after a complete transfer.
        let _ = std::fs::remove_dir_all(&source);
        let size = sys::dir_size(&image.join("final"));
        let detail = if m.opts.pre_copy > 0 {
            format!(
                "image {} (with pre-copies {})",
                sys::human_bytes(size),
                sys::human_bytes(sys::dir_size(&image))
            )
        } else {
            format!("image {}", sys::human_bytes(size))
        };
        Ok(Transferred {
            detail,
            image_bytes: size,
            image_at: image.display().to_string(),
        })
    }

    pub(super) fn network_step(&mut self, m: &Move) -> Result<String> {
        let c = &self.c;
        if !m.opts.leave_running {
            net::destroy(&c.name, c.gen)?;
        }
        net::route_to(&c.name, c.ip, &m.dst)?;
        Ok(format!(
            "{} routed to node {} on every node",
            c.ip, m.dst.name
        ))
    }

    pub(super) fn restore_step(&mut self, m: &Move) -> Result<Restored> {
        let image = self.mig.image().join("final");
        if std::env::var(FAULT_ENV).is_ok_and(|v| v == "restore") {
            // Test only: a transferred image that lost a file.
            let _ = std::fs::remove_file(image.join("inventory.img"));
        }
        restore_here(&self.c.name, m.gen, &image)
    }

    pub(super) fn finish_step(&mut self, m: &Move) -> Vec<String> {
        let mut notes = Vec::new();
        if m.opts.leave_running {
            let id = self.id(self.c.gen);
            let _ = runc(&["kill", &id, "KILL"]);
            // A frozen task dies once thawed.
            let _ = runc(&["resume", &id]);
            let _ = net::destroy(&self.c.name, self.c.gen);
            notes.push("source stopped".into());
        }
        if !m.opts.keep_image {
            let _ = std::fs::remove_dir_all(&self.mig.dir);
        }
        notes
    }

    pub(super) fn rollback_steps(&mut self, m: &Move, failed: Step) -> Aftermath {
        let (c, mig) = (&self.c, &self.mig);
        let id = self.id(c.gen);
        let undo_destination = || {
            let _ = net::destroy(&c.name, m.gen);
            let _ = std::fs::remove_dir_all(gen_dir(&c.name, m.gen));
        };
        let resume_source = || {
            // The pre-dump action may have frozen the cgroup before the
            // dump failed: CRIU leaves a cgroup it found frozen frozen.
            if mig.froze.is_some() {
                let _ = runc(&["resume", &id]);
            }
        };
        let src = &m.src.name;
        match failed {
            Step::Check => Aftermath::Source {
                note: "nothing was frozen".into(),
            },
            Step::Prepare | Step::PreCopy(_) => {
                undo_destination();
                let _ = std::fs::remove_dir_all(&mig.dir);
                Aftermath::Source {
                    note: format!(
                        "the container is still running on node {src} (CRIU's logs: {})",
                        mig.work().display()
                    ),
                }
            }
            Step::Checkpoint => {
                resume_source();
                net::unlock(&c.name, c.gen);
                undo_destination();
                let still = if sys::alive(mig.pid) {
                    format!("the container is still running on node {src}")
                } else {
                    format!("the container (pid {}) is gone", mig.pid)
                };
                Aftermath::Source {
                    note: format!(
                        "{still}; CRIU's log: {}",
                        mig.work().join("final/dump.log").display()
                    ),
                }
            }
            Step::Transfer | Step::Network | Step::Restore => {
                // The source copy goes only after a complete transfer.
                let image = if mig.source().exists() {
                    mig.source()
                } else {
                    mig.image()
                };
                if m.opts.leave_running && sys::alive(mig.pid) {
                    // The source still runs: keep it, undo the move.
                    resume_source();
                    let _ = net::route_to(&c.name, c.ip, &m.src);
                    undo_destination();
                    return Aftermath::Source {
                        note: format!(
                            "the source still runs on node {src}; the image is kept in {}",
                            image.display()
                        ),
                    };
                }
                let note = format!(
                    "the image is kept in {} (CRIU's log: {})",
                    image.display(),
                    gen_dir(&c.name, m.gen).join("work/restore.log").display()
                );
                Aftermath::Lost { image, note }
            }
        }
    }
}

/// Restores incarnation `gen` of container `name` on this machine from
/// `image` under a new supervisor; thaws it, unlocks its namespace.
pub(super) fn restore_here(name: &str, gen: u32, image: &Path) -> Result<Restored> {
    let pid = start(name, gen, Some(image))?;

    // A checkpoint of a frozen cgroup restores frozen: thaw it through its
    // freezer (two runc runs less), or runc.
    let new_id = runc_id(name, gen);
    let thawed = match freezer::state_file(pid) {
        Some(state) => freezer::thaw(&state).map(|_| ()),
        None if runc(&["state", &new_id]).is_ok_and(|st| st.contains("\"paused\"")) => {
            runc(&["resume", &new_id]).map(|_| ())
        }
        None => Ok(()),
    };
    if let Err(e) = thawed {
        eprintln!("migros: warning: thawing the restored container: {e:#}");
    }
    let resumed_at = Instant::now();
    net::unlock(name, gen);
    let work = gen_dir(name, gen).join("work");
    let stats = criu::read_stats(&work.join("stats-restore")).unwrap_or_default();
    let log = criu::read_log(&work.join("restore.log"));
    let us = Duration::from_micros;
    let mut detail = format!(
        "criu: forking {}, restore {}, {} pages restored",
        ms(us(stats.forking_time)),
        ms(us(stats.restore_time)),
        stats.pages_restored
    );
    detail += &log.plugin_steps(&[
        ("RESTORE_UNIX_SK", "restored", "RDMA reconnect"),
        ("RESUME_DEVICES_LATE", "resumed", "RDMA resume"),
    ]);
    Ok(Restored {
        detail,
        pid,
        resumed_at,
    })
}

/// Pre-copy needs the kernel's soft-dirty tracking.
fn check_dirty_tracking() -> Result<()> {
    let out = std::process::Command::new("criu")
        .args(["check", "--feature", "mem_dirty_track"])
        .output()
        .context("running criu check")?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("OFF") {
        bail!(
            "--pre-copy needs memory dirty tracking, which this kernel lacks (criu check: {}); migrate without it",
            text.trim()
        );
    }
    Ok(())
}
