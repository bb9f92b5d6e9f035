//! Small helpers shared by the C entry points: errno, C strings, GIDs.

use std::net::{IpAddr, Ipv6Addr};

use crate::sys::ibv_gid;

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot,
    // always valid for writes.
    unsafe { *libc::__errno_location() = e }
}

/// Sets `errno` and returns NULL (the C convention for constructors).
pub(crate) fn null_errno<T>(e: i32) -> *mut T {
    set_errno(e);
    std::ptr::null_mut()
}

/// Copies `s` into a fixed C array, truncated and NUL-terminated.
pub(crate) fn copy_cstr(dst: &mut [libc::c_char], s: &str) {
    let n = s.len().min(dst.len().saturating_sub(1));
    for (d, b) in dst.iter_mut().zip(s.as_bytes()[..n].iter()) {
        *d = *b as libc::c_char;
    }
    if let Some(end) = dst.get_mut(n) {
        *end = 0;
    }
}

/// A fixed C array as a Rust string (up to its NUL).
pub(crate) fn from_cstr(src: &[libc::c_char]) -> String {
    src.iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8 as char)
        .collect()
}

/// The RoCE v2 GID of an address (IPv4-mapped for IPv4).
pub(crate) fn gid_of(addr: IpAddr) -> ibv_gid {
    let v6 = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    ibv_gid { raw: v6.octets() }
}

/// The address of a RoCE v2 GID (IPv4 for an IPv4-mapped one).
pub(crate) fn addr_of(gid: &ibv_gid) -> IpAddr {
    // SAFETY: every bit pattern of the union is a valid `raw` array.
    let v6 = Ipv6Addr::from(unsafe { gid.raw });
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_round_trip() {
        for a in ["127.0.0.151", "fe80::1"] {
            let addr: IpAddr = a.parse().unwrap();
            assert_eq!(addr_of(&gid_of(addr)), addr);
        }
        let g = gid_of("10.1.2.3".parse().unwrap());
        // SAFETY: reading the raw bytes of a GID built from raw bytes.
        let raw = unsafe { g.raw };
        assert_eq!(&raw[10..], &[0xff, 0xff, 10, 1, 2, 3]);
    }

    #[test]
    fn c_strings_truncate_and_terminate() {
        let mut buf = [1 as libc::c_char; 4];
        copy_cstr(&mut buf, "abcdef");
        assert_eq!(from_cstr(&buf), "abc");
        copy_cstr(&mut buf, "x");
        assert_eq!(from_cstr(&buf), "x");
    }
}
