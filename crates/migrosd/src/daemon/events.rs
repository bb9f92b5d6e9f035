//! The device's events as the daemon acts on them: completions go to the
//! data path, an armed CQ's notification is owed to its channel until the
//! completion reaches the client's ring, and the verbs asynchronous events
//! (QP, CQ, SRQ) go to the channel the session subscribed with
//! `SubscribeAsync` (none subscribed: they are dropped, as a libibverbs
//! program that never reads its async fd never sees them). The port's
//! PORT_ERR / PORT_ACTIVE go to every subscribed session (see
//! [`crate::port`]).

use migros_proto::msg::{AsyncEvent, AsyncKind, Event};
use migros_transport::DeviceEvent;

use super::Daemon;
use crate::registry::{Id, SessionId};

impl Daemon {
    pub(super) fn device_events(&mut self) {
        while let Some(ev) = self.device.poll_event() {
            let (id, kind, element) = match ev {
                DeviceEvent::Completion { cq } => {
                    self.data.completed(cq);
                    continue;
                }
                DeviceEvent::CqNotify { cq } => {
                    if let Some((_, ring)) = self.reg.cq_mut(cq) {
                        ring.armed = true;
                    }
                    self.data.completed(cq);
                    continue;
                }
                DeviceEvent::PauseTimeout { qpn } => {
                    tracing::info!(qpn, "pause timed out: the partner never came back");
                    continue;
                }
                DeviceEvent::QpError { qpn } => (Id::Qp(qpn), AsyncKind::QpFatal, qpn),
                DeviceEvent::QpRequestError { qpn } => (Id::Qp(qpn), AsyncKind::QpReqErr, qpn),
                DeviceEvent::QpAccessError { qpn } => (Id::Qp(qpn), AsyncKind::QpAccessErr, qpn),
                DeviceEvent::CommEstablished { qpn } => (Id::Qp(qpn), AsyncKind::CommEst, qpn),
                DeviceEvent::SqDrained { qpn } => (Id::Qp(qpn), AsyncKind::SqDrained, qpn),
                DeviceEvent::LastWqeReached { qpn } => {
                    (Id::Qp(qpn), AsyncKind::QpLastWqeReached, qpn)
                }
                DeviceEvent::SrqLimitReached { srq } => {
                    (Id::Srq(srq), AsyncKind::SrqLimitReached, srq)
                }
                DeviceEvent::CqError { cq } => (Id::Cq(cq), AsyncKind::CqErr, cq),
            };
            tracing::debug!(?kind, element, "asynchronous event");
            if let Some(sid) = self.reg.holder_of(id) {
                self.async_event(sid, AsyncEvent { kind, element });
            }
        }
    }

    /// Sends `ev` to the channel session `sid` subscribed for its
    /// asynchronous events, if any.
    pub(super) fn async_event(&mut self, sid: SessionId, ev: AsyncEvent) {
        let conn = self.reg.async_conn(sid);
        if let Some(c) = conn.and_then(|t| self.conns.get_mut(&t)) {
            let _ = c.send(&Event::Async(ev));
        }
    }

    /// Looks at the port again: its GID table is refreshed, and a change
    /// of state is told to every session subscribed to asynchronous
    /// events (element: port 1).
    pub(super) fn check_port(&mut self) {
        let now = crate::port::current(self.info.addr);
        self.info.gids = now.gids;
        if now.active == self.info.port_active {
            return;
        }
        self.info.port_active = now.active;
        let kind = if now.active {
            tracing::info!(addr = %self.info.addr, "port active: the address is back");
            AsyncKind::PortActive
        } else {
            tracing::warn!(addr = %self.info.addr, "port down: the address is gone or its interface down");
            AsyncKind::PortErr
        };
        let sids: Vec<SessionId> = self.reg.sessions().map(|s| s.id()).collect();
        for sid in sids {
            self.async_event(sid, AsyncEvent { kind, element: 1 });
        }
    }
}
