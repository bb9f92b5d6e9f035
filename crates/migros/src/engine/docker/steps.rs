//! The Docker engine's migration steps (`crate::engine` lists them):
//!
//! - prepare: `docker create` of the next incarnation, same `--ip`,
//!   against the destination node's sockets (on its machine);
//! - checkpoint: `docker checkpoint create <cur> <ck>` on the source (a
//!   fresh checkpoint name every time: Docker 20.10 fails to restore a
//!   checkpoint containerd already holds);
//! - transfer: `/var/lib/docker/containers/<old id>/checkpoints/<ck>` goes
//!   into the new container's `checkpoints/`: copied on one machine,
//!   streamed from machine to machine otherwise (`tar | ssh … tar` run on
//!   the source, so this machine is not in the data path unless it is one
//!   of the two);
//! - network: nothing (the address belongs to the Docker network);
//! - restore: `docker start --checkpoint <ck> <new>` on the destination;
//! - finish: the checkpoint goes unless `--keep-image`; across machines the
//!   old incarnation's output is kept here and the old container removed.
//!
//! A failure after the checkpoint restores the container on the source
//! from its checkpoint (`docker start --checkpoint` of the old container:
//! the daemon there takes its QPs back, their tombstones go); only if that
//! fails too is it lost, its checkpoint kept.
//!
//! containerd removes CRIU's work directory (logs, stats), so the timeline
//! shows wall-clock times: the downtime is measured from the start of the
//! checkpoint (the freeze comes a few ms later) to the end of the restore.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::{docker, docker_owned, inspect, state, Docker, DOCKER_ROOT};
use crate::container::State;
use crate::engine::{Aftermath, Checkpointed, Engine as _, Move, Restored, Step, Transferred};
use crate::remote::Host;
use crate::sys;

/// What the steps of one migration share.
#[derive(Debug, Default)]
pub(super) struct Migration {
    /// The checkpoint's name.
    ck: String,
    /// Docker's id of the current incarnation.
    old_id: String,
    /// The new incarnation's Docker name and id.
    new: String,
    new_id: String,
}

impl Migration {
    /// Where `docker checkpoint create` writes the checkpoint (source).
    fn written(&self) -> PathBuf {
        checkpoint_dir(&self.old_id, &self.ck)
    }

    /// Where `docker start --checkpoint` of the new incarnation reads it
    /// (destination).
    fn read(&self) -> PathBuf {
        checkpoint_dir(&self.new_id, &self.ck)
    }
}

fn checkpoint_dir(id: &str, ck: &str) -> PathBuf {
    Path::new(DOCKER_ROOT).join(id).join("checkpoints").join(ck)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Docker {
    pub(super) fn check_step(&mut self, m: &Move) -> Result<Vec<i32>> {
        if m.opts.pre_copy > 0 || m.opts.leave_running {
            bail!("--pre-copy and --leave-running are for --engine runc");
        }
        let name = &self.c.name;
        if self.c.state != State::Active {
            bail!("container {name}: {}", self.status().label());
        }
        let src = m.src.host();
        let (status, _, pid) = state(&src, &self.current())?;
        if status != "running" || pid <= 0 {
            bail!("container {name} is not running ({status})");
        }
        if m.dst.ssh.is_some() || m.src.ssh.is_some() {
            super::check_docker(&m.dst.host(), self.image(), self.net_name())?;
        }
        self.mig = Migration {
            ck: format!(
                "migros-{}-{}",
                m.gen,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            ),
            old_id: inspect(&src, &self.current(), "{{.Id}}")?,
            new: self.id(m.gen),
            new_id: String::new(),
        };
        let pids = match &src {
            Host::Local => sys::process_tree(pid),
            // The daemon there tells the identifiers by pid; the init's
            // children are looked up there.
            h => remote_tree(h, pid).unwrap_or_else(|_| vec![pid]),
        };
        Ok(pids)
    }

    pub(super) fn prepare_step(&mut self, m: &Move) -> Result<String> {
        let (new, dst) = (self.mig.new.clone(), m.dst.host());
        let _ = docker(&dst, &["rm", "-f", &new]);
        let mut args = vec!["create".to_string()];
        args.extend(self.options(m.gen, &m.dst)?);
        args.extend(self.c.args.iter().cloned());
        docker_owned(&dst, &args).with_context(|| format!("docker create {new}"))?;
        self.mig.new_id = inspect(&dst, &new, "{{.Id}}")?;
        Ok(format!("docker create {new}{}", dst.at()))
    }

    pub(super) fn checkpoint_step(&mut self, m: &Move) -> Result<Checkpointed> {
        let (cur, ck) = (self.current(), &self.mig.ck);
        let src = m.src.host();
        let stopped_at = Instant::now();
        docker(&src, &["checkpoint", "create", &cur, ck])?;
        Ok(Checkpointed {
            detail: format!("docker checkpoint create {cur} {ck}{}", src.at()),
            stopped_at,
            stopped_how:
                "checkpoint start to restored (freeze within the checkpoint + transfer + restore)",
        })
    }

    pub(super) fn transfer_step(&mut self, m: &Move) -> Result<Transferred> {
        let (from, to) = (self.mig.written(), self.mig.read());
        let (size, how) = if m.src.ssh.is_none() && m.dst.ssh.is_none() {
            let size = sys::dir_size(&from);
            sys::copy_tree(&from, &to)?;
            (size, "copied".to_string())
        } else {
            let size = crate::remote::stream(&m.src, &from, &m.dst, &to)?;
            (size, format!("streamed {} -> {}", m.src.name, m.dst.name))
        };
        Ok(Transferred {
            detail: format!(
                "image {} {how} into {}'s checkpoints",
                sys::human_bytes(size),
                self.mig.new
            ),
            image_bytes: size,
            image_at: to.display().to_string(),
        })
    }

    pub(super) fn restore_step(&mut self, m: &Move) -> Result<Restored> {
        let (ck, new) = (&self.mig.ck, &self.mig.new);
        let (src, dst) = (m.src.host(), m.dst.host());
        // On one machine the old container's address is free only once
        // dockerd saw it stop; across machines the overlay frees it.
        let old = if src == dst {
            self.current()
        } else {
            String::new()
        };
        start_checkpoint(&src, &old, &dst, ck, new)?;
        let resumed_at = Instant::now();
        Ok(Restored {
            detail: format!("docker start --checkpoint {ck} {new}{}", dst.at()),
            pid: state(&dst, new).map(|s| s.2).unwrap_or(0),
            resumed_at,
        })
    }

    pub(super) fn finish_step(&mut self, m: &Move) -> Vec<String> {
        let (src, dst) = (m.src.host(), m.dst.host());
        let mut notes = Vec::new();
        if !m.opts.keep_image {
            let _ = docker(&src, &["checkpoint", "rm", &self.current(), &self.mig.ck]);
            let _ = src.run("rm", &["-rf", &path(&self.mig.written())]);
            let _ = dst.run("rm", &["-rf", &path(&self.mig.read())]);
        }
        if src != dst {
            // Its output is kept here; the old container goes, as the seed
            // removes it.
            let cur = self.current();
            if let Ok(o) = src.output("docker", &["logs", &cur]) {
                let mut log = o.stdout;
                log.extend(o.stderr);
                let _ = std::fs::write(self.saved_log(self.c.gen), log);
            }
            if docker(&src, &["rm", "-f", &cur]).is_ok() {
                notes.push(format!("docker rm {cur}{}", src.at()));
            }
        }
        notes
    }

    pub(super) fn rollback_steps(&mut self, m: &Move, failed: Step) -> Aftermath {
        let src_name = &m.src.name;
        let (src, dst) = (m.src.host(), m.dst.host());
        match failed {
            Step::Check => Aftermath::Source {
                note: "nothing was frozen".into(),
            },
            Step::Prepare | Step::PreCopy(_) | Step::Checkpoint => {
                let _ = docker(&dst, &["rm", "-f", &self.mig.new]);
                let still = self.source_state(&src, src_name);
                Aftermath::Source {
                    note: format!("{still} (dockerd's log on node {src_name})"),
                }
            }
            Step::Transfer | Step::Network | Step::Restore => {
                let _ = docker(&dst, &["rm", "-f", &self.mig.new]);
                if src != dst {
                    let _ = dst.run("rm", &["-rf", &path(&self.mig.read())]);
                }
                // The checkpoint is still on the source: start the old
                // container from it there.
                let (cur, ck) = (self.current(), self.mig.ck.clone());
                match start_checkpoint(&src, "", &src, &ck, &cur) {
                    Ok(()) => {
                        let _ = docker(&src, &["checkpoint", "rm", &cur, &ck]);
                        let _ = src.run("rm", &["-rf", &path(&self.mig.written())]);
                        Aftermath::Source {
                            note: format!(
                                "the container was restored on node {src_name} from its checkpoint and runs there"
                            ),
                        }
                    }
                    Err(e) => {
                        let image = self.mig.written();
                        let note = format!(
                            "restoring it on node {src_name} failed too ({e:#}); the checkpoint is kept in {}{}; migros rm -f {} removes it",
                            image.display(),
                            src.at(),
                            self.c.name
                        );
                        Aftermath::Lost { image, note }
                    }
                }
            }
        }
    }

    fn source_state(&self, src: &Host, src_name: &str) -> String {
        match state(src, &self.current()) {
            Ok((s, _, _)) if s == "running" => {
                format!("the container is still running on node {src_name}")
            }
            Ok((s, code, _)) => format!("the container is {s} (exit code {code})"),
            Err(_) => "the container is gone".into(),
        }
    }
}

/// `pid` and its descendants on machine `h`.
fn remote_tree(h: &Host, pid: i32) -> Result<Vec<i32>> {
    let out = h.sh(&format!(
        "p={pid}; all=$p; while [ -n \"$p\" ]; do n=''; for q in $p; do for t in /proc/$q/task/*; do n=\"$n $(cat $t/children 2>/dev/null)\"; done; done; p=$(echo $n); all=\"$all $p\"; done; echo $all"
    ))?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// `docker start --checkpoint <ck> <new>` on `dst`, tried again while it
/// fails because the checkpointed container `old` (on `src`; `""`: none)
/// still holds its address: `docker checkpoint create` returns before
/// dockerd has handled the exit ("Address already in use"). Its state is
/// asked only after a failure: across machines that is an ssh round trip
/// of downtime.
fn start_checkpoint(src: &Host, old: &str, dst: &Host, ck: &str, new: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = match docker(dst, &["start", "--checkpoint", ck, new]) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => e,
        };
        let text = format!("{e:#}");
        if let Some(digest) = held_content(&text) {
            // Docker 20.10 refuses a checkpoint whose content containerd
            // still holds from an earlier restore ("commit failed: content
            // sha256:… already exists"): drop that blob and retry.
            drop_content(dst, &digest).with_context(|| format!("after: {text}"))?;
            continue;
        }
        let old_runs =
            !old.is_empty() && matches!(state(src, old), Ok((s, _, _)) if s == "running");
        if !text.contains("Address already in use") && !old_runs {
            return Err(e);
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

/// Removes a blob from the content store of dockerd's containerd on `h`.
fn drop_content(h: &Host, digest: &str) -> Result<()> {
    h.run(
        "ctr",
        &[
            "--address",
            "/var/run/docker/containerd/containerd.sock",
            "--namespace",
            "moby",
            "content",
            "rm",
            digest,
        ],
    )
    .context("ctr (containerd's client) dropping a stale checkpoint blob")
    .map(|_| ())
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
}
