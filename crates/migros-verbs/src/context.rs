//! [`Context`]: a session with one daemon, shared by every object made from it.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use migros_proto::counters::{DeviceCounters, QpCounters};
use migros_proto::msg::{DeviceInfo, Request, Response};
use migros_proto::verbs::{Cqn, Qpn, WorkCompletion};

use crate::channel::{ChannelShared, CompChannel};
use crate::conn::{lock, unexpected, Conn};
use crate::cq::Cq;
use crate::error::{Error, Result};
use crate::flush::WrTrack;
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
    /// The connection to the daemon is known to be lost.
    lost: AtomicBool,
    /// The outstanding work requests of every QP, by number.
    pub(crate) qps: Mutex<BTreeMap<Qpn, Weak<WrTrack>>>,
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
                lost: AtomicBool::new(false),
                qps: Mutex::new(BTreeMap::new()),
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

    /// A CQ of at least `entries` entries (rounded up to a power of two);
    /// more than the device's `max_cqe` is refused (EINVAL, as rxe's
    /// `rxe_cq_chk_attr`).
    pub fn create_cq(&self, entries: u32, channel: Option<&CompChannel>) -> Result<Cq> {
        let max = self.device().max_cqe;
        if entries == 0 || entries > max {
            return Err(Error::InvalidArgument(format!(
                "a cq of {entries} entries (the device allows 1 to {max})"
            )));
        }
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
    ///
    /// Once true it stays true: posting fails and CQs flush the work
    /// requests still outstanding (see the crate docs).
    pub fn connection_lost(&self) -> bool {
        if self.is_lost() {
            return true;
        }
        if lock(&self.inner.session).conn.closed_by_peer() {
            self.inner.lost.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Whether the connection is already known to be lost (no system call).
    pub(crate) fn is_lost(&self) -> bool {
        self.inner.lost.load(Ordering::Acquire)
    }

    /// Notes a failure on the socket: the connection is lost.
    fn note<T>(&self, r: Result<T>) -> Result<T> {
        if matches!(r, Err(Error::Io(_))) {
            self.inner.lost.store(true, Ordering::Release);
        }
        r
    }

    /// Sends a request and waits for its response.
    pub(crate) fn request(&self, req: &Request) -> Result<Response> {
        let r = lock(&self.inner.session).conn.request(req);
        self.note(r)
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
        let r = lock(&self.inner.session).conn.send(req);
        self.note(r)
    }

    /// The error of a post on a context whose connection is lost.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.is_lost() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "daemon connection lost",
            )));
        }
        Ok(())
    }

    /// Registers the outstanding-WR record of a new QP.
    pub(crate) fn track(&self, t: &Arc<WrTrack>) {
        let mut qps = lock(&self.inner.qps);
        qps.retain(|_, w| w.strong_count() > 0);
        qps.insert(t.qpn, Arc::downgrade(t));
    }

    /// Drops the WRs that `wcs` account for.
    pub(crate) fn account(&self, wcs: &[WorkCompletion]) {
        if wcs.is_empty() {
            return;
        }
        let qps = lock(&self.inner.qps);
        for wc in wcs {
            if let Some(t) = qps.get(&wc.qp_num).and_then(Weak::upgrade) {
                t.complete(wc);
            }
        }
    }

    /// The flush completions of every QP reporting to `cq`.
    pub(crate) fn flush(&self, cq: Cqn) -> VecDeque<WorkCompletion> {
        let mut out = VecDeque::new();
        for t in lock(&self.inner.qps).values().filter_map(Weak::upgrade) {
            t.flush_into(cq, &mut out);
        }
        out
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
