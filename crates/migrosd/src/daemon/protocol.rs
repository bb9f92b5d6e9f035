//! The connection protocol: a connection's first request (Hello,
//! AttachChannel, RestoreSession, RestoreChannel), then a session's
//! requests: doorbells for the data path, the rest for [`super::dispatch`].

use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};

use super::{Daemon, Wq};
use crate::conn::ConnKind;
use crate::session::{Hold, Session};

/// What to do after a request.
enum Outcome {
    Reply(Response),
    Silent,
    /// Reply, then disconnect the client.
    Fatal(Response),
    /// Reply, then write these bytes verbatim (a restored connection's replay).
    Replay(Response, Vec<u8>),
}

impl Daemon {
    /// Handles one request from connection `token`.
    pub(crate) fn on_request(&mut self, token: usize, req: Request) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let outcome = match conn.kind {
            ConnKind::New => self.on_first(token, req),
            ConnKind::Session(sid) => self.on_session(sid, req),
            ConnKind::Channel { .. } => Outcome::Fatal(error(
                libc::EPROTO,
                "a completion channel connection takes no requests",
            )),
            ConnKind::Admin => return,
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match outcome {
            Outcome::Reply(r) => {
                let _ = conn.send(&r);
            }
            Outcome::Silent => {}
            Outcome::Replay(r, bytes) => {
                let _ = conn.send(&r);
                conn.send_raw(&bytes);
            }
            Outcome::Fatal(r) => {
                let _ = conn.send(&r);
                conn.closing = true;
            }
        }
    }

    fn on_first(&mut self, token: usize, req: Request) -> Outcome {
        match req {
            Request::Hello {
                version,
                path,
                inode,
            } => {
                if version != PROTOCOL_VERSION {
                    return Outcome::Fatal(error(
                        libc::EPROTONOSUPPORT,
                        format!(
                            "protocol version {version} (this daemon speaks {PROTOCOL_VERSION})"
                        ),
                    ));
                }
                let Some(conn) = self.conns.get(&token) else {
                    return Outcome::Silent;
                };
                let pid = conn.pid;
                if pid <= 0 {
                    return Outcome::Fatal(error(libc::EPERM, "the peer has no process id"));
                }
                let sessions = &self.sessions;
                let owners = &self.owners;
                let (Some(sid), Some(owner)) = (
                    self.ids.u64(|v| sessions.contains_key(&v)),
                    self.ids.u64(|v| owners.contains_key(&v)),
                ) else {
                    return Outcome::Fatal(error(libc::ENOMEM, "no free session id"));
                };
                self.sessions.insert(
                    sid,
                    Session {
                        id: sid,
                        conn: token,
                        pid,
                        owner,
                        path,
                        inode,
                        tombstones: Vec::new(),
                        checkpointed: false,
                        hold: Hold::Running,
                        seen_running: false,
                    },
                );
                self.owners.insert(owner, sid);
                self.mem.bind(owner, pid);
                if let Some(c) = self.conns.get_mut(&token) {
                    c.kind = ConnKind::Session(sid);
                }
                tracing::info!(session = sid, pid, owner, "session started");
                Outcome::Reply(Response::Welcome {
                    session: sid,
                    device: self.info.clone(),
                })
            }
            Request::AttachChannel {
                version,
                session,
                channel,
                inode,
            } => {
                if version != PROTOCOL_VERSION {
                    return Outcome::Fatal(error(
                        libc::EPROTONOSUPPORT,
                        "protocol version mismatch",
                    ));
                }
                let pid = self.conns.get(&token).map_or(0, |c| c.pid);
                let ok = self.sessions.get(&session).is_some_and(|s| s.pid == pid)
                    && self
                        .channels
                        .get(&channel)
                        .is_some_and(|c| c.session == session);
                if !ok {
                    return Outcome::Fatal(error(
                        libc::ENOENT,
                        format!("no channel {channel} in session {session} of this process"),
                    ));
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
                    c.kind = ConnKind::Channel { session, channel };
                    c.held = held;
                }
                Outcome::Silent
            }
            Request::RestoreSession {
                version,
                session,
                path,
                inode,
                image,
                replay,
            } => match self.restore_session(token, version, session, path, inode, &image) {
                Ok(r) => Outcome::Replay(r, replay),
                Err(e) => Outcome::Fatal(error(e.errno, e.message)),
            },
            Request::RestoreChannel {
                version,
                session,
                channel,
                inode,
                replay,
            } => match self.restore_channel(token, version, session, channel, inode) {
                Ok(r) => Outcome::Replay(r, replay),
                Err(e) => Outcome::Fatal(error(e.errno, e.message)),
            },
            _ => Outcome::Fatal(error(libc::EPROTO, "the first request must be hello")),
        }
    }

    fn on_session(&mut self, sid: u64, req: Request) -> Outcome {
        let doorbell = matches!(
            req,
            Request::SqDoorbell { .. } | Request::RqDoorbell { .. } | Request::SrqDoorbell { .. }
        );
        if doorbell {
            return self.on_doorbell(sid, req);
        }
        // A request may change what the transport accepts (a QP moved to RTS).
        let blocked = std::mem::take(&mut self.blocked_wqs);
        self.pending_wqs.extend(blocked);
        // Requests see the effect of every earlier doorbell.
        self.pump_wqs(Some(sid));
        match self.dispatch(sid, req) {
            Ok(r) => Outcome::Reply(r),
            Err(e) => Outcome::Reply(error(e.errno, e.message)),
        }
    }

    fn on_doorbell(&mut self, sid: u64, req: Request) -> Outcome {
        let checkpointed = self.sessions.get(&sid).is_some_and(|s| s.checkpointed);
        let (wq, pi) = match req {
            Request::SqDoorbell { qpn, pi } => (Wq::Sq(qpn), pi),
            Request::RqDoorbell { qpn, pi } => (Wq::Rq(qpn), pi),
            Request::SrqDoorbell { srq, pi } => (Wq::Srq(srq), pi),
            _ => return Outcome::Silent,
        };
        let ring = match wq {
            Wq::Sq(q) => self
                .qps
                .get_mut(&q)
                .filter(|r| r.session == sid)
                .map(|r| &mut r.sq),
            Wq::Rq(q) => self
                .qps
                .get_mut(&q)
                .filter(|r| r.session == sid)
                .and_then(|r| r.rq.as_mut()),
            Wq::Srq(s) => self
                .srqs
                .get_mut(&s)
                .filter(|r| r.session == sid)
                .map(|r| &mut r.rq),
        };
        let Some(ring) = ring else {
            if checkpointed {
                // A late doorbell after the objects moved away.
                return Outcome::Silent;
            }
            tracing::info!(
                session = sid,
                ?wq,
                "doorbell for a queue the session does not own"
            );
            return Outcome::Fatal(error(
                libc::EPERM,
                format!("doorbell for {wq:?}, which this session does not own"),
            ));
        };
        if !ring.valid_pi(pi) {
            return Outcome::Fatal(error(
                libc::EINVAL,
                format!("doorbell of {wq:?} claims more entries than its ring holds"),
            ));
        }
        ring.pi = pi;
        if ring.pending() > 0 {
            self.pending_wqs.insert(wq);
        }
        Outcome::Silent
    }
}

pub(super) fn error(errno: i32, message: impl Into<String>) -> Response {
    Response::Error {
        errno,
        message: message.into(),
    }
}
