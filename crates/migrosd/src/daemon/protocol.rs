//! The connection protocol: a connection's first request (Hello,
//! AttachChannel, RestoreSession, RestoreChannel, or CmHello for
//! librdmacm, see `super::cm`), then a session's requests: doorbells for
//! the data path, the rest for [`super::dispatch`].

use migros_proto::msg::{ChannelId, Request, Response, PROTOCOL_VERSION};

use super::Daemon;
use crate::client::ClientProcess;
use crate::conn::ConnKind;
use crate::errno::ReqError;
use crate::registry::{Hold, Id, Session};
use crate::rings::Wq;

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
    pub(super) fn on_request(&mut self, token: usize, req: Request) {
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
            ConnKind::Admin | ConnKind::Cm(_) => return,
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
                if let Err(e) = check_version(version) {
                    return Outcome::Fatal(error(e.errno, e.message));
                }
                let Some(conn) = self.conns.get(&token) else {
                    return Outcome::Silent;
                };
                let pid = conn.pid;
                if pid <= 0 {
                    return Outcome::Fatal(error(libc::EPERM, "the peer has no process id"));
                }
                let reg = &self.reg;
                let (Some(sid), Some(owner)) = (
                    self.ids.u64(|v| reg.contains(v)),
                    self.ids.u64(|v| reg.is_taken(Id::Owner(v))),
                ) else {
                    return Outcome::Fatal(error(libc::ENOMEM, "no free session id"));
                };
                let process = match self.client_process(token) {
                    Ok(p) => p,
                    Err(e) => return Outcome::Fatal(error(e.errno, e.message)),
                };
                let mut session = Session::new(sid, owner, token, pid, Hold::Running);
                session.path = path;
                session.inode = inode;
                self.reg.open(session);
                self.watch_process(sid, &process);
                self.mem.bind(owner, process);
                if let Some(c) = self.conns.get_mut(&token) {
                    c.kind = ConnKind::Session(sid);
                    c.reader.set_limit(crate::limits::SESSION_FRAME_LIMIT);
                }
                tracing::info!(session = sid, pid, owner, "session started");
                // The GID table and the port's state as they are now.
                self.check_port();
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
                match check_version(version)
                    .and_then(|()| self.attach_channel(token, session, channel, inode))
                {
                    Ok(()) => Outcome::Silent,
                    Err(e) => Outcome::Fatal(error(e.errno, e.message)),
                }
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
            Request::CmHello { version, inode } => {
                match check_version(version).and_then(|()| self.cm_hello(token, inode)) {
                    Ok(r) => Outcome::Reply(r),
                    Err(e) => Outcome::Fatal(error(e.errno, e.message)),
                }
            }
            Request::RestoreCm {
                version,
                owner,
                inode,
                image,
                replay,
            } => match check_version(version)
                .and_then(|()| self.restore_cm(token, owner, inode, &image))
            {
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
        self.data.unblock();
        // Requests see the effect of every earlier doorbell.
        self.pump(Some(sid));
        match self.dispatch(sid, req) {
            Ok(r) => Outcome::Reply(r),
            Err(e) => Outcome::Reply(error(e.errno, e.message)),
        }
    }

    fn on_doorbell(&mut self, sid: u64, req: Request) -> Outcome {
        let checkpointed = self.reg.get(sid).is_some_and(|s| s.checkpointed);
        let (wq, pi) = match req {
            Request::SqDoorbell { qpn, pi } => (Wq::Sq(qpn), pi),
            Request::RqDoorbell { qpn, pi } => (Wq::Rq(qpn), pi),
            Request::SrqDoorbell { srq, pi } => (Wq::Srq(srq), pi),
            _ => return Outcome::Silent,
        };
        let ring = self
            .reg
            .work_queue_mut(wq)
            .filter(|(holder, ..)| holder.session == sid)
            .map(|(_, ring, _)| ring);
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
            self.data.wake(wq);
        }
        Outcome::Silent
    }
}

impl Daemon {
    /// The process behind connection `token`, checked as the client's own
    /// rights would reach it (see [`crate::client`]).
    pub(super) fn client_process(&mut self, token: usize) -> Result<ClientProcess, ReqError> {
        let conn = self
            .conns
            .get_mut(&token)
            .ok_or_else(|| ReqError::noent("no connection"))?;
        let (pid, uid, gid) = (conn.pid, conn.uid, conn.gid);
        ClientProcess::open(conn.pidfd.take(), pid, uid, gid).map_err(|e| {
            tracing::warn!(pid, uid, error = %e, "client refused");
            ReqError::new(libc::EPERM, e.to_string())
        })
    }

    /// Attaches connection `token` as channel `channel` of `session`, which
    /// must be a session of the connection's process.
    pub(super) fn attach_channel(
        &mut self,
        token: usize,
        session: u64,
        channel: ChannelId,
        inode: u64,
    ) -> Result<(), ReqError> {
        let pid = self.conns.get(&token).map_or(0, |c| c.pid);
        let held = match self.reg.get(session) {
            Some(s) if s.pid == pid && s.objects().channel(channel).is_some() => {
                s.hold.holds_output()
            }
            _ => {
                return Err(ReqError::noent(format!(
                    "no channel {channel} in session {session:#x} of this process"
                )))
            }
        };
        if let Some(c) = self.reg.session_channel_mut(session, channel) {
            let old = c.conn.replace(token);
            c.inode = inode;
            if let Some(c) = old.and_then(|t| self.conns.get_mut(&t)) {
                c.closing = true;
            }
        }
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Channel { session, channel };
            c.reader.set_limit(crate::limits::SESSION_FRAME_LIMIT);
            c.held = held;
        }
        Ok(())
    }
}

/// Refuses a client that speaks another protocol version.
pub(super) fn check_version(version: u32) -> Result<(), ReqError> {
    if version != PROTOCOL_VERSION {
        return Err(ReqError::new(
            libc::EPROTONOSUPPORT,
            format!("protocol version {version} (this daemon speaks {PROTOCOL_VERSION})"),
        ));
    }
    Ok(())
}

pub(super) fn error(errno: i32, message: impl Into<String>) -> Response {
    Response::Error {
        errno,
        message: message.into(),
    }
}
