//! Safe Rust verbs API for clients of a migros device (`migrosd`).
//!
//! A [`Context`] is a session with one daemon over its unix socket. Rings
//! (send, receive, completion) and memory regions live in this process's
//! memory; the daemon reads and writes them directly. Posting a work request
//! writes a ring entry and one doorbell frame; polling a CQ reads this
//! process's memory only (no system call).
//!
//! API surface (bodies being written): see each item.

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

pub use migros_proto::counters::{DeviceCounters, QpCounters};
pub use migros_proto::msg::DeviceInfo;
pub use migros_proto::verbs::*;

/// Why a verbs call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No daemon answers at the device's socket.
    #[error("device {0} not found (no daemon socket)")]
    NoDevice(String),
    /// The daemon refused the request.
    #[error("{message} (errno {errno})")]
    Daemon { errno: i32, message: String },
    /// A queue is full (ENOMEM in the C API).
    #[error("queue full")]
    QueueFull,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The connection to the daemon broke.
    #[error("daemon connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The errno the C API reports for this error.
    pub fn errno(&self) -> i32 {
        todo!()
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Names of the devices in the socket directory (`MIGROS_SOCKET_DIR`, else `/run/migros`).
pub fn devices() -> Vec<String> {
    todo!()
}

/// A session with one device. Cheap to clone (shared).
#[derive(Clone)]
pub struct Context {
    _inner: Arc<()>,
}

/// What a migration of a context's objects to another daemon took.
#[derive(Debug, Clone)]
pub struct MigrationReport {
    pub from: String,
    pub to: String,
    pub qpns: Vec<Qpn>,
    pub image_bytes: usize,
    /// From stopping the QPs to the RESUME being sent from the new daemon.
    pub downtime: Duration,
}

impl Context {
    /// Opens device `name` (its daemon's socket in the socket directory).
    pub fn open(name: &str) -> Result<Context> {
        let _ = name;
        todo!()
    }
    pub fn device(&self) -> &DeviceInfo {
        todo!()
    }
    /// The device's address (its RoCE v2 GID, IPv4 or IPv6).
    pub fn addr(&self) -> IpAddr {
        todo!()
    }
    pub fn alloc_pd(&self) -> Result<Pd> {
        todo!()
    }
    pub fn create_comp_channel(&self) -> Result<CompChannel> {
        todo!()
    }
    /// A CQ of at least `entries` entries (rounded up to a power of two).
    pub fn create_cq(&self, entries: u32, channel: Option<&CompChannel>) -> Result<Cq> {
        let _ = (entries, channel);
        todo!()
    }
    /// Counters of the device and of this context's QPs.
    pub fn stats(&self) -> Result<(DeviceCounters, Vec<(Qpn, QpCounters)>)> {
        todo!()
    }
    /// Moves every object of this context (QPs with their state, CQs, MRs,
    /// SRQs) to the daemon of `device` while traffic runs; the process and
    /// its memory stay. Peers see a pause.
    pub fn migrate_to(&self, device: &str) -> Result<MigrationReport> {
        let _ = device;
        todo!()
    }
}

/// A protection domain.
pub struct Pd {
    _ctx: Context,
    pub handle: Pdn,
}

/// Registered memory owned by the MR (page-aligned, zeroed).
pub struct Mr {
    pub lkey: u32,
    pub rkey: u32,
    _private: (),
}

impl Mr {
    pub fn addr(&self) -> u64 {
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The memory, for reading what the peer wrote. The device may write
    /// into it concurrently; the caller orders accesses with completions.
    pub fn as_slice(&self) -> &[u8] {
        todo!()
    }
    /// The memory, for filling what will be sent.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        todo!()
    }
    /// An SGE covering `len` bytes at `offset`.
    pub fn sge(&self, offset: usize, len: usize) -> Sge {
        let _ = (offset, len);
        todo!()
    }
}

/// What `Pd::create_qp` needs.
#[derive(Debug, Clone)]
pub struct QpInitAttr<'a> {
    pub qp_type: QpType,
    pub send_cq: &'a Cq,
    pub recv_cq: &'a Cq,
    pub srq: Option<&'a Srq>,
    pub cap: QpCap,
    pub sq_sig_all: bool,
}

impl Pd {
    /// Allocates and registers `len` bytes of page-aligned, zeroed memory.
    pub fn alloc_mr(&self, len: usize, access: Access) -> Result<Mr> {
        let _ = (len, access);
        todo!()
    }
    /// Registers memory the caller owns.
    ///
    /// # Safety
    /// `addr..addr+len` must stay valid and mapped until the returned
    /// `RawMr` is deregistered; the device writes into it when allowed.
    pub unsafe fn reg_mr_raw(&self, addr: u64, len: usize, access: Access) -> Result<RawMr> {
        let _ = (addr, len, access);
        todo!()
    }
    pub fn create_qp(&self, attr: &QpInitAttr) -> Result<Qp> {
        let _ = attr;
        todo!()
    }
    pub fn create_srq(&self, max_wr: u32, max_sge: u32, limit: u32) -> Result<Srq> {
        let _ = (max_wr, max_sge, limit);
        todo!()
    }
}

/// Memory registered by address (see [`Pd::reg_mr_raw`]); deregistered on drop.
pub struct RawMr {
    pub lkey: u32,
    pub rkey: u32,
    pub addr: u64,
    pub len: usize,
    _private: (),
}

/// A completion queue.
pub struct Cq {
    pub handle: Cqn,
    _private: (),
}

impl Cq {
    /// Moves up to `max` completions into `out`; returns how many. No system call.
    pub fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize> {
        let _ = (out, max);
        todo!()
    }
    /// Arms the CQ: the next completion raises an event on its channel.
    pub fn req_notify(&self, solicited_only: bool) -> Result<()> {
        let _ = solicited_only;
        todo!()
    }
    pub fn entries(&self) -> u32 {
        todo!()
    }
}

impl std::fmt::Debug for Cq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cq({})", self.handle)
    }
}

/// A completion channel: events of armed CQs.
pub struct CompChannel {
    _private: (),
}

impl CompChannel {
    /// Blocks until an armed CQ has a completion; returns its handle.
    pub fn get_event(&self) -> Result<Cqn> {
        todo!()
    }
    /// Like `get_event`, giving up after `timeout` (`Ok(None)`).
    pub fn get_event_timeout(&self, timeout: Duration) -> Result<Option<Cqn>> {
        let _ = timeout;
        todo!()
    }
    /// The descriptor that becomes readable when an event is pending.
    pub fn fd(&self) -> RawFd {
        todo!()
    }
}

/// A queue pair.
pub struct Qp {
    pub qpn: Qpn,
    _private: (),
}

impl Qp {
    pub fn modify(&self, attr: &QpAttr, mask: AttrMask) -> Result<()> {
        let _ = (attr, mask);
        todo!()
    }
    pub fn query(&self) -> Result<QpAttr> {
        todo!()
    }
    /// Posts send WRs (one doorbell for the batch).
    pub fn post_send(&self, wrs: &[SendWr]) -> Result<()> {
        let _ = wrs;
        todo!()
    }
    /// Posts receive WRs (one doorbell for the batch).
    pub fn post_recv(&self, wrs: &[RecvWr]) -> Result<()> {
        let _ = wrs;
        todo!()
    }
}

/// A shared receive queue.
pub struct Srq {
    pub handle: Srqn,
    _private: (),
}

impl Srq {
    pub fn post_recv(&self, wrs: &[RecvWr]) -> Result<()> {
        let _ = wrs;
        todo!()
    }
    pub fn modify_limit(&self, limit: u32) -> Result<()> {
        let _ = limit;
        todo!()
    }
}

impl std::fmt::Debug for Srq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Srq({})", self.handle)
    }
}
