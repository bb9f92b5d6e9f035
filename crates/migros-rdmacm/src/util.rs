//! Small helpers: errno, locks, socket addresses and GIDs in their C forms.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::sys;

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e }
}

/// The calling thread's `errno`.
pub(crate) fn errno() -> i32 {
    // SAFETY: as above, read only.
    unsafe { *libc::__errno_location() }
}

/// The librdmacm convention: errno set, −1 returned.
pub(crate) fn fail(e: i32) -> libc::c_int {
    set_errno(e);
    -1
}

/// `Result<(), errno>` as a C return value.
pub(crate) fn ret(r: Result<(), i32>) -> libc::c_int {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Locks `m`, ignoring poisoning: critical sections leave their data
/// consistent before anything that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes of a C socket address of this family (0: not an IP one).
///
/// # Safety
/// `addr` is NULL or points to at least a `sockaddr`.
pub(crate) unsafe fn addr_len(addr: *const sys::sockaddr) -> usize {
    if addr.is_null() {
        return 0;
    }
    // SAFETY: non-null, at least a sockaddr (caller).
    match i32::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET => core::mem::size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => core::mem::size_of::<libc::sockaddr_in6>(),
        _ => 0,
    }
}

/// A C socket address (IPv4 or IPv6) as a Rust one.
///
/// # Safety
/// `addr` is NULL or points to a socket address of its family's size.
pub(crate) unsafe fn from_sockaddr(addr: *const sys::sockaddr) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null; the family says how much to read (caller).
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let a = &*addr.cast::<libc::sockaddr_in>();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*addr.cast::<libc::sockaddr_in6>();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// Writes `sa` into a `sockaddr_storage` (zeroed first).
pub(crate) fn to_storage(sa: SocketAddr, out: &mut sys::sockaddr_storage) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    *out = unsafe { core::mem::zeroed() };
    let p = (out as *mut sys::sockaddr_storage).cast::<u8>();
    match sa {
        SocketAddr::V4(a) => {
            let s = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_in fits in a sockaddr_storage.
            unsafe { p.cast::<libc::sockaddr_in>().write_unaligned(s) };
        }
        SocketAddr::V6(a) => {
            let s = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: a sockaddr_in6 fits in a sockaddr_storage.
            unsafe { p.cast::<libc::sockaddr_in6>().write_unaligned(s) };
        }
    }
}

/// Whether an address is the wildcard (0.0.0.0 or ::).
pub(crate) fn is_any(a: IpAddr) -> bool {
    a.is_unspecified()
}

/// The RoCE v2 GID of an address.
pub(crate) fn gid_of(a: IpAddr) -> sys::ibv_gid {
    let v6 = match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    sys::ibv_gid { raw: v6.octets() }
}

/// The address of a RoCE v2 GID (IPv4 for an IPv4-mapped one).
pub(crate) fn addr_of_gid(g: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(g);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// An IB MTU code (1..=5) for an interface MTU in bytes (the kernel's
/// `iboe_get_mtu`: what is left after the RoCE v2 headers).
pub(crate) fn ib_mtu_for(if_mtu: u32) -> u8 {
    // GRH 40 + UDP 8 + BTH 12 + XRC ETH 4 + AtomicETH 28 + ICRC 4.
    let room = if_mtu.saturating_sub(40 + 8 + 12 + 4 + 28 + 4);
    match room {
        r if r >= 4096 => 5,
        r if r >= 2048 => 4,
        r if r >= 1024 => 3,
        r if r >= 512 => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_round_trip() {
        for s in ["198.18.0.1:7174", "[fe80::1]:9"] {
            let sa: SocketAddr = s.parse().unwrap();
            // SAFETY: all-zero storage, then filled.
            let mut st: sys::sockaddr_storage = unsafe { core::mem::zeroed() };
            to_storage(sa, &mut st);
            let p = (&st as *const sys::sockaddr_storage).cast::<sys::sockaddr>();
            // SAFETY: a filled storage.
            assert_eq!(unsafe { from_sockaddr(p) }, Some(sa));
            assert!(unsafe { addr_len(p) } > 0);
        }
    }

    #[test]
    fn mtus() {
        assert_eq!(ib_mtu_for(1500), 3);
        assert_eq!(ib_mtu_for(9000), 5);
        assert_eq!(ib_mtu_for(65536), 5);
        assert_eq!(ib_mtu_for(4150), 4);
    }
}
