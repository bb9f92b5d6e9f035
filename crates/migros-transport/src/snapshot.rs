//! A snapshot of an owner's verbs objects: all their transport state (PSNs,
//! MSN, queues, an in-progress multi-packet message, READ/atomic responder
//! resources, the atomic replay cache, timers as remaining time), taken by
//! [`crate::Device::snapshot_owner`] and given to [`crate::Device::restore`].
//! Its encoding is the versioned image of [`crate::image`], converted
//! explicitly ([`OwnerSnapshot::to_image`], [`OwnerSnapshot::from_image`]).

use std::time::Duration;

use crate::error::VerbsError;
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
        for mr in &self.mrs {
            if mr.owner != self.owner || !self.pds.contains(&mr.pd) {
                return bad(format!(
                    "memory region {:#x} refers to a foreign owner or pd",
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
            if srq.owner != self.owner || !self.pds.contains(&srq.pd) {
                return bad(format!("srq {srqn} refers to a foreign owner or pd"));
            }
        }
        let has_cq = |c: Cqn| self.cqs.iter().any(|(n, _)| *n == c);
        for qp in &self.qps {
            let init = &qp.init;
            if init.owner != self.owner
                || init.qpn > MAX_QPN
                || !self.pds.contains(&init.pd)
                || !has_cq(init.send_cq)
                || !has_cq(init.recv_cq)
                || init
                    .srq
                    .is_some_and(|s| !self.srqs.iter().any(|(n, _)| *n == s))
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
