//! [`Context::migrate_to`]: moving a context's objects to another daemon
//! while the process and its memory stay where they are.
//!
//! 1. Connect and say Hello to the new daemon (nothing is touched yet, so a
//!    missing device fails cleanly).
//! 2. `Checkpoint` on the old daemon: it stops the QPs, hands over the
//!    image and leaves tombstones that pause the peers.
//! 3. `Restore{image}` on the new daemon (same identifiers, same ring
//!    addresses: the rings are in this process's memory).
//! 4. Completion channels attach to the new daemon, keeping their fds.
//! 5. `Resume`: the restored QPs announce their new location (RESUME).
//! 6. `ForwardTombstones` tells the old daemon's tombstones where the QPs
//!    went; the old session is closed without destroying anything.
//!
//! The session lock is held throughout, so posts from other threads wait and
//! their doorbells reach the new daemon. The downtime reported runs from the
//! Checkpoint request to the Resume answer.

use std::sync::{Arc, Weak};
use std::time::Instant;

use migros_proto::msg::{Request, Response};

use crate::channel::ChannelShared;
use crate::conn::{lock, unexpected, Conn};
use crate::context::{Context, Session};
use crate::error::{Error, Result};

/// What a migration of a context's objects to another daemon took.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    pub from: String,
    pub to: String,
    pub qpns: Vec<migros_proto::verbs::Qpn>,
    pub image_bytes: usize,
    /// From stopping the QPs to the RESUME being sent from the new daemon
    /// (Checkpoint sent to Resume answered).
    pub downtime: std::time::Duration,
}

impl Context {
    /// Moves every object of this context (QPs with their state, CQs, MRs,
    /// SRQs) to the daemon of `device` (in the same socket directory) while
    /// traffic runs; the process and its memory stay. Peers see a pause.
    ///
    /// A failure before the Checkpoint leaves everything on the old daemon.
    /// A failure after it (the new daemon refuses the image) leaves the
    /// context without its objects: the error says which step failed.
    pub fn migrate_to(&self, device: &str) -> Result<MigrationReport> {
        let inner = &self.inner;
        // Collected before the session lock: dropping the last reference to
        // a channel talks to the daemon, which needs that lock.
        let channels: Vec<Arc<ChannelShared>> = lock(&inner.channels)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut session = lock(&inner.session);
        if session.device == device {
            return Err(Error::InvalidArgument(format!(
                "the context is on {device} already"
            )));
        }
        let (mut conn, id, info) = Conn::open(&inner.dir, device)?;

        let start = Instant::now();
        let (image, qpns) = match session.conn.request(&Request::Checkpoint)? {
            Response::Image { image, qpns } => (image, qpns),
            other => return Err(unexpected("Checkpoint", &other)),
        };
        let image_bytes = image.len();
        let restored = match conn.request(&Request::Restore { image }) {
            Ok(Response::Ok) => Ok(()),
            Ok(other) => Err(unexpected("Restore", &other)),
            Err(e) => Err(e),
        };
        restored.map_err(|e| step_failed("restore on the new daemon", e))?;
        let mut late = None;
        for ch in &channels {
            if let Err(e) = ch.reattach(&inner.dir, device, id) {
                late.get_or_insert_with(|| step_failed("re-attaching a completion channel", e));
            }
        }
        match conn.request(&Request::Resume) {
            Ok(Response::Ok) => {}
            Ok(other) => return Err(step_failed("resume", unexpected("Resume", &other))),
            Err(e) => return Err(step_failed("resume", e)),
        }
        let downtime = start.elapsed();

        let forwarded = session.conn.request(&Request::ForwardTombstones {
            qpns: qpns.clone(),
            to: info.addr,
        });
        if let Err(e) = forwarded {
            late.get_or_insert_with(|| step_failed("forwarding the tombstones", e));
        }
        let from = std::mem::replace(
            &mut *session,
            Session {
                conn,
                id,
                device: device.to_owned(),
            },
        );
        self.push_device(info);
        drop(session);
        // Closing the old session: it owns nothing after the Checkpoint.
        let from = from.device;
        drop(channels);
        match late {
            Some(e) => Err(e),
            None => Ok(MigrationReport {
                from,
                to: device.to_owned(),
                qpns,
                image_bytes,
                downtime,
            }),
        }
    }
}

fn step_failed(step: &str, e: Error) -> Error {
    match e {
        Error::Daemon { errno, message } => Error::Daemon {
            errno,
            message: format!("migration: {step}: {message}"),
        },
        Error::Protocol(m) => Error::Protocol(format!("migration: {step}: {m}")),
        other => other,
    }
}
