//! The context block: `verbs_context` (with the embedded `ibv_context`
//! programs see) followed by the migros session, and the dispatch tables
//! the inline functions of verbs.h call through.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use migros_verbs::Context;

use crate::device::Device;
use crate::events::Async;
use crate::srq::SrqQps;
use crate::sys::*;
use crate::util::null_errno;
use crate::{cq, cqx, device, mw, post, qpx, srq};

/// What `ibv_open_device` returns a pointer into (`&vctx.context`).
#[repr(C)]
pub(crate) struct Ctx {
    /// First, so the block's address is the `verbs_context`'s.
    pub vctx: verbs_context,
    pub dev: Context,
    /// CQ handle → CQ block, for `ibv_get_cq_event` and async events.
    pub cqs: Mutex<BTreeMap<u32, usize>>,
    /// QP number → QP block, for async events.
    pub qps: Mutex<BTreeMap<u32, usize>>,
    /// SRQ handle → SRQ block, for async events.
    pub srqs: Mutex<BTreeMap<u32, usize>>,
    /// Asynchronous events and whether the daemon is gone.
    pub events: Arc<Async>,
    /// The QPs taking receives from SRQs (their flush when the daemon dies).
    pub srq_qps: SrqQps,
}

impl Ctx {
    /// Whether the daemon of a live context closed the session.
    ///
    /// # Safety
    /// As [`Ctx::from_ibv`].
    pub unsafe fn dead(ctx: *mut ibv_context) -> bool {
        // SAFETY: as from_ibv (caller).
        unsafe { Ctx::from_ibv(ctx) }.events.is_dead()
    }

    /// The block of a context pointer this library handed out.
    ///
    /// # Safety
    /// `ctx` must come from [`ibv_open_device`] and not be closed.
    pub unsafe fn from_ibv<'a>(ctx: *mut ibv_context) -> &'a Ctx {
        let at = core::mem::offset_of!(verbs_context, context);
        // SAFETY: `ctx` is `&vctx.context` of a live `Ctx` (caller), and
        // `vctx` is the block's first field.
        unsafe { &*(ctx.cast::<u8>().sub(at).cast::<Ctx>()) }
    }
}

/// Locks a mutex, going on with the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[no_mangle]
pub unsafe extern "C" fn ibv_open_device(device: *mut ibv_device) -> *mut ibv_context {
    if device.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: device pointers handed out by ibv_get_device_list are
    // `Device` blocks that live as long as the process.
    let d = unsafe { &*device.cast::<Device>() };
    let dev = match Context::open_in(&d.dir, &d.name) {
        Ok(c) => c,
        Err(e) => return null_errno(e.errno()),
    };
    // SAFETY: all-zero is a valid verbs_context (null pointers, `None`
    // ops, a PTHREAD_MUTEX_INITIALIZER mutex on glibc).
    let mut vctx: verbs_context = unsafe { core::mem::zeroed() };
    vctx.sz = core::mem::size_of::<verbs_context>();
    vctx.query_port = Some(device::query_port_ex);
    vctx.query_device_ex = Some(device::query_device_ex);
    vctx.create_cq_ex = Some(cqx::create_cq_ex);
    vctx.create_qp_ex = Some(qpx::create_qp_ex);
    vctx.create_srq_ex = Some(srq::create_srq_ex);
    let c = &mut vctx.context;
    c.device = device;
    c.cmd_fd = -1;
    // SAFETY: plain system call; the descriptor is closed by ibv_close_device.
    // A semaphore counting queued async events; blocking, as libibverbs'.
    c.async_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE) };
    let events = Async::start(&dev, c.async_fd);
    c.num_comp_vectors = 1;
    c.abi_compat = usize::MAX as *mut libc::c_void;
    let ops = &mut c.ops;
    ops.poll_cq = Some(cq::poll_cq);
    ops.req_notify_cq = Some(cq::req_notify_cq);
    ops.post_send = Some(post::post_send);
    ops.post_recv = Some(post::post_recv);
    ops.post_srq_recv = Some(post::post_srq_recv);
    ops.alloc_mw = Some(mw::alloc_mw);
    ops.dealloc_mw = Some(mw::dealloc_mw);
    ops.bind_mw = Some(mw::bind_mw);
    let block = Box::into_raw(Box::new(Ctx {
        vctx,
        dev,
        cqs: Mutex::new(BTreeMap::new()),
        qps: Mutex::new(BTreeMap::new()),
        srqs: Mutex::new(BTreeMap::new()),
        events,
        srq_qps: SrqQps::default(),
    }));
    // SAFETY: `block` was just allocated; the context lives inside it.
    unsafe { &mut (*block).vctx.context }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_close_device(context: *mut ibv_context) -> libc::c_int {
    if context.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: the context came from ibv_open_device (contract); the block
    // was made by Box::into_raw there and is released once, here.
    let block = unsafe { Box::from_raw((Ctx::from_ibv(context) as *const Ctx).cast_mut()) };
    block.events.close();
    if block.vctx.context.async_fd >= 0 {
        // SAFETY: the descriptor was opened by ibv_open_device.
        unsafe { libc::close(block.vctx.context.async_fd) };
    }
    drop(block);
    0
}
