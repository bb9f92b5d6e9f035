//! librdmacm's connections to the connection manager ([`crate::cm`]): the
//! `CmHello` that opens one, its requests (each answered in order, then
//! the events it caused), the agent's events delivered to their owners,
//! its timers, and the end of a connection (everything its process had in
//! the agent goes, the peers are told).

use migros_proto::cm::{CmDown, CmRequest};
use migros_proto::counters::DeviceCounters;
use migros_proto::msg::Response;

use super::Daemon;
use crate::conn::ConnKind;
use crate::errno::ReqError;

impl Daemon {
    /// Connection `token` said `CmHello`: it becomes a librdmacm
    /// connection, the owner of its CM objects.
    pub(super) fn cm_hello(&mut self, token: usize, inode: u64) -> Result<Response, ReqError> {
        let cm = &self.cm;
        let Some(owner) = self.ids.u64(|v| cm.has_owner(v)) else {
            return Err(ReqError::new(libc::ENOMEM, "no free owner id"));
        };
        self.cm.attach(token, owner);
        if let Some(c) = self.conns.get_mut(&token) {
            c.kind = ConnKind::Cm(owner);
        }
        tracing::info!(owner, inode, "librdmacm connection");
        Ok(Response::Welcome {
            session: owner,
            device: self.info.clone(),
        })
    }

    /// Handles the next whole frame of librdmacm connection `token`;
    /// false when there is none (or the connection must close).
    pub(super) fn cm_frame(&mut self, token: usize, owner: u64) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        let req = match conn.reader.next_message::<CmRequest>() {
            Ok(Some(req)) => req,
            Ok(None) => return false,
            Err(e) => {
                tracing::info!(token, error = %e, "malformed frame: disconnecting the client");
                conn.closing = true;
                return false;
            }
        };
        let resp = self.cm.request(self.now, owner, req);
        if let Some(c) = self.conns.get_mut(&token) {
            let _ = c.send(&CmDown::Reply(resp));
        }
        // The events it caused (a REJ to a local REQ, …) follow the
        // answer; what the agent has to send goes out with this turn's
        // transmit.
        self.deliver_cm_events();
        true
    }

    /// The connection of `owner` closed (its process ended).
    pub(super) fn cm_closed(&mut self, owner: u64) {
        self.cm.detach(self.now, owner);
        self.deliver_cm_events();
    }

    /// Runs the agent's due timers (resends, time-wait) and delivers what
    /// they caused.
    pub(super) fn cm_tick(&mut self) {
        self.cm.handle_timeout(self.now);
        self.deliver_cm_events();
    }

    /// Queues the agent's events on their owners' connections.
    fn deliver_cm_events(&mut self) {
        while let Some((token, ev)) = self.cm.poll_event() {
            if let Some(c) = self.conns.get_mut(&token) {
                let _ = c.send(&CmDown::Event(ev));
            }
        }
    }

    /// The device's counters, QP1's datagrams included.
    pub(super) fn link_counters(&self) -> DeviceCounters {
        self.cm.add_link_counters(self.device.counters())
    }
}
