//! A snapshot of an owner's verbs objects: all their transport state (PSNs,
//! MSN, queues, an in-progress multi-packet message, READ/atomic responder
//! resources, the atomic replay cache, timers as remaining time), taken by
//! [`crate::Device::snapshot_owner`] and given to [`crate::Device::restore`].
//! Its encoding is the versioned image of [`crate::image`], converted
//! explicitly ([`OwnerSnapshot::to_image`], [`OwnerSnapshot::from_image`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::VerbsError;
use crate::mw::{MemoryWindow, MwState};
use crate::qp::Qp;
use crate::queues::{Cq, Srq};
use crate::time::Instant;
use migros_proto::verbs::*;

/// Every verbs object of one owner, with all the transport state of its QPs.
#[derive(Debug, Clone)]
pub struct OwnerSnapshot {
    pub owner: OwnerId,
    pub(crate) pds: Vec<Pdn>,
    pub(crate) mrs: Vec<MrSpec>,
    pub(crate) cqs: Vec<(Cqn, Cq)>,
    pub(crate) srqs: Vec<(Srqn, Srq)>,
    /// Memory windows, bound or not, with their current rkeys.
    pub(crate) mws: Vec<MemoryWindow>,
    /// QPs with their timers stored as time remaining at snapshot.
    pub(crate) qps: Vec<Qp>,
}

impl OwnerSnapshot {
    pub(crate) fn new(owner: OwnerId) -> OwnerSnapshot {
        OwnerSnapshot {
            owner,
            pds: Vec::new(),
            mrs: Vec::new(),
            cqs: Vec::new(),
            srqs: Vec::new(),
            mws: Vec::new(),
            qps: Vec::new(),
        }
    }

    /// The QPNs in the image.
    pub fn qpns(&self) -> Vec<Qpn> {
        self.qps.iter().map(|q| q.qpn()).collect()
    }

    /// The memory regions in the image (keys a restore must not collide with).
    pub fn mrs(&self) -> &[MrSpec] {
        &self.mrs
    }

    /// Encodes the snapshot as an image (JSON, see [`crate::image`]).
    pub fn encode(&self) -> Vec<u8> {
        // Every field of the image is plain data (numbers, strings,
        // sequences, no maps), which serde_json always serialises.
        serde_json::to_vec(&self.to_image()).expect("image types always serialise")
    }

    /// Decodes and validates an image; never panics on bad input, and
    /// refuses an image of another version by name.
    pub fn decode(bytes: &[u8]) -> Result<OwnerSnapshot, VerbsError> {
        OwnerSnapshot::from_image(crate::image::decode(bytes)?)
    }

    /// Checks that the snapshot is self-consistent: every reference
    /// resolves, every object belongs to the owner and appears once, every
    /// cursor lies in its queue, no CQ holds more than it may.
    pub fn validate(&self) -> Result<(), VerbsError> {
        let bad = |m: String| Err(VerbsError::BadSnapshot(m));
        let keys = self.mrs.iter().flat_map(|m| [m.lkey, m.rkey]);
        let ids: [(&str, Vec<u32>); 5] = [
            ("pd", self.pds.clone()),
            ("memory key", keys.collect()),
            ("cq", self.cqs.iter().map(|(n, _)| *n).collect()),
            ("srq", self.srqs.iter().map(|(n, _)| *n).collect()),
            ("qp", self.qps.iter().map(|q| q.qpn()).collect()),
        ];
        for (what, mut ids) in ids {
            ids.sort_unstable();
            if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
                return bad(format!("{what} {:#x} appears twice", w[0]));
            }
        }
        // Sets, not lists: an image of many objects is checked in n log n.
        let pds: BTreeSet<Pdn> = self.pds.iter().copied().collect();
        let cqs: BTreeSet<Cqn> = self.cqs.iter().map(|(n, _)| *n).collect();
        let srqs: BTreeSet<Srqn> = self.srqs.iter().map(|(n, _)| *n).collect();
        for mr in &self.mrs {
            if mr.owner != self.owner || !pds.contains(&mr.pd) {
                return bad(format!(
                    "memory region {:#x} refers to a foreign owner or pd",
                    mr.lkey
                ));
            }
            // What reg_mr checks: no wrap, no key 0, known access bits.
            if mr.addr.checked_add(mr.length).is_none()
                || mr.lkey == 0
                || mr.rkey == 0
                || crate::device::check_mr_access(mr.access).ok() != Some(mr.access)
            {
                return bad(format!(
                    "memory region {:#x} wraps, has a zero key or access rights reg_mr refuses",
                    mr.lkey
                ));
            }
        }
        for (cqn, cq) in &self.cqs {
            if cq.owner != self.owner {
                return bad(format!("cq {cqn} belongs to another owner"));
            }
            if cq.capacity == 0 || cq.entries.len() > cq.capacity as usize {
                return bad(format!("cq {cqn} holds more completions than it may"));
            }
        }
        for (srqn, srq) in &self.srqs {
            if srq.owner != self.owner || !pds.contains(&srq.pd) {
                return bad(format!("srq {srqn} refers to a foreign owner or pd"));
            }
        }
        // Regions and QPs by key, for the windows' references (n log n).
        let region_pd: BTreeMap<u32, Pdn> = self.mrs.iter().map(|m| (m.lkey, m.pd)).collect();
        let qp_pd: BTreeMap<Qpn, Pdn> = self.qps.iter().map(|q| (q.qpn(), q.init.pd)).collect();
        for mw in &self.mws {
            let region_here = |l: u32| region_pd.get(&l) == Some(&mw.pd);
            let qp_here = |q: Qpn| qp_pd.get(&q) == Some(&mw.pd);
            let consistent = match mw.state {
                MwState::Free => mw.mw_type == MwType::Type2 && mw.mr_lkey.is_none(),
                MwState::Valid => {
                    mw.mr_lkey.is_none_or(region_here)
                        && match mw.mw_type {
                            MwType::Type1 => mw.qpn.is_none(),
                            MwType::Type2 => mw.qpn.is_some_and(qp_here) && mw.mr_lkey.is_some(),
                        }
                }
            };
            if mw.owner != self.owner || !pds.contains(&mw.pd) || !consistent {
                return bad(format!(
                    "memory window {:#x} is inconsistent or refers to objects not in the image",
                    mw.rkey
                ));
            }
        }
        for qp in &self.qps {
            let init = &qp.init;
            if init.owner != self.owner
                || init.qpn > MAX_QPN
                || !pds.contains(&init.pd)
                || !cqs.contains(&init.send_cq)
                || !cqs.contains(&init.recv_cq)
                || init.srq.is_some_and(|s| !srqs.contains(&s))
            {
                return bad(format!(
                    "qp {} refers to objects not in the image",
                    init.qpn
                ));
            }
            qp.validate()
                .map_err(|m| VerbsError::BadSnapshot(format!("qp {}: {m}", init.qpn)))?;
        }
        Ok(())
    }
}

/// Deadline → time remaining after `now` (stored in an Instant's nanoseconds).
pub(crate) fn to_remaining(now: Instant) -> impl Fn(Instant) -> Instant {
    move |t| Instant::from_nanos(t.saturating_duration_since(now).as_nanos() as u64)
}

/// Time remaining → deadline after `now`.
pub(crate) fn from_remaining(now: Instant) -> impl Fn(Instant) -> Instant {
    move |r| now + Duration::from_nanos(r.as_nanos())
}
