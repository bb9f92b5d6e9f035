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
use migros_proto::msg::{ChannelId, PROTOCOL_VERSION};
use migros_transport::Qpn;

use crate::daemon::{Daemon, Wq};
use crate::errno::ReqError;
use crate::session::{Hold, Session};

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
    fn sessions_of(&self, pid: u32) -> Vec<u64> {
        let Ok(pid) = i32::try_from(pid) else {
            return Vec::new();
        };
        self.sessions
            .values()
            .filter(|s| s.pid == pid && pid > 0)
            .map(|s| s.id)
            .collect()
    }

    /// Admin Pause: stop every QP of `pid`, hold every write into it.
    pub(crate) fn pause_pid(&mut self, pid: u32) -> AdminResponse {
        let mut n = 0u32;
        for sid in self.sessions_of(pid) {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            if s.checkpointed || s.hold == Hold::Restored {
                continue;
            }
            let owner = s.owner;
            if let Err(e) = self.device.pause_owner(self.now, owner) {
                return admin_error(e.into());
            }
            if s.hold == Hold::Running {
                self.set_hold(sid, Hold::Paused);
            }
            n += 1;
        }
        // What the transport wrote before the pause lands now, never later.
        self.mem.flush();
        if n > 0 {
            tracing::info!(pid, sessions = n, "paused for a checkpoint");
        }
        AdminResponse::Paused { sessions: n }
    }

    /// Admin Checkpoint: handle what the frozen process sent, then snapshot
    /// each of its sessions without removing anything.
    pub(crate) fn checkpoint_pid(&mut self, pid: u32) -> AdminResponse {
        let sids: Vec<u64> = self
            .sessions_of(pid)
            .into_iter()
            .filter(|sid| {
                self.sessions
                    .get(sid)
                    .is_some_and(|s| !s.checkpointed && s.hold != Hold::Restored)
            })
            .collect();
        let mut images = Vec::new();
        for sid in sids {
            if self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.hold == Hold::Running)
            {
                self.set_hold(sid, Hold::Paused);
            }
            self.drain_session(sid);
            let Some(owner) = self.sessions.get(&sid).map(|s| s.owner) else {
                return admin_error(ReqError::noent(format!(
                    "session {sid:#x} ended during the checkpoint"
                )));
            };
            // After the drain only a frame cut short can be left.
            let inbox = self
                .sessions
                .get(&sid)
                .and_then(|s| self.conns.get(&s.conn))
                .map(|c| c.reader.unconsumed().to_vec())
                .unwrap_or_default();
            let (objects, qpns) = match self.snapshot_session(sid, owner, inbox) {
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
    pub(crate) fn resume_pid(&mut self, pid: u32) -> AdminResponse {
        let mut n = 0u32;
        for sid in self.sessions_of(pid) {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            if s.hold == Hold::Running || s.checkpointed {
                continue;
            }
            let (owner, was) = (s.owner, s.hold);
            if let Err(e) = self.start_session(sid, owner) {
                return admin_error(e);
            }
            self.set_hold(sid, Hold::Running);
            tracing::info!(pid, session = sid, from = ?was, "resumed");
            n += 1;
        }
        AdminResponse::Resumed { sessions: n }
    }

    pub(crate) fn identifiers_of_pid(&self, pid: u32) -> AdminResponse {
        let ids = self
            .sessions_of(pid)
            .into_iter()
            .filter_map(|sid| self.sessions.get(&sid))
            .map(|s| self.session_ids(s))
            .collect();
        AdminResponse::Identifiers(ids)
    }

    /// Whether sessions with these identifiers could be restored here.
    pub(crate) fn check_identifiers(&self, list: &[SessionIds]) -> AdminResponse {
        match self.first_collision(list) {
            None => AdminResponse::Ok,
            Some(what) => AdminResponse::Error {
                errno: libc::EEXIST,
                message: format!("{what} exists on this device"),
            },
        }
    }

    fn first_collision(&self, list: &[SessionIds]) -> Option<String> {
        for ids in list {
            if self.sessions.contains_key(&ids.session) {
                return Some(format!("session {:#x}", ids.session));
            }
            if self.owners.contains_key(&ids.owner) {
                return Some(format!("owner {:#x}", ids.owner));
            }
            let hit = |what: &str, found: Option<&u32>| found.map(|v| format!("{what} {v:#x}"));
            let found = hit("qp", ids.qpns.iter().find(|q| self.qps.contains_key(q)))
                .or_else(|| {
                    hit(
                        "memory key",
                        ids.keys.iter().find(|k| self.keys.contains(k)),
                    )
                })
                .or_else(|| hit("pd", ids.pds.iter().find(|p| self.pds.contains_key(p))))
                .or_else(|| hit("cq", ids.cqs.iter().find(|c| self.cqs.contains_key(c))))
                .or_else(|| hit("srq", ids.srqs.iter().find(|s| self.srqs.contains_key(s))))
                .or_else(|| {
                    hit(
                        "channel",
                        ids.channels.iter().find(|c| self.channels.contains_key(c)),
                    )
                });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Admin ForwardTombstones. QPs of a checkpointed session still
    /// connected are committed first: whoever forwards knows they moved.
    pub(crate) fn forward_tombstones_admin(
        &mut self,
        qpns: &[Qpn],
        to: std::net::IpAddr,
    ) -> AdminResponse {
        self.commit_checkpoints_of(qpns);
        let tombs = self.device.tombstones();
        if let Some(q) = qpns.iter().find(|q| !tombs.contains(q)) {
            return AdminResponse::Error {
                errno: libc::ENOENT,
                message: format!("qp {q:#x} has no tombstone on this device"),
            };
        }
        self.device.forward_tombstones(qpns, to);
        tracing::info!(qps = qpns.len(), %to, "tombstones forwarded");
        AdminResponse::Ok
    }

    /// Admin ReleaseTombstones (unknown QPNs are ignored).
    pub(crate) fn release_tombstones(&mut self, qpns: &[Qpn]) -> AdminResponse {
        self.commit_checkpoints_of(qpns);
        for q in qpns {
            self.device.release_tombstone(*q);
        }
        AdminResponse::Ok
    }

    // ---- helpers ----

    /// Restarts the stopped QPs of `sid` (each sends RESUME) and reads its
    /// work queues again.
    pub(crate) fn start_session(&mut self, sid: u64, owner: u64) -> Result<(), ReqError> {
        self.device.resume_owner(self.now, owner)?;
        let wqs: Vec<Wq> = self
            .qps
            .values()
            .filter(|q| q.session == sid)
            .flat_map(|q| [Wq::Sq(q.qpn), Wq::Rq(q.qpn)])
            .chain(
                self.srqs
                    .values()
                    .filter(|s| s.session == sid)
                    .map(|s| Wq::Srq(s.srq)),
            )
            .collect();
        self.pending_wqs.extend(wqs);
        Ok(())
    }

    /// Sets the hold of `sid` and of its connections; back to `Running`,
    /// every completion and consumer index held back is written.
    pub(crate) fn set_hold(&mut self, sid: u64, hold: Hold) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.hold = hold;
        s.seen_running = false;
        let mut tokens = vec![s.conn];
        tokens.extend(
            self.channels
                .values()
                .filter(|c| c.session == sid)
                .filter_map(|c| c.conn),
        );
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                c.held = hold.holds_output();
            }
        }
        if hold == Hold::Running {
            let cqs: Vec<u32> = self
                .cqs
                .values()
                .filter(|c| c.session == sid)
                .map(|c| c.cq)
                .collect();
            self.dirty_cqs.extend(cqs);
            let wqs: Vec<Wq> = self
                .qps
                .values()
                .filter(|q| q.session == sid)
                .flat_map(|q| {
                    let rq = q.rq.map(|_| Wq::Rq(q.qpn));
                    std::iter::once(Wq::Sq(q.qpn)).chain(rq)
                })
                .chain(
                    self.srqs
                        .values()
                        .filter(|s| s.session == sid)
                        .map(|s| Wq::Srq(s.srq)),
                )
                .collect();
            self.ci_dirty.extend(wqs);
        }
    }

    /// Whether writes into the memory of session `sid` are held back.
    pub(crate) fn memory_held(&self, sid: u64) -> bool {
        self.sessions
            .get(&sid)
            .is_some_and(|s| s.hold != Hold::Running)
    }

    /// Reads and handles everything the (frozen) process already sent on
    /// the connections of `sid`, and posts what its doorbells announced.
    fn drain_session(&mut self, sid: u64) {
        let Some(conn) = self.sessions.get(&sid).map(|s| s.conn) else {
            return;
        };
        let mut tokens = vec![conn];
        tokens.extend(
            self.channels
                .values()
                .filter(|c| c.session == sid)
                .filter_map(|c| c.conn),
        );
        for t in tokens {
            if let Some(c) = self.conns.get_mut(&t) {
                if c.fill().is_err() {
                    c.dead = true;
                }
            }
            self.process_frames(t);
        }
        self.pump_wqs(Some(sid));
    }

    fn session_image(&self, sid: u64, objects: Vec<u8>, qpns: Vec<Qpn>) -> SessionImage {
        let outbox = |t: Option<usize>| {
            t.and_then(|t| self.conns.get(&t))
                .map(|c| c.outbox().to_vec())
                .unwrap_or_default()
        };
        let s = self.sessions.get(&sid);
        let channels = self
            .channels
            .iter()
            .filter(|(_, c)| c.session == sid)
            .map(|(id, c)| ChannelImage {
                channel: *id,
                inode: c.inode,
                outbox: outbox(c.conn),
            })
            .collect();
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

    fn session_ids(&self, s: &Session) -> SessionIds {
        let sid = s.id;
        SessionIds {
            session: sid,
            owner: s.owner,
            qpns: self
                .qps
                .values()
                .filter(|q| q.session == sid)
                .map(|q| q.qpn)
                .collect(),
            keys: self
                .mrs
                .iter()
                .filter(|(_, m)| m.session == sid)
                .flat_map(|(l, m)| [*l, m.rkey])
                .collect(),
            pds: self
                .pds
                .iter()
                .filter(|(_, s)| **s == sid)
                .map(|(p, _)| *p)
                .collect(),
            cqs: self
                .cqs
                .values()
                .filter(|c| c.session == sid)
                .map(|c| c.cq)
                .collect(),
            srqs: self
                .srqs
                .values()
                .filter(|r| r.session == sid)
                .map(|r| r.srq)
                .collect(),
            channels: self
                .channels
                .iter()
                .filter(|(_, c)| c.session == sid)
                .map(|(id, _)| *id)
                .collect(),
        }
    }

    /// Commits the checkpointed sessions that own one of `qpns`: their
    /// objects become tombstones and their connections are closed.
    fn commit_checkpoints_of(&mut self, qpns: &[Qpn]) {
        let sids: Vec<u64> = qpns
            .iter()
            .filter_map(|q| self.qps.get(q).map(|r| r.session))
            .filter(|sid| {
                self.sessions
                    .get(sid)
                    .is_some_and(|s| s.hold == Hold::Checkpointed)
            })
            .collect();
        for sid in sids {
            let Some(s) = self.sessions.get(&sid) else {
                continue;
            };
            let (conn, owner) = (s.conn, s.owner);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.closing = true;
            }
            self.commit_checkpoint(sid, owner);
        }
    }

    /// A checkpointed session is gone from here: its QPs become tombstones
    /// (pause NAK until forwarded or released), the rest is removed.
    pub(crate) fn commit_checkpoint(&mut self, sid: u64, owner: u64) {
        match self.evict_session(sid, owner) {
            Ok(qpns) => tracing::info!(
                session = sid,
                qps = qpns.len(),
                "checkpoint committed: its qps are tombstones"
            ),
            Err(e) => {
                tracing::warn!(session = sid, error = %e.message, "cannot evict a checkpointed session")
            }
        }
        self.sessions.remove(&sid);
        self.owners.remove(&owner);
    }
}

fn check_version(version: u32) -> Result<(), ReqError> {
    if version != PROTOCOL_VERSION {
        return Err(ReqError::new(
            libc::EPROTONOSUPPORT,
            format!("protocol version {version} (this daemon speaks {PROTOCOL_VERSION})"),
        ));
    }
    Ok(())
}

fn admin_error(e: ReqError) -> AdminResponse {
    AdminResponse::Error {
        errno: e.errno,
        message: e.message,
    }
}
