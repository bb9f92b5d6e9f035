//! `migros migrate`: live-migrates a container to another node, whatever
//! its engine, and prints a timeline.
//!
//! [`run`] is the command (arguments → one call of [`migrate`]); [`drive`]
//! runs the steps of the container's [`Engine`] in order (see
//! `crate::engine`), adds what every engine shares, and rolls back when a
//! step fails:
//!
//! - before anything freezes, the RDMA identifiers of the container's
//!   processes on the source daemon (admin `Identifiers`) must be free on
//!   the destination daemon (admin `CheckIdentifiers`);
//! - once the destination is prepared the record says `migrating`;
//! - after the restore, the source daemon learns where the QPs went
//!   (`ForwardTombstones`: those identified before the freeze and any
//!   tombstone the checkpoint made), and the record names the new node and
//!   incarnation;
//! - a failed step calls [`Engine::rollback`]: the record goes back to
//!   the source as it was, or says `lost` with the image kept; the error
//!   says which step failed and where the container is.

pub mod cluster;
pub mod criu;
#[cfg(test)]
mod tests;
pub mod timeline;

use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use crate::cli::MigrateArgs;
use crate::container::{self, Container, State};
use crate::engine::{
    self, Aftermath, Checkpointed, Engine, EngineKind, Move, Options, Restored, Step, Transferred,
};
use crate::node;
use crate::sys;
use cluster::Cluster;
use timeline::{Report, Timeline};

/// `migros migrate NAME --to NODE …`.
pub fn run(a: &MigrateArgs) -> Result<()> {
    sys::need_root("migros migrate")?;
    let opts = Options {
        pre_copy: a.pre_copy,
        leave_running: a.leave_running,
        keep_image: a.keep_image,
    };
    let report = migrate(&a.name, &a.to, a.engine, opts)?;
    print!("{report}");
    Ok(())
}

/// Live-migrates container `name` to node `to` (`engine`: the engine the
/// caller expects, if it says).
pub fn migrate(name: &str, to: &str, engine: Option<EngineKind>, opts: Options) -> Result<Report> {
    let _lock = sys::lock()?;
    let record = container::load(name)?;
    if let Some(kind) = engine.filter(|k| *k != record.engine) {
        bail!(
            "container {name} runs on {}, not {}",
            record.engine.name(),
            kind.name()
        );
    }
    let src = node::load(&record.node)?;
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
    let m = Move {
        src,
        dst,
        gen: record.gen + 1,
        opts,
    };
    drive(engine::open(record).as_mut(), &m, &cluster::Local)
}

/// Runs the migration `m` of `engine`'s container step by step.
pub fn drive(engine: &mut dyn Engine, m: &Move, cluster: &dyn Cluster) -> Result<Report> {
    let record = engine.record().clone();
    let steps = 7 + m.opts.pre_copy as usize;
    let mut d = Driver {
        tl: Timeline::new(&record.name, steps),
        engine,
        m,
        cluster,
        record,
        marked: false,
    };
    d.run()
}

/// One migration under way.
struct Driver<'a> {
    engine: &'a mut dyn Engine,
    m: &'a Move,
    cluster: &'a dyn Cluster,
    /// The record as it was before.
    record: Container,
    /// The record says `migrating`.
    marked: bool,
    tl: Timeline,
}

impl Driver<'_> {
    fn run(&mut self) -> Result<Report> {
        let (m, t_start) = (self.m, Instant::now());
        let checked = self.step(Step::Check, |d| {
            let pids = d.engine.check(m)?;
            let sessions = cluster::check_identifiers(d.cluster, m, &pids)?;
            let detail = sessions.detail(m);
            Ok(Checked {
                pids,
                sessions,
                detail,
            })
        })?;
        self.step(Step::Prepare, |d| {
            let detail = d.engine.prepare(m)?;
            d.cluster.save(&d.record.with_state(State::Migrating))?;
            d.marked = true;
            Ok(detail)
        })?;
        for round in 1..=m.opts.pre_copy {
            self.step(Step::PreCopy(round), |d| d.engine.pre_copy(m, round))?;
        }
        // The source's tombstones before: the checkpoint's are the new ones
        // (QPs made after the identifier check included).
        let tombstones_before = self.cluster.tombstones(&m.src);
        let ck = self.step(Step::Checkpoint, |d| d.engine.checkpoint(m))?;
        let image = self.step(Step::Transfer, |d| d.engine.transfer(m))?;
        self.step(Step::Network, |d| d.engine.network(m))?;
        let rs = self.step(Step::Restore, |d| d.engine.restore(m))?;

        self.tl.progress("forwarding tombstones");
        let t = Instant::now();
        let mut notes: Vec<String> = cluster::forward_tombstones(
            self.cluster,
            m,
            checked.sessions.qpns(),
            tombstones_before.as_deref(),
        )
        .into_iter()
        .collect();
        notes.extend(self.engine.finish(m));
        let done = Container {
            node: m.dst.name.clone(),
            gen: m.gen,
            ..self.record.with_state(State::Active)
        };
        self.cluster.save(&done).map_err(|e| {
            anyhow!(
                "container {} runs on node {} (pid {}), but its record was not written: {e:#}",
                done.name,
                m.dst.name,
                rs.pid
            )
        })?;
        let notes = if notes.is_empty() {
            "no RDMA".to_string()
        } else {
            notes.join(", ")
        };
        self.tl.push("finish", t.elapsed(), notes);

        let r = &self.record;
        let kind = r.engine.name();
        Ok(Report {
            head: format!(
                "migrated {} from {} to {} ({kind} {} -> {}): pid {} -> {}",
                r.name,
                m.src.name,
                m.dst.name,
                self.engine.id(r.gen),
                self.engine.id(m.gen),
                checked.pids.first().copied().unwrap_or(0),
                rs.pid
            ),
            lines: std::mem::take(&mut self.tl).into_lines(),
            downtime: rs.resumed_at.saturating_duration_since(ck.stopped_at),
            downtime_how: ck.stopped_how,
            total: t_start.elapsed(),
            image_bytes: image.image_bytes,
            kept_at: m.opts.keep_image.then_some(image.image_at),
        })
    }

    /// Runs `step` (`call`) between its progress line and its timeline
    /// line; rolls back when it fails.
    fn step<T: Detail>(
        &mut self,
        step: Step,
        call: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let words = Words::of(step, self.m);
        self.tl.progress(&words.progress);
        let t = Instant::now();
        match call(self) {
            Ok(v) => {
                self.tl.push(&words.line, t.elapsed(), v.detail());
                Ok(v)
            }
            Err(e) => Err(self.abort(step, words.failed, e)),
        }
    }

    /// Rolls back after `step` failed with `e`: the engine undoes its
    /// part, the record says where the container is; the error to show.
    fn abort(&mut self, step: Step, failed: Option<String>, e: anyhow::Error) -> anyhow::Error {
        let after = self.engine.rollback(self.m, step);
        let saved = match &after {
            Aftermath::Source { .. } if self.marked => self.cluster.save(&self.record),
            Aftermath::Source { .. } => Ok(()),
            Aftermath::Lost { image, .. } => {
                self.cluster.save(&self.record.with_state(State::Lost {
                    image: image.clone(),
                    error: format!("{e:#}"),
                }))
            }
        };
        let mut msg = match failed {
            Some(what) => format!("{what}: {e:#}\n{}", after.note()),
            // A refused check: nothing happened, the error says why.
            None => format!("{e:#}"),
        };
        if let Err(se) = saved {
            msg += &format!("\nthe container's record was not written: {se:#}");
        }
        anyhow!(msg)
    }
}

/// How the progress, the timeline and an error name a step.
struct Words {
    progress: String,
    line: String,
    /// `None`: the check, whose error is its own explanation.
    failed: Option<String>,
}

impl Words {
    fn of(step: Step, m: &Move) -> Words {
        let dst = &m.dst.name;
        let (progress, line, failed) = match step {
            Step::Check => (
                "checking RDMA identifiers".to_string(),
                "check identifiers".to_string(),
                None,
            ),
            Step::Prepare => (
                format!("preparing node {dst}"),
                "prepare destination".into(),
                Some(format!("preparing node {dst} failed")),
            ),
            Step::PreCopy(n) => (
                format!("pre-copy round {n}"),
                format!("pre-copy {n}"),
                Some(format!("pre-copy round {n} failed")),
            ),
            Step::Checkpoint => (
                "checkpoint (freeze, RDMA pause + dump, memory)".into(),
                "checkpoint".into(),
                Some("checkpoint failed".into()),
            ),
            Step::Transfer => (
                "transfer".into(),
                "transfer".into(),
                Some(format!("transfer to node {dst} failed")),
            ),
            Step::Network => (
                "moving the address".into(),
                "network".into(),
                Some("moving the address failed".into()),
            ),
            Step::Restore => (
                format!("restore on node {dst}"),
                "restore".into(),
                Some(format!("restore on node {dst} failed")),
            ),
        };
        Words {
            progress,
            line,
            failed,
        }
    }
}

/// What the check found.
struct Checked {
    /// The container's processes on the source, init first.
    pids: Vec<i32>,
    sessions: cluster::Sessions,
    detail: String,
}

/// A step's result as its timeline line shows it.
trait Detail {
    fn detail(&self) -> String;
}

impl Detail for String {
    fn detail(&self) -> String {
        self.clone()
    }
}

/// `Detail` of the step results that carry their `detail`.
macro_rules! detail_field {
    ($($t:ty),*) => {
        $(impl Detail for $t {
            fn detail(&self) -> String {
                self.detail.clone()
            }
        })*
    };
}

detail_field!(Checked, Checkpointed, Transferred, Restored);
