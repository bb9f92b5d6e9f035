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

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use migros_proto::msg::ChannelId;
use migros_transport::{OwnerId, OwnerSnapshot, Pdn};

use crate::rings::{CqRing, QpRings, SrqRing};

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
    pub qps: Vec<QpRings>,
    pub cqs: Vec<CqRing>,
    pub srqs: Vec<SrqRing>,
    pub channels: Vec<ChannelId>,
    /// The start of a request the process was writing when it was frozen
    /// (admin checkpoints only): read first on the restored connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbox: Vec<u8>,
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
    pub fn new(
        snapshot: &OwnerSnapshot,
        qps: Vec<QpRings>,
        cqs: Vec<CqRing>,
        srqs: Vec<SrqRing>,
        channels: Vec<ChannelId>,
    ) -> Result<Image, ImageError> {
        Ok(Image {
            format: IMAGE_FORMAT.to_string(),
            version: IMAGE_VERSION,
            owner: snapshot.owner,
            transport: RawValue::from_string(
                String::from_utf8(snapshot.encode())
                    .map_err(|e| ImageError::Transport(e.to_string()))?,
            )?,
            qps,
            cqs,
            srqs,
            channels,
            inbox: Vec::new(),
        })
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
    pub fn pds(&self) -> Result<Vec<Pdn>, ImageError> {
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
            if !q.sq.valid_pi(q.sq.pi) || q.rq.is_some_and(|r| !r.valid_pi(r.pi)) {
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
            if c.backlog.len() > c.backlog_limit() {
                return bad(format!("cq {} holds too many completions", c.cq));
            }
            if c.channel.is_some_and(|ch| !self.channels.contains(&ch)) {
                return bad(format!("cq {} refers to a channel not in the image", c.cq));
            }
        }
        for s in &self.srqs {
            if !ring_ok(s.rq.entries) || !s.rq.valid_pi(s.rq.pi) || s.owner != self.owner {
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
