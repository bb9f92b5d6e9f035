//! Completion channels: a second connection to the daemon that carries
//! only events.
//!
//! The channel's socket keeps its descriptor number for the channel's whole
//! life: a migration connects to the new daemon and `dup2`s the new socket
//! onto the old number, so [`CompChannel::fd`] stays valid for `poll(2)`.
//! (An epoll registration is tied to the old socket and must be renewed
//! after a migration.)

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migros_proto::frame::FrameReader;
use migros_proto::msg::{ChannelId, Event, Request, Response, PROTOCOL_VERSION};
use migros_proto::verbs::{Cqn, Qpn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::conn::{lock, unexpected, Conn};
use crate::context::Context;
use crate::error::{Error, Result};

/// How long one `poll(2)` waits while the channel's lock is held; a
/// migration waits at most this long to swap the socket.
const POLL_SLICE: Duration = Duration::from_millis(5);

/// A completion channel: events of armed CQs.
pub struct CompChannel {
    pub(crate) inner: Arc<ChannelShared>,
}

pub(crate) struct ChannelShared {
    ctx: Context,
    id: ChannelId,
    /// The descriptor number, stable across migrations.
    raw_fd: RawFd,
    /// A migration waits for `state`: waiters step back between polls.
    swapping: AtomicBool,
    state: Mutex<ChannelState>,
}

struct ChannelState {
    /// Non-blocking socket.
    fd: OwnedFd,
    reader: FrameReader,
    /// Completion events read but not yet returned.
    pending: VecDeque<Cqn>,
    /// QPs reported failed (`Event::QpFatal`), oldest first.
    fatal: Vec<Qpn>,
    /// CQs reported failed (`Event::CqError`), oldest first.
    failed_cqs: Vec<Cqn>,
}

impl CompChannel {
    pub(crate) fn create(ctx: &Context) -> Result<CompChannel> {
        let id = match ctx.request(&Request::CreateChannel)? {
            Response::Channel { channel } => channel,
            other => return Err(unexpected("CreateChannel", &other)),
        };
        let (dir, device, session) = {
            let s = lock(&ctx.inner.session);
            (ctx.inner.dir.clone(), s.device.clone(), s.id)
        };
        let fd = match attach(&dir, &device, session, id) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = ctx.request_ok(&Request::DestroyChannel { channel: id });
                return Err(e);
            }
        };
        let inner = Arc::new(ChannelShared {
            ctx: ctx.clone(),
            id,
            raw_fd: fd.as_raw_fd(),
            swapping: AtomicBool::new(false),
            state: Mutex::new(ChannelState {
                fd,
                reader: FrameReader::new(),
                pending: VecDeque::new(),
                fatal: Vec::new(),
                failed_cqs: Vec::new(),
            }),
        });
        let mut channels = lock(&ctx.inner.channels);
        channels.retain(|w| w.strong_count() > 0);
        channels.push(Arc::downgrade(&inner));
        Ok(CompChannel { inner })
    }

    /// The daemon's handle of the channel.
    pub fn id(&self) -> ChannelId {
        self.inner.id
    }

    /// Blocks until an armed CQ has a completion; returns its handle.
    pub fn get_event(&self) -> Result<Cqn> {
        loop {
            if let Some(cq) = self.wait(None)? {
                return Ok(cq);
            }
        }
    }

    /// Like `get_event`, giving up after `timeout` (`Ok(None)`).
    pub fn get_event_timeout(&self, timeout: Duration) -> Result<Option<Cqn>> {
        self.wait(Some(Instant::now() + timeout))
    }

    /// The descriptor that becomes readable when an event is pending. Its
    /// number does not change when the context migrates.
    pub fn fd(&self) -> RawFd {
        self.inner.raw_fd
    }

    /// QPs the daemon reported failed since the last call (asynchronous
    /// `QpFatal` events that arrived on this channel).
    pub fn take_fatal_qps(&self) -> Vec<Qpn> {
        std::mem::take(&mut lock(&self.inner.state).fatal)
    }

    /// CQs the daemon reported failed since the last call (asynchronous
    /// `CqError` events that arrived on this channel).
    pub fn take_failed_cqs(&self) -> Vec<Cqn> {
        std::mem::take(&mut lock(&self.inner.state).failed_cqs)
    }

    fn wait(&self, deadline: Option<Instant>) -> Result<Option<Cqn>> {
        loop {
            while self.inner.swapping.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_micros(200));
            }
            let mut st = lock(&self.inner.state);
            st.drain()?;
            if let Some(cq) = st.pending.pop_front() {
                return Ok(Some(cq));
            }
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(POLL_SLICE)
                }
                None => POLL_SLICE,
            };
            let timeout = PollTimeout::try_from(slice).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(st.fd.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::Io(e.into())),
            }
        }
    }
}

impl ChannelState {
    /// Reads whatever the socket holds without blocking and queues its events.
    fn drain(&mut self) -> Result<()> {
        loop {
            let spare = self.reader.spare(4096);
            let len = spare.len();
            match nix::unistd::read(&self.fd, spare) {
                Ok(0) => {
                    self.reader.filled(len, 0);
                    self.queue_events()?;
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "daemon closed the completion channel",
                    )));
                }
                Ok(n) => {
                    self.reader.filled(len, n);
                    self.queue_events()?;
                }
                Err(Errno::EAGAIN) => {
                    self.reader.filled(len, 0);
                    return Ok(());
                }
                Err(Errno::EINTR) => self.reader.filled(len, 0),
                Err(e) => {
                    self.reader.filled(len, 0);
                    return Err(Error::Io(e.into()));
                }
            }
        }
    }

    fn queue_events(&mut self) -> Result<()> {
        while let Some(ev) = self.reader.next_message::<Event>()? {
            match ev {
                Event::Completion { cq } => self.pending.push_back(cq),
                Event::QpFatal { qpn } => self.fatal.push(qpn),
                Event::CqError { cq } => self.failed_cqs.push(cq),
            }
        }
        Ok(())
    }
}

impl ChannelShared {
    /// Attaches the channel to the daemon of `device` (a migration moved
    /// the session there) and puts the new socket in place of the old one,
    /// keeping the descriptor number. Events already sent by the old daemon
    /// are kept.
    pub(crate) fn reattach(&self, dir: &Path, device: &str, session: u64) -> Result<()> {
        let new = attach(dir, device, session, self.id)?;
        self.swapping.store(true, Ordering::Release);
        let mut st = lock(&self.state);
        self.swapping.store(false, Ordering::Release);
        // Whatever the old daemon sent is complete frames (it sends nothing
        // after the checkpoint); keep those events.
        let _ = st.drain();
        nix::unistd::dup2(&new, &mut st.fd).map_err(|e| Error::Io(e.into()))?;
        st.reader = FrameReader::new();
        Ok(())
    }
}

impl Drop for ChannelShared {
    fn drop(&mut self) {
        let _ = self
            .ctx
            .request_ok(&Request::DestroyChannel { channel: self.id });
    }
}

/// Opens a channel connection: AttachChannel, then a non-blocking socket.
fn attach(dir: &Path, device: &str, session: u64, channel: ChannelId) -> Result<OwnedFd> {
    let mut conn = Conn::connect(dir, device)?;
    let inode = conn.inode()?;
    conn.send(&Request::AttachChannel {
        version: PROTOCOL_VERSION,
        session,
        channel,
        inode,
    })?;
    let stream = conn.into_stream();
    stream.set_nonblocking(true)?;
    Ok(stream.into())
}
