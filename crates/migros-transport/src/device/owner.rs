//! Operations on everything one owner (a client process) holds: pause,
//! snapshot, evict (tombstones), restore, resume, destroy. They are what
//! live migration is made of (see the crate docs).

use std::net::IpAddr;

use super::{exists, Device, NoMemory};
use crate::error::VerbsError;
use crate::snapshot::{from_remaining, to_remaining, OwnerSnapshot};
use crate::time::Instant;
use crate::tombstone::Tombstone;
use migros_proto::verbs::*;

/// How much a RESUME repeat interval grows per QP resuming at once.
const RESUME_REPEAT_PER_QP: std::time::Duration = std::time::Duration::from_micros(10);

impl Device {
    fn owner_qpns(&self, owner: OwnerId) -> Vec<Qpn> {
        self.qps
            .iter()
            .filter(|(_, q)| q.init.owner == owner)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Writes into `owner`'s memory were lost (see [`crate::Qp`]'s
    /// `memory_lost`): each of its QPs NAKs instead of acknowledging and
    /// enters the error state.
    pub fn memory_lost(&mut self, mem: &mut dyn crate::Memory, owner: OwnerId) {
        for qpn in self.owner_qpns(owner) {
            let _ = self.with_qp(qpn, mem, |qp, env| qp.memory_lost(env));
        }
    }

    /// CQ `cq` can take no more completions (its ring in the client could
    /// not be written): every QP completing into it enters ERR.
    pub fn cq_error(&mut self, now: Instant, cq: Cqn) {
        let qpns: Vec<Qpn> = self
            .qps
            .iter()
            .filter(|(_, q)| q.init.send_cq == cq || q.init.recv_cq == cq)
            .map(|(n, _)| *n)
            .collect();
        let attr = QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        };
        for qpn in qpns {
            // Every state may move to ERR.
            let _ = self.modify_qp(now, qpn, &attr, AttrMask::STATE);
        }
    }

    /// Stops every QP of `owner` (migration step 1): nothing more is sent
    /// or written into its memory; requests get the pause NAK.
    pub fn pause_owner(&mut self, owner: OwnerId) -> Result<(), VerbsError> {
        for qpn in self.owner_qpns(owner) {
            if let Some(qp) = self.qps.get_mut(&qpn) {
                qp.pause();
                self.timers.set(qpn, qp.deadline());
            }
        }
        Ok(())
    }

    /// Undoes `pause_owner` on the source after a failed or abandoned dump.
    /// Partners that got the pause NAK meanwhile are paused: each QP runs
    /// the RESUME handshake, as after a restore, from where it is.
    pub fn unpause_owner(&mut self, now: Instant, owner: OwnerId) -> Result<(), VerbsError> {
        self.resume_owner(now, owner)
    }

    /// Every object of a paused `owner`, as plain data.
    pub fn snapshot_owner(
        &self,
        now: Instant,
        owner: OwnerId,
    ) -> Result<OwnerSnapshot, VerbsError> {
        let mut snap = OwnerSnapshot::new(owner);
        for (qpn, qp) in self.qps.iter().filter(|(_, q)| q.init.owner == owner) {
            if qp.mig() != MigrationState::Stopped {
                return Err(VerbsError::WrongState {
                    qpn: *qpn,
                    state: qp.state(),
                });
            }
            let mut image = qp.clone();
            image.timers.map(to_remaining(now));
            snap.qps.push(image);
        }
        snap.pds = self
            .objs
            .pds
            .iter()
            .filter(|(_, o)| **o == owner)
            .map(|(p, _)| *p)
            .collect();
        snap.mrs = self
            .objs
            .mrs
            .iter()
            .filter(|m| m.owner == owner)
            .copied()
            .collect();
        snap.cqs = self
            .objs
            .cqs
            .iter()
            .filter(|(_, c)| c.owner == owner)
            .map(|(n, c)| (*n, c.clone()))
            .collect();
        snap.srqs = self
            .objs
            .srqs
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(n, s)| (*n, s.clone()))
            .collect();
        snap.mws = self.owner_windows(owner);
        Ok(snap)
    }

    /// Removes every object of `owner`, leaving a tombstone per QP that
    /// answers requests with the pause NAK (until it expires: see
    /// [`crate::tombstone::Tombstones`]). Returns the tombstoned QPNs.
    pub fn evict_owner(&mut self, now: Instant, owner: OwnerId) -> Result<Vec<Qpn>, VerbsError> {
        let qpns = self.owner_qpns(owner);
        for qpn in &qpns {
            if let Some(qp) = self.qps.remove(qpn) {
                // At the bound, the tombstone expiring first makes room.
                if self.tombstones.insert(now, Tombstone::of(&qp)).is_some() {
                    self.objs.counters.tombstones_dropped += 1;
                }
            }
            self.timers.remove(*qpn);
        }
        self.remove_owner_objects(owner);
        Ok(qpns)
    }

    fn remove_owner_objects(&mut self, owner: OwnerId) {
        let lkeys: Vec<u32> = self
            .objs
            .mrs
            .iter()
            .filter(|m| m.owner == owner)
            .map(|m| m.lkey)
            .collect();
        for lkey in lkeys {
            self.objs.mrs.remove(lkey);
        }
        self.remove_owner_windows(owner);
        self.objs.cqs.retain(|_, c| c.owner != owner);
        self.objs.srqs.retain(|_, s| s.owner != owner);
        self.objs.pds.retain(|_, o| *o != owner);
    }

    /// Tells tombstones where their QPs went, so RESUMEs reaching this node
    /// are forwarded there (from `now`, each lives its full time again).
    pub fn forward_tombstones(&mut self, now: Instant, qpns: &[Qpn], new_addr: IpAddr) {
        for qpn in qpns {
            self.tombstones.forward(now, *qpn, new_addr);
        }
    }

    pub fn release_tombstone(&mut self, qpn: Qpn) {
        self.tombstones.remove(qpn);
    }

    /// QPNs with a tombstone on this device.
    pub fn tombstones(&self) -> Vec<Qpn> {
        self.tombstones.qpns().collect()
    }

    /// Whether `qpn` has a tombstone on this device.
    pub fn has_tombstone(&self, qpn: Qpn) -> bool {
        self.tombstones.contains(qpn)
    }

    /// Fails if restoring `snapshot` here would collide with an object.
    pub fn check_restore(&self, snapshot: &OwnerSnapshot) -> Result<(), VerbsError> {
        snapshot.validate()?;
        for pd in &snapshot.pds {
            if self.objs.pds.contains_key(pd) {
                return Err(exists("pd", *pd));
            }
        }
        for mr in &snapshot.mrs {
            if self.objs.mrs.collides(mr) {
                return Err(exists("memory key", mr.lkey));
            }
        }
        self.check_windows_free(&snapshot.mws)?;
        for (cq, _) in &snapshot.cqs {
            if self.objs.cqs.contains_key(cq) {
                return Err(exists("cq", *cq));
            }
        }
        for (srq, _) in &snapshot.srqs {
            if self.objs.srqs.contains_key(srq) {
                return Err(exists("srq", *srq));
            }
        }
        for qp in &snapshot.qps {
            if self.qps.contains_key(&qp.qpn()) {
                return Err(exists("qp", qp.qpn()));
            }
            // A migrated QP's number is taken back only by that QP (a
            // rolled-back move): its image holds the key its tombstone
            // keeps. Another image would inherit its partner.
            if self
                .tombstones
                .get(qp.qpn())
                .is_some_and(|t| t.key != qp.resume_key)
            {
                return Err(VerbsError::BadSnapshot(format!(
                    "qp {} is the number of a qp that migrated away, and the image is not that qp",
                    qp.qpn()
                )));
            }
            if qp.attr.path_mtu > self.config.max_mtu {
                return Err(VerbsError::BadSnapshot(format!(
                    "qp {} uses an mtu this device lacks",
                    qp.qpn()
                )));
            }
        }
        Ok(())
    }

    /// Recreates every object of the snapshot with the same identifiers.
    /// The QPs stay stopped until `resume_owner`.
    pub fn restore(&mut self, now: Instant, snapshot: OwnerSnapshot) -> Result<(), VerbsError> {
        self.check_restore(&snapshot)?;
        let owner = snapshot.owner;
        for pd in snapshot.pds {
            self.objs.pds.insert(pd, owner);
        }
        for mr in snapshot.mrs {
            // check_restore found no collision, so this cannot fail.
            let _ = self.objs.mrs.insert(mr);
        }
        for mw in snapshot.mws {
            // Likewise.
            let _ = self.objs.mrs.insert_window(mw);
        }
        self.objs.cqs.extend(snapshot.cqs);
        self.objs.srqs.extend(snapshot.srqs);
        for mut qp in snapshot.qps {
            qp.timers.map(from_remaining(now));
            qp.attr.migration = MigrationState::Stopped;
            self.tombstones.remove(qp.qpn());
            self.timers.set(qp.qpn(), qp.deadline());
            self.qps.insert(qp.qpn(), qp);
        }
        Ok(())
    }

    /// Restarts the restored QPs of `owner`: each announces itself with RESUME.
    pub fn resume_owner(&mut self, now: Instant, owner: OwnerId) -> Result<(), VerbsError> {
        let mut nomem = NoMemory;
        for qpn in self.owner_qpns(owner) {
            self.with_qp(qpn, &mut nomem, |qp, env| qp.start_resume(now, env))?;
        }
        // Every QP sends its first RESUME at once; the repeats of many
        // QPs are spread out, so that the peers can answer the first round
        // before the next one comes (10,000 QPs repeating every 10 ms
        // flooded their peer's daemon until their sends ran out of retries).
        let resuming = self
            .qps
            .values()
            .filter(|q| q.mig() == MigrationState::Resuming)
            .count() as u32;
        self.config.resume_interval = self
            .resume_interval
            .max(RESUME_REPEAT_PER_QP.saturating_mul(resuming));
        Ok(())
    }

    /// Flushes and destroys everything of an owner that went away.
    pub fn destroy_owner(&mut self, owner: OwnerId) {
        for qpn in self.owner_qpns(owner) {
            self.qps.remove(&qpn);
            self.timers.remove(qpn);
        }
        self.remove_owner_objects(owner);
    }
}
