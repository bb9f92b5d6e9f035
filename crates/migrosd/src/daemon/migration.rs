//! Moving a session's objects: checkpoint (pause, snapshot, evict), restore
//! from an image, the start of restored or rolled-back QPs, and the commit
//! of a checkpoint (its QPs become tombstones). Each is an operation on
//! the session's [`Objects`](crate::registry::Objects) and its transport
//! owner.

use migros_proto::msg::Response;
use migros_transport::Qpn;

use super::dispatch::Res;
use super::Daemon;
use crate::errno::ReqError;
use crate::image;
use crate::limits;
use crate::registry::{Kind, SessionId};

impl Daemon {
    /// Request Checkpoint: the session's image, its objects evicted (one
    /// tombstone per QP, which the session may forward later).
    pub(super) fn checkpoint(&mut self, sid: SessionId, owner: u64) -> Res {
        if self.reg.get(sid).is_some_and(|s| s.checkpointed) {
            return Err(ReqError::busy("the session was checkpointed already"));
        }
        let image = match self.snapshot_session(sid, Vec::new()) {
            Ok((image, _)) => image,
            Err(e) => {
                let _ = self.device.unpause_owner(self.now, owner);
                return Err(e);
            }
        };
        let qpns = self.evict_session(sid)?;
        if let Some(s) = self.reg.get_mut(sid) {
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

    /// Pauses every QP of session `sid` and encodes the session's image
    /// (completions not yet in a ring are in the transport's CQs, so in the
    /// image) with its QPNs and `inbox`, a request cut short. The objects
    /// stay (stopped); on failure they stay paused.
    pub(super) fn snapshot_session(
        &mut self,
        sid: SessionId,
        inbox: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<Qpn>), ReqError> {
        let now = self.now;
        let owner = self
            .reg
            .get(sid)
            .map(|s| s.owner())
            .ok_or_else(|| ReqError::noent("no session"))?;
        self.device.pause_owner(owner)?;
        self.mem.flush();
        let snap = self.device.snapshot_owner(now, owner)?;
        let qpns = snap.qpns();
        let objects = self
            .reg
            .get(sid)
            .map(|s| s.objects())
            .ok_or_else(|| ReqError::noent("no session"))?;
        let image = image::encode(&snap, objects, inbox)
            .map_err(|e| ReqError::new(libc::EIO, format!("cannot encode the image: {e}")))?;
        Ok((image, qpns))
    }

    /// Removes every object of session `sid` from the device, leaving a
    /// tombstone per QP; returns their QPNs. The session itself stays.
    pub(super) fn evict_session(&mut self, sid: SessionId) -> Result<Vec<Qpn>, ReqError> {
        let owner = self
            .reg
            .get(sid)
            .map(|s| s.owner())
            .ok_or_else(|| ReqError::noent("no session"))?;
        let qpns = self.device.evict_owner(self.now, owner)?;
        let objects = self.reg.take_objects(sid);
        self.forget(&objects);
        self.mem.unbind(owner);
        Ok(qpns)
    }

    /// A checkpointed session is gone from here: its QPs become tombstones
    /// (pause NAK until forwarded or released), the rest is removed.
    pub(super) fn commit_checkpoint(&mut self, sid: SessionId) {
        match self.evict_session(sid) {
            Ok(qpns) => tracing::info!(
                session = sid,
                qps = qpns.len(),
                "checkpoint committed: its qps are tombstones"
            ),
            Err(e) => {
                tracing::warn!(session = sid, error = %e.message, "cannot evict a checkpointed session")
            }
        }
        self.reg.close(sid);
    }

    /// Whether connection `token` may restore an image or resume restored
    /// QPs: only root. An image states memory regions, ring addresses and
    /// connections (QPNs, peers, PSNs, keys) that the daemon cannot check
    /// against anything, so restoring one is as strong as writing into the
    /// process and onto the wire in its name; root can do that anyway
    /// (ptrace), an unprivileged client must not. The callers are the CRIU
    /// plugin (root, RestoreSession/RestoreChannel inside the restored
    /// task) and `Context::migrate_to` run as root.
    pub(super) fn authorise_restore(&self, token: usize) -> Result<(), ReqError> {
        match self.conns.get(&token) {
            Some(c) if c.uid == 0 => Ok(()),
            Some(c) => {
                tracing::warn!(
                    pid = c.pid,
                    uid = c.uid,
                    "restore from a non-root client refused"
                );
                Err(ReqError::new(
                    libc::EPERM,
                    "restoring a checkpoint image needs root (uid 0)",
                ))
            }
            None => Err(ReqError::noent("no connection")),
        }
    }

    /// [`Daemon::authorise_restore`] for the connection of session `sid`.
    pub(super) fn authorise_session_restore(&self, sid: SessionId) -> Result<(), ReqError> {
        let s = self
            .reg
            .get(sid)
            .ok_or_else(|| ReqError::noent("no session"))?;
        self.authorise_restore(s.conn)
    }

    /// Recreates the objects of image `bytes` for session `sid` (which owns
    /// nothing yet); returns the image's inbox (the start of a request cut
    /// by a freeze, empty but for admin checkpoints).
    pub(super) fn restore(&mut self, sid: SessionId, bytes: &[u8]) -> Result<Vec<u8>, ReqError> {
        let s = self
            .reg
            .get(sid)
            .ok_or_else(|| ReqError::noent("no session"))?;
        if !s.objects().is_empty() || s.checkpointed {
            return Err(ReqError::busy(
                "restore needs a session that owns nothing yet",
            ));
        }
        let old_owner = s.owner();
        let img = image::decode(bytes).map_err(|e| ReqError::inval(format!("bad image: {e}")))?;
        let ids = img.ids();
        if let Some(what) = self.reg.id_collision(&ids) {
            return Err(ReqError::new(
                libc::EEXIST,
                format!("{what} exists on this device"),
            ));
        }
        if self.reg.count(Kind::Qp) + ids.qpns.len() > limits::MAX_QP as usize {
            return Err(ReqError::nomem("too many qps"));
        }
        self.device.check_restore(&img.snapshot)?;
        let new_owner = img.owner();
        let regions: Vec<(u64, u64)> = img
            .snapshot
            .mrs()
            .iter()
            .map(|m| (m.addr, m.length))
            .collect();
        let objects = img.objects;
        self.device.restore(self.now, img.snapshot)?;

        // The session takes the image's owner and objects.
        self.reg.set_owner(sid, new_owner);
        self.mem.rebind(old_owner, new_owner);
        for (addr, len) in regions {
            self.mem.add_region(new_owner, addr, len);
        }
        // Completions restored into the transport's CQs go into the rings.
        for cq in objects.cqs() {
            self.data.completed(cq.cq);
        }
        self.reg.adopt(sid, objects);
        tracing::info!(session = sid, owner = new_owner, "restored");
        Ok(img.inbox)
    }

    /// Restarts the stopped QPs of `sid` (each sends RESUME) and reads its
    /// work queues again.
    pub(super) fn start_session(&mut self, sid: SessionId) -> Result<(), ReqError> {
        let s = self
            .reg
            .get(sid)
            .ok_or_else(|| ReqError::noent("no session"))?;
        self.device.resume_owner(self.now, s.owner())?;
        self.data.wake_all(s.objects());
        Ok(())
    }
}
