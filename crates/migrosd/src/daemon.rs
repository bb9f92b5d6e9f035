//! The event loop: one thread, one `mio::Poll`, everything non-blocking.
//!
//! Each turn: wait for the UDP socket, the listeners, the client
//! connections, the signal fd or the transport's next deadline; then feed
//! datagrams to the device, handle requests, run due timers, post what
//! doorbells announced, and drain the device (datagrams out in batches,
//! events, completions into client rings). Memory writes into clients are
//! flushed at the end of every turn.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use migros_proto::msg::{ChannelId, DeviceInfo, Event, Request, Response};
use migros_proto::paths;
use migros_transport::{
    Cqn, Device, DeviceConfig, DeviceEvent, Instant, Pdn, Qpn, Srqn, WorkCompletion,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::criu::CriuState;
use crate::ids::Ids;
use crate::procmem::ProcMem;
use crate::rings::{write_ci, CqRing, QpRings, SrqRing};
use crate::session::{Conn, ConnKind, Hold, ReadState, Session};
use crate::udp::UdpIo;

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

/// Device limits the daemon enforces (reported in [`DeviceInfo`]).
pub mod limits {
    pub const MAX_QP: u32 = 16384;
    pub const MAX_QP_WR: u32 = 16384;
    /// Both send and receive WRs take this many SGEs (sends take up to
    /// [`migros_proto::ring::MAX_SEND_SGE`]).
    pub const MAX_SGE: u32 = migros_proto::ring::MAX_RECV_SGE as u32;
    pub const MAX_CQ: u32 = 16384;
    pub const MAX_CQE: u32 = 1 << 20;
    pub const MAX_MR: u32 = 1 << 16;
    pub const MAX_MR_SIZE: u64 = 1 << 40;
    pub const MAX_PD: u32 = 1 << 16;
    pub const MAX_QP_RD_ATOM: u32 = 16;
    pub const MAX_SRQ: u32 = 4096;
    pub const MAX_SRQ_WR: u32 = 16384;
    pub const MAX_INLINE_DATA: u32 = migros_proto::ring::MAX_INLINE as u32;
}

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

/// A work queue waiting to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wq {
    Sq(Qpn),
    Rq(Qpn),
    Srq(Srqn),
}

/// A memory region as the daemon tracks it.
#[derive(Debug, Clone, Copy)]
pub struct MrEntry {
    pub session: u64,
    pub rkey: u32,
    pub addr: u64,
}

/// A completion channel.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    pub session: u64,
    pub conn: Option<usize>,
    /// Inode of the client's end of the channel connection (0: none yet).
    pub inode: u64,
}

/// The daemon: a device and everything around it.
pub struct Daemon {
    pub(crate) cfg: Config,
    pub(crate) info: DeviceInfo,
    pub(crate) device: Device,
    pub(crate) mem: ProcMem,
    pub(crate) clock: Clock,
    pub(crate) now: Instant,
    pub(crate) ids: Ids,
    poll: Poll,
    udp: UdpIo,
    listener: UnixListener,
    admin_listener: UnixListener,
    signals: SignalFd,
    socket_path: PathBuf,
    admin_path: PathBuf,
    pub(crate) conns: BTreeMap<usize, Conn>,
    next_token: usize,
    pub(crate) sessions: BTreeMap<u64, Session>,
    pub(crate) owners: BTreeMap<u64, u64>,
    pub(crate) pds: BTreeMap<Pdn, u64>,
    pub(crate) mrs: BTreeMap<u32, MrEntry>,
    pub(crate) keys: BTreeSet<u32>,
    pub(crate) cqs: BTreeMap<Cqn, CqRing>,
    pub(crate) srqs: BTreeMap<Srqn, SrqRing>,
    pub(crate) qps: BTreeMap<Qpn, QpRings>,
    pub(crate) channels: BTreeMap<ChannelId, Channel>,
    /// CQs with new completions in the transport or a backlog.
    pub(crate) dirty_cqs: BTreeSet<Cqn>,
    /// Work queues with entries to read.
    pub(crate) pending_wqs: BTreeSet<Wq>,
    /// Work queues the transport had no room for: read again after
    /// datagrams or timers may have freed some.
    pub(crate) blocked_wqs: BTreeSet<Wq>,
    /// Work queues whose consumer index must be written back.
    pub(crate) ci_dirty: BTreeSet<Wq>,
    pub(crate) shutdown: bool,
    pub(crate) criu: CriuState,
    udp_rx_more: bool,
    /// A timer came due while received datagrams were still queued: bytes
    /// received since (see [`TIMER_DEFER_BYTES`]).
    timer_deferred: Option<usize>,
    pub(crate) retry_blocked: bool,
    udp_blocked: bool,
    tx_more: bool,
    tx_buf: Vec<u8>,
    pub(crate) wq_buf: Vec<u8>,
    cqe_buf: Vec<u8>,
    wc_buf: Vec<WorkCompletion>,
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
        std::fs::create_dir_all(&cfg.socket_dir).map_err(io_err(format!(
            "cannot create {}",
            cfg.socket_dir.display()
        )))?;
        let socket_path = paths::device_socket(&cfg.socket_dir, &cfg.name);
        let admin_path = paths::admin_socket(&cfg.socket_dir, &cfg.name);
        // Signals are taken over before the sockets appear: whoever sees
        // the socket may send SIGTERM and expects a clean exit.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()
            .map_err(|e| io_err("cannot block signals")(e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_err("cannot create a signalfd")(e.into()))?;
        let listener = bind_unix(&socket_path, 0o666)?;
        let admin_listener = bind_unix(&admin_path, 0o600)?;

        let poll = Poll::new().map_err(io_err("cannot create a poll"))?;
        let reg = poll.registry();
        reg.register(
            &mut udp.socket,
            UDP,
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(io_err("register udp"))?;
        let mut listener = listener;
        let mut admin_listener = admin_listener;
        reg.register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(io_err("register listener"))?;
        reg.register(&mut admin_listener, ADMIN, Interest::READABLE)
            .map_err(io_err("register admin listener"))?;
        reg.register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNAL,
            Interest::READABLE,
        )
        .map_err(io_err("register signalfd"))?;

        let mut dcfg = DeviceConfig::new(cfg.addr);
        dcfg.udp_src_port = cfg.port;
        dcfg.max_mtu = cfg.mtu;
        if let Some(t) = cfg.pause_timeout {
            dcfg.pause_timeout = t;
        }
        let info = device_info(&cfg);
        tracing::info!(
            device = %cfg.name, addr = %cfg.addr, port = cfg.port, mtu = cfg.mtu.bytes(),
            socket = %socket_path.display(), "device up"
        );
        let clock = Clock::new();
        Ok(Daemon {
            now: clock.now(),
            clock,
            info,
            device: Device::new(dcfg),
            mem: ProcMem::new(),
            ids: Ids::new(),
            poll,
            udp,
            listener,
            admin_listener,
            signals,
            socket_path,
            admin_path,
            conns: BTreeMap::new(),
            next_token: FIRST_CONN,
            sessions: BTreeMap::new(),
            owners: BTreeMap::new(),
            pds: BTreeMap::new(),
            mrs: BTreeMap::new(),
            keys: BTreeSet::new(),
            cqs: BTreeMap::new(),
            srqs: BTreeMap::new(),
            qps: BTreeMap::new(),
            channels: BTreeMap::new(),
            dirty_cqs: BTreeSet::new(),
            pending_wqs: BTreeSet::new(),
            blocked_wqs: BTreeSet::new(),
            ci_dirty: BTreeSet::new(),
            shutdown: false,
            criu: CriuState::default(),
            udp_rx_more: false,
            timer_deferred: None,
            retry_blocked: false,
            udp_blocked: false,
            tx_more: false,
            tx_buf: Vec::with_capacity(9000),
            wq_buf: Vec::new(),
            cqe_buf: Vec::new(),
            wc_buf: Vec::new(),
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
                    Token(t) => self.on_conn_event(t, ev.is_readable(), ev.is_writable()),
                }
            }
            if self.udp_rx_more {
                // Receives posted before these datagrams arrived must be in
                // the transport first, or a SEND finds no receive (UD drops
                // it; RC answers RNR) although the client had posted one.
                self.pump_wqs(None);
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
        if self.udp_rx_more || self.tx_more || (!self.udp_blocked && !self.pending_wqs.is_empty()) {
            return Some(Duration::ZERO);
        }
        let now = self.clock.now();
        let mut t = self
            .device
            .poll_timeout()
            .map(|d| self.clock.until(now, d) + Duration::from_micros(50));
        if self.cqs_waiting() || !self.blocked_wqs.is_empty() {
            t = Some(t.map_or(FULL_RING_RETRY, |t| t.min(FULL_RING_RETRY)));
        }
        if let Some(c) = self.criu_timeout() {
            t = Some(t.map_or(c, |t| t.min(c)));
        }
        t
    }

    fn cqs_waiting(&self) -> bool {
        !self.dirty_cqs.is_empty()
    }

    fn on_signal(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            tracing::info!(signal = info.ssi_signo, "signal received");
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
            let mut bytes_in = 0;
            let r = self.udp.recv_batch(|src, bytes| {
                bytes_in += bytes.len();
                device.handle_datagram(now, mem, src.ip(), src.port(), bytes);
            });
            if let Some(b) = &mut self.timer_deferred {
                *b += bytes_in;
            }
            match r {
                Ok(n) => self.retry_blocked |= n > 0,
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
        if self.device.poll_timeout().is_some_and(|d| d <= self.now) {
            // An ACK may be waiting in the socket behind a backlog (a slow
            // or descheduled daemon): what arrived before the deadline is
            // handled before the timer decides that nothing came.
            let deferred = self.timer_deferred.get_or_insert(0);
            if !self.udp_rx_more || *deferred >= TIMER_DEFER_BYTES {
                self.timer_deferred = None;
                self.device.handle_timeout(self.now);
                self.retry_blocked = true;
            }
        } else {
            self.timer_deferred = None;
        }
        if std::mem::take(&mut self.retry_blocked) {
            let blocked = std::mem::take(&mut self.blocked_wqs);
            self.pending_wqs.extend(blocked);
        }
        for _ in 0..8 {
            self.pump_wqs(None);
            self.transmit();
            self.device_events();
            // A completion frees its ring slot: the consumer index must be
            // visible before the completion, or a client that reposts at
            // once finds its ring full.
            self.write_cis();
            let wrote = self.write_completions();
            // Completions may have freed send queue room: go again.
            if !wrote || self.pending_wqs.is_empty() {
                break;
            }
        }
        self.write_cis();
        self.mem.end_batch();
        self.flush_conns();
    }

    fn device_events(&mut self) {
        while let Some(ev) = self.device.poll_event() {
            match ev {
                DeviceEvent::Completion { cq } => {
                    self.dirty_cqs.insert(cq);
                }
                DeviceEvent::QpError { qpn } => {
                    tracing::debug!(qpn, "qp entered the error state");
                    if let Some(sid) = self.qps.get(&qpn).map(|q| q.session) {
                        self.session_event(sid, Event::QpFatal { qpn });
                    }
                }
                DeviceEvent::PauseTimeout { qpn } => {
                    tracing::info!(qpn, "pause timed out: the partner never came back");
                }
                DeviceEvent::SqDrained { qpn } => tracing::debug!(qpn, "send queue drained"),
                DeviceEvent::SrqLimitReached { srq } => tracing::debug!(srq, "srq limit reached"),
                other => tracing::debug!(?other, "device event"),
            }
        }
    }

    /// Sends `ev` on every attached channel of session `sid`.
    pub(crate) fn session_event(&mut self, sid: u64, ev: Event) {
        let conns: Vec<usize> = self
            .channels
            .values()
            .filter(|c| c.session == sid)
            .filter_map(|c| c.conn)
            .collect();
        for t in conns {
            if let Some(c) = self.conns.get_mut(&t) {
                let _ = c.send(&ev);
            }
        }
    }

    /// Moves completions from the transport into client rings; returns
    /// whether any was written.
    fn write_completions(&mut self) -> bool {
        if self.dirty_cqs.is_empty() {
            return false;
        }
        self.mem.flush();
        let mut wrote = false;
        let dirty: Vec<Cqn> = self.dirty_cqs.iter().copied().collect();
        for cqn in dirty {
            let Some(ring) = self.cqs.get_mut(&cqn) else {
                self.dirty_cqs.remove(&cqn);
                continue;
            };
            // A held session gets every CQ marked again when it resumes.
            if self
                .sessions
                .get(&ring.session)
                .is_some_and(|s| s.hold != Hold::Running)
            {
                self.dirty_cqs.remove(&cqn);
                continue;
            }
            self.wc_buf.clear();
            let _ = self.device.poll_cq(cqn, usize::MAX, &mut self.wc_buf);
            let limit = ring.backlog_limit();
            for wc in self.wc_buf.drain(..) {
                if ring.backlog.len() >= limit {
                    ring.overflows += 1;
                } else {
                    ring.backlog.push_back(wc);
                }
            }
            let mut n = 0;
            loop {
                match ring.write_backlog(&mut self.mem, &mut self.cqe_buf) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => {
                        tracing::warn!(cq = cqn, error = %e, "cannot write completions into the client's ring");
                        ring.backlog.clear();
                        break;
                    }
                }
            }
            let notify = if n > 0 && ring.armed {
                ring.armed = false;
                ring.channel
            } else {
                None
            };
            if ring.backlog.is_empty() {
                self.dirty_cqs.remove(&cqn);
            }
            if n > 0 {
                wrote = true;
            }
            if let Some(ch) = notify
                .and_then(|ch| self.channels.get(&ch))
                .and_then(|c| c.conn)
            {
                if let Some(c) = self.conns.get_mut(&ch) {
                    let _ = c.send(&Event::Completion { cq: cqn });
                }
            }
        }
        wrote
    }

    /// Writes consumer indices back into control blocks.
    fn write_cis(&mut self) {
        let dirty = std::mem::take(&mut self.ci_dirty);
        for wq in dirty {
            let (sid, owner, at, ci) = match wq {
                Wq::Sq(q) => match self.qps.get(&q) {
                    Some(r) => (
                        r.session,
                        r.owner,
                        r.ctrl + migros_proto::ring::QP_CTRL_SQ_CI,
                        r.sq.ci,
                    ),
                    None => continue,
                },
                Wq::Rq(q) => match self.qps.get(&q).and_then(|r| r.rq.map(|rq| (r, rq))) {
                    Some((r, rq)) => (
                        r.session,
                        r.owner,
                        r.ctrl + migros_proto::ring::QP_CTRL_RQ_CI,
                        rq.ci,
                    ),
                    None => continue,
                },
                Wq::Srq(s) => match self.srqs.get(&s) {
                    Some(r) => (
                        r.session,
                        r.owner,
                        r.ctrl + migros_proto::ring::SRQ_CTRL_CI,
                        r.rq.ci,
                    ),
                    None => continue,
                },
            };
            // A held session gets every index marked again when it resumes.
            if self.memory_held(sid) {
                continue;
            }
            if let Err(e) = write_ci(&mut self.mem, owner, at, ci) {
                tracing::debug!(error = %e, "cannot write a consumer index");
            }
        }
    }

    // ---- connections ----

    fn accept(&mut self, admin: bool) {
        loop {
            let listener = if admin {
                &self.admin_listener
            } else {
                &self.listener
            };
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            };
            let (pid, uid) = match peer_cred(&stream) {
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
            let mut conn = Conn::new(stream, kind, pid, uid);
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

    fn on_conn_event(&mut self, token: usize, readable: bool, _writable: bool) {
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
    pub(crate) fn process_frames(&mut self, token: usize) {
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

    fn flush_conns(&mut self) {
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
                if let Some(c) = self.channels.get_mut(&channel) {
                    if c.conn == Some(token) {
                        c.conn = None;
                    }
                }
            }
            ConnKind::New | ConnKind::Admin => {}
        }
        tracing::debug!(token, "connection closed");
    }

    /// A session's connection went away: destroy everything it owns.
    fn end_session(&mut self, sid: u64) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        if s.hold == Hold::Checkpointed {
            // The process was dumped and is gone: its QPs move on.
            self.sessions.insert(sid, s.clone());
            self.commit_checkpoint(sid, s.owner);
            return;
        }
        tracing::info!(session = sid, pid = s.pid, owner = s.owner, "session ended");
        self.device.destroy_owner(self.now, s.owner);
        self.forget_session_objects(sid);
        self.owners.remove(&s.owner);
        self.mem.unbind(s.owner);
    }

    /// Removes the daemon-side state of every object of `sid` (the device's
    /// side is the caller's business). Channel connections are closed.
    pub(crate) fn forget_session_objects(&mut self, sid: u64) {
        self.qps.retain(|_, q| q.session != sid);
        self.cqs.retain(|_, c| c.session != sid);
        self.srqs.retain(|_, s| s.session != sid);
        self.pds.retain(|_, s| *s != sid);
        let keys: Vec<(u32, u32)> = self
            .mrs
            .iter()
            .filter(|(_, m)| m.session == sid)
            .map(|(l, m)| (*l, m.rkey))
            .collect();
        for (l, r) in keys {
            self.mrs.remove(&l);
            self.keys.remove(&l);
            self.keys.remove(&r);
        }
        let chans: Vec<(ChannelId, Option<usize>)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.session == sid)
            .map(|(id, c)| (*id, c.conn))
            .collect();
        for (id, conn) in chans {
            self.channels.remove(&id);
            if let Some(c) = conn.and_then(|t| self.conns.get_mut(&t)) {
                c.closing = true;
            }
        }
        let qps = &self.qps;
        let srqs = &self.srqs;
        let live = |w: &Wq| match w {
            Wq::Sq(q) | Wq::Rq(q) => qps.contains_key(q),
            Wq::Srq(s) => srqs.contains_key(s),
        };
        self.pending_wqs.retain(live);
        self.blocked_wqs.retain(live);
        let cqs = &self.cqs;
        self.dirty_cqs.retain(|c| cqs.contains_key(c));
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.clock.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket_path);
        let _ = std::fs::remove_file(&self.admin_path);
    }
}

/// Binds a unix listener at `path` (replacing a stale socket) with `mode`.
fn bind_unix(path: &std::path::Path, mode: u32) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::Io {
                    what: format!("{} is in use by a running daemon", path.display()),
                    source: io::ErrorKind::AddrInUse.into(),
                });
            }
            let _ = std::fs::remove_file(path);
        } else {
            return Err(DaemonError::Io {
                what: format!("{} exists and is not a socket", path.display()),
                source: io::ErrorKind::AlreadyExists.into(),
            });
        }
    }
    let l = UnixListener::bind(path).map_err(io_err(format!("cannot bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("cannot chmod {}", path.display())))?;
    Ok(l)
}

fn peer_cred(stream: &UnixStream) -> Option<(i32, u32)> {
    use std::os::fd::AsFd;
    let cred = getsockopt(&stream.as_fd(), PeerCredentials).ok()?;
    Some((cred.pid(), cred.uid()))
}

/// What clients learn about the device.
pub fn device_info(cfg: &Config) -> DeviceInfo {
    use limits::*;
    let node_guid = match cfg.addr {
        std::net::IpAddr::V4(a) => 0x0200_5eff_fe00_0000 ^ u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => 0x0200_5eff_fe00_0000 ^ (u128::from(a) as u64),
    };
    DeviceInfo {
        name: cfg.name.clone(),
        addr: cfg.addr,
        mtu: cfg.mtu,
        node_guid,
        max_qp: MAX_QP,
        max_qp_wr: MAX_QP_WR,
        max_sge: MAX_SGE,
        max_cq: MAX_CQ,
        max_cqe: MAX_CQE,
        max_mr: MAX_MR,
        max_mr_size: MAX_MR_SIZE,
        max_pd: MAX_PD,
        max_qp_rd_atom: MAX_QP_RD_ATOM,
        max_srq: MAX_SRQ,
        max_srq_wr: MAX_SRQ_WR,
        max_inline_data: MAX_INLINE_DATA,
    }
}
