//! Which device an address is reached through (the kernel resolves an IP
//! address to a netdev by its routing table, then to the RDMA device on
//! it): the source address the kernel's routing picks for the destination
//! (a connected UDP socket's local address) names the device that has it;
//! a destination that is itself a device's address is reached through that
//! device (loopback); with a single device, it is that one (containers,
//! whose own address is not the device's).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::device::{self, Dev};

/// Why no device was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// `rdma_resolve_addr` fails at once with this errno.
    Now(i32),
    /// `RDMA_CM_EVENT_ADDR_ERROR` with this status.
    Later(i32),
}

/// The source address and interface MTU the kernel's routing picks for
/// `dst`; errno (ENETUNREACH, …) without a route.
pub(crate) fn source_for(dst: IpAddr) -> Result<(IpAddr, u32), i32> {
    let any: SocketAddr = match dst {
        IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let s = UdpSocket::bind(any).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    s.connect(SocketAddr::new(dst, 4791))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::ENETUNREACH))?;
    let local = s
        .local_addr()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let (level, opt) = match dst {
        IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a connected socket; an int out-value with its length.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let mtu = if rc == 0 && mtu > 0 { mtu as u32 } else { 0 };
    Ok((local.ip(), mtu))
}

/// Whether `a` is an address of this host (one a socket can bind to).
pub(crate) fn is_local(a: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(a, 0)).is_ok()
}

/// The device for `dst`, the local address to use and the interface MTU.
pub(crate) fn choose(dst: IpAddr) -> Result<(Arc<Dev>, IpAddr, u32), NoRoute> {
    let (src, mtu) = source_for(dst).map_err(NoRoute::Now)?;
    if let Some(d) = device::by_addr(src) {
        return Ok((d, src, mtu));
    }
    if let Some(d) = device::by_addr(dst) {
        let a = d.addr;
        return Ok((d, a, mtu));
    }
    let all = device::all();
    if all.len() == 1 {
        let d = all[0].clone();
        let a = d.addr;
        return Ok((d, a, mtu));
    }
    Err(NoRoute::Later(-libc::ENODEV))
}
