//! `ibv_resolve_eth_l2_from_gid`: the Ethernet address (and VLAN) behind
//! an address handle's destination GID, as libibverbs finds it: the
//! interface whose network holds the source GID's address is the way out;
//! the destination's MAC is that of a local interface if the address is
//! ours (one of an interface's, or in the loopback network), else the
//! kernel's neighbour entry for it on that interface, resolved by a
//! datagram to the discard port if missing (libibverbs' `neigh.c` does
//! the same), waiting up to 3 s.
//!
//! Differences, because migros reads the kernel's tables instead of
//! asking rtnetlink: IPv4 neighbours only (`/proc/net/arp`; an IPv6
//! destination that is not local gives -EHOSTUNREACH), and the lookup runs
//! in the calling process's network namespace, which in a container is
//! not the daemon's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::sys::*;
use crate::util::{addr_of, set_errno};

/// How long a missing neighbour entry is waited for (libibverbs'
/// `NEIGH_GET_DEFAULT_TIMEOUT_MS`).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// "No VLAN", as libibverbs reports it.
const NO_VLAN: u16 = 0xffff;

/// An interface with its addresses and their prefix lengths.
struct Interface {
    name: String,
    addrs: Vec<(IpAddr, u32)>,
    loopback: bool,
}

impl Interface {
    fn has(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(a, _)| *a == ip)
    }

    /// Whether `ip` lies in one of the interface's networks.
    fn reaches(&self, ip: IpAddr) -> bool {
        self.addrs
            .iter()
            .any(|(a, prefix)| same_network(*a, ip, *prefix))
    }
}

/// Whether `a` and `b` share their first `prefix` bits.
fn same_network(a: IpAddr, b: IpAddr, prefix: u32) -> bool {
    let (a, b, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            32,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let prefix = prefix.min(bits);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    a & mask == b & mask
}

/// The interfaces of this network namespace (getifaddrs).
fn interfaces() -> Vec<Interface> {
    let mut out: Vec<Interface> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs made.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name and sockaddrs of their family.
        let (name, addr, mask) = unsafe {
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let mask = (!ifa.ifa_netmask.is_null())
                .then(|| sockaddr_ip(ifa.ifa_netmask))
                .flatten();
            (name, sockaddr_ip(ifa.ifa_addr), mask)
        };
        let Some(addr) = addr else { continue };
        let prefix = match mask {
            Some(IpAddr::V4(m)) => u32::from(m).leading_ones(),
            Some(IpAddr::V6(m)) => u128::from(m).leading_ones(),
            None => 0,
        };
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
        match out.iter_mut().find(|i| i.name == name) {
            Some(i) => i.addrs.push((addr, prefix)),
            None => out.push(Interface {
                name,
                addrs: vec![(addr, prefix)],
                loopback,
            }),
        }
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// The IP address of an AF_INET or AF_INET6 sockaddr.
///
/// # Safety
/// `sa` must point to a sockaddr of the size its family says.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: as the caller promises.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let v4 = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::from(v6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The MAC of interface `name`.
fn interface_mac(name: &str) -> Option<[u8; 6]> {
    let path = format!("/sys/class/net/{name}/address");
    parse_mac(&std::fs::read_to_string(path).ok()?)
}

/// A complete entry of `/proc/net/arp` for `ip` on `dev`.
fn arp_entry(table: &str, ip: Ipv4Addr, dev: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device.
        let complete = f
            .get(2)
            .and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            .is_some_and(|flags| flags & 0x2 != 0);
        let ours = f.first()?.parse::<Ipv4Addr>().ok()? == ip && f.get(5)? == &dev;
        (ours && complete).then(|| parse_mac(f.get(3)?)).flatten()
    })
}

/// The VLAN id of `dev` (`/proc/net/vlan/config`), or [`NO_VLAN`].
fn vlan_of(dev: &str) -> u16 {
    let Ok(config) = std::fs::read_to_string("/proc/net/vlan/config") else {
        return NO_VLAN;
    };
    config
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            (f.first() == Some(&dev)).then(|| f.get(1)?.parse::<u16>().ok())?
        })
        .find(|v| *v <= 0xfff)
        .unwrap_or(NO_VLAN)
}

/// The neighbour MAC of IPv4 `dst` seen from `src` on `dev`, resolving it
/// if needed.
fn neighbour(src: Ipv4Addr, dst: Ipv4Addr, dev: &str) -> Option<[u8; 6]> {
    let lookup = || {
        let table = std::fs::read_to_string("/proc/net/arp").ok()?;
        arp_entry(&table, dst, dev)
    };
    if let Some(mac) = lookup() {
        return Some(mac);
    }
    // An empty datagram to the discard port makes the kernel resolve it.
    let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0)).ok()?;
    let _ = sock.send_to(&[], SocketAddr::new(IpAddr::V4(dst), 9));
    let start = Instant::now();
    while start.elapsed() < RESOLVE_TIMEOUT {
        if let Some(mac) = lookup() {
            return Some(mac);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[no_mangle]
pub unsafe extern "C" fn ibv_resolve_eth_l2_from_gid(
    context: *mut ibv_context,
    attr: *mut ibv_ah_attr,
    eth_mac: *mut u8,
    vid: *mut u16,
) -> libc::c_int {
    if context.is_null() || attr.is_null() || eth_mac.is_null() {
        return -libc::EINVAL;
    }
    // SAFETY: a readable attr (contract).
    let a = unsafe { &*attr };
    // SAFETY: a live context (contract).
    let sgid = match unsafe {
        crate::device::gid_entry(context, a.port_num.into(), a.grh.sgid_index.into())
    } {
        Ok(e) => e.gid,
        Err(e) => {
            set_errno(e);
            return -1;
        }
    };
    let (src, dst) = (addr_of(&sgid), addr_of(&a.grh.dgid));
    let ifs = interfaces();
    // The way out: the interface holding the address, else the one whose
    // network holds it (127.0.0.x on lo).
    let Some(out) = ifs
        .iter()
        .find(|i| i.has(src))
        .or_else(|| ifs.iter().find(|i| i.reaches(src)))
    else {
        return -libc::EINVAL;
    };
    let local = ifs
        .iter()
        .find(|i| i.has(dst))
        .or_else(|| ifs.iter().find(|i| i.loopback && i.reaches(dst)));
    let mac = match (local, src, dst) {
        (Some(i), _, _) => interface_mac(&i.name),
        (None, IpAddr::V4(s), IpAddr::V4(d)) => neighbour(s, d, &out.name),
        _ => None,
    };
    let Some(mac) = mac else {
        return -libc::EHOSTUNREACH;
    };
    // SAFETY: eth_mac holds 6 bytes and vid is writable or null (contract).
    unsafe {
        core::ptr::copy_nonoverlapping(mac.as_ptr(), eth_mac, 6);
        if !vid.is_null() {
            *vid = vlan_of(&out.name);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_entries_must_be_complete_and_on_the_interface() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     198.18.0.2       0x1         0x2         aa:bb:cc:dd:ee:01     *        br0\n\
                     198.18.0.3       0x1         0x0         00:00:00:00:00:00     *        br0\n\
                     198.18.0.2       0x1         0x2         aa:bb:cc:dd:ee:02     *        eth1\n";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            arp_entry(table, ip("198.18.0.2"), "br0"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01])
        );
        assert_eq!(
            arp_entry(table, ip("198.18.0.2"), "eth1"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02])
        );
        assert_eq!(
            arp_entry(table, ip("198.18.0.3"), "br0"),
            None,
            "incomplete"
        );
        assert_eq!(arp_entry(table, ip("198.18.0.9"), "br0"), None);
    }

    #[test]
    fn networks_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_network(ip("127.0.0.1"), ip("127.0.0.171"), 8));
        assert!(!same_network(ip("127.0.0.1"), ip("128.0.0.1"), 8));
        assert!(same_network(ip("198.18.0.1"), ip("198.19.3.4"), 15));
        assert!(!same_network(ip("198.18.0.1"), ip("198.20.0.1"), 15));
        assert!(same_network(ip("fe80::1"), ip("fe80::2"), 64));
        assert!(!same_network(ip("fe80::1"), ip("127.0.0.1"), 0));
        assert!(same_network(ip("10.0.0.1"), ip("11.0.0.1"), 0));
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("00:11:22:33:44:55\n"),
            Some([0, 0x11, 0x22, 0x33, 0x44, 0x55])
        );
        assert_eq!(parse_mac("00:11:22:33:44"), None);
        assert_eq!(parse_mac("00:11:22:33:44:55:66"), None);
        assert_eq!(parse_mac("zz:11:22:33:44:55"), None);
    }
}
