//! RDMA CM ids: what an `rdma_cm_id *` points to, and the calls that move
//! it through its states (as the kernel's `cma.c` moves its ids): bind,
//! resolve address and route, listen, connect, accept, reject, establish,
//! notify, disconnect, migrate, options, destroy.
//!
//! An id is a heap block starting with the C struct; the library's state
//! is behind a lock next to it. Ids bound to a device have `verbs` (the
//! device's context, opened once) and `pd` (the device's default PD).
//! Calls on an id that must wait for their event (ids made without a
//! channel, as `rdma_create_ep` makes them) do so in [`complete`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex};

use migros_proto::cm::{
    AcceptParams, CmEvent, CmRequest, CmResponse, ConnInfo, ConnectParams, PortSpace,
};

use crate::channel::{self, Channel, Item, Local};
use crate::device::{self, Dev};
use crate::qp;
use crate::registry;
use crate::route;
use crate::sys::*;
use crate::util::{self, fail, from_sockaddr, gid_of, lock, ret, to_storage};

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

fn qp_type_of(ps: PortSpace) -> ibv_qp_type {
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

fn request(dev: &Dev, req: &CmRequest) -> Result<CmResponse, i32> {
    dev.cm()?.request(req)
}

/// Takes `addr:port` on one device.
fn bind_on(
    dev: &Dev,
    ps: PortSpace,
    addr: Option<IpAddr>,
    port: u16,
    reuse: bool,
) -> Result<(u32, u16), i32> {
    match request(
        dev,
        &CmRequest::Bind {
            ps,
            addr,
            port,
            reuse,
        },
    )? {
        CmResponse::Bound { bind, port } => Ok((bind, port)),
        _ => Err(libc::EPROTO),
    }
}

fn unbind_all(binds: &[(usize, u32)]) {
    for &(d, bind) in binds {
        if let Some(dev) = device::get(d) {
            let _ = request(&dev, &CmRequest::Unbind { bind });
        }
    }
}

/// The wildcard address on every device: one port, taken everywhere
/// (the kernel's port spaces span all devices).
fn bind_any(ps: PortSpace, port: u16, reuse: bool) -> Result<(Vec<(usize, u32)>, u16), i32> {
    let devs: Vec<Arc<Dev>> = device::all()
        .into_iter()
        .filter(|d| d.cm().is_ok())
        .collect();
    if devs.is_empty() {
        return Err(libc::ENODEV);
    }
    for _attempt in 0..16 {
        let mut done = Vec::new();
        let mut want = port;
        let mut failed = None;
        for d in &devs {
            match bind_on(d, ps, None, want, reuse) {
                Ok((b, p)) => {
                    done.push((d.idx, b));
                    want = p;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => return Ok((done, want)),
            Some(e) => {
                unbind_all(&done);
                // A fixed port taken somewhere: the caller's error. An
                // ephemeral one: try another.
                if port != 0 || done.is_empty() {
                    return Err(e);
                }
            }
        }
    }
    Err(libc::EADDRINUSE)
}

/// Binds an idle id to `sa` (a device's address, or the wildcard).
fn bind(b: &mut IdBlock, sa: SocketAddr) -> Result<(), i32> {
    let (ps, reuse) = {
        let p = lock(&b.p);
        if p.st != St::Idle {
            return Err(libc::EINVAL);
        }
        (p.ps, p.reuse)
    };
    if util::is_any(sa.ip()) {
        let (binds, port) = bind_any(ps, sa.port(), reuse)?;
        b.set_src(SocketAddr::new(sa.ip(), port));
        let mut p = lock(&b.p);
        p.binds = binds;
        p.st = St::Bound;
        return Ok(());
    }
    let dev = match device::by_addr(sa.ip()) {
        Some(d) => d,
        None if route::is_local(sa.ip()) => return Err(libc::ENODEV),
        None => return Err(libc::EADDRNOTAVAIL),
    };
    let (bind, port) = bind_on(&dev, ps, Some(sa.ip()), sa.port(), reuse)?;
    b.attach(&dev);
    b.set_src(SocketAddr::new(sa.ip(), port));
    let mut p = lock(&b.p);
    p.binds = vec![(dev.idx, bind)];
    p.st = St::Bound;
    Ok(())
}

// ---- ids and channels ----

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

// ---- addresses and routes ----

#[no_mangle]
pub unsafe extern "C" fn rdma_bind_addr(id: *mut rdma_cm_id, addr: *mut sockaddr) -> libc::c_int {
    // SAFETY: a socket address or NULL (contract).
    let Some(sa) = (unsafe { from_sockaddr(addr) }) else {
        return fail(libc::EINVAL);
    };
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    ret(bind(unsafe { block(id) }, sa))
}

#[no_mangle]
pub unsafe extern "C" fn rdma_resolve_addr(
    id: *mut rdma_cm_id,
    src_addr: *mut sockaddr,
    dst_addr: *mut sockaddr,
    _timeout_ms: libc::c_int,
) -> libc::c_int {
    // SAFETY: socket addresses or NULL (contract).
    let (src, dst) = unsafe { (from_sockaddr(src_addr), from_sockaddr(dst_addr)) };
    let Some(dst) = dst else {
        return fail(libc::EINVAL);
    };
    if (!src_addr.is_null() && src.is_none()) || id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    ret(resolve_addr(b, src, dst).and_then(|()| complete(b)))
}

fn resolve_addr(b: &mut IdBlock, src: Option<SocketAddr>, dst: SocketAddr) -> Result<(), i32> {
    let st = lock(&b.p).st;
    match st {
        St::Idle => {
            if let Some(s) = src.filter(|s| !util::is_any(s.ip())) {
                bind(b, s)?;
            } else if let Some(s) = src {
                // A wildcard source: the port counts, the device is chosen below.
                bind(b, s)?;
            }
        }
        St::Bound => {}
        _ => return Err(libc::EINVAL),
    }
    b.set_dst(dst);
    let (bound_dev, ps) = {
        let p = lock(&b.p);
        (p.dev.clone(), p.ps)
    };
    let chosen = match bound_dev {
        Some(d) => Ok((
            d.clone(),
            d.addr,
            route::source_for(dst.ip()).map_or(0, |r| r.1),
        )),
        None => route::choose(dst.ip()),
    };
    let (dev, src_ip, if_mtu) = match chosen {
        Ok(c) => c,
        Err(route::NoRoute::Now(e)) => return Err(e),
        Err(route::NoRoute::Later(status)) => {
            let (chan, h) = (lock(&b.p).chan.clone(), b.handle);
            chan.push(Item::Local {
                id: h,
                ev: Local::AddrError(status),
            });
            return Ok(());
        }
    };
    // The binding: kept on the chosen device, made there if there was none.
    let port = b.src().map_or(0, |s| s.port());
    let had = lock(&b.p).binds.clone();
    let mut keep = Vec::new();
    let mut drop_ = Vec::new();
    for (d, bind) in had {
        if d == dev.idx {
            keep.push((d, bind));
        } else {
            drop_.push((d, bind));
        }
    }
    unbind_all(&drop_);
    let port = if keep.is_empty() {
        let reuse = lock(&b.p).reuse;
        let (bind, port) = bind_on(&dev, ps, Some(src_ip), port, reuse)?;
        keep.push((dev.idx, bind));
        port
    } else {
        port
    };
    b.attach(&dev);
    b.set_src(SocketAddr::new(src_ip, port));
    let chan = {
        let mut p = lock(&b.p);
        p.binds = keep;
        p.st = St::AddrResolved;
        p.route_mtu = if if_mtu > 0 {
            util::ib_mtu_for(if_mtu)
        } else {
            5
        };
        p.chan.clone()
    };
    chan.push(Item::Local {
        id: b.handle,
        ev: Local::AddrResolved,
    });
    Ok(())
}

/// Packet lifetime of the route (the kernel's `CMA_IBOE_PACKET_LIFETIME`,
/// 18 in Debian 12's 6.1, or the ACK timeout option minus one).
fn packet_life_time(p: &IdPriv) -> u8 {
    p.ack_timeout.map_or(18, |t| t.saturating_sub(1))
}

fn resolve_route(b: &mut IdBlock) -> Result<(), i32> {
    let (dev, mtu, tos, plt) = {
        let p = lock(&b.p);
        if p.st != St::AddrResolved {
            return Err(libc::EINVAL);
        }
        let dev = p.dev.clone().ok_or(libc::EINVAL)?;
        (
            dev.clone(),
            dev.mtu.min(p.route_mtu),
            p.tos.unwrap_or(0),
            packet_life_time(&p),
        )
    };
    let _ = dev;
    let dst = b.dst().ok_or(libc::EINVAL)?;
    b.set_path(mtu, 64, tos, plt, gid_of(dst.ip()).raw_bytes());
    let chan = {
        let mut p = lock(&b.p);
        p.st = St::RouteResolved;
        p.chan.clone()
    };
    chan.push(Item::Local {
        id: b.handle,
        ev: Local::RouteResolved,
    });
    Ok(())
}

trait RawGid {
    fn raw_bytes(&self) -> [u8; 16];
}

impl RawGid for ibv_gid {
    fn raw_bytes(&self) -> [u8; 16] {
        // SAFETY: every bit pattern of the union is a valid raw array.
        unsafe { self.raw }
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_resolve_route(
    id: *mut rdma_cm_id,
    _timeout_ms: libc::c_int,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    ret(resolve_route(b).and_then(|()| complete(b)))
}

#[no_mangle]
pub unsafe extern "C" fn rdma_get_src_port(id: *mut rdma_cm_id) -> u16 {
    if id.is_null() {
        return 0;
    }
    // SAFETY: a live id (contract).
    unsafe { block(id) }.src().map_or(0, |s| s.port().to_be())
}

#[no_mangle]
pub unsafe extern "C" fn rdma_get_dst_port(id: *mut rdma_cm_id) -> u16 {
    if id.is_null() {
        return 0;
    }
    // SAFETY: a live id (contract).
    unsafe { block(id) }.dst().map_or(0, |s| s.port().to_be())
}

// ---- passive side ----

fn listen(b: &mut IdBlock) -> Result<(), i32> {
    if lock(&b.p).st == St::Idle {
        let any = match b.src() {
            Some(SocketAddr::V6(_)) => {
                SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
            }
            _ => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        };
        bind(b, any)?;
    }
    let (binds, qp_type) = {
        let p = lock(&b.p);
        if p.st != St::Bound {
            return Err(libc::EINVAL);
        }
        (
            p.binds.clone(),
            qp::cm_type(b.id.qp_type).ok_or(libc::EINVAL)?,
        )
    };
    let mut done = Vec::new();
    for (d, bind) in binds {
        let dev = device::get(d).ok_or(libc::ENODEV)?;
        match request(&dev, &CmRequest::Listen { bind, qp_type }) {
            Ok(CmResponse::Listening { listen }) => {
                registry::claim_listen(d, listen, b.handle);
                done.push((d, listen));
            }
            other => {
                for (d, l) in done {
                    if let Some(dev) = device::get(d) {
                        let _ = request(&dev, &CmRequest::Unlisten { listen: l });
                    }
                }
                return Err(other.err().unwrap_or(libc::EPROTO));
            }
        }
    }
    let mut p = lock(&b.p);
    p.listens = done;
    p.st = St::Listen;
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn rdma_listen(id: *mut rdma_cm_id, _backlog: libc::c_int) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    ret(listen(unsafe { block(id) }))
}

/// `ucma_valid_param`.
fn valid_param(b: &IdBlock, p: &IdPriv, param: Option<&rdma_conn_param>) -> Result<(), i32> {
    if p.ps != PortSpace::Tcp {
        return Ok(());
    }
    let Some(param) = param else {
        return if b.id.qp.is_null() {
            Err(libc::EINVAL)
        } else {
            Ok(())
        };
    };
    let dev = p.dev.as_ref().ok_or(libc::EINVAL)?;
    if param.responder_resources != 0xff && param.responder_resources > dev.max_responder_resources
    {
        return Err(libc::EINVAL);
    }
    if param.initiator_depth != 0xff && param.initiator_depth > dev.max_initiator_depth {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// The application's private data of a `rdma_conn_param`.
///
/// # Safety
/// `param` is NULL or valid, with `private_data_len` readable bytes.
unsafe fn private_data(param: Option<&rdma_conn_param>) -> Vec<u8> {
    match param {
        Some(p) if !p.private_data.is_null() && p.private_data_len > 0 => {
            // SAFETY: the caller's buffer of private_data_len bytes.
            unsafe {
                std::slice::from_raw_parts(p.private_data.cast::<u8>(), p.private_data_len.into())
            }
            .to_vec()
        }
        _ => Vec::new(),
    }
}

fn accept(b: &mut IdBlock, param: Option<&rdma_conn_param>) -> Result<(), i32> {
    let ud = qp::is_ud(b.id.qp_type);
    let qp = b.id.qp;
    let (qp_num, srq) = if !qp.is_null() {
        // SAFETY: a live QP of this id.
        unsafe { ((*qp).qp_num, !(*qp).srq.is_null()) }
    } else {
        let p = param.ok_or(libc::EINVAL)?;
        (p.qp_num, p.srq != 0)
    };
    let (dev, conn, resp, init) = {
        let mut p = lock(&b.p);
        valid_param(b, &p, param)?;
        let dev = p.dev.clone().ok_or(libc::EINVAL)?;
        let conn = p.conn.ok_or(libc::EINVAL)?;
        match param {
            Some(c) if c.initiator_depth != 0xff => p.initiator_depth = c.initiator_depth,
            _ => p.initiator_depth = p.initiator_depth.min(dev.max_initiator_depth),
        }
        match param {
            Some(c) if c.responder_resources != 0xff => {
                p.responder_resources = c.responder_resources
            }
            _ => p.responder_resources = p.responder_resources.min(dev.max_responder_resources),
        }
        (dev, conn, p.responder_resources, p.initiator_depth)
    };
    if !ud {
        let p = lock(&b.p);
        // SAFETY: the id's QP or NULL.
        unsafe { qp::connect(qp, &p, Some(resp), Some(init)) }?;
    }
    // SAFETY: the caller's parameters.
    let mut pd = lock(&b.p).connect_pd.clone();
    pd.extend(unsafe { private_data(param) });
    let params = AcceptParams {
        qpn: qp_num,
        responder_resources: resp,
        initiator_depth: init,
        flow_control: param.is_some_and(|c| c.flow_control != 0),
        rnr_retry_count: param.map_or(7, |c| c.rnr_retry_count),
        srq,
        qkey: qp::UDP_QKEY,
        private_data: pd,
    };
    if let Err(e) = request(
        &dev,
        &CmRequest::Accept {
            conn: conn.1,
            params,
        },
    )
    .and_then(ok)
    {
        // SAFETY: the id's QP or NULL.
        unsafe { qp::to_error(qp) };
        return Err(e);
    }
    if ud {
        return Ok(());
    }
    complete(b)
}

fn ok(r: CmResponse) -> Result<(), i32> {
    match r {
        CmResponse::Ok => Ok(()),
        _ => Err(libc::EPROTO),
    }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_accept(
    id: *mut rdma_cm_id,
    conn_param: *mut rdma_conn_param,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and NULL or valid parameters (contract).
    ret(accept(unsafe { block(id) }, unsafe { conn_param.as_ref() }))
}

fn reject(b: &mut IdBlock, pd: &[u8], reason: u16) -> Result<(), i32> {
    let (dev, conn) = {
        let p = lock(&b.p);
        (
            p.dev.clone().ok_or(libc::EINVAL)?,
            p.conn.ok_or(libc::EINVAL)?,
        )
    };
    request(
        &dev,
        &CmRequest::Reject {
            conn: conn.1,
            reason,
            private_data: pd.to_vec(),
        },
    )
    .and_then(ok)
}

unsafe fn reject_with(
    id: *mut rdma_cm_id,
    private_data: *const libc::c_void,
    len: u8,
    reason: u16,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    let pd = if private_data.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: the caller's buffer of `len` bytes.
        unsafe { std::slice::from_raw_parts(private_data.cast::<u8>(), len.into()) }.to_vec()
    };
    // SAFETY: a live id (contract).
    ret(reject(unsafe { block(id) }, &pd, reason))
}

#[no_mangle]
pub unsafe extern "C" fn rdma_reject(
    id: *mut rdma_cm_id,
    private_data: *const libc::c_void,
    private_data_len: u8,
) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { reject_with(id, private_data, private_data_len, 0) }
}

/// Rejects with IBTA's "vendor option not supported" (35).
#[no_mangle]
pub unsafe extern "C" fn rdma_reject_ece(
    id: *mut rdma_cm_id,
    private_data: *const libc::c_void,
    private_data_len: u8,
) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { reject_with(id, private_data, private_data_len, 35) }
}

// ---- active side ----

fn connect(b: &mut IdBlock, param: Option<&rdma_conn_param>) -> Result<(), i32> {
    let qp = b.id.qp;
    let (mut qp_num, mut srq) = param.map_or((0, false), |c| (c.qp_num, c.srq != 0));
    if !qp.is_null() {
        // SAFETY: a live QP of this id.
        unsafe {
            qp_num = (*qp).qp_num;
            srq = !(*qp).srq.is_null();
        }
    }
    let qp_type = qp::cm_type(b.id.qp_type).ok_or(libc::EINVAL)?;
    let src = b.src().ok_or(libc::EINVAL)?;
    let dst = b.dst().ok_or(libc::EINVAL)?;
    let (dev, bind, cp) = {
        let mut p = lock(&b.p);
        valid_param(b, &p, param)?;
        if p.st != St::RouteResolved {
            return Err(libc::EINVAL);
        }
        let dev = p.dev.clone().ok_or(libc::EINVAL)?;
        p.initiator_depth = match param {
            Some(c) if c.initiator_depth != 0xff => c.initiator_depth,
            _ => dev.max_initiator_depth,
        };
        p.responder_resources = match param {
            Some(c) if c.responder_resources != 0xff => c.responder_resources,
            _ => dev.max_responder_resources,
        };
        let bind = p
            .binds
            .iter()
            .find(|(d, _)| *d == dev.idx)
            .map(|(_, b)| *b)
            .ok_or(libc::EINVAL)?;
        let mut pd = std::mem::take(&mut p.connect_pd);
        // SAFETY: the caller's parameters.
        pd.extend(unsafe { private_data(param) });
        let mtu = p.path.as_ref().map_or(dev.mtu, |x| x.mtu);
        let cp = ConnectParams {
            bind,
            src: src.ip(),
            dst,
            qp_type,
            qpn: qp_num,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            flow_control: param.is_some_and(|c| c.flow_control != 0),
            retry_count: param.map_or(7, |c| c.retry_count.min(7)),
            rnr_retry_count: param.map_or(7, |c| c.rnr_retry_count.min(7)),
            srq,
            path_mtu: mtu,
            hop_limit: 64,
            traffic_class: p.tos.unwrap_or(0),
            packet_life_time: packet_life_time(&p),
            private_data: pd,
        };
        (dev, bind, cp)
    };
    let _ = bind;
    match request(&dev, &CmRequest::Connect(cp))? {
        CmResponse::Connected { conn, .. } => {
            {
                let mut p = lock(&b.p);
                p.conn = Some((dev.idx, conn));
                p.st = St::Connect;
            }
            registry::claim_conn(dev.idx, conn, b.handle);
        }
        _ => return Err(libc::EPROTO),
    }
    complete(b)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_connect(
    id: *mut rdma_cm_id,
    conn_param: *mut rdma_conn_param,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and NULL or valid parameters (contract).
    ret(connect(unsafe { block(id) }, unsafe {
        conn_param.as_ref()
    }))
}

/// Sends the RTU once the application moved its own QP (`rdma_establish`
/// after `RDMA_CM_EVENT_CONNECT_RESPONSE`).
pub(crate) fn establish(b: &IdBlock) -> Result<(), i32> {
    let (dev, conn) = {
        let p = lock(&b.p);
        (
            p.dev.clone().ok_or(libc::EINVAL)?,
            p.conn.ok_or(libc::EINVAL)?,
        )
    };
    request(&dev, &CmRequest::Establish { conn: conn.1 }).and_then(ok)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_establish(id: *mut rdma_cm_id) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    if !b.id.qp.is_null() {
        return fail(libc::EINVAL);
    }
    ret(establish(b))
}

#[no_mangle]
pub unsafe extern "C" fn rdma_notify(id: *mut rdma_cm_id, event: ibv_event_type) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    if event != ibv_event_type_IBV_EVENT_COMM_EST {
        return fail(libc::EINVAL);
    }
    let r = (|| {
        let (dev, conn) = {
            let p = lock(&b.p);
            (
                p.dev.clone().ok_or(libc::EINVAL)?,
                p.conn.ok_or(libc::EINVAL)?,
            )
        };
        request(&dev, &CmRequest::Notify { conn: conn.1 }).and_then(ok)
    })();
    ret(r)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_disconnect(id: *mut rdma_cm_id) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    if b.id.verbs.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: the id's QP or NULL.
    unsafe { qp::to_error(b.id.qp) };
    let r = (|| {
        let (dev, conn) = {
            let p = lock(&b.p);
            (
                p.dev.clone().ok_or(libc::EINVAL)?,
                p.conn.ok_or(libc::EINVAL)?,
            )
        };
        request(&dev, &CmRequest::Disconnect { conn: conn.1 }).and_then(ok)
    })();
    ret(r.and_then(|()| complete(b)))
}

// ---- options ----

const RDMA_OPTION_ID: i32 = 0;
const RDMA_OPTION_IB: i32 = 1;
const RDMA_OPTION_ID_TOS: i32 = 0;
const RDMA_OPTION_ID_REUSEADDR: i32 = 1;
const RDMA_OPTION_ID_AFONLY: i32 = 2;
const RDMA_OPTION_ID_ACK_TIMEOUT: i32 = 3;
const RDMA_OPTION_IB_PATH: i32 = 1;

#[no_mangle]
pub unsafe extern "C" fn rdma_set_option(
    id: *mut rdma_cm_id,
    level: libc::c_int,
    optname: libc::c_int,
    optval: *mut libc::c_void,
    optlen: usize,
) -> libc::c_int {
    if id.is_null() || optval.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    // SAFETY: `optval` holds `optlen` bytes (contract); sizes checked first.
    let read_u8 = || (optlen == 1).then(|| unsafe { *optval.cast::<u8>() });
    let read_int = || {
        (optlen == core::mem::size_of::<libc::c_int>())
            .then(|| unsafe { optval.cast::<libc::c_int>().read_unaligned() })
    };
    match (level, optname) {
        (RDMA_OPTION_ID, RDMA_OPTION_ID_TOS) => match read_u8() {
            Some(v) => {
                lock(&b.p).tos = Some(v);
                0
            }
            None => fail(libc::EINVAL),
        },
        (RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR) => match read_int() {
            Some(v) => {
                let mut p = lock(&b.p);
                if (v != 0 && p.st != St::Listen) || p.st == St::Idle {
                    p.reuse = v != 0;
                    0
                } else {
                    fail(libc::EINVAL)
                }
            }
            None => fail(libc::EINVAL),
        },
        (RDMA_OPTION_ID, RDMA_OPTION_ID_AFONLY) => match read_int() {
            Some(v) => {
                let mut p = lock(&b.p);
                if p.st == St::Idle {
                    p.afonly = v != 0;
                    0
                } else {
                    fail(libc::EINVAL)
                }
            }
            None => fail(libc::EINVAL),
        },
        (RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT) => match read_u8() {
            Some(v) if b.id.qp_type == ibv_qp_type_IBV_QPT_RC => {
                lock(&b.p).ack_timeout = Some(v);
                0
            }
            _ => fail(libc::EINVAL),
        },
        (RDMA_OPTION_IB, RDMA_OPTION_IB_PATH) => {
            let each = core::mem::size_of::<ibv_path_data>();
            if optlen == 0 || !optlen.is_multiple_of(each) {
                return fail(libc::EINVAL);
            }
            // The path the application gives: the route is ours (RoCE),
            // the option completes route resolution as the kernel does.
            ret(resolve_route(b))
        }
        (RDMA_OPTION_ID | RDMA_OPTION_IB, _) => fail(libc::ENOSYS),
        _ => fail(libc::ENOSYS),
    }
}

// ---- QP attributes ----

#[no_mangle]
pub unsafe extern "C" fn rdma_init_qp_attr(
    id: *mut rdma_cm_id,
    qp_attr: *mut ibv_qp_attr,
    qp_attr_mask: *mut libc::c_int,
) -> libc::c_int {
    if id.is_null() || qp_attr.is_null() || qp_attr_mask.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and valid out-pointers (contract).
    unsafe {
        let b = block(id);
        let p = lock(&b.p);
        if p.dev.is_none() {
            return fail(libc::EINVAL);
        }
        match qp::init_attr(&p, b.id.qp_type, (*qp_attr).qp_state) {
            Ok((mut a, mask)) => {
                if (*qp_attr).qp_state == ibv_qp_state_IBV_QPS_RTR && p.responder_resources > 0 {
                    a.max_dest_rd_atomic = a.max_dest_rd_atomic.min(p.responder_resources);
                }
                *qp_attr = a;
                *qp_attr_mask = mask;
                0
            }
            Err(e) => fail(e),
        }
    }
}

// ---- ECE (enhanced connection establishment): not negotiated ----

#[no_mangle]
pub unsafe extern "C" fn rdma_set_local_ece(id: *mut rdma_cm_id, ece: *mut ibv_ece) -> libc::c_int {
    // SAFETY: NULL or valid pointers (contract).
    unsafe {
        if id.is_null() || ece.is_null() || !(*id).qp.is_null() {
            return fail(libc::EINVAL);
        }
        if (*ece).vendor_id == 0 || (*ece).comp_mask != 0 {
            return fail(libc::EINVAL);
        }
        lock(&block(id).p).local_ece = ((*ece).vendor_id, (*ece).options);
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_get_remote_ece(
    id: *mut rdma_cm_id,
    ece: *mut ibv_ece,
) -> libc::c_int {
    // SAFETY: NULL or valid pointers (contract).
    unsafe {
        if id.is_null() || ece.is_null() || !(*id).qp.is_null() {
            return fail(libc::EINVAL);
        }
        let (v, o) = lock(&block(id).p).remote_ece;
        (*ece).vendor_id = v;
        (*ece).options = o;
        (*ece).comp_mask = 0;
    }
    0
}
