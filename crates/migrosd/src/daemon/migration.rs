//! Moving a session's objects: checkpoint (pause, snapshot, evict), restore
//! from an image, and the start of restored or rolled-back QPs.

use migros_proto::msg::Response;
use migros_transport::MrSpec;

use super::dispatch::Res;
use super::{Channel, Daemon, MrEntry};
use crate::errno::ReqError;
use crate::image::Image;
use crate::limits;

impl Daemon {
    // ---- migration ----

    pub(super) fn checkpoint(&mut self, sid: u64, owner: u64) -> Res {
        if self.sessions.get(&sid).is_some_and(|s| s.checkpointed) {
            return Err(ReqError::busy("the session was checkpointed already"));
        }
        let image = match self.snapshot_session(sid, owner, Vec::new()) {
            Ok((image, _)) => image,
            Err(e) => {
                let _ = self.device.unpause_owner(self.now, owner);
                return Err(e);
            }
        };
        let qpns = self.evict_session(sid, owner)?;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.checkpointed = true;
            s.tombstones = qpns.clone();
        }
        tracing::info!(
            session = sid,
            owner,
            qps = qpns.len(),
            bytes = image.len(),
            "checkpointed"
        );
        Ok(Response::Image { image, qpns })
    }

    /// Pauses every QP of session `sid`, moves what the transport completed
    /// into the CQ backlogs and encodes the session's image with its QPNs
    /// (and `inbox`, a request cut short). The objects stay (stopped); on
    /// failure they stay paused.
    pub(crate) fn snapshot_session(
        &mut self,
        sid: u64,
        owner: u64,
        inbox: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u32>), ReqError> {
        let now = self.now;
        self.device.pause_owner(now, owner)?;
        // Everything completed so far goes into the backlogs (and the image).
        let cqs: Vec<u32> = self
            .cqs
            .values()
            .filter(|c| c.session == sid)
            .map(|c| c.cq)
            .collect();
        for cq in &cqs {
            let mut wcs = Vec::new();
            let _ = self.device.poll_cq(*cq, usize::MAX, &mut wcs);
            if let Some(r) = self.cqs.get_mut(cq) {
                r.backlog.extend(wcs);
            }
        }
        self.mem.flush();
        let snap = self.device.snapshot_owner(now, owner)?;
        let qpns = snap.qpns();
        let image = Image::new(
            &snap,
            self.qps
                .values()
                .filter(|q| q.session == sid)
                .cloned()
                .collect(),
            self.cqs
                .values()
                .filter(|c| c.session == sid)
                .cloned()
                .collect(),
            self.srqs
                .values()
                .filter(|s| s.session == sid)
                .cloned()
                .collect(),
            self.channels
                .iter()
                .filter(|(_, c)| c.session == sid)
                .map(|(id, _)| *id)
                .collect(),
        )
        .and_then(|mut i| {
            i.inbox = inbox;
            i.encode()
        })
        .map_err(|e| ReqError::new(libc::EIO, format!("cannot encode the image: {e}")))?;
        Ok((image, qpns))
    }

    /// Removes every object of session `sid` from the device, leaving a
    /// tombstone per QP; returns their QPNs. The session itself stays.
    pub(crate) fn evict_session(&mut self, sid: u64, owner: u64) -> Result<Vec<u32>, ReqError> {
        let qpns = self.device.evict_owner(self.now, owner)?;
        self.forget_session_objects(sid);
        self.mem.unbind(owner);
        Ok(qpns)
    }

    /// Recreates the objects of image `bytes` for session `sid` (which owns
    /// nothing yet); returns the image's inbox (the start of a request cut
    /// by a freeze, empty but for admin checkpoints).
    pub(crate) fn restore(
        &mut self,
        sid: u64,
        old_owner: u64,
        bytes: &[u8],
    ) -> Result<Vec<u8>, ReqError> {
        let owns_something = self.pds.values().any(|s| *s == sid)
            || self.cqs.values().any(|c| c.session == sid)
            || self.channels.values().any(|c| c.session == sid);
        let checkpointed = self.sessions.get(&sid).is_some_and(|s| s.checkpointed);
        if owns_something || checkpointed {
            return Err(ReqError::busy(
                "restore needs a session that owns nothing yet",
            ));
        }
        let (img, snap) =
            Image::decode(bytes).map_err(|e| ReqError::inval(format!("bad image: {e}")))?;
        let pds = img
            .pds()
            .map_err(|e| ReqError::inval(format!("bad image: no pd list: {e}")))?;
        if self.owners.contains_key(&img.owner) {
            return Err(ReqError::new(
                libc::EEXIST,
                format!("owner {} is in use here", img.owner),
            ));
        }
        let exists = |what: &str, id: u64| {
            Err(ReqError::new(
                libc::EEXIST,
                format!("{what} {id} exists on this device"),
            ))
        };
        if let Some(p) = pds.iter().find(|p| self.pds.contains_key(p)) {
            return exists("pd", u64::from(*p));
        }
        if let Some(c) = img.cqs.iter().find(|c| self.cqs.contains_key(&c.cq)) {
            return exists("cq", u64::from(c.cq));
        }
        if let Some(s) = img.srqs.iter().find(|s| self.srqs.contains_key(&s.srq)) {
            return exists("srq", u64::from(s.srq));
        }
        if let Some(q) = img.qps.iter().find(|q| self.qps.contains_key(&q.qpn)) {
            return exists("qp", u64::from(q.qpn));
        }
        if let Some(c) = img.channels.iter().find(|c| self.channels.contains_key(c)) {
            return exists("channel", u64::from(*c));
        }
        if let Some(m) = snap
            .mrs()
            .iter()
            .find(|m| self.keys.contains(&m.lkey) || self.keys.contains(&m.rkey))
        {
            return exists("memory key", u64::from(m.lkey));
        }
        if self.qps.len() + img.qps.len() > limits::MAX_QP as usize {
            return Err(ReqError::nomem("too many qps"));
        }
        self.device.check_restore(&snap)?;
        let mrs: Vec<MrSpec> = snap.mrs().to_vec();
        let new_owner = img.owner;
        self.device.restore(self.now, snap)?;

        // Adopt the image's owner.
        let pid = self.sessions.get(&sid).map_or(0, |s| s.pid);
        self.owners.remove(&old_owner);
        self.mem.unbind(old_owner);
        self.owners.insert(new_owner, sid);
        self.mem.bind(new_owner, pid);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.owner = new_owner;
        }
        for pd in pds {
            self.pds.insert(pd, sid);
        }
        for m in mrs {
            self.keys.insert(m.lkey);
            self.keys.insert(m.rkey);
            self.mrs.insert(
                m.lkey,
                MrEntry {
                    session: sid,
                    rkey: m.rkey,
                    addr: m.addr,
                },
            );
            self.mem.add_region(new_owner, m.addr, m.length);
        }
        for ch in img.channels {
            self.channels.insert(
                ch,
                Channel {
                    session: sid,
                    conn: None,
                    inode: 0,
                },
            );
        }
        for mut c in img.cqs {
            c.session = sid;
            if !c.backlog.is_empty() {
                self.dirty_cqs.insert(c.cq);
            }
            self.cqs.insert(c.cq, c);
        }
        for mut s in img.srqs {
            s.session = sid;
            self.srqs.insert(s.srq, s);
        }
        for mut q in img.qps {
            q.session = sid;
            self.qps.insert(q.qpn, q);
        }
        tracing::info!(session = sid, owner = new_owner, "restored");
        Ok(img.inbox)
    }
}
