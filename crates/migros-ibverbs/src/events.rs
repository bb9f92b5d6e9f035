//! Asynchronous events: a watcher thread per context notices when the
//! daemon closes the session (it died or dropped the client), marks the
//! context dead and queues `IBV_EVENT_DEVICE_FATAL` on `async_fd` (an
//! eventfd counting queued events, read by `ibv_get_async_event`). On a
//! dead context, the work requests still outstanding complete with
//! `IBV_WC_WR_FLUSH_ERR` (migros-verbs makes those of the QPs' queues,
//! the `srq` module those of receives posted to SRQs), then
//! polling the empty CQ and posting fail with EIO, so programs stop
//! instead of waiting for completions that never come.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use migros_verbs::Context;

use crate::context::{lock, Ctx};
use crate::sys::*;
use crate::util::set_errno;

/// How often the watcher looks at the session socket.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// What the context and its watcher share.
pub(crate) struct Async {
    /// The daemon closed the session.
    pub dead: AtomicBool,
    /// Queued events and whether the context is closed (then `fd` is gone).
    queue: Mutex<Queue>,
}

struct Queue {
    events: VecDeque<ibv_event_type>,
    closed: bool,
    /// The eventfd (`ibv_context.async_fd`).
    fd: libc::c_int,
}

impl Async {
    /// The shared state of a new context whose `async_fd` is `fd`, and its
    /// watcher thread (which ends within `WATCH_INTERVAL` of `close`).
    pub fn start(dev: &Context, fd: libc::c_int) -> Arc<Async> {
        let a = Arc::new(Async {
            dead: AtomicBool::new(false),
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                closed: false,
                fd,
            }),
        });
        let (shared, dev) = (a.clone(), dev.clone());
        // Without a watcher (no thread to be had) the context still works;
        // only the death of the daemon goes unnoticed.
        let _ = std::thread::Builder::new()
            .name("migros-async".into())
            .spawn(move || loop {
                std::thread::sleep(WATCH_INTERVAL);
                if lock(&shared.queue).closed {
                    return;
                }
                if dev.connection_lost() {
                    shared.dead.store(true, Ordering::Release);
                    shared.push(ibv_event_type_IBV_EVENT_DEVICE_FATAL);
                    return;
                }
            });
        a
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Queues an event and counts it on the eventfd.
    fn push(&self, event: ibv_event_type) {
        let mut q = lock(&self.queue);
        if q.closed {
            return;
        }
        q.events.push_back(event);
        let one: u64 = 1;
        // SAFETY: the eventfd is open while `closed` is false (ibv_close_device
        // sets it under this lock before closing the descriptor).
        unsafe { libc::write(q.fd, (&one as *const u64).cast(), 8) };
    }

    /// Called by `ibv_close_device` before it closes the eventfd.
    pub fn close(&self) {
        lock(&self.queue).closed = true;
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_get_async_event(
    context: *mut ibv_context,
    event: *mut ibv_async_event,
) -> libc::c_int {
    if context.is_null() || event.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: a live context (contract).
    let ctx = unsafe { Ctx::from_ibv(context) };
    let fd = ctx.vctx.context.async_fd;
    loop {
        let mut n: u64 = 0;
        // SAFETY: reading 8 bytes from the context's eventfd (a semaphore:
        // each read takes one event); blocks unless the program made the
        // descriptor non-blocking, as with libibverbs.
        let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
        if r == 8 {
            break;
        }
        // SAFETY: reading the calling thread's errno.
        let e = unsafe { *libc::__errno_location() };
        if r < 0 && e == libc::EINTR {
            continue;
        }
        return -1;
    }
    let Some(t) = lock(&ctx.events.queue).events.pop_front() else {
        set_errno(libc::EAGAIN);
        return -1;
    };
    // SAFETY: a writable event (contract); all-zero is a valid event.
    unsafe {
        *event = core::mem::zeroed();
        (*event).element.port_num = 1;
        (*event).event_type = t;
    }
    0
}

#[no_mangle]
pub extern "C" fn ibv_ack_async_event(_event: *mut ibv_async_event) {}
