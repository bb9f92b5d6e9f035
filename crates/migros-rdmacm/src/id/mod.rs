//! RDMA CM ids: what an `rdma_cm_id *` points to, and the calls that move
//! it through its states (as the kernel's `cma.c` moves its ids).
//!
//! An id is a heap block starting with the C struct; the library's state
//! is behind a lock next to it. Ids bound to a device have `verbs` (the
//! device's context, opened once) and `pd` (the device's default PD).
//! Calls on an id that must wait for their event (ids made without a
//! channel, as `rdma_create_ep` makes them) do so in [`complete`].
//!
//! This module holds the block and what every call shares; the calls are
//! in `life` (event channels, create, destroy, migrate), `addr` (bind,
//! resolve address and route), `conn` (listen, accept, reject, connect,
//! establish, notify, disconnect) and `options` (options, QP attributes,
//! ECE).

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use migros_proto::cm::{CmRequest, CmResponse, ConnInfo, PortSpace};

use crate::channel::{self, Channel};
use crate::device::Dev;
use crate::sys::*;
use crate::util::{self, from_sockaddr, gid_of, lock, to_storage};

mod addr;
mod conn;
mod life;
mod options;

pub(crate) use addr::{rdma_bind_addr, rdma_resolve_addr, rdma_resolve_route};
pub(crate) use conn::establish;
pub(crate) use life::{create_with_type, rdma_destroy_id, rdma_migrate_id};

/// The states of an id (`enum rdma_cm_state`, simplified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum St {
    Idle,
    Bound,
    AddrResolved,
    RouteResolved,
    /// Connecting or connected.
    Connect,
    Disconnect,
    Listen,
}

/// The library's side of an id.
pub(crate) struct IdPriv {
    pub st: St,
    pub ps: PortSpace,
    pub dev: Option<Arc<Dev>>,
    /// The channel events of this id go to.
    pub chan: Arc<Channel>,
    /// Made without a channel: calls wait for their event.
    pub sync: bool,
    /// Port bindings on daemons (one per device for a wildcard address).
    pub binds: Vec<(usize, u32)>,
    pub listens: Vec<(usize, u32)>,
    pub conn: Option<(usize, u32)>,
    /// What the REQ or REP said (QP attributes).
    pub info: Option<ConnInfo>,
    pub reuse: bool,
    pub afonly: bool,
    pub tos: Option<u8>,
    pub ack_timeout: Option<u8>,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    /// Events handed out and acknowledged (`rdma_destroy_id` waits for
    /// every one to be acknowledged, as librdmacm does).
    pub reported: u64,
    pub completed: u64,
    /// In `rdma_destroy_id`: events still queued for it are dropped.
    pub destroying: bool,
    pub connect_error: bool,
    /// `rdma_create_ep` on the passive side: QPs for new connections.
    pub qp_init_attr: Option<ibv_qp_init_attr>,
    /// `ai_connect` of `rdma_create_ep`: sent before the user's data.
    pub connect_pd: Vec<u8>,
    pub local_ece: (u32, u32),
    pub remote_ece: (u32, u32),
    pub path: Option<Box<ibv_sa_path_rec>>,
    /// Interface MTU of the route (IB code).
    pub route_mtu: u8,
}

/// What an `rdma_cm_id *` points to.
#[repr(C)]
pub(crate) struct IdBlock {
    /// First, so the block's address is the C struct's.
    pub id: rdma_cm_id,
    pub handle: u64,
    pub p: Mutex<IdPriv>,
    /// Signalled when an event of the id is acknowledged.
    pub cv: Condvar,
}

/// The block behind a C id.
///
/// # Safety
/// `id` came from this library and is not destroyed.
pub(crate) unsafe fn block<'a>(id: *mut rdma_cm_id) -> &'a mut IdBlock {
    // SAFETY: id pointers are IdBlocks (caller).
    unsafe { &mut *id.cast::<IdBlock>() }
}

pub(super) fn qp_type_of(ps: PortSpace) -> ibv_qp_type {
    match ps {
        PortSpace::Udp | PortSpace::Ipoib => ibv_qp_type_IBV_QPT_UD,
        _ => ibv_qp_type_IBV_QPT_RC,
    }
}

impl IdBlock {
    /// A new id on `channel` (NULL: a private channel, calls wait).
    fn new(
        channel: *mut rdma_event_channel,
        context: *mut libc::c_void,
        ps: PortSpace,
        qp_type: ibv_qp_type,
    ) -> Result<*mut IdBlock, i32> {
        let (chan_ptr, sync) = if channel.is_null() {
            (channel::new_c()?, true)
        } else {
            (channel, false)
        };
        // SAFETY: a live channel (ours or the caller's).
        let chan = unsafe { channel::from_c(chan_ptr) }.inner.clone();
        // SAFETY: all-zero is a valid rdma_cm_id (NULL pointers, zeros).
        let mut id: rdma_cm_id = unsafe { core::mem::zeroed() };
        id.channel = chan_ptr;
        id.context = context;
        id.ps = u32::from(ps.to_raw());
        id.qp_type = qp_type;
        let b = Box::into_raw(Box::new(IdBlock {
            id,
            handle: 0,
            p: Mutex::new(IdPriv {
                st: St::Idle,
                ps,
                dev: None,
                chan,
                sync,
                binds: Vec::new(),
                listens: Vec::new(),
                conn: None,
                info: None,
                reuse: false,
                afonly: false,
                tos: None,
                ack_timeout: None,
                responder_resources: 0,
                initiator_depth: 0,
                reported: 0,
                completed: 0,
                destroying: false,
                connect_error: false,
                qp_init_attr: None,
                connect_pd: Vec::new(),
                local_ece: (0, 0),
                remote_ece: (0, 0),
                path: None,
                route_mtu: 5,
            }),
            cv: Condvar::new(),
        }));
        Ok(b)
    }

    /// The id for a connection request to listener `l` (same channel,
    /// context, port space and QP type); not registered yet.
    pub fn child_of(l: &IdBlock) -> Option<*mut IdBlock> {
        let p = lock(&l.p);
        let b = IdBlock::new(l.id.channel, l.id.context, p.ps, l.id.qp_type).ok()?;
        drop(p);
        Some(b)
    }

    /// Attaches the id to a device: `verbs`, `pd`, `port_num`.
    pub fn attach(&mut self, dev: &Arc<Dev>) {
        self.id.verbs = dev.ctx();
        self.id.pd = dev.pd();
        self.id.port_num = 1;
        lock(&self.p).dev = Some(dev.clone());
    }

    pub fn set_src(&mut self, sa: SocketAddr) {
        // SAFETY: the union's storage member covers the whole union.
        to_storage(sa, unsafe {
            &mut self.id.route.addr.__bindgen_anon_1.src_storage
        });
        // SAFETY: the ibaddr member is the only one of the union.
        let ib = unsafe { self.id.route.addr.addr.ibaddr.as_mut() };
        ib.sgid = gid_of(sa.ip());
        ib.pkey = 0xffffu16.to_be();
    }

    pub fn set_dst(&mut self, sa: SocketAddr) {
        // SAFETY: as in set_src.
        to_storage(sa, unsafe {
            &mut self.id.route.addr.__bindgen_anon_2.dst_storage
        });
        // SAFETY: as above.
        unsafe { self.id.route.addr.addr.ibaddr.as_mut() }.dgid = gid_of(sa.ip());
    }

    pub fn src(&self) -> Option<SocketAddr> {
        // SAFETY: the source address union holds a sockaddr of its family.
        unsafe { from_sockaddr(&self.id.route.addr.__bindgen_anon_1.src_addr) }
    }

    pub fn dst(&self) -> Option<SocketAddr> {
        // SAFETY: as above.
        unsafe { from_sockaddr(&self.id.route.addr.__bindgen_anon_2.dst_addr) }
    }

    /// Fills `route.path_rec` (one path) from a connection's parameters.
    pub fn set_path(&mut self, mtu: u8, hop_limit: u8, tclass: u8, plt: u8, remote_gid: [u8; 16]) {
        // SAFETY: all-zero is a valid path record.
        let mut path: Box<ibv_sa_path_rec> = Box::new(unsafe { core::mem::zeroed() });
        path.dgid = ibv_gid { raw: remote_gid };
        // SAFETY: the ibaddr member is the only one of the union.
        path.sgid = unsafe { self.id.route.addr.addr.ibaddr.as_ref() }.sgid;
        path.hop_limit = hop_limit;
        path.traffic_class = tclass;
        path.reversible = 1;
        path.numb_path = 1;
        path.pkey = 0xffffu16.to_be();
        path.mtu_selector = 2;
        path.mtu = mtu;
        path.rate_selector = 2;
        path.rate = 0;
        path.packet_life_time_selector = 2;
        path.packet_life_time = plt;
        let mut p = lock(&self.p);
        self.id.route.path_rec = &mut *path;
        self.id.route.num_paths = 1;
        p.path = Some(path);
    }
}

/// `ucma_complete`: for an id that waits (no channel of its own), takes
/// its next event and turns a failure into errno.
pub(crate) fn complete(b: &mut IdBlock) -> Result<(), i32> {
    if !lock(&b.p).sync {
        return Ok(());
    }
    if !b.id.event.is_null() {
        // SAFETY: the event the id kept, acknowledged once.
        unsafe { crate::event::rdma_ack_cm_event(b.id.event) };
        b.id.event = core::ptr::null_mut();
    }
    let mut ev: *mut rdma_cm_event = core::ptr::null_mut();
    // SAFETY: the id's own live channel.
    if unsafe { crate::event::rdma_get_cm_event(b.id.channel, &mut ev) } != 0 {
        return Err(util::errno());
    }
    b.id.event = ev;
    // SAFETY: an event just handed out.
    let (kind, status) = unsafe { ((*ev).event, (*ev).status) };
    if status != 0 {
        return Err(if kind == rdma_cm_event_type_RDMA_CM_EVENT_REJECTED {
            libc::ECONNREFUSED
        } else if status < 0 {
            -status
        } else {
            status
        });
    }
    Ok(())
}

pub(super) fn request(dev: &Dev, req: &CmRequest) -> Result<CmResponse, i32> {
    dev.cm()?.request(req)
}

pub(super) fn ok(r: CmResponse) -> Result<(), i32> {
    match r {
        CmResponse::Ok => Ok(()),
        _ => Err(libc::EPROTO),
    }
}
