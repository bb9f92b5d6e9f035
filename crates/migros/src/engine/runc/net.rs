//! A container's network: its own namespace `migros-c-<name>-<gen>` (one per
//! incarnation: source and destination coexist during a migration), a veth
//! `c-<name>` into its node's namespace, and an overlay /32 from
//! 198.19.0.0/16 that moves with it: a host route on every node (through the
//! veth on its own node, through its node's bridge address elsewhere).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::container;
use crate::engine::EngineKind;
use crate::node::{self, Node};
use crate::sys::{self, ip_in};

/// Longest container name (`c-<name>` is an interface name).
pub const MAX_NAME: usize = 13;

pub fn netns(name: &str, gen: u32) -> String {
    format!("migros-c-{name}-{gen}")
}

pub fn netns_path(name: &str, gen: u32) -> PathBuf {
    PathBuf::from("/run/netns").join(netns(name, gen))
}

fn node_veth(name: &str) -> String {
    format!("c-{name}")
}

/// Whether `ip` may be a container's address.
pub fn valid_ip(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 198 && o[1] == 19 && !(o[2] == 0 && o[3] < 2) && !(o[2] == 255 && o[3] == 255)
}

/// The first free address from 198.19.0.2 on.
pub fn allocate(taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    (2u32..0xffff)
        .map(|i| Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8))
        .find(|a| !taken.contains(a))
}

/// Makes the namespace of incarnation `gen` on `node`: veth, address,
/// default route through the node. Routes to it are set by [`route_to`].
pub fn create(name: &str, gen: u32, ip: Ipv4Addr, node: &Node) -> Result<()> {
    create_in(name, gen, ip, Some(&node.netns()), node.addr)
}

/// `ip args…` in namespace `ns` (`None`: this process's).
fn ip_at(ns: Option<&str>, args: &[&str]) -> Result<String> {
    match ns {
        Some(ns) => ip_in(ns, args),
        None => sys::ip(args),
    }
}

/// Makes the namespace of incarnation `gen` with its veth into `node_ns`
/// (`None`: this process's namespace, a whole machine's as on an ssh
/// node), its default route through `gateway` (an address of that side).
pub fn create_in(
    name: &str,
    gen: u32,
    ip: Ipv4Addr,
    node_ns: Option<&str>,
    gateway: Ipv4Addr,
) -> Result<()> {
    let ns = netns(name, gen);
    sys::netns_del(&ns)?;
    sys::ip(&["netns", "add", &ns])?;
    let nv = node_veth(name);
    // A leftover of an earlier incarnation on this node.
    let _ = ip_at(node_ns, &["link", "del", &nv]);
    ip_at(
        node_ns,
        &[
            "link",
            "add",
            &nv,
            "mtu",
            node::LINK_MTU,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            node::LINK_MTU,
            "netns",
            &ns,
        ],
    )?;
    ip_at(node_ns, &["link", "set", &nv, "up"])?;
    ip_in(&ns, &["link", "set", "lo", "up"])?;
    ip_in(&ns, &["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
    ip_in(&ns, &["link", "set", "eth0", "up"])?;
    ip_in(
        &ns,
        &[
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            "eth0",
            "onlink",
        ],
    )?;
    Ok(())
}

/// The shell command that points this machine's route for `ip` at the
/// veth of container `name` (`via`: `None`) or at the machine `via`.
pub fn route_command(name: &str, ip: Ipv4Addr, via: Option<Ipv4Addr>) -> String {
    match via {
        None => format!("ip route replace {ip}/32 dev {}", node_veth(name)),
        Some(v) => format!("ip route replace {ip}/32 via {v}"),
    }
}

/// Points every node's route for `ip` at `home` (the veth there, the
/// home's address elsewhere).
pub fn route_to(name: &str, ip: Ipv4Addr, home: &Node) -> Result<()> {
    let dst = format!("{ip}/32");
    for n in node::all().into_iter().filter(|n| n.ssh.is_none()) {
        if n.name == home.name {
            ip_in(
                &n.netns(),
                &["route", "replace", &dst, "dev", &node_veth(name)],
            )?;
        } else {
            ip_in(
                &n.netns(),
                &["route", "replace", &dst, "via", &home.addr.to_string()],
            )?;
        }
    }
    Ok(())
}

/// Adds to a new node (namespace `node_ns`) the route to every runc
/// container, through its home node.
pub fn route_all(node_ns: &str) -> Result<()> {
    for c in container::all() {
        if c.engine != EngineKind::Runc {
            continue;
        }
        if let Ok(home) = node::load(&c.node)
            .map_err(|_| ())
            .and_then(|n| match n.ssh {
                None => Ok(n),
                Some(_) => Err(()),
            })
        {
            let dst = format!("{}/32", c.ip);
            ip_in(
                node_ns,
                &["route", "replace", &dst, "via", &home.addr.to_string()],
            )?;
        }
    }
    Ok(())
}

/// Removes every node's route for `ip` (best effort).
pub fn unroute(ip: Ipv4Addr) {
    for n in node::all().into_iter().filter(|n| n.ssh.is_none()) {
        let _ = ip_in(&n.netns(), &["route", "del", &format!("{ip}/32")]);
    }
}

/// Drops every packet in the namespace of incarnation `gen` (what the
/// CRIU action script does at `network-lock`): a restored TCP connection
/// must see nothing before its socket exists, or the kernel resets it.
pub fn lock(name: &str, gen: u32) -> Result<()> {
    drop_rules(name, gen, "-I INPUT 1", "-I OUTPUT 1")
}

/// Removes what [`lock`] (or the action script) added, if still there.
pub fn unlock(name: &str, gen: u32) {
    let _ = drop_rules(name, gen, "-D INPUT", "-D OUTPUT");
}

/// Adds or deletes the two DROP rules in one `iptables-restore`.
fn drop_rules(name: &str, gen: u32, input: &str, output: &str) -> Result<()> {
    use std::io::Write as _;
    let ns = netns(name, gen);
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "iptables-restore", "-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running iptables-restore")?;
    if let Some(mut stdin) = child.stdin.take() {
        write!(
            stdin,
            "*filter\n{input} -j DROP\n{output} -j DROP\nCOMMIT\n"
        )?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "iptables-restore in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Removes the namespace of incarnation `gen` (its veth goes with it).
pub fn destroy(name: &str, gen: u32) -> Result<()> {
    sys::netns_del(&netns(name, gen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(valid_ip(Ipv4Addr::new(198, 19, 1, 5)));
        assert!(!valid_ip(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(!valid_ip(Ipv4Addr::new(198, 18, 1, 5)));
        assert_eq!(allocate(&[]), Some(Ipv4Addr::new(198, 19, 0, 2)));
        assert_eq!(
            allocate(&[Ipv4Addr::new(198, 19, 0, 2)]),
            Some(Ipv4Addr::new(198, 19, 0, 3))
        );
        let taken: Vec<_> = (2..=255).map(|i| Ipv4Addr::new(198, 19, 0, i)).collect();
        assert_eq!(allocate(&taken), Some(Ipv4Addr::new(198, 19, 1, 0)));
    }
}
