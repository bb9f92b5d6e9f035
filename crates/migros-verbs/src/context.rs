//! [`Context`]: a session with one daemon, shared by every object made from it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use migros_proto::counters::{DeviceCounters, QpCounters};
use migros_proto::msg::{DeviceInfo, Request, Response};
use migros_proto::verbs::Qpn;

use crate::channel::{ChannelShared, CompChannel};
use crate::conn::{lock, unexpected, Conn};
use crate::cq::Cq;
use crate::error::Result;
use crate::memory::Pd;

/// A session with one device. Cheap to clone (shared).
///
/// Every object made from a context keeps it alive. The session's socket is
/// shared: requests are answered in order under a lock, and doorbells are
/// single frames on the same socket. After [`Context::migrate_to`] the same
/// context talks to the new daemon.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<ContextInner>,
}

pub(crate) struct ContextInner {
    /// The socket directory the context was opened in (migrations look
    /// there for the new device).
    pub(crate) dir: PathBuf,
    pub(crate) session: Mutex<Session>,
    /// The devices the context has been on, oldest first (see [`DevSlot`]).
    devices: DevSlot,
    /// Completion channels, re-attached to the new daemon by a migration.
    pub(crate) channels: Mutex<Vec<Weak<ChannelShared>>>,
}

/// The current connection.
pub(crate) struct Session {
    pub(crate) conn: Conn,
    pub(crate) id: u64,
    pub(crate) device: String,
}

/// One device the context was on; a migration appends the next. A chain
/// of write-once cells lets [`Context::device`] hand out a plain reference
/// that stays valid after the context moves on.
struct DevSlot {
    info: DeviceInfo,
    next: OnceLock<Box<DevSlot>>,
}

impl DevSlot {
    fn last(&self) -> &DevSlot {
        let mut slot = self;
        while let Some(next) = slot.next.get() {
            slot = next;
        }
        slot
    }
}

impl Context {
    /// Opens device `name` (its daemon's socket in the socket directory,
    /// `MIGROS_SOCKET_DIR` or `/run/migros`).
    pub fn open(name: &str) -> Result<Context> {
        Context::open_in(&migros_proto::paths::socket_dir(), name)
    }

    /// Opens device `name` whose socket is in `dir`.
    pub fn open_in(dir: &Path, name: &str) -> Result<Context> {
        let (conn, id, info) = Conn::open(dir, name)?;
        Ok(Context {
            inner: Arc::new(ContextInner {
                dir: dir.to_owned(),
                session: Mutex::new(Session {
                    conn,
                    id,
                    device: name.to_owned(),
                }),
                devices: DevSlot {
                    info,
                    next: OnceLock::new(),
                },
                channels: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The device the context is on now (after a migration, the new one).
    pub fn device(&self) -> &DeviceInfo {
        &self.inner.devices.last().info
    }

    /// The device's address (its RoCE v2 GID, IPv4 or IPv6).
    pub fn addr(&self) -> IpAddr {
        self.device().addr
    }

    /// The daemon's id of the current session.
    pub fn session(&self) -> u64 {
        lock(&self.inner.session).id
    }

    pub fn alloc_pd(&self) -> Result<Pd> {
        Pd::alloc(self)
    }

    pub fn create_comp_channel(&self) -> Result<CompChannel> {
        CompChannel::create(self)
    }

    /// A CQ of at least `entries` entries (rounded up to a power of two).
    pub fn create_cq(&self, entries: u32, channel: Option<&CompChannel>) -> Result<Cq> {
        Cq::create(self, entries, channel)
    }

    /// Counters of the device and of this context's QPs.
    pub fn stats(&self) -> Result<(DeviceCounters, Vec<(Qpn, QpCounters)>)> {
        match self.request(&Request::Stats)? {
            Response::Stats { device, qps } => Ok((device, qps)),
            other => Err(unexpected("Stats", &other)),
        }
    }

    /// Whether the daemon closed this session (it exited or dropped the
    /// client): nothing made from the context works any more. Never blocks.
    pub fn connection_lost(&self) -> bool {
        lock(&self.inner.session).conn.closed_by_peer()
    }

    /// Sends a request and waits for its response.
    pub(crate) fn request(&self, req: &Request) -> Result<Response> {
        lock(&self.inner.session).conn.request(req)
    }

    /// Sends a request whose only acceptable response is `Ok`.
    pub(crate) fn request_ok(&self, req: &Request) -> Result<()> {
        match self.request(req)? {
            Response::Ok => Ok(()),
            other => Err(unexpected(&request_name(req), &other)),
        }
    }

    /// Sends a doorbell (no response).
    pub(crate) fn doorbell(&self, req: &Request) -> Result<()> {
        lock(&self.inner.session).conn.send(req)
    }

    /// Records that the device is now `info` (after a migration).
    pub(crate) fn push_device(&self, info: DeviceInfo) {
        // Migrations hold the session lock, so only one appends at a time
        // and the last slot's cell is empty.
        let _ = self.inner.devices.last().next.set(Box::new(DevSlot {
            info,
            next: OnceLock::new(),
        }));
    }
}

/// A short name of a request, for error messages.
pub(crate) fn request_name(req: &Request) -> String {
    let full = format!("{req:?}");
    full.split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}
