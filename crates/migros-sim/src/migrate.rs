//! Live migration of owners between simulated nodes, step by step as the
//! CRIU plugin drives it on real hosts.
//!
//! On the source: `pause_owner`, `snapshot_owner`, encode the image and
//! decode it again (every simulated migration exercises the image format),
//! then `check_restore` on the target before anything irreversible happens;
//! a failure so far rolls back with `unpause_owner`. Then `evict_owner`
//! leaves tombstones, the owner's memory moves to the target at the same
//! addresses, and the network keeps running for the downtime (peers keep
//! sending and get the pause NAK). Finally `restore` on the target,
//! `forward_tombstones` on the source and `resume_owner` on the target.
//!
//! Several owners can move in one migration (both ends of a connection,
//! or a whole node): every owner goes through each step before any owner
//! goes to the next, so all of them are down at the same time.

use std::collections::BTreeSet;
use std::time::Duration;

use migros_transport::{Instant, OwnerId, OwnerSnapshot, Qpn, VerbsError};
use std::fmt;

use crate::sim::{NodeId, Sim};

/// What one owner's migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub owner: OwnerId,
    pub from: NodeId,
    pub to: NodeId,
    /// QPs moved (tombstoned on `from`, restored on `to`).
    pub qpns: Vec<Qpn>,
    /// Size of the encoded checkpoint image.
    pub image_bytes: usize,
    /// Virtual time between pause and resume.
    pub downtime: Duration,
}

/// Why a simulated migration failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrateError {
    UnknownOwner(OwnerId),
    WrongSource {
        owner: OwnerId,
        expected: NodeId,
        actual: NodeId,
    },
    SameNode {
        owner: OwnerId,
        node: NodeId,
    },
    UnknownNode(NodeId),
    Duplicate(OwnerId),
    /// A device call failed; `rolled_back` says whether the owners were
    /// unpaused on their source (failures before eviction).
    Verbs {
        step: &'static str,
        owner: OwnerId,
        node: NodeId,
        source: VerbsError,
        rolled_back: bool,
    },
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrateError::UnknownOwner(o) => write!(f, "owner {o} does not exist"),
            MigrateError::WrongSource {
                owner,
                expected,
                actual,
            } => write!(f, "owner {owner} lives on {actual}, not on {expected}"),
            MigrateError::SameNode { owner, node } => {
                write!(
                    f,
                    "owner {owner} would migrate to {node}, where it already lives"
                )
            }
            MigrateError::UnknownNode(n) => write!(f, "no node {n}"),
            MigrateError::Duplicate(o) => write!(f, "owner {o} appears twice in one migration"),
            MigrateError::Verbs {
                step,
                owner,
                node,
                source,
                ..
            } => write!(f, "{step} of owner {owner} on {node} failed: {source}"),
        }
    }
}

impl std::error::Error for MigrateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MigrateError::Verbs { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Owners evicted by [`Sim::begin_migration`], waiting to be restored by
/// [`Sim::finish_migration`].
pub struct PendingMigration {
    plan: Vec<Move>,
    started: Instant,
}

impl PendingMigration {
    /// The owners on their way, with their source and target nodes.
    pub fn moves(&self) -> Vec<(OwnerId, NodeId, NodeId)> {
        self.plan.iter().map(|m| (m.owner, m.from, m.to)).collect()
    }

    /// QPs tombstoned on the source nodes, per move.
    pub fn qpns(&self) -> Vec<Vec<Qpn>> {
        self.plan.iter().map(|m| m.qpns.clone()).collect()
    }
}

impl fmt::Debug for PendingMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingMigration")
            .field("moves", &self.moves())
            .field("started", &self.started)
            .finish()
    }
}

struct Move {
    owner: OwnerId,
    from: NodeId,
    to: NodeId,
    image: Option<OwnerSnapshot>,
    image_bytes: usize,
    qpns: Vec<Qpn>,
}

impl Sim {
    /// Migrates `owner` from `from` to `to`, keeping the network running for
    /// `downtime` of virtual time while it is down. See the module docs.
    pub fn migrate_owner(
        &mut self,
        owner: OwnerId,
        from: NodeId,
        to: NodeId,
        downtime: Duration,
    ) -> Result<MigrationReport, MigrateError> {
        let mut reports = self.migrate(&[(owner, from, to)], downtime)?;
        // migrate returns one report per move.
        Ok(reports.remove(0))
    }

    /// Migrates two owners at the same time (typically both ends of a
    /// connection): each one's RESUME goes to the other's old node and must
    /// be forwarded by its tombstone.
    pub fn migrate_two(
        &mut self,
        a: (OwnerId, NodeId, NodeId),
        b: (OwnerId, NodeId, NodeId),
        downtime: Duration,
    ) -> Result<[MigrationReport; 2], MigrateError> {
        let mut reports = self.migrate(&[a, b], downtime)?.into_iter();
        match (reports.next(), reports.next()) {
            (Some(ra), Some(rb)) => Ok([ra, rb]),
            // migrate returns exactly one report per move.
            _ => unreachable!("two moves give two reports"),
        }
    }

    /// Migrates every owner living on `from` to `to` at once.
    pub fn migrate_node(
        &mut self,
        from: NodeId,
        to: NodeId,
        downtime: Duration,
    ) -> Result<Vec<MigrationReport>, MigrateError> {
        let moves: Vec<_> = self
            .owners_on(from)
            .into_iter()
            .map(|o| (o, from, to))
            .collect();
        self.migrate(&moves, downtime)
    }

    /// Migrates each `(owner, from, to)` at the same time; one report per
    /// move, in the same order.
    pub fn migrate(
        &mut self,
        moves: &[(OwnerId, NodeId, NodeId)],
        downtime: Duration,
    ) -> Result<Vec<MigrationReport>, MigrateError> {
        let pending = self.begin_migration(moves)?;
        // Transfer time: peers keep running and get paused.
        self.run_for(downtime);
        self.finish_migration(pending)
    }

    /// The first half of [`Sim::migrate`]: pauses, checkpoints (through
    /// the image format), checks the targets, evicts to tombstones and moves
    /// the owners' memory. The owners are down until
    /// [`Sim::finish_migration`]; meanwhile the test runs the network as it
    /// likes (and may never finish: a process that never comes back).
    pub fn begin_migration(
        &mut self,
        moves: &[(OwnerId, NodeId, NodeId)],
    ) -> Result<PendingMigration, MigrateError> {
        let mut plan = self.plan(moves)?;
        let started = self.now;

        // 1. Freeze: nothing more is sent or written into the owners' memory.
        for i in 0..plan.len() {
            let (owner, from) = (plan[i].owner, plan[i].from);
            let r = self.with_device(from, |d, _, _| d.pause_owner(owner));
            if let Err(source) = r {
                self.roll_back(&plan[..i]);
                return Err(verbs("pause_owner", owner, from, source, true));
            }
        }
        // 2. Checkpoint, through the image format, and check the target.
        for i in 0..plan.len() {
            let (owner, from, to) = (plan[i].owner, plan[i].from, plan[i].to);
            let image = self
                .device(from)
                .snapshot_owner(self.now, owner)
                .map_err(|e| ("snapshot_owner", from, e))
                .and_then(|snap| {
                    let bytes = snap.encode();
                    let decoded = OwnerSnapshot::decode(&bytes).map_err(|e| ("decode", from, e))?;
                    Ok((decoded, bytes.len()))
                })
                .and_then(|(snap, len)| {
                    self.device(to)
                        .check_restore(&snap)
                        .map(|()| (snap, len))
                        .map_err(|e| ("check_restore", to, e))
                });
            match image {
                Ok((snap, len)) => {
                    plan[i].image = Some(snap);
                    plan[i].image_bytes = len;
                }
                Err((step, node, source)) => {
                    self.roll_back(&plan);
                    return Err(verbs(step, owner, node, source, true));
                }
            }
        }
        // 3. The source process is gone: tombstones answer for its QPs.
        for m in plan.iter_mut() {
            let (owner, from) = (m.owner, m.from);
            m.qpns = self
                .with_device(from, |d, _, now| d.evict_owner(now, owner))
                .map_err(|e| verbs("evict_owner", owner, from, e, false))?;
            if let Some(mem) = self.nodes[from.0].memory.take_owner(owner) {
                self.nodes[m.to.0].memory.insert_owner(owner, mem);
            }
            self.owners.insert(owner, m.to);
        }
        Ok(PendingMigration { plan, started })
    }

    /// The second half of [`Sim::migrate`]: restores with the same
    /// identifiers, forwards the tombstones and resumes.
    pub fn finish_migration(
        &mut self,
        pending: PendingMigration,
    ) -> Result<Vec<MigrationReport>, MigrateError> {
        let PendingMigration { mut plan, started } = pending;
        for m in plan.iter_mut() {
            let (owner, to) = (m.owner, m.to);
            if let Some(snap) = m.image.take() {
                self.with_device(to, |d, _, now| d.restore(now, snap))
                    .map_err(|e| verbs("restore", owner, to, e, false))?;
            }
        }
        for m in &plan {
            let to_addr = self.addr(m.to);
            self.with_device(m.from, |d, _, now| {
                d.forward_tombstones(now, &m.qpns, to_addr)
            });
        }
        for m in &plan {
            let (owner, to) = (m.owner, m.to);
            self.with_device(to, |d, _, now| d.resume_owner(now, owner))
                .map_err(|e| verbs("resume_owner", owner, to, e, false))?;
        }
        let downtime = self.now.saturating_duration_since(started);
        Ok(plan
            .into_iter()
            .map(|m| MigrationReport {
                owner: m.owner,
                from: m.from,
                to: m.to,
                qpns: m.qpns,
                image_bytes: m.image_bytes,
                downtime,
            })
            .collect())
    }

    /// Pauses `owner`, takes (and round-trips) its image, keeps it frozen
    /// for `hold`, then rolls back with `unpause_owner`, as a failed or
    /// `--leave-running` checkpoint does. Returns the image size.
    pub fn checkpoint_and_roll_back(
        &mut self,
        owner: OwnerId,
        hold: Duration,
    ) -> Result<usize, MigrateError> {
        let node = self
            .node_of(owner)
            .ok_or(MigrateError::UnknownOwner(owner))?;
        self.with_device(node, |d, _, _| d.pause_owner(owner))
            .map_err(|e| verbs("pause_owner", owner, node, e, false))?;
        let image = self
            .device(node)
            .snapshot_owner(self.now, owner)
            .map(|s| s.encode())
            .and_then(|bytes| OwnerSnapshot::decode(&bytes).map(|_| bytes.len()));
        self.run_for(hold);
        self.with_device(node, |d, _, now| d.unpause_owner(now, owner))
            .map_err(|e| verbs("unpause_owner", owner, node, e, false))?;
        image.map_err(|e| verbs("snapshot_owner", owner, node, e, true))
    }

    /// Releases the tombstones a migration left on its source node.
    pub fn release_tombstones(&mut self, report: &MigrationReport) {
        self.with_device(report.from, |d, _, _| {
            for &q in &report.qpns {
                d.release_tombstone(q);
            }
        });
    }

    fn plan(&self, moves: &[(OwnerId, NodeId, NodeId)]) -> Result<Vec<Move>, MigrateError> {
        let mut seen = BTreeSet::new();
        let nodes = self.nodes.len();
        moves
            .iter()
            .map(|&(owner, from, to)| {
                let actual = self
                    .node_of(owner)
                    .ok_or(MigrateError::UnknownOwner(owner))?;
                if actual != from {
                    return Err(MigrateError::WrongSource {
                        owner,
                        expected: from,
                        actual,
                    });
                }
                if to.0 >= nodes {
                    return Err(MigrateError::UnknownNode(to));
                }
                if to == from {
                    return Err(MigrateError::SameNode { owner, node: to });
                }
                if !seen.insert(owner) {
                    return Err(MigrateError::Duplicate(owner));
                }
                Ok(Move {
                    owner,
                    from,
                    to,
                    image: None,
                    image_bytes: 0,
                    qpns: Vec::new(),
                })
            })
            .collect()
    }

    /// Unpauses owners whose migration is abandoned. Errors are ignored:
    /// this is already the error path, and the first error is reported.
    fn roll_back(&mut self, paused: &[Move]) {
        for m in paused {
            let owner = m.owner;
            let _ = self.with_device(m.from, |d, _, now| d.unpause_owner(now, owner));
        }
    }
}

fn verbs(
    step: &'static str,
    owner: OwnerId,
    node: NodeId,
    source: VerbsError,
    rolled_back: bool,
) -> MigrateError {
    MigrateError::Verbs {
        step,
        owner,
        node,
        source,
        rolled_back,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_rejects_bad_moves_before_touching_devices() {
        let mut sim = Sim::new(1);
        let a = sim.add_node();
        let b = sim.add_node();
        let o = sim.new_owner(a);
        let d = Duration::ZERO;
        assert_eq!(
            sim.migrate_owner(999_999, a, b, d),
            Err(MigrateError::UnknownOwner(999_999))
        );
        assert_eq!(
            sim.migrate_owner(o, b, a, d),
            Err(MigrateError::WrongSource {
                owner: o,
                expected: b,
                actual: a
            })
        );
        assert_eq!(
            sim.migrate_owner(o, a, a, d),
            Err(MigrateError::SameNode { owner: o, node: a })
        );
        assert_eq!(
            sim.migrate_owner(o, a, NodeId(9), d),
            Err(MigrateError::UnknownNode(NodeId(9)))
        );
        assert_eq!(
            sim.migrate(&[(o, a, b), (o, a, b)], d).map(|_| ()),
            Err(MigrateError::Duplicate(o))
        );
    }
}
