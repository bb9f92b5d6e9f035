//! The daemon's checkpoint image: the transport's `OwnerSnapshot` plus the
//! state of every ring in client memory, as versioned JSON.
//!
//! ```json
//! { "format": "migrosd-image", "version": 1, "owner": 123,
//!   "transport": { ...OwnerSnapshot... },
//!   "qps": [QpRings...], "cqs": [CqRing...], "srqs": [SrqRing...],
//!   "channels": [ids...], "inbox": [bytes...] }
//! ```
//!
//! Ring entries carry their addresses in the client's address space,
//! their sizes, the daemon's producer/consumer indices, CQ arm state and
//! completions not yet written. [`Image::decode`] validates everything it
//! can without the destination's state and never panics.
//!
//! The transport's part is kept as raw JSON text (the transport encodes
//! and decodes it): a session with a thousand QPs makes an image of about
//! 1.6 MB, and going through a `serde_json::Value` tree on the way in and
//! out cost several times what the transport's own decoding does.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use migros_proto::admin::SessionIds;
use migros_proto::msg::ChannelId;
use migros_transport::{Cqn, OwnerId, OwnerSnapshot, Pdn, Qpn, Srqn, WorkCompletion};

use crate::registry::{Channel, Mr, Objects, SessionId};
use crate::rings::{CqRing, QpRings, SrqRing, WqRing};

/// Format name written into every image.
pub const IMAGE_FORMAT: &str = "migrosd-image";
/// Version written into every image; decoding refuses others.
pub const IMAGE_VERSION: u32 = 1;
/// Largest ring accepted in an image (entries).
const MAX_RING: u32 = 1 << 24;

/// A decoded image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    pub format: String,
    pub version: u32,
    pub owner: OwnerId,
    /// The transport's `OwnerSnapshot`, as it encoded it.
    pub transport: Box<RawValue>,
    pub qps: Vec<QpImage>,
    pub cqs: Vec<CqImage>,
    pub srqs: Vec<SrqImage>,
    pub channels: Vec<ChannelId>,
    /// The start of a request the process was writing when it was frozen
    /// (admin checkpoints only): read first on the restored connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbox: Vec<u8>,
}

/// A work queue ring in an image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WqImage {
    pub addr: u64,
    pub entries: u32,
    pub ci: u32,
    pub pi: u32,
}

/// A QP's rings in an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QpImage {
    pub qpn: Qpn,
    pub session: u64,
    pub owner: OwnerId,
    pub ctrl: u64,
    pub sq: WqImage,
    pub rq: Option<WqImage>,
    pub send_cq: Cqn,
    pub recv_cq: Cqn,
}

/// An SRQ's ring in an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SrqImage {
    pub srq: Srqn,
    pub session: u64,
    pub owner: OwnerId,
    pub ctrl: u64,
    pub rq: WqImage,
}

/// A CQ's ring in an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CqImage {
    pub cq: Cqn,
    pub session: u64,
    pub owner: OwnerId,
    pub addr: u64,
    pub entries: u32,
    pub ctrl: u64,
    pub pi: u32,
    pub client_ci: u32,
    pub armed: bool,
    pub solicited_only: bool,
    pub channel: Option<ChannelId>,
    pub backlog: VecDeque<WorkCompletion>,
    pub overflows: u64,
}

impl From<WqRing> for WqImage {
    fn from(r: WqRing) -> WqImage {
        WqImage {
            addr: r.addr,
            entries: r.entries,
            ci: r.ci,
            pi: r.pi,
        }
    }
}

impl From<WqImage> for WqRing {
    fn from(r: WqImage) -> WqRing {
        WqRing {
            addr: r.addr,
            entries: r.entries,
            ci: r.ci,
            pi: r.pi,
        }
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a migrosd image (format {0:?})")]
    Format(String),
    #[error("image version {0} (this daemon reads {IMAGE_VERSION})")]
    Version(u32),
    #[error("transport snapshot rejected: {0}")]
    Transport(String),
    #[error("image is inconsistent: {0}")]
    Inconsistent(String),
}

impl Image {
    /// The image of session `session`'s `objects` and their transport
    /// snapshot.
    pub fn new(
        snapshot: &OwnerSnapshot,
        session: SessionId,
        objects: &Objects,
    ) -> Result<Image, ImageError> {
        let owner = snapshot.owner;
        let qps = objects
            .qps()
            .map(|q| QpImage {
                qpn: q.qpn,
                session,
                owner,
                ctrl: q.ctrl,
                sq: q.sq.into(),
                rq: q.rq.map(Into::into),
                send_cq: q.send_cq,
                recv_cq: q.recv_cq,
            })
            .collect();
        let cqs = objects
            .cqs()
            .map(|c| CqImage {
                cq: c.cq,
                session,
                owner,
                addr: c.addr,
                entries: c.entries,
                ctrl: c.ctrl,
                pi: c.pi,
                client_ci: c.client_ci,
                armed: c.armed,
                solicited_only: c.solicited_only,
                channel: c.channel,
                // Completions not in the ring are in the transport's CQ.
                backlog: VecDeque::new(),
                overflows: 0,
            })
            .collect();
        let srqs = objects
            .srqs()
            .map(|s| SrqImage {
                srq: s.srq,
                session,
                owner,
                ctrl: s.ctrl,
                rq: s.rq.into(),
            })
            .collect();
        Ok(Image {
            format: IMAGE_FORMAT.to_string(),
            version: IMAGE_VERSION,
            owner,
            transport: RawValue::from_string(
                String::from_utf8(snapshot.encode())
                    .map_err(|e| ImageError::Transport(e.to_string()))?,
            )?,
            qps,
            cqs,
            srqs,
            channels: objects.channels().map(|(id, _)| id).collect(),
            inbox: Vec::new(),
        })
    }

    /// The identifiers the image holds (its session id left 0).
    pub fn ids(&self, snap: &OwnerSnapshot) -> Result<SessionIds, ImageError> {
        Ok(SessionIds {
            session: 0,
            owner: self.owner,
            qpns: self.qps.iter().map(|q| q.qpn).collect(),
            keys: snap.mrs().iter().flat_map(|m| [m.lkey, m.rkey]).collect(),
            pds: self.pds()?,
            cqs: self.cqs.iter().map(|c| c.cq).collect(),
            srqs: self.srqs.iter().map(|s| s.srq).collect(),
            channels: self.channels.clone(),
        })
    }

    /// The daemon's objects of the image (with the memory regions of its
    /// transport snapshot), for a session to adopt.
    pub fn objects(&self, snap: &OwnerSnapshot) -> Result<Objects, ImageError> {
        let mut o = Objects::default();
        for pd in self.pds()? {
            o.insert_pd(pd);
        }
        for m in snap.mrs() {
            o.insert_mr(
                m.lkey,
                Mr {
                    rkey: m.rkey,
                    addr: m.addr,
                },
            );
        }
        for ch in &self.channels {
            o.insert_channel(*ch, Channel::default());
        }
        for c in &self.cqs {
            let mut ring = CqRing::new(c.cq, c.addr, c.entries, c.ctrl, c.channel);
            ring.pi = c.pi;
            ring.client_ci = c.client_ci;
            ring.armed = c.armed;
            ring.solicited_only = c.solicited_only;
            o.insert_cq(ring);
        }
        for s in &self.srqs {
            o.insert_srq(SrqRing {
                srq: s.srq,
                ctrl: s.ctrl,
                rq: s.rq.into(),
            });
        }
        for q in &self.qps {
            o.insert_qp(QpRings {
                qpn: q.qpn,
                ctrl: q.ctrl,
                sq: q.sq.into(),
                rq: q.rq.map(Into::into),
                send_cq: q.send_cq,
                recv_cq: q.recv_cq,
            });
        }
        Ok(o)
    }

    pub fn encode(&self) -> Result<Vec<u8>, ImageError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// Decodes and validates an image and its transport snapshot.
    pub fn decode(bytes: &[u8]) -> Result<(Image, OwnerSnapshot), ImageError> {
        let img: Image = serde_json::from_slice(bytes)?;
        if img.format != IMAGE_FORMAT {
            return Err(ImageError::Format(img.format));
        }
        if img.version != IMAGE_VERSION {
            return Err(ImageError::Version(img.version));
        }
        let snap = OwnerSnapshot::decode(img.transport.get().as_bytes())
            .map_err(|e| ImageError::Transport(e.to_string()))?;
        img.validate(&snap)?;
        Ok((img, snap))
    }

    /// The protection domains of the transport's part.
    fn pds(&self) -> Result<Vec<Pdn>, ImageError> {
        #[derive(Deserialize)]
        struct Pds {
            pds: Vec<Pdn>,
        }
        Ok(serde_json::from_str::<Pds>(self.transport.get())?.pds)
    }

    fn validate(&self, snap: &OwnerSnapshot) -> Result<(), ImageError> {
        let bad = |m: String| Err(ImageError::Inconsistent(m));
        if snap.owner != self.owner {
            return bad("the transport snapshot has another owner".into());
        }
        let ring_ok = |entries: u32| entries.is_power_of_two() && entries <= MAX_RING;
        let mut qpns = snap.qpns();
        qpns.sort_unstable();
        let mut ring_qpns: Vec<_> = self.qps.iter().map(|q| q.qpn).collect();
        ring_qpns.sort_unstable();
        if qpns != ring_qpns {
            return bad("the qps of the rings and of the snapshot differ".into());
        }
        let cqs: BTreeSet<u32> = self.cqs.iter().map(|c| c.cq).collect();
        let has_cq = |c| cqs.contains(&c);
        for q in &self.qps {
            if !ring_ok(q.sq.entries) && q.sq.entries != 0 {
                return bad(format!(
                    "qp {} has a send ring of {} entries",
                    q.qpn, q.sq.entries
                ));
            }
            if q.rq.is_some_and(|r| !ring_ok(r.entries)) {
                return bad(format!("qp {} has a bad receive ring", q.qpn));
            }
            let valid = |r: WqImage| WqRing::from(r).valid_pi(r.pi);
            if !valid(q.sq) || q.rq.is_some_and(|r| !valid(r)) {
                return bad(format!("qp {} has ring indices out of range", q.qpn));
            }
            if !has_cq(q.send_cq) || !has_cq(q.recv_cq) {
                return bad(format!("qp {} refers to a cq not in the image", q.qpn));
            }
            if q.owner != self.owner {
                return bad(format!("qp {} belongs to another owner", q.qpn));
            }
        }
        for c in &self.cqs {
            if !ring_ok(c.entries) || c.owner != self.owner {
                return bad(format!("cq {} has a bad ring or owner", c.cq));
            }
            if !c.backlog.is_empty() {
                return bad(format!(
                    "cq {} holds completions outside the transport (an older daemon's image)",
                    c.cq
                ));
            }
            if c.channel.is_some_and(|ch| !self.channels.contains(&ch)) {
                return bad(format!("cq {} refers to a channel not in the image", c.cq));
            }
        }
        for s in &self.srqs {
            let valid = WqRing::from(s.rq).valid_pi(s.rq.pi);
            if !ring_ok(s.rq.entries) || !valid || s.owner != self.owner {
                return bad(format!("srq {} has a bad ring or owner", s.srq));
            }
        }
        let mut ids: Vec<u64> = self.cqs.iter().map(|c| u64::from(c.cq)).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.cqs.len() {
            return bad("duplicate cqs".into());
        }
        let mut chans = self.channels.clone();
        chans.sort_unstable();
        chans.dedup();
        if chans.len() != self.channels.len() {
            return bad("duplicate channels".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_panic() {
        for bad in [
            &b""[..],
            b"{}",
            b"[1,2]",
            b"{\"format\":\"x\",\"version\":1,\"owner\":1,\"transport\":{},\"qps\":[],\"cqs\":[],\"srqs\":[],\"channels\":[]}",
            b"{\"format\":\"migrosd-image\",\"version\":9,\"owner\":1,\"transport\":{},\"qps\":[],\"cqs\":[],\"srqs\":[],\"channels\":[]}",
            b"{\"format\":\"migrosd-image\",\"version\":1,\"owner\":1,\"transport\":{\"version\":1},\"qps\":[],\"cqs\":[],\"srqs\":[],\"channels\":[]}",
        ] {
            assert!(Image::decode(bad).is_err());
        }
    }
}
