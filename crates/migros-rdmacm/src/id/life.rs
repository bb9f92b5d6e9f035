//! Event channels and the life of an id: `rdma_create_event_channel`,
//! `rdma_create_id` (and `rdma_create_ep`'s ids of any QP type),
//! `rdma_destroy_id` (its connection, listens and bindings go, its queued
//! events are dropped, it waits for the events handed out to be
//! acknowledged) and `rdma_migrate_id` (to another channel, with its
//! waiting events).

use migros_proto::cm::{CmEvent, CmRequest, PortSpace};

use super::addr::unbind_all;
use super::{block, qp_type_of, request, IdBlock};
use crate::channel;
use crate::device;
use crate::registry;
use crate::sys::*;
use crate::util::{self, fail, lock};

#[no_mangle]
pub unsafe extern "C" fn rdma_create_event_channel() -> *mut rdma_event_channel {
    if let Err(e) = device::init() {
        util::set_errno(e);
        return core::ptr::null_mut();
    }
    match channel::new_c() {
        Ok(c) => c,
        Err(e) => {
            util::set_errno(e);
            core::ptr::null_mut()
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_event_channel(channel: *mut rdma_event_channel) {
    if !channel.is_null() {
        // SAFETY: a channel of this library (contract).
        unsafe { channel::free_c(channel) };
    }
}

fn create(
    channel: *mut rdma_event_channel,
    id: *mut *mut rdma_cm_id,
    context: *mut libc::c_void,
    ps: PortSpace,
    qp_type: ibv_qp_type,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    if let Err(e) = device::init() {
        return fail(e);
    }
    let b = match IdBlock::new(channel, context, ps, qp_type) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let h = registry::insert(b);
    // SAFETY: the block just made; `id` checked non-null.
    unsafe {
        (*b).handle = h;
        *id = b.cast();
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_create_id(
    channel: *mut rdma_event_channel,
    id: *mut *mut rdma_cm_id,
    context: *mut libc::c_void,
    ps: rdma_port_space,
) -> libc::c_int {
    let Some(ps) = PortSpace::from_raw(ps) else {
        return fail(libc::EINVAL);
    };
    create(channel, id, context, ps, qp_type_of(ps))
}

/// `rdma_create_id2` (what `rdma_create_ep` uses): any QP type.
pub(crate) fn create_with_type(
    id: *mut *mut rdma_cm_id,
    ps: PortSpace,
    qp_type: ibv_qp_type,
) -> libc::c_int {
    create(
        core::ptr::null_mut(),
        id,
        core::ptr::null_mut(),
        ps,
        qp_type,
    )
}

#[no_mangle]
pub unsafe extern "C" fn rdma_destroy_id(id: *mut rdma_cm_id) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    let (conn, listens, binds, chan, sync) = {
        let mut p = lock(&b.p);
        p.destroying = true;
        (
            p.conn.take(),
            std::mem::take(&mut p.listens),
            std::mem::take(&mut p.binds),
            p.chan.clone(),
            p.sync,
        )
    };
    if let Some((d, c)) = conn {
        if let Some(dev) = device::get(d) {
            let _ = request(&dev, &CmRequest::Destroy { conn: c });
        }
        registry::drop_conn(d, c);
    }
    for (d, l) in listens {
        if let Some(dev) = device::get(d) {
            let _ = request(&dev, &CmRequest::Unlisten { listen: l });
        }
    }
    unbind_all(&binds);
    // As the kernel drops a destroyed id's queued events: nobody sees
    // them, nobody acknowledges them.
    for item in chan.forget(b.handle) {
        // A listener's connection requests nobody saw: their new ids go
        // too (the daemon rejects the REQ).
        if let channel::Item::Cm {
            dev,
            ev: CmEvent::ConnectRequest { conn, .. } | CmEvent::SidrRequest { conn, .. },
            ..
        } = item
        {
            if let Some(child) = registry::conn_owner(dev, conn).and_then(registry::get) {
                // SAFETY: a registered id nobody was told of.
                unsafe { rdma_destroy_id(child.cast()) };
            }
        }
    }
    if !b.id.event.is_null() {
        // The event a synchronous call kept; acknowledged while the id is
        // still registered, so it counts.
        // SAFETY: the event the id kept.
        unsafe { crate::event::rdma_ack_cm_event(b.id.event) };
        b.id.event = core::ptr::null_mut();
    }
    {
        let mut p = lock(&b.p);
        while p.completed < p.reported {
            p =
                b.cv.wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
    registry::remove(b.handle);
    if sync {
        // SAFETY: the private channel made for this id.
        unsafe { channel::free_c(b.id.channel) };
    }
    // SAFETY: the block made by IdBlock::new; unregistered, no event left.
    drop(unsafe { Box::from_raw(id.cast::<IdBlock>()) });
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_migrate_id(
    id: *mut rdma_cm_id,
    channel: *mut rdma_event_channel,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    let was_sync = lock(&b.p).sync;
    if was_sync && channel.is_null() {
        return fail(libc::EINVAL);
    }
    let (new_ptr, sync) = if channel.is_null() {
        match channel::new_c() {
            Ok(c) => (c, true),
            Err(e) => return fail(e),
        }
    } else {
        (channel, false)
    };
    // SAFETY: a live channel.
    let new_chan = unsafe { channel::from_c(new_ptr) }.inner.clone();
    let old_ptr = b.id.channel;
    if was_sync && !b.id.event.is_null() {
        // SAFETY: the event the id kept.
        unsafe { crate::event::rdma_ack_cm_event(b.id.event) };
        b.id.event = core::ptr::null_mut();
    }
    let old_chan = {
        let mut p = lock(&b.p);
        let old = std::mem::replace(&mut p.chan, new_chan.clone());
        p.sync = sync;
        old
    };
    b.id.channel = new_ptr;
    // Events already waiting for the id move with it.
    for item in old_chan.take(b.handle) {
        new_chan.push(item);
    }
    if was_sync {
        // SAFETY: the old private channel of this id.
        unsafe { channel::free_c(old_ptr) };
    }
    let mut p = lock(&b.p);
    while p.completed < p.reported {
        p =
            b.cv.wait(p)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    0
}
