//! Addresses and routes: port bindings on the daemons (one device's
//! address, or the wildcard on every device), `rdma_bind_addr`,
//! `rdma_resolve_addr` (the device the route to the destination leaves
//! by) and `rdma_resolve_route` (the path record, from the device and the
//! id's options), the ports of an id.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use migros_proto::cm::{CmRequest, CmResponse, PortSpace};

use super::{block, complete, request, IdBlock, IdPriv, St};
use crate::channel::{Item, Local};
use crate::device::{self, Dev};
use crate::route;
use crate::sys::*;
use crate::util::{self, fail, from_sockaddr, gid_of, lock, ret};

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

pub(super) fn unbind_all(binds: &[(usize, u32)]) {
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
pub(super) fn bind(b: &mut IdBlock, sa: SocketAddr) -> Result<(), i32> {
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
pub(super) fn packet_life_time(p: &IdPriv) -> u8 {
    p.ack_timeout.map_or(18, |t| t.saturating_sub(1))
}

pub(super) fn resolve_route(b: &mut IdBlock) -> Result<(), i32> {
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
