//! The daemon's checkpoint image of a session: the transport's image of its
//! owner plus the state of every ring in client memory, as versioned JSON
//! ([`v3`]).
//!
//! ```json
//! { "format": "migrosd-image", "version": 3,
//!   "transport": { "version": 3, "owner": 123, ... },
//!   "qps": [...], "cqs": [...], "srqs": [...], "channels": [ids...],
//!   "inbox": [bytes...] }
//! ```
//!
//! The image types are their own ([`v3`]), converted explicitly from and
//! to the registry's [`Objects`] and the transport's [`OwnerSnapshot`]
//! ([`encode`], [`decode`]). An image of another version (1 was the live
//! structs serialised, 2 had no memory windows) is refused with a message naming both versions.
//! [`decode`] validates everything it can without the destination's state
//! and never panics; the destination's collisions are the registry's and
//! the device's to check.

pub mod cm;
pub mod v3;

use std::collections::BTreeSet;

use serde::Deserialize;

use migros_proto::admin::SessionIds;
use migros_transport::{OwnerId, OwnerSnapshot};

use crate::limits;
use crate::registry::{Channel, Mr, Objects};
use crate::rings::{CqRing, QpRings, SrqRing, WqRing};
use v3::{CqRingImage, Image, QpRingsImage, SrqRingImage, WqRingImage};

/// Format name written into every image.
pub const IMAGE_FORMAT: &str = "migrosd-image";
/// The version this daemon writes and reads.
pub const IMAGE_VERSION: u32 = v3::VERSION;
/// Largest ring accepted in an image (entries).
const MAX_RING: u32 = 1 << 24;

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a migrosd image (format {0:?})")]
    Format(String),
    #[error(
        "image version {0}: this migrosd reads version {IMAGE_VERSION} only \
         (checkpoint and restore with the same migros version)"
    )]
    Version(u32),
    #[error(
        "cm image version {0}: this migrosd reads version {v} only \
         (checkpoint and restore with the same migros version)",
        v = cm::VERSION
    )]
    CmVersion(u32),
    #[error("transport snapshot rejected: {0}")]
    Transport(String),
    #[error("image is inconsistent: {0}")]
    Inconsistent(String),
}

/// What an image restores: the transport's objects and the daemon's.
#[derive(Debug)]
pub struct Contents {
    pub snapshot: OwnerSnapshot,
    pub objects: Objects,
    /// The start of a request cut by a freeze (empty but for admin
    /// checkpoints).
    pub inbox: Vec<u8>,
}

impl Contents {
    /// The owner the image's objects belong to.
    pub fn owner(&self) -> OwnerId {
        self.snapshot.owner
    }

    /// The identifiers the image holds (its session id left 0).
    pub fn ids(&self) -> SessionIds {
        self.objects.ids(0, self.owner())
    }
}

/// The image of a session's `objects`, whose transport side is `snapshot`,
/// with `inbox`.
pub fn encode(
    snapshot: &OwnerSnapshot,
    objects: &Objects,
    inbox: Vec<u8>,
) -> Result<Vec<u8>, ImageError> {
    Ok(serde_json::to_vec(&image_of(snapshot, objects, inbox))?)
}

/// Decodes and validates an image.
///
/// The image is parsed once: the header (format and version) is read on
/// its own only when the image does not parse as this version's, to say
/// which version or format it is (reading the header first scanned every
/// image twice: 17 MB at 10,000 QPs, 173 MB at 100,000).
pub fn decode(bytes: &[u8]) -> Result<Contents, ImageError> {
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    let check = |format: &str, version: u32| {
        if format != IMAGE_FORMAT {
            return Err(ImageError::Format(format.to_string()));
        }
        if version != IMAGE_VERSION {
            return Err(ImageError::Version(version));
        }
        Ok(())
    };
    let img: Image = match serde_json::from_slice(bytes) {
        Ok(img) => img,
        Err(e) => {
            let header: Header = serde_json::from_slice(bytes)?;
            check(&header.format, header.version)?;
            return Err(e.into());
        }
    };
    check(&img.format, img.version)?;
    validate(&img)?;
    let objects = objects_of(&img);
    let snapshot = OwnerSnapshot::from_image(img.transport)
        .map_err(|e| ImageError::Transport(e.to_string()))?;
    Ok(Contents {
        snapshot,
        objects,
        inbox: img.inbox,
    })
}

// ---- conversions ----

fn image_of(snapshot: &OwnerSnapshot, objects: &Objects, inbox: Vec<u8>) -> Image {
    Image {
        format: IMAGE_FORMAT.to_string(),
        version: IMAGE_VERSION,
        transport: snapshot.to_image(),
        qps: objects.qps().map(qp_image).collect(),
        cqs: objects.cqs().map(cq_image).collect(),
        srqs: objects
            .srqs()
            .map(|s| SrqRingImage {
                srq: s.srq,
                ctrl: s.ctrl,
                rq: wq_image(s.rq),
            })
            .collect(),
        channels: objects.channels().map(|(id, _)| id).collect(),
        async_channel: objects.async_channel(),
        inbox,
    }
}

/// The daemon's objects of an image (memory regions, windows and PDs
/// from its transport part), for a session to adopt.
fn objects_of(img: &Image) -> Objects {
    let mut o = Objects::default();
    for pd in &img.transport.pds {
        o.insert_pd(*pd);
    }
    for m in &img.transport.mrs {
        let mr = Mr {
            rkey: m.rkey,
            addr: m.addr,
        };
        o.insert_mr(m.lkey, mr);
    }
    for w in &img.transport.mws {
        o.insert_mw(w.rkey);
    }
    for ch in &img.channels {
        o.insert_channel(*ch, Channel::default());
    }
    o.set_async_channel(img.async_channel);
    for c in &img.cqs {
        o.insert_cq(cq_from_image(c));
    }
    for s in &img.srqs {
        o.insert_srq(SrqRing {
            srq: s.srq,
            ctrl: s.ctrl,
            rq: wq_from_image(s.rq),
        });
    }
    for q in &img.qps {
        o.insert_qp(QpRings {
            qpn: q.qpn,
            ctrl: q.ctrl,
            sq: wq_from_image(q.sq),
            rq: q.rq.map(wq_from_image),
            send_cq: q.send_cq,
            recv_cq: q.recv_cq,
        });
    }
    o
}

fn wq_image(r: WqRing) -> WqRingImage {
    WqRingImage {
        addr: r.addr,
        entries: r.entries,
        ci: r.ci,
        pi: r.pi,
    }
}

fn wq_from_image(r: WqRingImage) -> WqRing {
    WqRing {
        addr: r.addr,
        entries: r.entries,
        ci: r.ci,
        pi: r.pi,
    }
}

fn qp_image(q: &QpRings) -> QpRingsImage {
    QpRingsImage {
        qpn: q.qpn,
        ctrl: q.ctrl,
        sq: wq_image(q.sq),
        rq: q.rq.map(wq_image),
        send_cq: q.send_cq,
        recv_cq: q.recv_cq,
    }
}

fn cq_image(c: &CqRing) -> CqRingImage {
    CqRingImage {
        cq: c.cq,
        addr: c.addr,
        entries: c.entries,
        ctrl: c.ctrl,
        pi: c.pi,
        client_ci: c.client_ci,
        armed: c.armed,
        channel: c.channel,
    }
}

fn cq_from_image(c: &CqRingImage) -> CqRing {
    let mut ring = CqRing::new(c.cq, c.addr, c.entries, c.ctrl, c.channel);
    ring.pi = c.pi;
    ring.client_ci = c.client_ci;
    ring.armed = c.armed;
    ring
}

// ---- validation ----

/// The daemon's part of an image agrees with itself and with its
/// transport part (the transport validates its own).
fn validate(img: &Image) -> Result<(), ImageError> {
    let bad = |m: String| Err(ImageError::Inconsistent(m));
    let t = &img.transport;
    within_limits(img)?;
    let same = |ours: Vec<u32>, theirs: Vec<u32>| {
        let ours_set: BTreeSet<u32> = ours.iter().copied().collect();
        ours_set.len() == ours.len() && ours_set == theirs.into_iter().collect()
    };
    if !same(
        img.qps.iter().map(|q| q.qpn).collect(),
        t.qps.iter().map(|q| q.init.qpn).collect(),
    ) {
        return bad("the qps of the rings and of the snapshot differ".into());
    }
    if !same(
        img.cqs.iter().map(|c| c.cq).collect(),
        t.cqs.iter().map(|c| c.cq).collect(),
    ) {
        return bad("the cqs of the rings and of the snapshot differ".into());
    }
    if !same(
        img.srqs.iter().map(|s| s.srq).collect(),
        t.srqs.iter().map(|s| s.srq).collect(),
    ) {
        return bad("the srqs of the rings and of the snapshot differ".into());
    }
    let channels: BTreeSet<u32> = img.channels.iter().copied().collect();
    if channels.len() != img.channels.len() {
        return bad("duplicate channels".into());
    }
    if img.async_channel.is_some_and(|ch| !channels.contains(&ch)) {
        return bad("the asynchronous events go to a channel not in the image".into());
    }
    let ring_ok = |r: WqRingImage| {
        let live = wq_from_image(r);
        r.entries.is_power_of_two() && r.entries <= MAX_RING && live.valid_pi(r.pi)
    };
    let cqs: BTreeSet<u32> = img.cqs.iter().map(|c| c.cq).collect();
    for q in &img.qps {
        let sq_ok = (q.sq.entries == 0 && q.sq.pi == q.sq.ci) || ring_ok(q.sq);
        if !sq_ok || q.rq.is_some_and(|r| !ring_ok(r)) {
            return bad(format!("qp {} has a bad ring or ring indices", q.qpn));
        }
        if !cqs.contains(&q.send_cq) || !cqs.contains(&q.recv_cq) {
            return bad(format!("qp {} refers to a cq not in the image", q.qpn));
        }
    }
    for c in &img.cqs {
        if !c.entries.is_power_of_two() || c.entries > MAX_RING {
            return bad(format!("cq {} has a bad ring", c.cq));
        }
        if c.channel.is_some_and(|ch| !channels.contains(&ch)) {
            return bad(format!("cq {} refers to a channel not in the image", c.cq));
        }
    }
    for s in &img.srqs {
        if !ring_ok(s.rq) {
            return bad(format!("srq {} has a bad ring or ring indices", s.srq));
        }
    }
    Ok(())
}

/// The image asks for no more than a client could create live: the
/// device's limits on objects, sizes, queue depths and SGEs, memory
/// regions and rings that do not wrap the address space, an inbox no
/// larger than one request frame.
fn within_limits(img: &Image) -> Result<(), ImageError> {
    use migros_proto::ring::{CQE_SIZE, MAX_SEND_SGE, RQ_WQE_SIZE, SQ_WQE_SIZE};
    let bad = |m: String| Err(ImageError::Inconsistent(m));
    let t = &img.transport;
    let counts = [
        ("pds", t.pds.len(), limits::MAX_PD),
        ("memory regions", t.mrs.len(), limits::MAX_MR),
        ("cqs", t.cqs.len(), limits::MAX_CQ),
        ("srqs", t.srqs.len(), limits::MAX_SRQ),
        ("qps", t.qps.len(), limits::MAX_QP),
    ];
    for (what, n, max) in counts {
        if n > max as usize {
            return bad(format!("{n} {what}: the device allows {max}"));
        }
    }
    for m in &t.mrs {
        if m.length > limits::MAX_MR_SIZE || m.addr.checked_add(m.length).is_none() {
            return bad(format!("memory region {:#x} is too large", m.lkey));
        }
    }
    for c in &t.cqs {
        if c.capacity > limits::MAX_CQE {
            return bad(format!("cq {} is larger than the device allows", c.cq));
        }
    }
    for s in &t.srqs {
        if s.max_wr > limits::MAX_SRQ_WR {
            return bad(format!("srq {} is larger than the device allows", s.srq));
        }
    }
    for q in &t.qps {
        let c = q.init.cap;
        if c.max_send_wr > limits::MAX_QP_WR
            || c.max_recv_wr > limits::MAX_QP_WR
            || c.max_send_sge as usize > MAX_SEND_SGE
            || c.max_recv_sge > limits::MAX_SGE
            || c.max_inline_data > limits::MAX_INLINE_DATA
        {
            return bad(format!(
                "qp {} asks for more than the device allows",
                q.init.qpn
            ));
        }
    }
    let ring_fits = |addr: u64, entries: u32, size: usize| {
        (u64::from(entries))
            .checked_mul(size as u64)
            .and_then(|len| addr.checked_add(len))
            .is_some()
    };
    for q in &img.qps {
        let rq_fits =
            q.rq.is_none_or(|r| ring_fits(r.addr, r.entries, RQ_WQE_SIZE));
        if !ring_fits(q.sq.addr, q.sq.entries, SQ_WQE_SIZE) || !rq_fits {
            return bad(format!(
                "qp {} has a ring that wraps the address space",
                q.qpn
            ));
        }
    }
    for c in &img.cqs {
        if !ring_fits(c.addr, c.entries, CQE_SIZE) {
            return bad(format!(
                "cq {} has a ring that wraps the address space",
                c.cq
            ));
        }
    }
    for s in &img.srqs {
        if !ring_fits(s.rq.addr, s.rq.entries, RQ_WQE_SIZE) {
            return bad(format!(
                "srq {} has a ring that wraps the address space",
                s.srq
            ));
        }
    }
    if img.inbox.len() > migros_proto::frame::MAX_FRAME {
        return bad(format!("inbox of {} bytes", img.inbox.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
