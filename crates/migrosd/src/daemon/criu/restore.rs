//! The first request of a connection opened inside a restored process:
//! RestoreSession recreates a session (held until the admin Resume),
//! RestoreChannel attaches a channel or parks it until its session comes.

use std::time::Instant;

use migros_proto::msg::{ChannelId, Response};

use super::Parked;
use crate::conn::ConnKind;
use crate::daemon::protocol::check_version;
use crate::daemon::Daemon;
use crate::errno::ReqError;
use crate::registry::{Hold, Id, Session};

impl Daemon {
    // ---- restore (first requests of a connection) ----

    /// RestoreSession on connection `token`: session `session` with the
    /// objects of `image`, held until the admin Resume. Nothing is created
    /// when it fails.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::daemon) fn restore_session(
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
        if self.reg.contains(session) {
            return Err(ReqError::new(
                libc::EEXIST,
                format!("session {session:#x} exists on this device"),
            ));
        }
        let reg = &self.reg;
        let placeholder = self
            .ids
            .u64(|v| reg.is_taken(Id::Owner(v)))
            .ok_or_else(|| ReqError::nomem("no free owner id"))?;
        let mut s = Session::new(session, placeholder, token, pid, Hold::Restored);
        s.path = path;
        s.inode = inode;
        self.reg.open(s);
        self.mem.bind(placeholder, pid);
        let inbox = match self.restore(session, image) {
            Ok(inbox) => inbox,
            Err(e) => {
                self.reg.close(session);
                self.mem.unbind(placeholder);
                tracing::info!(session, pid, error = %e.message, "restore refused");
                return Err(e);
            }
        };
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Session(session);
            // The start of a request cut by the freeze comes before the rest.
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
    pub(in crate::daemon) fn restore_channel(
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
        if self.reg.contains(session) {
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
}
