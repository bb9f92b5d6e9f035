//! The daemon's unix socket connections: accepting, reading frames,
//! writing queued output, closing, and the end of a session.

use std::io;

use mio::{Interest, Token};

use migros_proto::msg::{Request, Response};

use super::Daemon;
use crate::conn::{Conn, ConnKind, ReadState};
use crate::registry::{Hold, Objects};

impl Daemon {
    // ---- connections ----

    pub(super) fn accept(&mut self, admin: bool) {
        loop {
            let (mut stream, cred) = match self.sockets.accept(admin) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            };
            let peer = match cred {
                Some(c) => c,
                None => {
                    tracing::warn!("no peer credentials: connection refused");
                    continue;
                }
            };
            let token = self.next_token;
            self.next_token += 1;
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "cannot register a connection");
                continue;
            }
            let kind = if admin {
                ConnKind::Admin
            } else {
                ConnKind::New
            };
            let (pid, uid) = (peer.pid, peer.uid);
            let of_uid = self.conns.values().filter(|c| c.uid == uid).count();
            let mut conn = Conn::new(stream, kind, peer);
            if !admin && of_uid >= crate::limits::MAX_CONNS_PER_UID {
                tracing::warn!(
                    pid,
                    uid,
                    "connection refused: too many connections of this uid"
                );
                let _ = conn.send(&Response::Error {
                    errno: libc::EMFILE,
                    message: format!(
                        "uid quota: at most {} connections for uid {uid}",
                        crate::limits::MAX_CONNS_PER_UID
                    ),
                });
                conn.closing = true;
            }
            if admin && uid != 0 {
                tracing::warn!(pid, uid, "admin connection from a non-root peer refused");
                let _ = conn.send(&migros_proto::admin::AdminResponse::Error {
                    errno: libc::EACCES,
                    message: "the admin socket is for root only".into(),
                });
                conn.closing = true;
            }
            tracing::debug!(token, pid, uid, admin, "connection");
            self.conns.insert(token, conn);
            self.on_conn_event(token, true, true);
        }
    }

    pub(super) fn on_conn_event(&mut self, token: usize, readable: bool, _writable: bool) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if readable && !conn.closing {
            match conn.fill() {
                Ok(ReadState::Open) => {}
                Ok(ReadState::Closed) | Err(_) => conn.dead = true,
            }
            self.process_frames(token);
        }
        self.finish_conn(token);
    }

    /// Handles every whole frame buffered on `token`.
    pub(super) fn process_frames(&mut self, token: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.closing {
                return;
            }
            let admin = conn.kind == ConnKind::Admin;
            if admin {
                match conn
                    .reader
                    .next_message::<migros_proto::admin::AdminRequest>()
                {
                    Ok(Some(req)) => {
                        let resp = self.on_admin(req);
                        if let Some(c) = self.conns.get_mut(&token) {
                            let _ = c.send(&resp);
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = conn.send(&migros_proto::admin::AdminResponse::Error {
                            errno: libc::EPROTO,
                            message: format!("bad frame: {e}"),
                        });
                        conn.closing = true;
                        return;
                    }
                }
                continue;
            }
            if let ConnKind::Cm(owner) = conn.kind {
                if self.cm_frame(token, owner) {
                    continue;
                }
                return;
            }
            match conn.reader.next_message::<Request>() {
                Ok(Some(req)) => self.on_request(token, req),
                Ok(None) => return,
                Err(e) => {
                    tracing::info!(token, error = %e, "malformed frame: disconnecting the client");
                    let _ = conn.send(&Response::Error {
                        errno: libc::EPROTO,
                        message: format!("bad frame: {e}"),
                    });
                    conn.closing = true;
                    return;
                }
            }
        }
    }

    /// Flushes a connection's output; drops it when dead or done closing.
    fn finish_conn(&mut self, token: usize) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.flush().is_err() {
            conn.dead = true;
        }
        // A held connection that closes drops its output: the process is
        // gone or moved, and what it had not read went into its image.
        if conn.dead || (conn.closing && (!conn.has_output() || conn.held)) {
            self.drop_conn(token);
        }
    }

    /// Closes connections that did not send their first request within
    /// [`crate::limits::HELLO_TIMEOUT`].
    pub(super) fn expire_silent_conns(&mut self) {
        for c in self.conns.values_mut() {
            if c.kind == ConnKind::New
                && !c.closing
                && c.since.elapsed() >= crate::limits::HELLO_TIMEOUT
            {
                tracing::info!(pid = c.pid, uid = c.uid, "no hello in time: disconnecting");
                let _ = c.send(&Response::Error {
                    errno: libc::ETIMEDOUT,
                    message: format!(
                        "no first request within {} s",
                        crate::limits::HELLO_TIMEOUT.as_secs()
                    ),
                });
                c.closing = true;
            }
        }
    }

    pub(super) fn flush_conns(&mut self) {
        let tokens: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.has_output() || c.dead || c.closing)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            self.finish_conn(t);
        }
    }

    fn drop_conn(&mut self, token: usize) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        match conn.kind {
            ConnKind::Session(sid) => self.end_session(sid),
            ConnKind::Channel { channel, .. } => {
                if let Some((_, c)) = self.reg.channel_mut(channel) {
                    if c.conn == Some(token) {
                        c.conn = None;
                    }
                }
            }
            ConnKind::Cm(owner) => self.cm_closed(token, owner),
            ConnKind::New | ConnKind::Admin => {}
        }
        tracing::debug!(token, "connection closed");
    }

    /// A session's connection went away: destroy everything it owns.
    fn end_session(&mut self, sid: u64) {
        let Some(s) = self.reg.get(sid) else {
            return;
        };
        if s.hold == Hold::Checkpointed {
            // The process was dumped and is gone: its QPs move on.
            self.commit_checkpoint(sid);
            return;
        }
        let (pid, owner) = (s.pid, s.owner());
        tracing::info!(session = sid, pid, owner, "session ended");
        self.device.destroy_owner(owner);
        self.processes.retain(|_, s| *s != sid);
        if let Some(s) = self.reg.close(sid) {
            self.forget(s.objects());
        }
        self.mem.unbind(owner);
    }

    /// Drops what the daemon still had to do for `objects` (taken out of
    /// their session); their channel connections are closed.
    pub(super) fn forget(&mut self, objects: &Objects) {
        for t in objects.channel_conns() {
            if let Some(c) = self.conns.get_mut(&t) {
                c.closing = true;
            }
        }
        self.data.forget(objects);
    }
}
