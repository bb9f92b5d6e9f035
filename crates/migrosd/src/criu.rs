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

use std::time::{Duration, Instant};

use migros_proto::admin::{AdminResponse, ChannelImage, SessionIds, SessionImage};
use migros_proto::msg::{ChannelId, Response, PROTOCOL_VERSION};
use migros_transport::Qpn;

use crate::daemon::{Daemon, Wq};
use crate::errno::ReqError;
use crate::session::{ConnKind, Hold, Session};

/// How often a checkpointed process's state is looked at.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(20);
/// How long a restored channel waits for its session.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(60);
/// `PF_EXITING` in the flags of `/proc/<pid>/stat`.
const PF_EXITING: u64 = 0x4;

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

/// What a look at `/proc/<pid>` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Stopped ('t', 'T') or traced (CRIU's parasite runs in a traced task).
    Frozen,
    Running,
    /// Gone, a zombie, or being killed.
    Dying,
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

    // ---- restore (first requests of a connection) ----

    /// RestoreSession on connection `token`: session `session` with the
    /// objects of `image`, held until the admin Resume. Nothing is created
    /// when it fails.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn restore_session(
        &mut self,
        token: usize,
        version: u32,
        session: u64,
        path: String,
        inode: u64,
        image: &[u8],
    ) -> Result<Response, ReqError> {
        check_version(version)?;
        let pid = self.conns.get(&token).map_or(0, |c| c.pid);
        if pid <= 0 {
            return Err(ReqError::new(libc::EPERM, "the peer has no process id"));
        }
        if self.sessions.contains_key(&session) {
            return Err(ReqError::new(
                libc::EEXIST,
                format!("session {session:#x} exists on this device"),
            ));
        }
        let owners = &self.owners;
        let placeholder = self
            .ids
            .u64(|v| owners.contains_key(&v))
            .ok_or_else(|| ReqError::nomem("no free owner id"))?;
        self.sessions.insert(
            session,
            Session {
                id: session,
                conn: token,
                pid,
                owner: placeholder,
                path,
                inode,
                tombstones: Vec::new(),
                checkpointed: false,
                hold: Hold::Restored,
                seen_running: false,
            },
        );
        self.owners.insert(placeholder, session);
        self.mem.bind(placeholder, pid);
        if let Err(e) = self.restore(session, placeholder, image) {
            self.sessions.remove(&session);
            self.owners.remove(&placeholder);
            self.mem.unbind(placeholder);
            tracing::info!(session, pid, error = %e.message, "restore refused");
            return Err(e);
        }
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Session(session);
            // The start of a request cut by the freeze comes before the rest.
            let inbox = inbox_of(image);
            if !inbox.is_empty() {
                let rest = c.reader.unconsumed().to_vec();
                c.reader = migros_proto::FrameReader::new();
                c.reader.push(&inbox);
                c.reader.push(&rest);
            }
        }
        self.adopt_parked(session);
        tracing::info!(session, pid, "session restored (held until resume)");
        Ok(Response::Welcome {
            session,
            device: self.info.clone(),
        })
    }

    /// RestoreChannel on connection `token`: attach it, or park it until
    /// its session is restored (it is answered at once either way: the
    /// plugin restores one descriptor after the other in the same task).
    pub(crate) fn restore_channel(
        &mut self,
        token: usize,
        version: u32,
        session: u64,
        channel: ChannelId,
        inode: u64,
    ) -> Result<Response, ReqError> {
        check_version(version)?;
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Channel { session, channel };
        }
        if self.sessions.contains_key(&session) {
            self.attach_channel(token, session, channel, inode)?;
        } else {
            self.criu.parked.push(Parked {
                token,
                session,
                channel,
                inode,
                since: Instant::now(),
            });
            tracing::debug!(session, channel, "restored channel parked");
        }
        Ok(Response::Ok)
    }

    fn attach_channel(
        &mut self,
        token: usize,
        session: u64,
        channel: ChannelId,
        inode: u64,
    ) -> Result<(), ReqError> {
        let pid = self.conns.get(&token).map_or(0, |c| c.pid);
        let ok = self.sessions.get(&session).is_some_and(|s| s.pid == pid)
            && self
                .channels
                .get(&channel)
                .is_some_and(|c| c.session == session);
        if !ok {
            return Err(ReqError::noent(format!(
                "no channel {channel} in session {session:#x} of this process"
            )));
        }
        if let Some(old) = self.channels.get(&channel).and_then(|c| c.conn) {
            if let Some(c) = self.conns.get_mut(&old) {
                c.closing = true;
            }
        }
        if let Some(c) = self.channels.get_mut(&channel) {
            c.conn = Some(token);
            c.inode = inode;
        }
        let held = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.hold.holds_output());
        if let Some(c) = self.conns.get_mut(&token) {
            c.held = held;
        }
        Ok(())
    }

    /// Attaches the channels parked for `session` (now restored).
    fn adopt_parked(&mut self, session: u64) {
        let (mine, rest) = std::mem::take(&mut self.criu.parked)
            .into_iter()
            .partition(|p| p.session == session);
        self.criu.parked = rest;
        for p in mine {
            if let Err(e) = self.attach_channel(p.token, session, p.channel, p.inode) {
                tracing::info!(session, channel = p.channel, error = %e.message, "parked channel dropped");
                if let Some(c) = self.conns.get_mut(&p.token) {
                    c.closing = true;
                }
            }
        }
    }

    // ---- watchdog and expiry ----

    /// When the CRIU bookkeeping wants the loop to wake up.
    pub(crate) fn criu_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let watch = self
            .criu
            .next_watch
            .map(|t| t.saturating_duration_since(now));
        let park = self
            .criu
            .parked
            .iter()
            .map(|p| (p.since + PARK_TIMEOUT).saturating_duration_since(now))
            .min();
        match (watch, park) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Rolls back checkpointed sessions whose process runs again with its
    /// connection open (seen twice in a row), and drops stale parked channels.
    pub(crate) fn criu_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<usize> = self
            .criu
            .parked
            .iter()
            .filter(|p| now >= p.since + PARK_TIMEOUT)
            .map(|p| p.token)
            .collect();
        if !expired.is_empty() {
            self.criu.parked.retain(|p| now < p.since + PARK_TIMEOUT);
            for t in expired {
                tracing::info!(token = t, "restored channel never saw its session: dropped");
                if let Some(c) = self.conns.get_mut(&t) {
                    c.closing = true;
                }
            }
        }
        let Some(due) = self.criu.next_watch else {
            return;
        };
        if now < due {
            return;
        }
        let watched: Vec<(u64, i32, bool)> = self
            .sessions
            .values()
            .filter(|s| s.hold == Hold::Checkpointed)
            .map(|s| (s.id, s.pid, s.seen_running))
            .collect();
        self.criu.next_watch = (!watched.is_empty()).then(|| now + WATCHDOG_PERIOD);
        for (sid, pid, seen) in watched {
            let open = self
                .sessions
                .get(&sid)
                .and_then(|s| self.conns.get(&s.conn))
                .is_some_and(|c| !c.dead);
            let running = open && proc_state(pid) == ProcState::Running;
            if running && seen {
                tracing::warn!(
                    session = sid,
                    pid,
                    "checkpointed process runs again with its connection open: rolling back"
                );
                let owner = self.sessions.get(&sid).map_or(0, |s| s.owner);
                if let Err(e) = self.start_session(sid, owner) {
                    tracing::warn!(session = sid, error = %e.message, "rollback failed");
                }
                self.set_hold(sid, Hold::Running);
            } else if let Some(s) = self.sessions.get_mut(&sid) {
                s.seen_running = running;
            }
        }
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

/// The `inbox` of an image that [`Daemon::restore`] accepted.
fn inbox_of(image: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Inbox {
        #[serde(default)]
        inbox: Vec<u8>,
    }
    serde_json::from_slice::<Inbox>(image).map_or(Vec::new(), |i| i.inbox)
}

fn admin_error(e: ReqError) -> AdminResponse {
    AdminResponse::Error {
        errno: e.errno,
        message: e.message,
    }
}

/// Whether process `pid` is frozen, running or on its way out, from
/// `/proc/<pid>/stat` (state and flags) and `/proc/<pid>/status`
/// (`TracerPid`, pending SIGKILL).
pub fn proc_state(pid: i32) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Dying;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return ProcState::Dying;
    };
    parse_proc_state(&stat, &status)
}

/// [`proc_state`] on the two files' contents.
pub fn parse_proc_state(stat: &str, status: &str) -> ProcState {
    // The command name may hold anything: the fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcState::Dying;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    // Fields after the name: state ppid pgrp session tty_nr tpgid flags.
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let traced = field("TracerPid:").is_some_and(|v| v != "0");
    let sigkill = ["SigPnd:", "ShdPnd:"].iter().any(|f| {
        field(f)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
    });
    match state {
        None | Some('Z' | 'X' | 'x') => ProcState::Dying,
        _ if flags & PF_EXITING != 0 || sigkill => ProcState::Dying,
        Some('t' | 'T') => ProcState::Frozen,
        _ if traced => ProcState::Frozen,
        _ => ProcState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tx\nState:\tS (sleeping)\nTracerPid:\t0\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";

    #[test]
    fn proc_states() {
        let stat = |st: char, flags: u64| format!("12 (a) b) c) {st} 1 12 12 0 -1 {flags} 0 0");
        assert_eq!(parse_proc_state(&stat('S', 0), STATUS), ProcState::Running);
        assert_eq!(parse_proc_state(&stat('R', 0), STATUS), ProcState::Running);
        assert_eq!(parse_proc_state(&stat('T', 0), STATUS), ProcState::Frozen);
        assert_eq!(parse_proc_state(&stat('t', 0), STATUS), ProcState::Frozen);
        assert_eq!(parse_proc_state(&stat('Z', 0), STATUS), ProcState::Dying);
        assert_eq!(parse_proc_state(&stat('R', 0x4), STATUS), ProcState::Dying);
        let traced = STATUS.replace("TracerPid:\t0", "TracerPid:\t99");
        assert_eq!(parse_proc_state(&stat('S', 0), &traced), ProcState::Frozen);
        let killed = STATUS.replace("SigPnd:\t0000000000000000", "SigPnd:\t0000000000000100");
        assert_eq!(parse_proc_state(&stat('R', 0), &killed), ProcState::Dying);
        assert_eq!(parse_proc_state("garbage", ""), ProcState::Dying);
        assert_eq!(parse_proc_state("1 (x)", ""), ProcState::Dying);
    }

    #[test]
    fn this_process_runs() {
        assert_eq!(proc_state(std::process::id() as i32), ProcState::Running);
        assert_eq!(proc_state(-1), ProcState::Dying);
    }
}
