//! Completion channels as programs see them: `ibv_comp_channel.fd` is an
//! eventfd (a semaphore counting the events waiting), fed by one thread
//! per channel that takes the events from the migros channel connection.
//!
//! Handing out the connection's socket instead would break two things
//! programs rely on: migros-verbs reads every event the socket holds at
//! once, so after `ibv_get_cq_event` took one the socket can be unreadable
//! while more wait (a program that polls the fd before each call, as
//! epoll loops do, would wait for ever); and that socket is always
//! non-blocking inside migros-verbs, so a program's `O_NONBLOCK` (then
//! `ibv_get_cq_event` fails with EAGAIN instead of blocking) cannot be
//! seen on it. The eventfd is readable exactly when an event waits, and
//! its `O_NONBLOCK` is the program's. Its number, like the channel's,
//! does not change when the context migrates.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use migros_rdma_sys::eventfd;
use migros_verbs::{CompChannel, Cqn};

use crate::context::lock;

/// How long the feeding thread waits for an event before it looks whether
/// the channel is being destroyed (bounds `ibv_destroy_comp_channel`).
const SLICE: Duration = Duration::from_millis(20);

/// Added to the eventfd when the connection fails: every later read
/// returns at once and finds the failure.
const FOREVER: u64 = 1 << 48;

pub(crate) struct Feed {
    pub inner: CompChannel,
    /// The eventfd programs see.
    pub fd: RawFd,
    state: Mutex<State>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Events taken from the connection, oldest first.
    events: VecDeque<Cqn>,
    /// The errno of the connection's failure (the daemon is gone).
    failed: Option<i32>,
    /// The channel is being destroyed: the thread stops.
    closed: bool,
}

impl Feed {
    /// The eventfd and the thread of a new channel; errno on failure.
    pub fn start(inner: CompChannel) -> Result<Arc<Feed>, i32> {
        // Closed by `stop`. Blocking by default, as a libibverbs channel's
        // descriptor.
        let fd = eventfd::semaphore()?;
        let feed = Arc::new(Feed {
            inner,
            fd,
            state: Mutex::default(),
            thread: Mutex::new(None),
        });
        let f = feed.clone();
        match std::thread::Builder::new()
            .name("migros-channel".into())
            .spawn(move || f.run())
        {
            Ok(t) => {
                *lock(&feed.thread) = Some(t);
                Ok(feed)
            }
            Err(e) => {
                // SAFETY: the descriptor opened above, used by nobody.
                unsafe { libc::close(fd) };
                Err(e.raw_os_error().unwrap_or(libc::EAGAIN))
            }
        }
    }

    fn run(&self) {
        loop {
            if lock(&self.state).closed {
                return;
            }
            match self.inner.get_event_timeout(SLICE) {
                Ok(Some(cq)) => {
                    lock(&self.state).events.push_back(cq);
                    self.count(1);
                }
                Ok(None) => {}
                Err(e) => {
                    lock(&self.state).failed = Some(e.errno());
                    self.count(FOREVER);
                    return;
                }
            }
        }
    }

    fn count(&self, n: u64) {
        // The eventfd is open until `stop` has joined this thread.
        eventfd::add(self.fd, n);
    }

    /// The next event: blocks unless the program made the descriptor
    /// non-blocking (then EAGAIN when none waits). Errno on failure.
    pub fn next(&self) -> Result<Cqn, i32> {
        loop {
            // The eventfd is open until `stop`.
            eventfd::take(self.fd)?;
            let mut st = lock(&self.state);
            if let Some(cq) = st.events.pop_front() {
                return Ok(cq);
            }
            if let Some(e) = st.failed {
                return Err(e);
            }
        }
    }

    /// Stops the thread and closes the eventfd (`ibv_destroy_comp_channel`).
    pub fn stop(&self) {
        lock(&self.state).closed = true;
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        // SAFETY: the eventfd opened by `start`; the thread is gone.
        unsafe { libc::close(self.fd) };
    }
}
