//! `rdma_get_cm_event` and `rdma_ack_cm_event`: events as librdmacm hands
//! them out, with the work it does on the way (as its `rdma_get_cm_event`
//! does): a connection request becomes a new id; a REP on an id with a QP
//! moves the QP to RTR and RTS, sends the RTU and is reported as
//! ESTABLISHED (without a QP: CONNECT_RESPONSE, the application calls
//! `rdma_establish`); a REJ moves the QP to the error state.
//!
//! Each event is a heap block starting with the C struct, holding the
//! private data it points to; `rdma_ack_cm_event` frees it and counts the
//! event as acknowledged for `rdma_destroy_id`.

use std::sync::Arc;

use migros_proto::cm::{CmEvent, ConnInfo};

use crate::channel::{self, Item, Local};
use crate::device;
use crate::id::{self, block, IdBlock, St};
use crate::qp;
use crate::registry;
use crate::sys::*;
use crate::util::{fail, lock};

/// What an `rdma_cm_event *` points to.
#[repr(C)]
struct EventBlock {
    /// First, so the block's address is the C struct's.
    ev: rdma_cm_event,
    private_data: [u8; 256],
    /// The id whose count the acknowledgement completes.
    counted: u64,
}

fn event_block(counted: u64, id: *mut rdma_cm_id) -> Box<EventBlock> {
    // SAFETY: all-zero is a valid rdma_cm_event (NULL pointers, zeros).
    let mut b = Box::new(EventBlock {
        ev: unsafe { core::mem::zeroed() },
        private_data: [0; 256],
        counted,
    });
    b.ev.id = id;
    b
}

/// Points the event's connection parameters at `pd` (copied into the
/// block) and fills the rest from a REQ or REP.
fn set_conn(e: &mut EventBlock, pd: &[u8], info: Option<&ConnInfo>) {
    let n = pd.len().min(255);
    e.private_data[..n].copy_from_slice(&pd[..n]);
    // SAFETY: writing the `conn` member of the parameter union.
    let c = unsafe { e.ev.param.conn.as_mut() };
    if n > 0 {
        c.private_data = e.private_data.as_ptr().cast();
        c.private_data_len = n as u8;
    }
    if let Some(i) = info {
        c.responder_resources = i.responder_resources;
        c.initiator_depth = i.initiator_depth;
        c.flow_control = u8::from(i.flow_control);
        c.retry_count = i.retry_count;
        c.rnr_retry_count = i.rnr_retry_count;
        c.srq = u8::from(i.srq);
        c.qp_num = i.remote_qpn;
    }
}

fn set_ud_pd(e: &mut EventBlock, pd: &[u8]) {
    let n = pd.len().min(255);
    e.private_data[..n].copy_from_slice(&pd[..n]);
    // SAFETY: writing the `ud` member of the parameter union.
    let u = unsafe { e.ev.param.ud.as_mut() };
    if n > 0 {
        u.private_data = e.private_data.as_ptr().cast();
        u.private_data_len = n as u8;
    }
}

/// What to do with a popped item.
enum Outcome {
    Deliver(Box<EventBlock>),
    /// Not for the application (counted nowhere); take the next.
    Skip,
}

#[no_mangle]
pub unsafe extern "C" fn rdma_get_cm_event(
    channel: *mut rdma_event_channel,
    event: *mut *mut rdma_cm_event,
) -> libc::c_int {
    if let Err(e) = device::init() {
        return fail(e);
    }
    if event.is_null() || channel.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live channel (contract).
    let chan = unsafe { channel::from_c(channel) }.inner.clone();
    loop {
        let item = match chan.pop() {
            Ok(i) => i,
            Err(e) => return fail(e),
        };
        let Some(bp) = registry::get(item.id()) else {
            continue;
        };
        // SAFETY: a registered id is live.
        let b = unsafe { &mut *bp };
        let (here, destroying) = {
            let p = lock(&b.p);
            (p.chan.clone(), p.destroying)
        };
        if destroying {
            continue;
        }
        if !Arc::ptr_eq(&here, &chan) {
            // The id moved to another channel (rdma_migrate_id).
            here.push(item);
            continue;
        }
        match process(b, item) {
            Outcome::Skip => continue,
            Outcome::Deliver(e) => {
                let counted = e.counted;
                if let Some(cp) = registry::get(counted) {
                    // SAFETY: a registered id is live.
                    lock(&unsafe { &*cp }.p).reported += 1;
                }
                let p = Box::into_raw(e);
                // SAFETY: `event` checked non-null; the block outlives the ack.
                unsafe { *event = p.cast() };
                return 0;
            }
        }
    }
}

fn process(b: &mut IdBlock, item: Item) -> Outcome {
    let me: *mut rdma_cm_id = (b as *mut IdBlock).cast();
    let mut e = event_block(b.handle, me);
    match item {
        Item::Local { ev, .. } => {
            let (kind, status) = match ev {
                Local::AddrResolved => (rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED, 0),
                Local::AddrError(s) => (rdma_cm_event_type_RDMA_CM_EVENT_ADDR_ERROR, s),
                Local::RouteResolved => (rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_RESOLVED, 0),
                Local::DeviceRemoval => (rdma_cm_event_type_RDMA_CM_EVENT_DEVICE_REMOVAL, 0),
            };
            e.ev.event = kind;
            e.ev.status = status;
            Outcome::Deliver(e)
        }
        Item::Cm { dev, ev, .. } => cm_event(b, dev, ev, e),
    }
}

fn cm_event(b: &mut IdBlock, dev: usize, ev: CmEvent, mut e: Box<EventBlock>) -> Outcome {
    match ev {
        CmEvent::ConnectRequest { conn, info, .. } => {
            let Some(np) = registry_child(dev, conn) else {
                return Outcome::Skip;
            };
            // SAFETY: the child id made by the reader thread, registered.
            let n = unsafe { &mut *np };
            let Some(d) = device::get(dev) else {
                return Outcome::Skip;
            };
            n.attach(&d);
            n.set_src(info.local);
            n.set_dst(info.peer);
            n.set_path(
                info.path_mtu,
                info.hop_limit,
                info.traffic_class,
                info.ack_timeout.saturating_sub(1),
                info.remote_gid,
            );
            let sync = lock(&b.p).sync;
            {
                let mut p = lock(&n.p);
                p.st = St::Connect;
                p.conn = Some((dev, conn));
                p.initiator_depth = info.initiator_depth;
                p.responder_resources = info.responder_resources;
                p.info = Some(info.clone());
            }
            if sync {
                // SAFETY: a live id; a new private channel for it.
                unsafe { id::rdma_migrate_id(np.cast(), core::ptr::null_mut()) };
            }
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST;
            e.ev.id = np.cast();
            e.ev.listen_id = (b as *mut IdBlock).cast();
            set_conn(&mut e, &info.private_data, Some(&info));
            Outcome::Deliver(e)
        }
        CmEvent::SidrRequest {
            conn,
            local,
            peer,
            private_data,
            ..
        } => {
            let Some(np) = registry_child(dev, conn) else {
                return Outcome::Skip;
            };
            // SAFETY: as above.
            let n = unsafe { &mut *np };
            let Some(d) = device::get(dev) else {
                return Outcome::Skip;
            };
            n.attach(&d);
            n.set_src(local);
            n.set_dst(peer);
            let sync = lock(&b.p).sync;
            {
                let mut p = lock(&n.p);
                p.st = St::Connect;
                p.conn = Some((dev, conn));
            }
            if sync {
                // SAFETY: as above.
                unsafe { id::rdma_migrate_id(np.cast(), core::ptr::null_mut()) };
            }
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST;
            e.ev.id = np.cast();
            e.ev.listen_id = (b as *mut IdBlock).cast();
            set_ud_pd(&mut e, &private_data);
            Outcome::Deliver(e)
        }
        CmEvent::ConnectResponse { info, .. } => {
            lock(&b.p).info = Some(info.clone());
            set_conn(&mut e, &info.private_data, Some(&info));
            let qp = b.id.qp;
            if qp.is_null() {
                e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_RESPONSE;
                return Outcome::Deliver(e);
            }
            // ucma_process_conn_resp: the QP to RTR and RTS, then the RTU.
            let r = {
                let p = lock(&b.p);
                // SAFETY: the id's live QP.
                unsafe { qp::connect(qp, &p, None, None) }
            }
            .and_then(|()| id::establish(b));
            match r {
                Ok(()) => e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED,
                Err(err) => {
                    // SAFETY: the id's live QP.
                    unsafe { qp::to_error(qp) };
                    crate::util::set_errno(err);
                    e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR;
                    e.ev.status = -1;
                    lock(&b.p).connect_error = true;
                }
            }
            Outcome::Deliver(e)
        }
        CmEvent::Established { .. } => {
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED;
            Outcome::Deliver(e)
        }
        CmEvent::Rejected {
            reason,
            private_data,
            ..
        } => {
            if lock(&b.p).connect_error {
                return Outcome::Skip;
            }
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_REJECTED;
            e.ev.status = i32::from(reason);
            set_conn(&mut e, &private_data, None);
            // SAFETY: the id's QP or NULL.
            unsafe { qp::to_error(b.id.qp) };
            Outcome::Deliver(e)
        }
        CmEvent::Unreachable { status, .. } => {
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_UNREACHABLE;
            e.ev.status = status;
            Outcome::Deliver(e)
        }
        CmEvent::Disconnected { status, .. } => {
            let mut p = lock(&b.p);
            if p.connect_error {
                return Outcome::Skip;
            }
            p.st = St::Disconnect;
            drop(p);
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED;
            e.ev.status = status;
            Outcome::Deliver(e)
        }
        CmEvent::TimewaitExit { .. } => {
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_TIMEWAIT_EXIT;
            Outcome::Deliver(e)
        }
        CmEvent::SidrResolved {
            qpn,
            qkey,
            peer_gid,
            hop_limit,
            traffic_class,
            private_data,
            ..
        } => {
            e.ev.event = rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED;
            set_ud_pd(&mut e, &private_data);
            // SAFETY: writing the `ud` member of the parameter union.
            let u = unsafe { e.ev.param.ud.as_mut() };
            let info = ConnInfo {
                local: "0.0.0.0:0".parse().expect("literal"),
                peer: "0.0.0.0:0".parse().expect("literal"),
                remote_qpn: qpn,
                rq_psn: 0,
                sq_psn: 0,
                path_mtu: 0,
                responder_resources: 0,
                initiator_depth: 0,
                flow_control: false,
                retry_count: 0,
                rnr_retry_count: 0,
                srq: false,
                remote_gid: peer_gid,
                hop_limit,
                traffic_class,
                flow_label: 0,
                sl: 0,
                ack_timeout: 0,
                private_data: Vec::new(),
            };
            qp::set_ah(&mut u.ah_attr, &info);
            u.qp_num = qpn;
            u.qkey = qkey;
            Outcome::Deliver(e)
        }
    }
}

/// The id made for connection `conn` of `dev` by the reader thread.
fn registry_child(dev: usize, conn: u32) -> Option<*mut IdBlock> {
    registry::conn_owner(dev, conn).and_then(registry::get)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_ack_cm_event(event: *mut rdma_cm_event) -> libc::c_int {
    if event.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: an event block of rdma_get_cm_event (contract), freed once.
    let e = unsafe { Box::from_raw(event.cast::<EventBlock>()) };
    if let Some(p) = registry::get(e.counted) {
        // SAFETY: a registered id is live.
        let b = unsafe { &*p };
        lock(&b.p).completed += 1;
        b.cv.notify_all();
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_event_str(event: rdma_cm_event_type) -> *const libc::c_char {
    let s: &'static [u8] = match event {
        rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED => b"RDMA_CM_EVENT_ADDR_RESOLVED\0",
        rdma_cm_event_type_RDMA_CM_EVENT_ADDR_ERROR => b"RDMA_CM_EVENT_ADDR_ERROR\0",
        rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_RESOLVED => b"RDMA_CM_EVENT_ROUTE_RESOLVED\0",
        rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_ERROR => b"RDMA_CM_EVENT_ROUTE_ERROR\0",
        rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST => b"RDMA_CM_EVENT_CONNECT_REQUEST\0",
        rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_RESPONSE => b"RDMA_CM_EVENT_CONNECT_RESPONSE\0",
        rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR => b"RDMA_CM_EVENT_CONNECT_ERROR\0",
        rdma_cm_event_type_RDMA_CM_EVENT_UNREACHABLE => b"RDMA_CM_EVENT_UNREACHABLE\0",
        rdma_cm_event_type_RDMA_CM_EVENT_REJECTED => b"RDMA_CM_EVENT_REJECTED\0",
        rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED => b"RDMA_CM_EVENT_ESTABLISHED\0",
        rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED => b"RDMA_CM_EVENT_DISCONNECTED\0",
        rdma_cm_event_type_RDMA_CM_EVENT_DEVICE_REMOVAL => b"RDMA_CM_EVENT_DEVICE_REMOVAL\0",
        rdma_cm_event_type_RDMA_CM_EVENT_MULTICAST_JOIN => b"RDMA_CM_EVENT_MULTICAST_JOIN\0",
        rdma_cm_event_type_RDMA_CM_EVENT_MULTICAST_ERROR => b"RDMA_CM_EVENT_MULTICAST_ERROR\0",
        rdma_cm_event_type_RDMA_CM_EVENT_ADDR_CHANGE => b"RDMA_CM_EVENT_ADDR_CHANGE\0",
        rdma_cm_event_type_RDMA_CM_EVENT_TIMEWAIT_EXIT => b"RDMA_CM_EVENT_TIMEWAIT_EXIT\0",
        _ => b"UNKNOWN EVENT\0",
    };
    s.as_ptr().cast()
}

/// `rdma_get_request`'s part: the next connection request of a listening
/// id that waits (made by `rdma_create_ep`).
pub(crate) fn get_request(listen: *mut rdma_cm_id) -> Result<*mut rdma_cm_id, i32> {
    // SAFETY: a live id (caller).
    let l = unsafe { block(listen) };
    if !lock(&l.p).sync {
        return Err(libc::EINVAL);
    }
    if !l.id.event.is_null() {
        // SAFETY: the event the listener kept.
        unsafe { rdma_ack_cm_event(l.id.event) };
        l.id.event = core::ptr::null_mut();
    }
    let mut ev: *mut rdma_cm_event = core::ptr::null_mut();
    // SAFETY: the listener's own channel.
    if unsafe { rdma_get_cm_event(l.id.channel, &mut ev) } != 0 {
        return Err(crate::util::errno());
    }
    // SAFETY: an event just handed out.
    let (kind, status, nid) = unsafe { ((*ev).event, (*ev).status, (*ev).id) };
    let err = if kind == rdma_cm_event_type_RDMA_CM_EVENT_REJECTED {
        Some(libc::ECONNREFUSED)
    } else if status != 0 {
        Some(-status)
    } else if kind != rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST {
        Some(libc::EINVAL)
    } else {
        None
    };
    if let Some(e) = err {
        l.id.event = ev;
        return Err(e);
    }
    let attr = lock(&l.p).qp_init_attr;
    if let Some(mut attr) = attr {
        // SAFETY: the new id, the listener's PD or NULL.
        let r = unsafe { crate::ep::rdma_create_qp(nid, l.id.pd, &mut attr) };
        if r != 0 {
            l.id.event = ev;
            return Err(crate::util::errno());
        }
    }
    // SAFETY: the new id is live; it keeps the event until acknowledged.
    unsafe { (*nid).event = ev };
    Ok(nid)
}
