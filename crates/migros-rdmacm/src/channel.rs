//! Event channels as programs see them: `rdma_event_channel.fd` is an
//! eventfd counting the events waiting (a semaphore), so `poll(2)` on it
//! works and the program's `O_NONBLOCK` decides whether
//! `rdma_get_cm_event` blocks or fails with EAGAIN, as with the kernel's
//! `rdma_cm` file. The events themselves wait in a queue next to it, put
//! there by the daemon connections' reader threads and by the library
//! itself (address and route resolution).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use migros_proto::cm::CmEvent;
use migros_rdma_sys::eventfd;

use crate::sys::rdma_event_channel;
use crate::util::lock;

/// What the library itself reports (no daemon involved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    AddrResolved,
    AddrError(i32),
    RouteResolved,
    DeviceRemoval,
}

/// An event waiting in a channel, for the id with handle `id`.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Cm { id: u64, dev: usize, ev: CmEvent },
    Local { id: u64, ev: Local },
}

impl Item {
    pub fn id(&self) -> u64 {
        match self {
            Item::Cm { id, .. } | Item::Local { id, .. } => *id,
        }
    }
}

pub(crate) struct Channel {
    pub fd: RawFd,
    queue: Mutex<VecDeque<Item>>,
}

/// What an `rdma_event_channel *` points to.
#[repr(C)]
pub(crate) struct ChannelBlock {
    /// First, so the block's address is the C struct's.
    pub c: rdma_event_channel,
    pub inner: Arc<Channel>,
}

impl Channel {
    /// A channel with its eventfd; errno on failure.
    pub fn new() -> Result<Arc<Channel>, i32> {
        // Closed by Drop. Blocking by default, as the kernel's rdma_cm
        // file.
        let fd = eventfd::semaphore()?;
        Ok(Arc::new(Channel {
            fd,
            queue: Mutex::new(VecDeque::new()),
        }))
    }

    /// Queues an event and counts it on the eventfd.
    pub fn push(&self, item: Item) {
        lock(&self.queue).push_back(item);
        // The eventfd is open until Drop.
        eventfd::add(self.fd, 1);
    }

    /// The next event: blocks unless the program made the descriptor
    /// non-blocking (then EAGAIN when none waits).
    pub fn pop(&self) -> Result<Item, i32> {
        loop {
            // The eventfd is open until Drop.
            eventfd::take(self.fd)?;
            if let Some(item) = lock(&self.queue).pop_front() {
                return Ok(item);
            }
        }
    }

    /// Takes the waiting events of id `id` (it moves to another channel).
    pub fn take(&self, id: u64) -> Vec<Item> {
        let mut q = lock(&self.queue);
        let (mine, rest): (Vec<Item>, Vec<Item>) = q.drain(..).partition(|i| i.id() == id);
        q.extend(rest);
        mine
    }

    /// Drops the waiting events of id `id` (it is being destroyed) and
    /// returns them; their counts stay on the eventfd and are skipped
    /// when read.
    pub fn forget(&self, id: u64) -> Vec<Item> {
        self.take(id)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: the eventfd opened by `new`, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// The channel behind a C pointer.
///
/// # Safety
/// `c` came from `rdma_create_event_channel` and is not destroyed.
pub(crate) unsafe fn from_c<'a>(c: *mut rdma_event_channel) -> &'a ChannelBlock {
    // SAFETY: channel pointers are ChannelBlocks (caller).
    unsafe { &*c.cast::<ChannelBlock>() }
}

/// A new C channel (leaked block, freed by `free_c`).
pub(crate) fn new_c() -> Result<*mut rdma_event_channel, i32> {
    let inner = Channel::new()?;
    let fd = inner.fd;
    let b = Box::new(ChannelBlock {
        c: rdma_event_channel { fd },
        inner,
    });
    Ok(Box::into_raw(b).cast())
}

/// Frees a C channel made by `new_c`.
///
/// # Safety
/// `c` came from `new_c` and is not used again.
pub(crate) unsafe fn free_c(c: *mut rdma_event_channel) {
    // SAFETY: the block made by new_c (caller).
    drop(unsafe { Box::from_raw(c.cast::<ChannelBlock>()) });
}
