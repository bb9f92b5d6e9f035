//! CRIU migration of a whole process, by pid (see `migros_proto::admin`
//! and the crate docs): admin Pause / Checkpoint / Resume on the source,
//! RestoreSession / RestoreChannel and admin Resume on the destination,
//! the watchdog that rolls a checkpoint back when the process runs again,
//! and the tombstones a committed checkpoint leaves.
//!
//! A session's [`Hold`] says what the daemon may touch: while it is not
//! `Running` nothing is written into the process's memory (completions and
//! consumer indices wait; the transport's paused QPs write nothing either),
//! and while paused or checkpointed nothing is written to its sockets (the
//! output stays queued and goes into the image as the outbox).
//!
//! Submodules: `restore` (the first requests of restored connections,
//! parked channels) and [`watch`] (the rollback watchdog, `/proc` states).

mod restore;
pub mod watch;

use std::time::Instant;

use migros_proto::admin::{AdminResponse, ChannelImage, SessionIds, SessionImage};
use migros_proto::msg::ChannelId;
use migros_transport::Qpn;

use crate::daemon::Daemon;
use crate::errno::ReqError;
use crate::registry::{Hold, Id, SessionId};

pub use watch::{ProcState, PARK_TIMEOUT, WATCHDOG_PERIOD};

/// The daemon's CRIU bookkeeping.
#[derive(Debug, Default)]
pub struct CriuState {
    /// Restored channel connections whose session is not restored yet.
    parked: Vec<Parked>,
    next_watch: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Parked {
    token: usize,
    session: u64,
    channel: ChannelId,
    inode: u64,
    since: Instant,
}

impl Daemon {
    // ---- admin requests ----

    /// Sessions of process `pid` (none for a pid that cannot be one).
    fn sessions_of(&self, pid: u32) -> Vec<SessionId> {
        i32::try_from(pid).map_or_else(|_| Vec::new(), |pid| self.reg.of_pid(pid))
    }

    /// Admin Pause: stop every QP of `pid`, hold every write into it.
    pub(in crate::daemon) fn pause_pid(&mut self, pid: u32) -> AdminResponse {
        let mut n = 0u32;
        for sid in self.sessions_of(pid) {
            let Some(s) = self.reg.get(sid) else {
                continue;
            };
            if s.checkpointed || s.hold == Hold::Restored {
                continue;
            }
            let running = s.hold == Hold::Running;
            if let Err(e) = self.device.pause_owner(s.owner()) {
                return admin_error(e.into());
            }
            if running {
                self.set_hold(sid, Hold::Paused);
            }
            n += 1;
        }
        // What the transport wrote before the pause lands now, never later.
        self.mem.flush();
        if n > 0 {
            tracing::info!(pid, sessions = n, "paused for a checkpoint");
            self.criu.next_watch = Some(Instant::now() + WATCHDOG_PERIOD);
        }
        AdminResponse::Paused { sessions: n }
    }

    /// Admin Checkpoint: handle what the frozen process sent, then snapshot
    /// each of its sessions without removing anything.
    pub(in crate::daemon) fn checkpoint_pid(&mut self, pid: u32) -> AdminResponse {
        let sids: Vec<SessionId> = self
            .sessions_of(pid)
            .into_iter()
            .filter(|sid| {
                self.reg
                    .get(*sid)
                    .is_some_and(|s| !s.checkpointed && s.hold != Hold::Restored)
            })
            .collect();
        let mut images = Vec::new();
        for sid in sids {
            if self.reg.get(sid).is_some_and(|s| s.hold == Hold::Running) {
                self.set_hold(sid, Hold::Paused);
            }
            self.drain_session(sid);
            let Some(conn) = self.reg.get(sid).map(|s| s.conn) else {
                return admin_error(ReqError::noent(format!(
                    "session {sid:#x} ended during the checkpoint"
                )));
            };
            // After the drain only a frame cut short can be left.
            let inbox = self
                .conns
                .get(&conn)
                .map(|c| c.reader.unconsumed().to_vec())
                .unwrap_or_default();
            let (objects, qpns) = match self.snapshot_session(sid, inbox) {
                Ok(x) => x,
                Err(e) => return admin_error(e),
            };
            self.set_hold(sid, Hold::Checkpointed);
            images.push(self.session_image(sid, objects, qpns));
        }
        if !images.is_empty() {
            self.criu.next_watch = Some(Instant::now() + WATCHDOG_PERIOD);
            tracing::info!(
                pid,
                sessions = images.len(),
                "checkpointed (kept until the connection closes)"
            );
        }
        AdminResponse::Checkpointed(images)
    }

    /// Admin Resume: roll paused or checkpointed sessions of `pid` back, or
    /// start the sessions restored for it.
    pub(in crate::daemon) fn resume_pid(&mut self, pid: u32) -> AdminResponse {
        let mut n = 0u32;
        for sid in self.sessions_of(pid) {
            let Some(s) = self.reg.get(sid) else {
                continue;
            };
            if s.hold == Hold::Running || s.checkpointed {
                continue;
            }
            let was = s.hold;
            if let Err(e) = self.start_session(sid) {
                return admin_error(e);
            }
            self.set_hold(sid, Hold::Running);
            tracing::info!(pid, session = sid, from = ?was, "resumed");
            n += 1;
        }
        AdminResponse::Resumed { sessions: n }
    }

    pub(in crate::daemon) fn identifiers_of_pid(&self, pid: u32) -> AdminResponse {
        let ids = self
            .sessions_of(pid)
            .into_iter()
            .filter_map(|sid| self.reg.ids_of(sid))
            .collect();
        AdminResponse::Identifiers(ids)
    }

    /// Whether sessions with these identifiers could be restored here.
    pub(in crate::daemon) fn check_identifiers(&self, list: &[SessionIds]) -> AdminResponse {
        match self.reg.collision(list) {
            None => AdminResponse::Ok,
            Some(what) => AdminResponse::Error {
                errno: libc::EEXIST,
                message: format!("{what} exists on this device"),
            },
        }
    }

    /// Admin ForwardTombstones. QPs of a checkpointed session still
    /// connected are committed first: whoever forwards knows they moved.
    pub(in crate::daemon) fn forward_tombstones_admin(
        &mut self,
        qpns: &[Qpn],
        to: std::net::IpAddr,
    ) -> AdminResponse {
        self.commit_checkpoints_of(qpns);
        if let Some(q) = qpns.iter().find(|q| !self.device.has_tombstone(**q)) {
            return AdminResponse::Error {
                errno: libc::ENOENT,
                message: format!("qp {q:#x} has no tombstone on this device"),
            };
        }
        self.device.forward_tombstones(self.now, qpns, to);
        // The CM connections that carried these QPs forward too.
        let cm = self.cm.forward_tombstones(self.now, qpns, to);
        tracing::info!(qps = qpns.len(), cm_connections = cm, %to, "tombstones forwarded");
        AdminResponse::Ok
    }

    /// Admin ReleaseTombstones (unknown QPNs are ignored).
    pub(in crate::daemon) fn release_tombstones(&mut self, qpns: &[Qpn]) -> AdminResponse {
        self.commit_checkpoints_of(qpns);
        for q in qpns {
            self.device.release_tombstone(*q);
        }
        self.cm.release_tombstones(qpns);
        AdminResponse::Ok
    }

    // ---- helpers ----

    /// Sets the hold of `sid` and of its connections; back to `Running`,
    /// every completion and consumer index held back is written.
    fn set_hold(&mut self, sid: SessionId, hold: Hold) {
        let Some(s) = self.reg.get_mut(sid) else {
            return;
        };
        s.hold = hold;
        s.seen_running = false;
        s.running_since = None;
        let s = &*s;
        let tokens = std::iter::once(s.conn).chain(s.objects().channel_conns());
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                c.held = hold.holds_output();
            }
        }
        let pid = s.pid;
        if hold == Hold::Running {
            self.data.refresh(s.objects());
        }
        // The process's librdmacm connections follow its sessions.
        self.hold_cm_of(pid, hold.holds_output());
    }

    /// Reads and handles everything the (frozen) process already sent on
    /// the connections of `sid`, and posts what its doorbells announced.
    fn drain_session(&mut self, sid: SessionId) {
        let Some(s) = self.reg.get(sid) else {
            return;
        };
        let tokens: Vec<usize> = std::iter::once(s.conn)
            .chain(s.objects().channel_conns())
            .collect();
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                if c.fill().is_err() {
                    c.dead = true;
                }
            }
            self.process_frames(t);
        }
        self.pump(Some(sid));
    }

    fn session_image(&self, sid: SessionId, objects: Vec<u8>, qpns: Vec<Qpn>) -> SessionImage {
        let outbox = |t: Option<usize>| {
            t.and_then(|t| self.conns.get(&t))
                .map(|c| c.outbox().to_vec())
                .unwrap_or_default()
        };
        let s = self.reg.get(sid);
        let channels = s
            .map(|s| {
                s.objects()
                    .channels()
                    .map(|(id, c)| ChannelImage {
                        channel: id,
                        inode: c.inode,
                        outbox: outbox(c.conn),
                    })
                    .collect()
            })
            .unwrap_or_default();
        SessionImage {
            session: sid,
            device: self.info.name.clone(),
            path: s.map(|s| s.path.clone()).unwrap_or_default(),
            inode: s.map_or(0, |s| s.inode),
            channels,
            objects,
            outbox: outbox(s.map(|s| s.conn)),
            qpns,
        }
    }

    /// Commits the checkpointed sessions that own one of `qpns`: their
    /// objects become tombstones and their connections are closed.
    fn commit_checkpoints_of(&mut self, qpns: &[Qpn]) {
        let mut sids: Vec<SessionId> = qpns
            .iter()
            .filter_map(|q| self.reg.holder_of(Id::Qp(*q)))
            .filter(|sid| {
                self.reg
                    .get(*sid)
                    .is_some_and(|s| s.hold == Hold::Checkpointed)
            })
            .collect();
        sids.sort_unstable();
        sids.dedup();
        // librdmacm connections checkpointed with these QPs move on too.
        for t in self.cm.commit_qpns(self.now, qpns) {
            if let Some(c) = self.conns.get_mut(&t) {
                c.closing = true;
            }
        }
        for sid in sids {
            let Some(conn) = self.reg.get(sid).map(|s| s.conn) else {
                continue;
            };
            if let Some(c) = self.conns.get_mut(&conn) {
                c.closing = true;
            }
            self.commit_checkpoint(sid);
        }
    }
}

fn admin_error(e: ReqError) -> AdminResponse {
    AdminResponse::Error {
        errno: e.errno,
        message: e.message,
    }
}
