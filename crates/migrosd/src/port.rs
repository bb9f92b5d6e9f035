//! The port of the device: its GID table and its state, read from the
//! interface the device's address belongs to.
//!
//! # The GID table
//!
//! The kernel's ib_core fills a RoCE port's table from its netdev: a
//! default GID made from the MAC (fe80::/64 with the EUI-64) first, once
//! per RoCE version (index 0 RoCE v1, index 1 RoCE v2), then every IPv4
//! (mapped, `::ffff:a.b.c.d`) and IPv6 address of the netdev, again once
//! per version. rxe's table is that table.
//!
//! migros speaks RoCE v2 only (it is UDP), so every entry here is a RoCE v2
//! GID, one per address, and index 0 is the device's own address: the one
//! its socket is bound to, the only one its datagrams leave from and
//! arrive at. Programs that take index 0 (perftest `-x 0`, the ibverbs
//! examples' `-g 0`, librdmacm, which always names 0) reach the device as
//! before. The other addresses of the interface follow, IPv4 ones first,
//! then IPv6 ones (link-local included, as the kernel lists it), in the
//! order the kernel reports them. They are listed so that programs
//! looking for a GID by address or type find the table the kernel would
//! give; a QP or address handle whose source GID is one of them is
//! refused (EINVAL, with a message naming index 0) by the client
//! libraries, because the daemon cannot send from an address it is not
//! bound to, nor hear answers there. A device bound to a loopback address
//! lists that address only (every device of a host shares `lo`, and its
//! other addresses are not theirs).
//!
//! Programs that choose a GID themselves choose index 0 on an IPv4
//! device: perftest without `-x` keeps the first IPv4-mapped entry of the
//! best RoCE type, UCX the first RoCE v2 IPv4 one. On an IPv6 device of an
//! interface that also has IPv4 addresses perftest would pick an IPv4
//! entry and be refused; `-x 0` (or `--ipv6`) names the device's own.
//!
//! # The port's state
//!
//! The port is active while the device's address is an address of an
//! interface that is up and running, or, for a loopback address, while the
//! loopback interface is up. The daemon looks every second (with its
//! sweep of client processes); when the state changes it sends
//! PORT_ERR or PORT_ACTIVE to every session that subscribed to
//! asynchronous events (the element is port 1), and clients opened later
//! learn the state from [`DeviceInfo::port_active`]. A UDP send that fails
//! is not a port failure (a peer may be unreachable while the port is
//! fine); the address going away is.
//!
//! [`DeviceInfo::port_active`]: migros_proto::msg::DeviceInfo

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one interface, as `getifaddrs` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub interface: String,
    pub addr: IpAddr,
    /// The interface is up and running.
    pub running: bool,
    pub loopback: bool,
}

/// What the port looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// The GID table's addresses, in index order (see the module docs).
    pub gids: Vec<IpAddr>,
    pub active: bool,
}

/// The port of a device bound to `bind`, given the host's addresses.
pub fn view(bind: IpAddr, addrs: &[IfAddr]) -> PortView {
    let Some(own) = addrs.iter().find(|a| a.addr == bind) else {
        // 127.0.0.x and the like reach `lo` without being listed on it.
        let active = bind.is_loopback() && addrs.iter().any(|a| a.loopback && a.running);
        return PortView {
            gids: vec![bind],
            active,
        };
    };
    let mut gids = vec![bind];
    if !own.loopback {
        let others = addrs
            .iter()
            .filter(|a| a.interface == own.interface && a.addr != bind);
        let (v4, v6): (Vec<&IfAddr>, Vec<&IfAddr>) = others.partition(|a| a.addr.is_ipv4());
        for a in v4.into_iter().chain(v6) {
            if !gids.contains(&a.addr) {
                gids.push(a.addr);
            }
        }
    }
    PortView {
        gids,
        active: own.running,
    }
}

/// The host's addresses (of this network namespace), or `None` if
/// `getifaddrs` fails.
pub fn host_addrs() -> Option<Vec<IfAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list it allocated; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned, alive until
        // freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        // SAFETY: ifa_addr is null or a sockaddr of ifa's family.
        let Some(addr) = (unsafe { sockaddr_ip(ifa.ifa_addr) }) else {
            continue;
        };
        // SAFETY: ifa_name is a NUL-terminated string of the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        let flags = ifa.ifa_flags as libc::c_int;
        out.push(IfAddr {
            interface: name.to_string_lossy().into_owned(),
            addr,
            running: flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0,
            loopback: flags & libc::IFF_LOOPBACK != 0,
        });
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Some(out)
}

/// The IP address of an AF_INET or AF_INET6 sockaddr.
///
/// # Safety
/// `sa` is null or points to a sockaddr as large as its family says.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a valid sockaddr (caller); its family says which one it is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let v4 = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// The port of a device bound to `bind` now; active with only `bind` if
/// the host's addresses cannot be read.
pub fn current(bind: IpAddr) -> PortView {
    match host_addrs() {
        Some(addrs) => view(bind, &addrs),
        None => PortView {
            gids: vec![bind],
            active: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(interface: &str, addr: &str, running: bool, loopback: bool) -> IfAddr {
        IfAddr {
            interface: interface.into(),
            addr: addr.parse().unwrap(),
            running,
            loopback,
        }
    }

    fn host() -> Vec<IfAddr> {
        vec![
            a("lo", "127.0.0.1", true, true),
            a("eth0", "10.0.0.5", true, false),
            a("lo", "::1", true, true),
            a("eth0", "fe80::1", true, false),
            a("eth1", "192.168.1.2", true, false),
            a("eth0", "2001:db8::5", true, false),
            a("eth0", "10.0.0.6", true, false),
        ]
    }

    #[test]
    fn the_table_is_the_bound_address_then_its_interfaces_others() {
        let v = view("10.0.0.6".parse().unwrap(), &host());
        let want: Vec<IpAddr> = ["10.0.0.6", "10.0.0.5", "fe80::1", "2001:db8::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            v,
            PortView {
                gids: want,
                active: true
            }
        );
        let v = view("fe80::1".parse().unwrap(), &host());
        assert_eq!(v.gids[0], "fe80::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            v.gids[1..3],
            [
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "10.0.0.6".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_loopback_device_lists_its_own_address_only() {
        for bind in ["127.0.0.171", "127.0.0.1", "::1"] {
            let bind: IpAddr = bind.parse().unwrap();
            let v = view(bind, &host());
            assert_eq!(
                v,
                PortView {
                    gids: vec![bind],
                    active: true
                }
            );
        }
        let mut down = host();
        down[0].running = false;
        down[2].running = false;
        assert!(!view("127.0.0.171".parse().unwrap(), &down).active);
    }

    #[test]
    fn a_missing_or_down_address_is_a_port_in_error() {
        let gone: IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(
            view(gone, &host()),
            PortView {
                gids: vec![gone],
                active: false
            }
        );
        let mut h = host();
        h[4].running = false;
        let v = view("192.168.1.2".parse().unwrap(), &h);
        assert!(!v.active);
    }

    #[test]
    fn this_hosts_loopback_address_is_found() {
        // Every namespace the tests run in has lo.
        let v = current("127.0.0.1".parse().unwrap());
        assert_eq!(v.gids, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }
}
