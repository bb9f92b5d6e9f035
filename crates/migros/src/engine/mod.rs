//! Container engines behind one trait.
//!
//! An [`Engine`] is one container as its engine (runc, Docker) drives it:
//! [`open`] reads the engine from the container's record once, and every
//! command goes through the trait from then on. Its methods are the
//! container operations (`run`, the status `ps` and `wait` poll, `logs`,
//! `remove`) and the named steps of a live migration, which
//! `crate::migration` calls in this order:
//!
//! 1. [`check`](Engine::check): the container can move; its processes;
//! 2. [`prepare`](Engine::prepare): the destination is made ready, nothing
//!    is frozen yet;
//! 3. [`pre_copy`](Engine::pre_copy) rounds, where the engine has them;
//! 4. [`checkpoint`](Engine::checkpoint): freeze and checkpoint (the CRIU
//!    plugin pauses and dumps the RDMA state);
//! 5. [`transfer`](Engine::transfer): the image reaches the destination;
//! 6. [`network`](Engine::network): the container's address points there;
//! 7. [`restore`](Engine::restore): it runs on the destination (the plugin
//!    reconnects and resumes the RDMA sessions);
//! 8. [`finish`](Engine::finish): the source's leftovers go.
//!
//! When a step fails, [`rollback`](Engine::rollback) undoes what the steps
//! so far did and says where the container is now ([`Aftermath`]).
//!
//! What every engine shares (the RDMA identifier check, tombstones, the
//! container record, the timeline) is done by the caller, not by engines.
//! A step reaches the nodes only through the [`Node`]s of its [`Move`]: no
//! step assumes that source and destination share a file system (today's
//! engines copy locally inside `transfer`; a remote node would copy there).

pub mod docker;
pub mod runc;

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::container::{Container, Status};
use crate::node::Node;

/// The engines a container can run on; its record says which.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// runc bundles made by migros, one network namespace per incarnation.
    #[default]
    Runc,
    /// Docker (20.10, experimental checkpoints; scripts/setup-docker.sh).
    Docker,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Runc => "runc",
            EngineKind::Docker => "docker",
        }
    }

    /// The longest container name it takes (runc: part of interface names).
    pub fn max_name(self) -> usize {
        match self {
            EngineKind::Runc => runc::net::MAX_NAME,
            EngineKind::Docker => docker::MAX_NAME,
        }
    }
}

/// The container `record` with its engine.
pub fn open(record: Container) -> Box<dyn Engine> {
    match record.engine {
        EngineKind::Runc => Box::new(runc::Runc::new(record)),
        EngineKind::Docker => Box::new(docker::Docker::new(record)),
    }
}

/// The container called `name` with its engine.
pub fn load(name: &str) -> Result<Box<dyn Engine>> {
    Ok(open(crate::container::load(name)?))
}

/// What a migration asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Pre-copy rounds before the final checkpoint.
    pub pre_copy: u32,
    /// Keep the source (frozen) until the restore succeeded.
    pub leave_running: bool,
    /// Keep the image after a successful migration.
    pub keep_image: bool,
}

/// One migration, as every step sees it.
#[derive(Debug, Clone)]
pub struct Move {
    /// Where the container runs.
    pub src: Node,
    /// Where it goes.
    pub dst: Node,
    /// Its incarnation on the destination (the record's + 1).
    pub gen: u32,
    pub opts: Options,
}

/// The steps of a migration, for errors and [`Engine::rollback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Check,
    Prepare,
    /// Pre-copy round n (from 1).
    PreCopy(u32),
    Checkpoint,
    Transfer,
    Network,
    Restore,
}

/// What [`Engine::checkpoint`] tells.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// The timeline's detail.
    pub detail: String,
    /// When the container stopped (its downtime starts).
    pub stopped_at: Instant,
    /// How `stopped_at` was measured, for the timeline's downtime line.
    pub stopped_how: &'static str,
}

/// What [`Engine::transfer`] tells.
#[derive(Debug, Clone)]
pub struct Transferred {
    pub detail: String,
    /// Size of the image the restore reads.
    pub image_bytes: u64,
    /// Where the image is on the destination (kept with `--keep-image`).
    pub image_at: String,
}

/// What [`Engine::restore`] tells.
#[derive(Debug, Clone)]
pub struct Restored {
    pub detail: String,
    /// The container's init on the destination.
    pub pid: i32,
    /// When it runs again (its downtime ends).
    pub resumed_at: Instant,
}

/// Where a container is after [`Engine::rollback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aftermath {
    /// It stays on the source, its record as before the migration (it
    /// runs, unless `note` says otherwise).
    Source { note: String },
    /// Nothing runs any more; its image is kept to restore it by hand.
    Lost {
        image: std::path::PathBuf,
        note: String,
    },
}

impl Aftermath {
    pub fn note(&self) -> &str {
        match self {
            Aftermath::Source { note } | Aftermath::Lost { note, .. } => note,
        }
    }
}

/// A container driven by its engine.
pub trait Engine {
    /// The record it was opened with (migrations do not change it: the
    /// caller writes the new one).
    fn record(&self) -> &Container;

    /// The engine's own name for incarnation `gen` (runc id, Docker name).
    fn id(&self, gen: u32) -> String;

    /// `migros run`: checks the record's address (`0.0.0.0`: any), starts
    /// incarnation 0 on `node` and writes the record. Says what started.
    fn run(&mut self, node: &Node) -> Result<String>;

    /// What `ps` and `wait` show.
    fn status(&self) -> Status;

    /// The output of every incarnation, oldest first.
    fn logs(&self, out: &mut dyn Write) -> Result<()>;

    /// Stops every incarnation that runs and removes them, the container's
    /// network and its files, the record included.
    fn remove(&mut self) -> Result<()>;

    /// Step 1: whether the container can move as `m` asks; its processes
    /// on the source (init first), whose RDMA identifiers the caller checks.
    fn check(&mut self, m: &Move) -> Result<Vec<i32>>;

    /// Step 2: makes the destination ready; nothing is frozen yet.
    fn prepare(&mut self, m: &Move) -> Result<String>;

    /// Step 3: pre-copy round `round` (from 1) while the container runs.
    fn pre_copy(&mut self, m: &Move, round: u32) -> Result<String> {
        let _ = (m, round);
        bail!("the {} engine has no pre-copy", self.record().engine.name())
    }

    /// Step 4: freezes and checkpoints the container.
    fn checkpoint(&mut self, m: &Move) -> Result<Checkpointed>;

    /// Step 5: brings the image to the destination node.
    fn transfer(&mut self, m: &Move) -> Result<Transferred>;

    /// Step 6: makes the container's address lead to the destination.
    fn network(&mut self, m: &Move) -> Result<String>;

    /// Step 7: restores the container on the destination.
    fn restore(&mut self, m: &Move) -> Result<Restored>;

    /// Step 8: removes what the source no longer needs; notes for the
    /// timeline. It cannot fail: the container runs on the destination.
    fn finish(&mut self, m: &Move) -> Vec<String>;

    /// Undoes what the steps before `failed` (and `failed` itself, as far
    /// as it went) did; where the container is now.
    fn rollback(&mut self, m: &Move, failed: Step) -> Aftermath;
}
