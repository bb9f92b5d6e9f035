//! Completion queues and completion channels; `poll_cq` and
//! `req_notify_cq` are reached through the context's ops table.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use migros_verbs::{Cq as VCq, WorkCompletion};

use crate::channel::Feed;
use crate::context::{lock, Ctx};
use crate::sys::*;
use crate::util::{null_errno, set_errno};

/// What a CQ pointer points to (`ibv_cq_ex` starts with `ibv_cq`).
#[repr(C)]
pub(crate) struct Cq {
    pub cq: ibv_cq_ex,
    pub inner: VCq,
    /// The completion being read between `ibv_start_poll` and `ibv_end_poll`.
    pub current: Mutex<Option<crate::cqx::Current>>,
    /// How the program last armed the CQ (`ibv_req_notify_cq`'s
    /// `solicited_only`), to re-arm it the same way after a stale event.
    pub solicited_only: AtomicBool,
}

/// What a completion channel pointer points to.
#[repr(C)]
struct Channel {
    /// `fd` is the feed's eventfd.
    ch: ibv_comp_channel,
    feed: Arc<Feed>,
    /// How many CQs report to the channel (see `stale`).
    cqs: AtomicUsize,
}

/// # Safety
/// `cq` must come from `ibv_create_cq` and not be destroyed.
pub(crate) unsafe fn cq<'a>(cq: *mut ibv_cq) -> &'a Cq {
    // SAFETY: CQ pointers are Cq blocks (contract).
    unsafe { &*cq.cast::<Cq>() }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_comp_channel(
    context: *mut ibv_context,
) -> *mut ibv_comp_channel {
    if context.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: live context (contract).
    let ctx = unsafe { Ctx::from_ibv(context) };
    let feed = match ctx.dev.create_comp_channel() {
        Ok(inner) => match Feed::start(inner) {
            Ok(f) => f,
            Err(e) => return null_errno(e),
        },
        Err(e) => return null_errno(e.errno()),
    };
    let ch = ibv_comp_channel {
        context,
        fd: feed.fd,
        refcnt: 0,
    };
    Box::into_raw(Box::new(Channel {
        ch,
        feed,
        cqs: AtomicUsize::new(0),
    }))
    .cast()
}

#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_comp_channel(channel: *mut ibv_comp_channel) -> libc::c_int {
    if channel.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live channel (contract).
    if unsafe { &*channel.cast::<Channel>() }
        .cqs
        .load(Ordering::Acquire)
        > 0
    {
        // As libibverbs: a channel that CQs still report to stays.
        return libc::EBUSY;
    }
    // SAFETY: made by Box::into_raw in ibv_create_comp_channel, released once.
    let block = unsafe { Box::from_raw(channel.cast::<Channel>()) };
    block.feed.stop();
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_cq(
    context: *mut ibv_context,
    cqe: libc::c_int,
    cq_context: *mut libc::c_void,
    channel: *mut ibv_comp_channel,
    comp_vector: libc::c_int,
) -> *mut ibv_cq {
    if context.is_null() || cqe < 1 {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: live context and channel (contract).
    let ctx = unsafe { Ctx::from_ibv(context) };
    // As the kernel's create_cq (uverbs): a vector the device lacks is EINVAL.
    if comp_vector < 0 || comp_vector >= ctx.vctx.context.num_comp_vectors {
        return null_errno(libc::EINVAL);
    }
    let chan = chan_block(channel).map(|c| &c.feed.inner);
    let inner = match ctx.dev.create_cq(cqe as u32, chan) {
        Ok(c) => c,
        Err(e) => return null_errno(e.errno()),
    };
    // SAFETY: all-zero is a valid ibv_cq_ex (pointers, integers, `None`
    // ops, zero-initialised pthread objects).
    let mut cq: ibv_cq_ex = unsafe { core::mem::zeroed() };
    cq.context = context;
    cq.channel = channel;
    cq.cq_context = cq_context;
    cq.handle = inner.handle;
    cq.cqe = inner.entries() as libc::c_int;
    crate::cqx::set_ops(&mut cq);
    if let Some(ch) = chan_block(channel) {
        ch.cqs.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the program's view of the count (`ibv_comp_channel.refcnt`).
        unsafe { (*channel).refcnt += 1 };
    }
    let handle = inner.handle;
    let block = Box::into_raw(Box::new(Cq {
        cq,
        inner,
        current: Mutex::new(None),
        solicited_only: AtomicBool::new(false),
    }));
    lock(&ctx.cqs).insert(handle, block as usize);
    block.cast()
}

#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_cq(cq: *mut ibv_cq) -> libc::c_int {
    if cq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in ibv_create_cq, released once; its
    // context is still open (contract).
    let block = unsafe { Box::from_raw(cq.cast::<Cq>()) };
    // SAFETY: the CQ's context is open (contract).
    let ctx = unsafe { Ctx::from_ibv(block.cq.context) };
    // Under the registry's lock: a concurrent ibv_get_cq_event either has
    // finished with the block or will not find it (its pending events are
    // dropped). Unlike libibverbs this does not wait for the program to
    // acknowledge the events it got (ibv_ack_cq_events): nothing here
    // needs it, and a program that forgot would hang.
    let mut cqs = lock(&ctx.cqs);
    cqs.remove(&block.cq.handle);
    if let Some(ch) = chan_block(block.cq.channel) {
        ch.cqs.fetch_sub(1, Ordering::AcqRel);
        // SAFETY: as in ibv_create_cq.
        unsafe { (*block.cq.channel).refcnt -= 1 };
    }
    drop(block);
    drop(cqs);
    0
}

/// `ibv_resize_cq`: the CQ holds at least `cqe` completions from now on
/// (`cq->cqe` says how many); what was not polled yet stays. Fewer than
/// that, or more than `max_cqe`, is EINVAL (rxe's `rxe_cq_chk_attr`).
#[no_mangle]
pub unsafe extern "C" fn ibv_resize_cq(cq: *mut ibv_cq, cqe: libc::c_int) -> libc::c_int {
    if cq.is_null() || cqe < 1 {
        return libc::EINVAL;
    }
    // SAFETY: a live CQ block (contract); `cq.cqe` is its own field.
    let c = unsafe { &mut *cq.cast::<Cq>() };
    match c.inner.resize(cqe as u32) {
        Ok(()) => {
            c.cq.cqe = c.inner.entries() as libc::c_int;
            0
        }
        Err(e) => e.errno(),
    }
}

thread_local! {
    /// Completions taken from a ring, before conversion.
    static POLLED: RefCell<Vec<WorkCompletion>> = const { RefCell::new(Vec::new()) };
}

/// `ops.poll_cq`.
pub(crate) unsafe extern "C" fn poll_cq(
    cq: *mut ibv_cq,
    num_entries: libc::c_int,
    wc: *mut ibv_wc,
) -> libc::c_int {
    if cq.is_null() || num_entries < 0 || (num_entries > 0 && wc.is_null()) {
        return -libc::EINVAL;
    }
    // SAFETY: a live CQ (contract).
    let c = unsafe { self::cq(cq) };
    POLLED.with(|polled| {
        let mut polled = polled.borrow_mut();
        polled.clear();
        // SAFETY: the CQ's context is open (contract).
        match unsafe { take(&c.inner, c.cq.context, &mut polled, num_entries as usize) } {
            // An empty CQ of a context whose daemon is gone stays empty.
            Ok((0, true)) => -libc::EIO,
            Ok((n, _)) => {
                for (i, w) in polled.iter().take(n).enumerate() {
                    // SAFETY: the caller's array holds num_entries ≥ n entries.
                    unsafe { *wc.add(i) = to_ibv_wc(w) };
                }
                n as libc::c_int
            }
            Err(e) => -e.errno(),
        }
    })
}

/// Takes up to `max` completions of CQ `inner` into `out`: the ring's
/// (and, once the daemon is gone, migros-verbs' flushes of the QPs'
/// queues), then on a dead context the flushes of the SRQ receives
/// reported to this CQ (see `srq`). Accounts SRQ receives as it goes.
/// Also says whether the context was dead before the poll: then a short
/// count means the CQ is empty for good.
///
/// # Safety
/// `context` must be the CQ's open context.
pub(crate) unsafe fn take(
    inner: &VCq,
    context: *mut ibv_context,
    out: &mut Vec<WorkCompletion>,
    max: usize,
) -> migros_verbs::Result<(usize, bool)> {
    // SAFETY: the CQ's open context (caller).
    let ctx = unsafe { Ctx::from_ibv(context) };
    // Read first: the watcher marks the context dead only after
    // migros-verbs knows the connection is lost, so this poll already
    // hands out its flushes. (Reading it after the poll could see a death
    // the poll did not, and end the CQ before its flushes.)
    let dead = ctx.events.is_dead();
    let start = out.len();
    let n = inner.poll(out, max)?;
    ctx.srq_qps.account(&out[start..]);
    if n < max && dead {
        return Ok((n + ctx.srq_qps.flush(inner.handle, out, max - n), true));
    }
    Ok((n, dead))
}

/// `wc.sl` of a completion: for a receive that came with a GRH (UD), the
/// RoCE packet type in bits 2:0 as Mellanox devices report it there
/// (1: IPv6, 2: IPv4; 0, RoCE v1, never happens here), else 0. The device
/// has no service levels (RoCE's SL is an Ethernet priority, which no
/// receiver can rely on), and UCX (1.13, `uct_ud_iface_check_grh`) reads
/// the type from `sl & 7` to find the destination address in the 40-byte
/// GRH area: with 0 it compares the last 16 bytes of an IPv4 header with
/// its GIDs and drops every UD datagram (the kernel's rxe reports 0 and
/// has that problem; later UCX versions look at the GRH instead).
pub(crate) fn sl_of(w: &WorkCompletion) -> u8 {
    match w.src_addr {
        Some(std::net::IpAddr::V4(_)) => 2,
        Some(std::net::IpAddr::V6(_)) => 1,
        None => 0,
    }
}

/// A completion in the C layout.
pub(crate) fn to_ibv_wc(w: &WorkCompletion) -> ibv_wc {
    let mut flags = 0;
    let mut imm = 0u32;
    if let Some(v) = w.imm_data {
        flags |= ibv_wc_flags_IBV_WC_WITH_IMM;
        imm = v.to_be();
    }
    if let Some(k) = w.invalidated_rkey {
        flags |= ibv_wc_flags_IBV_WC_WITH_INV;
        imm = k;
    }
    if w.src_addr.is_some() {
        flags |= ibv_wc_flags_IBV_WC_GRH;
    }
    ibv_wc {
        wr_id: w.wr_id,
        status: w.status as u32,
        opcode: w.opcode as u32,
        vendor_err: 0,
        byte_len: w.byte_len,
        __bindgen_anon_1: ibv_wc__bindgen_ty_1 { imm_data: imm },
        qp_num: w.qp_num,
        src_qp: w.src_qp,
        wc_flags: flags,
        pkey_index: 0,
        slid: 0,
        sl: sl_of(w),
        dlid_path_bits: 0,
    }
}

/// `ops.req_notify_cq`.
pub(crate) unsafe extern "C" fn req_notify_cq(
    cq: *mut ibv_cq,
    solicited_only: libc::c_int,
) -> libc::c_int {
    if cq.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live CQ (contract).
    let c = unsafe { self::cq(cq) };
    c.solicited_only
        .store(solicited_only != 0, Ordering::Relaxed);
    match c.inner.req_notify(solicited_only != 0) {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_get_cq_event(
    channel: *mut ibv_comp_channel,
    cq: *mut *mut ibv_cq,
    cq_context: *mut *mut libc::c_void,
) -> libc::c_int {
    if channel.is_null() || cq.is_null() || cq_context.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: a live channel (contract).
    let ch = unsafe { &*channel.cast::<Channel>() };
    loop {
        let handle = match ch.feed.next() {
            Ok(h) => h,
            Err(e) => {
                set_errno(e);
                return -1;
            }
        };
        // SAFETY: the channel's context is open (contract).
        let ctx = unsafe { Ctx::from_ibv(ch.ch.context) };
        // Held until the block is no longer used: ibv_destroy_cq waits.
        let cqs = lock(&ctx.cqs);
        let Some(&block) = cqs.get(&handle) else {
            // An event for a CQ destroyed meanwhile.
            continue;
        };
        let block = block as *mut Cq;
        // SAFETY: a registered CQ block is live until ibv_destroy_cq
        // removes it under this lock.
        if ch.cqs.load(Ordering::Acquire) == 1 && unsafe { stale(&*block) } {
            continue;
        }
        // SAFETY: as above; the out pointers are writable (contract).
        unsafe {
            *cq = block.cast();
            *cq_context = (*block).cq.cq_context;
        }
        return 0;
    }
}

/// The channel block of a CQ's channel pointer.
fn chan_block<'a>(channel: *mut ibv_comp_channel) -> Option<&'a Channel> {
    // SAFETY: a non-null channel of a live CQ is a live Channel block
    // (contract: a channel outlives its CQs).
    (!channel.is_null()).then(|| unsafe { &*channel.cast::<Channel>() })
}

/// Whether an event for `c` is stale: its completion was already taken
/// by a poll after the CQ had been re-armed (the event of a completion
/// that arrived between `ibv_req_notify_cq` and the program's poll; the
/// arm is a round trip to the daemon, so this window is wider than on a
/// NIC). Programs poll after each event and some (`ibv_rc_pingpong -t
/// -e`) treat an empty CQ as an error, so such an event is dropped; the
/// CQ, disarmed by it, is armed again as the program had it, and if a
/// completion slipped in meanwhile the event is delivered after all.
/// Only on a channel with one CQ: programs sharing a channel between CQs
/// (perftest's latency tests) count events across them and need every one.
fn stale(c: &Cq) -> bool {
    if c.inner.has_completion() {
        return false;
    }
    match c.inner.req_notify(c.solicited_only.load(Ordering::Relaxed)) {
        Ok(()) => !c.inner.has_completion(),
        // A context whose daemon is gone: deliver, the poll reports it.
        Err(_) => false,
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_ack_cq_events(cq: *mut ibv_cq, nevents: libc::c_uint) {
    if cq.is_null() {
        return;
    }
    // SAFETY: a live CQ; the counter is only informative here (nothing
    // waits for it, see ibv_destroy_cq).
    unsafe {
        let n = core::ptr::addr_of_mut!((*cq).comp_events_completed);
        *n = (*n).wrapping_add(nevents);
    }
}
