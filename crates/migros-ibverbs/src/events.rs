//! Asynchronous events: a watcher thread per context reads the session's
//! asynchronous events from a channel subscribed to them (QP_FATAL,
//! QP_REQ_ERR, QP_ACCESS_ERR, COMM_EST, SQ_DRAINED, SRQ_LIMIT_REACHED,
//! QP_LAST_WQE_REACHED, CQ_ERR, PORT_ACTIVE, PORT_ERR) and queues them on
//! `async_fd` (an eventfd counting queued events, read by
//! `ibv_get_async_event`, which names the QP, CQ or SRQ by its pointer;
//! an event for an object destroyed meanwhile is dropped). The watcher
//! also notices when the daemon closes the session (it died or dropped
//! the client), marks the context dead and queues
//! `IBV_EVENT_DEVICE_FATAL`. On a dead context, the work requests still
//! outstanding complete with `IBV_WC_WR_FLUSH_ERR` (migros-verbs makes
//! those of the QPs' queues, the `srq` module those of receives posted to
//! SRQs), then polling the empty CQ and posting fail with EIO, so programs
//! stop instead of waiting for completions that never come.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use migros_verbs::{AsyncEvent, AsyncKind, Context};

use crate::context::{lock, Ctx};
use crate::sys::*;
use crate::util::set_errno;

/// How often the watcher looks at the session socket.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);

/// What the context and its watcher share.
pub(crate) struct Async {
    /// The daemon closed the session.
    pub dead: AtomicBool,
    /// The port is down: a PORT_ERR came (or the device was down when
    /// the context opened) and no PORT_ACTIVE since.
    port_down: AtomicBool,
    /// Queued events and whether the context is closed (then `fd` is gone).
    queue: Mutex<Queue>,
}

/// What an event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Qp(u32),
    Cq(u32),
    Srq(u32),
    Port,
}

struct Queue {
    events: VecDeque<(ibv_event_type, Element)>,
    closed: bool,
    /// The eventfd (`ibv_context.async_fd`).
    fd: libc::c_int,
}

impl Async {
    /// The shared state of a new context whose `async_fd` is `fd`, and its
    /// watcher thread (which ends within `WATCH_INTERVAL` of `close`).
    /// Without a channel for the events (the daemon refused one) only the
    /// daemon's death is reported.
    pub fn start(dev: &Context, fd: libc::c_int) -> Arc<Async> {
        let a = Arc::new(Async {
            dead: AtomicBool::new(false),
            port_down: AtomicBool::new(!dev.device().port_active),
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                closed: false,
                fd,
            }),
        });
        let channel = dev
            .create_comp_channel()
            .and_then(|c| c.subscribe_async().map(|()| c))
            .ok();
        let (shared, dev) = (a.clone(), dev.clone());
        // Without a watcher (no thread to be had) the context still works;
        // only its asynchronous events go unreported.
        let _ = std::thread::Builder::new()
            .name("migros-async".into())
            .spawn(move || loop {
                let got = channel
                    .as_ref()
                    .map(|c| c.get_async_event_timeout(WATCH_INTERVAL));
                match got {
                    Some(Ok(Some(ev))) => {
                        match ev.kind {
                            AsyncKind::PortErr => shared.port_down.store(true, Ordering::Release),
                            AsyncKind::PortActive => {
                                shared.port_down.store(false, Ordering::Release)
                            }
                            _ => {}
                        }
                        shared.push(event_of(ev))
                    }
                    Some(Ok(None)) => {}
                    // No channel, or it broke: the connection check below.
                    None | Some(Err(_)) => std::thread::sleep(WATCH_INTERVAL),
                }
                if lock(&shared.queue).closed {
                    return;
                }
                if dev.connection_lost() {
                    shared.dead.store(true, Ordering::Release);
                    shared.push((ibv_event_type_IBV_EVENT_DEVICE_FATAL, Element::Port));
                    return;
                }
            });
        a
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// The port's state as the events last told it.
    pub fn port_active(&self) -> bool {
        !self.port_down.load(Ordering::Acquire)
    }

    /// Queues an event and counts it on the eventfd.
    fn push(&self, event: (ibv_event_type, Element)) {
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
        if let Err(e) = take_one(fd) {
            set_errno(e);
            return -1;
        }
        let Some((t, element)) = lock(&ctx.events.queue).events.pop_front() else {
            set_errno(libc::EAGAIN);
            return -1;
        };
        // The object the event names, by its pointer; an event for one
        // destroyed meanwhile is dropped (its count was taken above).
        // SAFETY: all-zero is a valid element (a null pointer, port 0).
        let mut el: ibv_async_event__bindgen_ty_1 = unsafe { core::mem::zeroed() };
        let found = match element {
            Element::Port => {
                el.port_num = 1;
                true
            }
            Element::Qp(n) => lock(&ctx.qps)
                .get(&n)
                .map(|&p| el.qp = p as *mut ibv_qp)
                .is_some(),
            Element::Cq(n) => lock(&ctx.cqs)
                .get(&n)
                .map(|&p| el.cq = p as *mut ibv_cq)
                .is_some(),
            Element::Srq(n) => lock(&ctx.srqs)
                .get(&n)
                .map(|&p| el.srq = p as *mut ibv_srq)
                .is_some(),
        };
        if !found {
            continue;
        }
        // SAFETY: a writable event (contract).
        unsafe {
            (*event).element = el;
            (*event).event_type = t;
        }
        return 0;
    }
}

/// Takes one event's count from the context's eventfd (a semaphore: each
/// read takes one); blocks unless the program made the descriptor
/// non-blocking, as with libibverbs. The errno of a failure.
fn take_one(fd: libc::c_int) -> Result<(), i32> {
    loop {
        let mut n: u64 = 0;
        // SAFETY: reading 8 bytes from the context's eventfd.
        let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
        if r == 8 {
            return Ok(());
        }
        // SAFETY: reading the calling thread's errno.
        let e = unsafe { *libc::__errno_location() };
        if r < 0 && e == libc::EINTR {
            continue;
        }
        return Err(e);
    }
}

/// The libibverbs form of a daemon's asynchronous event.
fn event_of(ev: AsyncEvent) -> (ibv_event_type, Element) {
    let n = ev.element;
    let element = match ev.kind {
        AsyncKind::CqErr => Element::Cq(n),
        AsyncKind::SrqLimitReached => Element::Srq(n),
        AsyncKind::PortActive | AsyncKind::PortErr => Element::Port,
        AsyncKind::QpFatal
        | AsyncKind::QpReqErr
        | AsyncKind::QpAccessErr
        | AsyncKind::CommEst
        | AsyncKind::SqDrained
        | AsyncKind::QpLastWqeReached => Element::Qp(n),
    };
    (ev.kind as ibv_event_type, element)
}

#[no_mangle]
pub extern "C" fn ibv_ack_async_event(_event: *mut ibv_async_event) {}
