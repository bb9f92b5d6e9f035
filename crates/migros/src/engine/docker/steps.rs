//! The Docker engine's migration steps (`crate::engine` lists them):
//!
//! - prepare: `docker create` of the next incarnation, same `--ip`,
//!   against the destination node's sockets;
//! - checkpoint: `docker checkpoint create <cur> <ck>` (a fresh checkpoint
//!   name every time: Docker 20.10 fails to restore a checkpoint containerd
//!   already holds);
//! - transfer: `/var/lib/docker/containers/<old id>/checkpoints/<ck>` is
//!   copied into the new container's `checkpoints/`;
//! - network: nothing (the address belongs to the Docker network);
//! - restore: `docker start --checkpoint <ck> <new>`;
//! - finish: the checkpoint goes unless `--keep-image`.
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
    /// Where `docker checkpoint create` writes the checkpoint.
    fn written(&self) -> PathBuf {
        checkpoint_dir(&self.old_id, &self.ck)
    }

    /// Where `docker start --checkpoint` of the new incarnation reads it.
    fn read(&self) -> PathBuf {
        checkpoint_dir(&self.new_id, &self.ck)
    }
}

fn checkpoint_dir(id: &str, ck: &str) -> PathBuf {
    Path::new(DOCKER_ROOT).join(id).join("checkpoints").join(ck)
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
        let (status, _, pid) = state(&self.current())?;
        if status != "running" || pid <= 0 {
            bail!("container {name} is not running ({status})");
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
            old_id: inspect(&self.current(), "{{.Id}}")?,
            new: self.id(m.gen),
            new_id: String::new(),
        };
        Ok(sys::process_tree(pid))
    }

    pub(super) fn prepare_step(&mut self, m: &Move) -> Result<String> {
        let new = self.mig.new.clone();
        let _ = docker(&["rm", "-f", &new]);
        let mut args = vec!["create".to_string()];
        args.extend(self.options(m.gen, &m.dst)?);
        args.extend(self.c.args.iter().cloned());
        docker_owned(&args).with_context(|| format!("docker create {new}"))?;
        self.mig.new_id = inspect(&new, "{{.Id}}")?;
        Ok(format!("docker create {new}"))
    }

    pub(super) fn checkpoint_step(&mut self, _m: &Move) -> Result<Checkpointed> {
        let (cur, ck) = (self.current(), &self.mig.ck);
        let stopped_at = Instant::now();
        docker(&["checkpoint", "create", &cur, ck])?;
        Ok(Checkpointed {
            detail: format!("docker checkpoint create {cur} {ck}"),
            stopped_at,
            stopped_how:
                "checkpoint start to restored (freeze within the checkpoint + transfer + restore)",
        })
    }

    pub(super) fn transfer_step(&mut self, _m: &Move) -> Result<Transferred> {
        let (from, to) = (self.mig.written(), self.mig.read());
        let size = sys::dir_size(&from);
        sys::copy_tree(&from, &to)?;
        Ok(Transferred {
            detail: format!(
                "image {} copied into {}'s checkpoints",
                sys::human_bytes(size),
                self.mig.new
            ),
            image_bytes: size,
            image_at: to.display().to_string(),
        })
    }

    pub(super) fn restore_step(&mut self, _m: &Move) -> Result<Restored> {
        let (ck, new) = (&self.mig.ck, &self.mig.new);
        start_checkpoint(&self.current(), ck, new)?;
        let resumed_at = Instant::now();
        Ok(Restored {
            detail: format!("docker start --checkpoint {ck} {new}"),
            pid: state(new).map(|s| s.2).unwrap_or(0),
            resumed_at,
        })
    }

    pub(super) fn finish_step(&mut self, m: &Move) -> Vec<String> {
        if !m.opts.keep_image {
            let _ = docker(&["checkpoint", "rm", &self.current(), &self.mig.ck]);
            let _ = std::fs::remove_dir_all(self.mig.written());
            let _ = std::fs::remove_dir_all(self.mig.read());
        }
        Vec::new()
    }

    pub(super) fn rollback_steps(&mut self, m: &Move, failed: Step) -> Aftermath {
        let src = &m.src.name;
        match failed {
            Step::Check => Aftermath::Source {
                note: "nothing was frozen".into(),
            },
            Step::Prepare | Step::PreCopy(_) | Step::Checkpoint => {
                let _ = docker(&["rm", "-f", &self.mig.new]);
                let still = match state(&self.current()) {
                    Ok((s, _, _)) if s == "running" => {
                        format!("the container is still running on node {src}")
                    }
                    Ok((s, code, _)) => format!("the container is {s} (exit code {code})"),
                    Err(_) => "the container is gone".into(),
                };
                Aftermath::Source {
                    note: format!(
                        "{still} (dockerd's log: {}/dockerd.log)",
                        sys::state_dir().display()
                    ),
                }
            }
            Step::Transfer | Step::Network | Step::Restore => {
                let image = if self.mig.read().exists() {
                    self.mig.read()
                } else {
                    self.mig.written()
                };
                let note = format!(
                    "the checkpoint is kept in {} (and {}); migros rm -f {} removes it",
                    self.mig.read().display(),
                    self.mig.written().display(),
                    self.c.name
                );
                Aftermath::Lost { image, note }
            }
        }
    }
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
    sys::run(
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
