//! The event loop: one thread, one `mio::Poll`, everything non-blocking.
//!
//! Each turn: wait for the UDP socket, the listeners, the client
//! connections, the signal fd or the transport's next deadline; then feed
//! datagrams to the device, handle requests, run due timers, post what
//! doorbells announced, and drain the device (datagrams out in batches,
//! events, completions into client rings). Memory writes into clients are
//! flushed at the end of every turn.
//!
//! The daemon's state is a few parts, each with its own API: the device
//! (the transport), the [`Registry`] (sessions and what they own), the
//! [`DataPath`] (ring reads, consumer indices, completions), the
//! [`CmPort`] (QP1 and the connection manager), the process memory, the
//! connections and the sockets. Its submodules handle what arrives:
//! - `conns`: accepting connections, reading frames, closing, the end of
//!   a session;
//! - `protocol`: a connection's first request (Hello, AttachChannel,
//!   RestoreSession, RestoreChannel) and doorbells;
//! - `dispatch`: every other client request, mapped onto the registry and
//!   the device;
//! - `migration`: checkpoint, restore, start and commit of a session;
//! - `admin` and [`criu`]: the admin socket and CRIU's requests by pid;
//! - `cm`: librdmacm's connections to the connection manager;
//! - `sockets`: the listeners and the signal fd.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use migros_proto::msg::{AsyncEvent, AsyncKind, DeviceInfo, Event};
use migros_proto::paths;
use migros_transport::{Device, DeviceConfig, Instant};

mod admin;
mod cm;
mod conns;
pub mod criu;
mod dispatch;
mod events;
mod extended;
mod migration;
mod protocol;
mod sockets;

use crate::client::ClientProcess;
use crate::clock::Clock;
use crate::cm::{self as qp1, CmPort};
use crate::config::Config;
use crate::conn::Conn;
use crate::datapath::{DataPath, Notice, Parts};
use crate::ids::Ids;
use crate::limits::device_info;
use crate::procmem::ProcMem;
use crate::registry::{Id, Registry, SessionId};
use crate::udp::UdpIo;
use crate::watchdog::Watchdog;
use criu::CriuState;
use protocol::error;
use sockets::Sockets;

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
const ADMIN: Token = Token(2);
const SIGNAL: Token = Token(3);
const FIRST_CONN: usize = 16;

/// Receive batches per turn before other work gets a chance.
const RX_BUDGET: usize = 16;
/// Datagrams sent per turn before other work gets a chance.
const TX_BUDGET: usize = 1024;
/// Datagrams gathered before a send call.
const TX_BATCH: usize = 128;
/// Bytes received past a due timer before it runs although datagrams are
/// still queued: by then everything that was queued when it came due (the
/// socket holds at most this much) has been handled.
const TIMER_DEFER_BYTES: usize = 2 * crate::udp::SOCKET_BUFFER;
/// How often to look again at a CQ whose ring is full.
const FULL_RING_RETRY: Duration = Duration::from_micros(200);
/// How often every client process is checked for an exec that no memory
/// access noticed yet.
const PROCESS_SWEEP: Duration = Duration::from_secs(1);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid device name {0:?}")]
    Name(String),
    #[error("cannot bind udp {addr}:{port}: {source}")]
    Bind {
        addr: std::net::IpAddr,
        port: u16,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// The daemon: a device and everything around it.
pub struct Daemon {
    cfg: Config,
    info: DeviceInfo,
    device: Device,
    mem: ProcMem,
    clock: Clock,
    now: Instant,
    ids: Ids,
    poll: Poll,
    udp: UdpIo,
    sockets: Sockets,
    conns: BTreeMap<usize, Conn>,
    /// Pidfds of client processes in the poll: token → session.
    processes: BTreeMap<usize, SessionId>,
    last_sweep: std::time::Instant,
    next_token: usize,
    /// Every session with its objects, and the index of their identifiers.
    reg: Registry,
    /// Ring reads, consumer indices and completions still to do.
    data: DataPath,
    /// QP1 and the connection manager.
    cm: CmPort,
    shutdown: bool,
    criu: CriuState,
    udp_rx_more: bool,
    /// A timer came due while received datagrams were still queued: bytes
    /// received since (see [`TIMER_DEFER_BYTES`]).
    timer_deferred: Option<usize>,
    udp_blocked: bool,
    tx_more: bool,
    tx_buf: Vec<u8>,
    /// Ends (or reports) accesses into client memory that do not return.
    watchdog: Watchdog,
}

impl Daemon {
    /// Binds the UDP socket and the unix sockets (removing stale ones).
    pub fn new(cfg: Config) -> Result<Daemon, DaemonError> {
        if !paths::valid_device_name(&cfg.name) {
            return Err(DaemonError::Name(cfg.name.clone()));
        }
        let mut udp =
            UdpIo::bind(cfg.addr, cfg.port, cfg.fault).map_err(|source| DaemonError::Bind {
                addr: cfg.addr,
                port: cfg.port,
                source,
            })?;
        let mut sockets = Sockets::bind(&cfg)?;
        let poll = Poll::new().map_err(io_err("cannot create a poll"))?;
        poll.registry()
            .register(
                &mut udp.socket,
                UDP,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(io_err("register udp"))?;
        sockets.register(poll.registry(), LISTENER, ADMIN, SIGNAL)?;

        let mut dcfg = DeviceConfig::new(cfg.addr);
        // The connection keys' seed, from the OS CSPRNG.
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut dcfg.secret_seed.0);
        dcfg.udp_src_port = cfg.port;
        dcfg.max_mtu = cfg.mtu;
        if let Some(t) = cfg.pause_timeout {
            dcfg.pause_timeout = t;
        }
        let info = device_info(&cfg);
        tracing::info!(
            device = %cfg.name, addr = %cfg.addr, port = cfg.port, mtu = cfg.mtu.bytes(),
            socket = %sockets.client_path().display(), "device up"
        );
        let clock = Clock::new();
        let mut ids = Ids::new();
        let cm = CmPort::new(&info, cfg.port, ids.u64(|_| false).unwrap_or(1));
        let mem = ProcMem::new();
        let watchdog = Watchdog::start(mem.activity(), cfg.memory_stall)
            .map_err(io_err("cannot start the memory watchdog"))?;
        Ok(Daemon {
            now: clock.now(),
            clock,
            info,
            device: Device::new(dcfg),
            mem,
            ids,
            poll,
            udp,
            sockets,
            conns: BTreeMap::new(),
            processes: BTreeMap::new(),
            last_sweep: std::time::Instant::now(),
            next_token: FIRST_CONN,
            reg: Registry::new(),
            data: DataPath::new(),
            cm,
            shutdown: false,
            criu: CriuState::default(),
            udp_rx_more: false,
            timer_deferred: None,
            udp_blocked: false,
            tx_more: false,
            tx_buf: Vec::with_capacity(9000),
            watchdog,
            cfg,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Runs until SIGTERM, SIGINT or an admin Shutdown.
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let mut events = Events::with_capacity(512);
        while !self.shutdown {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_err("poll")(e));
            }
            self.now = self.clock.now();
            for ev in events.iter() {
                match ev.token() {
                    UDP => {
                        if ev.is_readable() {
                            self.udp_rx_more = true;
                        }
                        if ev.is_writable() {
                            self.udp_blocked = false;
                        }
                    }
                    LISTENER => self.accept(false),
                    ADMIN => self.accept(true),
                    SIGNAL => self.on_signal(),
                    Token(t) if self.processes.contains_key(&t) => self.on_process_exit(t),
                    Token(t) => self.on_conn_event(t, ev.is_readable(), ev.is_writable()),
                }
            }
            if self.udp_rx_more {
                // Receives posted before these datagrams arrived must be in
                // the transport first, or a SEND finds no receive (UD drops
                // it; RC answers RNR) although the client had posted one.
                self.pump(None);
                self.receive();
            }
            self.turn();
        }
        tracing::info!(device = %self.cfg.name, "shutting down");
        for c in self.conns.values_mut() {
            let _ = c.flush();
        }
        Ok(())
    }

    fn next_timeout(&self) -> Option<Duration> {
        if self.udp_rx_more || self.tx_more || (!self.udp_blocked && self.data.has_pending()) {
            return Some(Duration::ZERO);
        }
        let now = self.clock.now();
        let mut t = self
            .device
            .poll_timeout()
            .map(|d| self.clock.until(now, d) + Duration::from_micros(50));
        if self.data.is_waiting() {
            t = Some(t.map_or(FULL_RING_RETRY, |t| t.min(FULL_RING_RETRY)));
        }
        if let Some(c) = self.criu_timeout() {
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        if let Some(c) = self.cm.poll_timeout(now) {
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        if !self.processes.is_empty() || !self.conns.is_empty() {
            t = Some(t.map_or(PROCESS_SWEEP, |t| t.min(PROCESS_SWEEP)));
        }
        t
    }

    // ---- client processes ----

    /// Polls `process`'s pidfd: session `sid` ends when it exits.
    pub(super) fn watch_process(&mut self, sid: SessionId, process: &ClientProcess) {
        if let Some(s) = self.reg.get_mut(sid) {
            s.uid = process.uid();
        }
        let token = self.next_token;
        self.next_token += 1;
        let fd = process.pidfd();
        match self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            Ok(()) => {
                self.processes.insert(token, sid);
            }
            // The periodic sweep still notices the exit.
            Err(e) => tracing::warn!(session = sid, error = %e, "cannot poll a pidfd"),
        }
    }

    /// A client process's pidfd became readable: the process exited.
    fn on_process_exit(&mut self, token: usize) {
        let Some(sid) = self.processes.remove(&token) else {
            return;
        };
        let Some(s) = self.reg.get(sid) else {
            return;
        };
        let exited = self.mem.process(s.owner()).is_none_or(|p| p.exited());
        if exited {
            tracing::info!(session = sid, pid = s.pid, "client process exited");
            self.end_client(sid);
        }
    }

    /// Ends the sessions whose process exec'd or exited.
    fn end_gone_processes(&mut self) {
        for owner in self.mem.take_gone() {
            if let Some(sid) = self.reg.holder_of(Id::Owner(owner)) {
                let pid = self.reg.get(sid).map_or(0, |s| s.pid);
                tracing::info!(session = sid, pid, "client process exec'd or exited");
                self.end_client(sid);
            }
        }
    }

    /// Closes session `sid`'s connection (its objects go with it): its
    /// process can no longer be reached.
    fn end_client(&mut self, sid: SessionId) {
        let conn = self.reg.get(sid).map(|s| s.conn);
        if let Some(c) = conn.and_then(|t| self.conns.get_mut(&t)) {
            c.dead = true;
        }
        if let Some(t) = conn {
            self.on_conn_event(t, false, false);
        }
        self.processes.retain(|_, s| *s != sid);
    }

    fn on_signal(&mut self) {
        for signal in self.sockets.signals() {
            tracing::info!(signal, "signal received");
            self.shutdown = true;
        }
    }

    // ---- UDP ----

    fn receive(&mut self) {
        self.udp_rx_more = false;
        for _ in 0..RX_BUDGET {
            let now = self.now;
            let device = &mut self.device;
            let mem = &mut self.mem;
            let cm = &mut self.cm;
            let mut bytes_in = 0;
            let r = self.udp.recv_batch(|src, bytes| {
                bytes_in += bytes.len();
                if qp1::is_gsi(bytes) {
                    cm.on_datagram(now, src.ip(), src.port(), bytes);
                } else {
                    device.handle_datagram(now, mem, src.ip(), src.port(), bytes);
                }
            });
            if let Some(b) = &mut self.timer_deferred {
                *b += bytes_in;
            }
            match r {
                Ok(n) if n > 0 => self.data.note_progress(),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "udp receive failed");
                    return;
                }
            }
        }
        self.udp_rx_more = true;
    }

    /// Sends what the device has, up to the turn's budget.
    fn transmit(&mut self) {
        self.tx_more = false;
        // Data written into client memory (WRITE payloads, atomic results,
        // RECV data) must be in place before any ACK or response that lets
        // the peer see its operation complete.
        self.mem.flush();
        while let Some((dst, datagram)) = self.cm.poll_transmit() {
            self.udp.queue(dst, &datagram);
        }
        // Data that did not land is never acknowledged.
        for owner in self.mem.take_write_faults() {
            tracing::info!(
                owner,
                "a write into client memory failed: its qps nak and fail"
            );
            self.device.memory_lost(&mut self.mem, owner);
        }
        let mut sent = 0;
        while !self.udp_blocked {
            while self.udp.queued() < TX_BATCH {
                match self
                    .device
                    .poll_transmit(self.now, &mut self.mem, &mut self.tx_buf)
                {
                    Some(t) => self.udp.queue(t.dst, &self.tx_buf),
                    None => break,
                }
            }
            let queued = self.udp.queued();
            if queued == 0 {
                return;
            }
            match self.udp.flush() {
                Ok(true) => {}
                Ok(false) => self.udp_blocked = true,
                Err(e) => tracing::warn!(error = %e, "udp send failed"),
            }
            sent += queued;
            if sent >= TX_BUDGET {
                self.tx_more = true;
                return;
            }
        }
    }

    // ---- one turn of work after the events ----

    fn turn(&mut self) {
        self.criu_tick();
        self.cm_tick();
        if self.device.poll_timeout().is_some_and(|d| d <= self.now) {
            // An ACK may be waiting in the socket behind a backlog (a slow
            // or descheduled daemon): what arrived before the deadline is
            // handled before the timer decides that nothing came.
            let deferred = self.timer_deferred.get_or_insert(0);
            if !self.udp_rx_more || *deferred >= TIMER_DEFER_BYTES {
                self.timer_deferred = None;
                self.device.handle_timeout(self.now);
                self.data.note_progress();
            }
        } else {
            self.timer_deferred = None;
        }
        self.data.unblock_after_progress();
        for _ in 0..8 {
            self.pump(None);
            self.transmit();
            self.device_events();
            // A completion frees its ring slot: the consumer index must be
            // visible before the completion, or a client that reposts at
            // once finds its ring full.
            self.data
                .write_cis(&mut self.reg, &mut self.mem, &mut self.device);
            let wrote = self.write_completions();
            // Completions may have freed send queue room: go again.
            if !wrote || !self.data.has_pending() {
                break;
            }
        }
        self.data
            .write_cis(&mut self.reg, &mut self.mem, &mut self.device);
        self.mem.end_batch();
        if self.last_sweep.elapsed() >= PROCESS_SWEEP {
            self.last_sweep = std::time::Instant::now();
            self.mem.sweep();
            self.expire_silent_conns();
            self.check_port();
        }
        self.end_gone_processes();
        self.flush_conns();
    }

    /// Reads and posts what doorbells announced (of session `only`, or
    /// all), then acts on what the data path found.
    fn pump(&mut self, only: Option<SessionId>) {
        let mut p = Parts {
            reg: &mut self.reg,
            device: &mut self.device,
            mem: &mut self.mem,
            now: self.now,
        };
        self.data.pump(&mut p, only);
        self.act_on_notices();
    }

    /// Moves completions into client rings; returns whether any was written.
    fn write_completions(&mut self) -> bool {
        let mut p = Parts {
            reg: &mut self.reg,
            device: &mut self.device,
            mem: &mut self.mem,
            now: self.now,
        };
        let wrote = self.data.write_completions(&mut p);
        self.act_on_notices();
        wrote
    }

    fn act_on_notices(&mut self) {
        for notice in self.data.take_notices() {
            match notice {
                Notice::QpFatal { session, qpn } => {
                    let ev = AsyncEvent {
                        kind: AsyncKind::QpFatal,
                        element: qpn,
                    };
                    self.async_event(session, ev);
                }
                Notice::CqError { session, cq } => {
                    let ev = AsyncEvent {
                        kind: AsyncKind::CqErr,
                        element: cq,
                    };
                    self.async_event(session, ev);
                }
                Notice::BrokenRing { session } => {
                    let conn = self.reg.get(session).map(|s| s.conn);
                    if let Some(c) = conn.and_then(|t| self.conns.get_mut(&t)) {
                        let _ = c.send(&error(
                            libc::EFAULT,
                            "a ring of this session is not readable",
                        ));
                        c.closing = true;
                    }
                }
                Notice::CqEvent {
                    session,
                    channel,
                    cq,
                } => {
                    let conn = self
                        .reg
                        .get(session)
                        .and_then(|s| s.objects().channel(channel))
                        .and_then(|c| c.conn);
                    if let Some(c) = conn.and_then(|t| self.conns.get_mut(&t)) {
                        let _ = c.send(&Event::Completion { cq });
                    }
                }
            }
        }
    }

    fn uptime(&self) -> Duration {
        self.clock.elapsed()
    }
}
