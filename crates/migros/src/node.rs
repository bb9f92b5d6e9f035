//! `migros node add|list|del`: a node is a network namespace `migros-<name>`
//! with a veth into the host bridge `migros-br0` (198.18.0.1/16), an address
//! in 198.18.0.0/16 and a `migrosd` running inside it, whose sockets are in
//! `/run/migros/nodes/<name>/` (where the CRIU plugin looks for daemons).
//! Records, logs and pid files are under `/run/migros/state/nodes/<name>/`.
//!
//! A node added with `--ssh [user@]host[:port]` is another machine: its
//! migrosd runs there in the machine's own network namespace, supervised
//! (`crate::agent`, through the `migros` that `node add` installs in its
//! `/var/lib/migros/bin`, with the CRIU plugin in its `/usr/lib/criu`),
//! its sockets in the machine's `/run/migros`; its
//! record here says how to reach it, and every command for it (the
//! daemon's admin requests, Docker) runs there over ssh.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::json;

use migros_proto::admin::{AdminRequest, AdminResponse};

use crate::cli::{DevAddArgs, NodeAddArgs, NodeCommand};
use crate::engine::runc;
use crate::remote::{Host, Ssh, REMOTE_MIGROS};
use crate::sys::{self, ip, ip_in};
use crate::{container, daemon};

/// The host bridge every node is plugged into.
pub const BRIDGE: &str = "migros-br0";
/// The bridge's own address (the host side of the node network).
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Link MTU of the bridge and every veth (RoCE MTU 4096 plus headers fits).
pub const LINK_MTU: &str = "9000";
/// Longest node name (`mh-<name>` is an interface name, 15 bytes at most).
pub const MAX_NAME: usize = 12;

/// What `node add` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub addr: Ipv4Addr,
    pub dev: String,
    pub mtu: Option<u32>,
    /// The daemon's pid (on its machine).
    pub pid: i32,
    /// How to reach the node's machine; `None`: this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Ssh>,
}

impl Node {
    pub fn netns(&self) -> String {
        netns(&self.name)
    }

    /// The daemon's socket directory on its machine.
    pub fn socket_dir(&self) -> PathBuf {
        match self.ssh {
            Some(_) => PathBuf::from(crate::agent::SOCKET_DIR),
            None => sys::node_socket_dir(&self.name),
        }
    }

    /// The machine the node lives on.
    pub fn host(&self) -> Host {
        match &self.ssh {
            Some(s) => Host::Ssh(s.clone()),
            None => Host::Local,
        }
    }

    pub fn running(&self) -> bool {
        match &self.ssh {
            Some(_) => self
                .host()
                .run(REMOTE_MIGROS, &["__remote", "status", "--dev", &self.dev])
                .is_ok(),
            None => sys::alive(self.pid) && daemon::answers(&self.socket_dir(), &self.dev),
        }
    }

    /// One request to the node's daemon, its errors included, wherever it is.
    pub fn admin(&self, req: &AdminRequest) -> Result<AdminResponse> {
        match &self.ssh {
            None => crate::admin::request_raw(&self.socket_dir(), &self.dev, req),
            Some(_) => {
                let json = serde_json::to_string(req)?;
                let out = self.host().run(
                    REMOTE_MIGROS,
                    &["__remote", "admin", "--dev", &self.dev, &json],
                )?;
                serde_json::from_str(out.trim())
                    .with_context(|| format!("node {}: parsing the daemon's answer", self.name))
            }
        }
    }
}

pub fn netns(name: &str) -> String {
    format!("migros-{name}")
}

fn host_veth(name: &str) -> String {
    format!("mh-{name}")
}

pub fn node_dir(name: &str) -> PathBuf {
    sys::state_dir().join("nodes").join(name)
}

fn record_path(name: &str) -> PathBuf {
    node_dir(name).join("node.json")
}

pub fn log_path(name: &str) -> PathBuf {
    node_dir(name).join("migrosd.log")
}

/// The node called `name`.
pub fn load(name: &str) -> Result<Node> {
    let p = record_path(name);
    if !p.exists() {
        bail!("node {name} not found (see `migros node list`)");
    }
    sys::read_json(&p)
}

/// Every node, sorted by name.
pub fn all() -> Vec<Node> {
    sys::read_records(&sys::state_dir().join("nodes"), "node.json")
}

pub fn run(cmd: NodeCommand) -> Result<()> {
    match cmd {
        NodeCommand::Add(a) => add(&a),
        NodeCommand::List { json } => list(json),
        NodeCommand::Del { name } => del(&name),
    }
}

/// Whether `addr` may be a node's address: in 198.18.0.0/16, not the
/// network, broadcast or bridge address.
pub fn valid_addr(addr: Ipv4Addr) -> bool {
    let o = addr.octets();
    o[0] == 198
        && o[1] == 18
        && addr != BRIDGE_ADDR
        && !(o[2] == 0 && o[3] == 0)
        && !(o[2] == 255 && o[3] == 255)
}

fn add(a: &NodeAddArgs) -> Result<()> {
    sys::need_root("migros node add")?;
    if !sys::valid_name(&a.name, MAX_NAME) {
        bail!(
            "invalid node name {:?}: 1 to {MAX_NAME} of a-z 0-9 - _, starting with a letter or digit",
            a.name
        );
    }
    if let Some(target) = &a.ssh {
        return add_ssh(a, Ssh::parse(target, a.ssh_config.clone())?);
    }
    let addr = a.addr.context("--addr is needed for a local node")?;
    if !valid_addr(addr) {
        bail!("node address {addr} is not in 198.18.0.0/16 (198.18.0.1 is the bridge's)");
    }
    if !migros_proto::paths::valid_device_name(&a.dev) {
        bail!("invalid device name {:?}", a.dev);
    }
    let _lock = sys::lock()?;
    if let Ok(old) = load(&a.name) {
        if old.running() && sys::netns_exists(&old.netns()) {
            bail!(
                "node {} exists (addr {}, pid {})",
                old.name,
                old.addr,
                old.pid
            );
        }
        // A leftover of a crash: clean it and start over.
        teardown(&old.name, Some(&old));
    } else if sys::netns_exists(&netns(&a.name)) {
        teardown(&a.name, None);
    }
    if let Some(other) = all().into_iter().find(|n| n.addr == addr) {
        bail!("address {addr} is taken by node {}", other.name);
    }
    match setup(a, addr) {
        Ok(node) => {
            println!(
                "node {} added: addr {} device {} pid {} sockets {}",
                node.name,
                node.addr,
                node.dev,
                node.pid,
                node.socket_dir().display()
            );
            Ok(())
        }
        Err(e) => {
            teardown(&a.name, None);
            let _ = remove_bridge_if_unused();
            Err(e)
        }
    }
}

fn setup(a: &NodeAddArgs, addr: Ipv4Addr) -> Result<Node> {
    ensure_bridge()?;
    let ns = netns(&a.name);
    let hv = host_veth(&a.name);
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link", "add", &hv, "mtu", LINK_MTU, "type", "veth", "peer", "name", "eth0", "mtu",
        LINK_MTU, "netns", &ns,
    ])?;
    ip(&["link", "set", &hv, "master", BRIDGE, "up"])?;
    ip_in(&ns, &["link", "set", "lo", "up"])?;
    ip_in(&ns, &["addr", "add", &format!("{addr}/16"), "dev", "eth0"])?;
    ip_in(&ns, &["link", "set", "eth0", "up"])?;
    sys::sysctl_in(&ns, "net.ipv4.ip_forward", "1")?;
    // The node forwards containers' traffic: routes to every container.
    runc::net::route_all(&ns)?;
    let dir = node_dir(&a.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let sock = sys::node_socket_dir(&a.name);
    std::fs::create_dir_all(&sock).with_context(|| format!("creating {}", sock.display()))?;
    let pid = start_daemon(a, addr, &ns, &sock)?;
    record_node(a, addr, pid, None)
}

/// Writes the record of the node `a` asked for, at `addr`, its daemon
/// `pid` on the machine `ssh` reaches (`None`: this one).
fn record_node(a: &NodeAddArgs, addr: Ipv4Addr, pid: i32, ssh: Option<Ssh>) -> Result<Node> {
    let node = Node {
        name: a.name.clone(),
        addr,
        dev: a.dev.clone(),
        mtu: a.mtu,
        pid,
        ssh,
    };
    sys::write_json(&record_path(&a.name), &node)?;
    Ok(node)
}

fn ensure_bridge() -> Result<()> {
    if !std::path::Path::new("/sys/class/net").join(BRIDGE).exists() {
        ip(&["link", "add", BRIDGE, "mtu", LINK_MTU, "type", "bridge"])?;
    }
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", BRIDGE])?;
    if !addrs.contains(&format!("{BRIDGE_ADDR}/16")) {
        ip(&["addr", "add", &format!("{BRIDGE_ADDR}/16"), "dev", BRIDGE])?;
    }
    ip(&["link", "set", BRIDGE, "up"])?;
    // Bridged packets traverse the host's FORWARD chain (br_netfilter),
    // whose policy may be DROP (Docker): let node-to-node traffic through.
    if sys::run("iptables", &FORWARD_RULE_CHECK).is_err() {
        let _ = sys::run("iptables", &FORWARD_RULE_ADD);
    }
    Ok(())
}

const FORWARD_RULE_CHECK: [&str; 9] = [
    "-w", "-C", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
];
const FORWARD_RULE_ADD: [&str; 9] = [
    "-w", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
];
const FORWARD_RULE_DEL: [&str; 9] = [
    "-w", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
];

fn remove_bridge_if_unused() -> Result<()> {
    if all().is_empty() && std::path::Path::new("/sys/class/net").join(BRIDGE).exists() {
        ip(&["link", "del", BRIDGE])?;
        while sys::run("iptables", &FORWARD_RULE_DEL).is_ok() {}
    }
    Ok(())
}

/// `node add NAME --ssh TARGET`: installs `migros` and `migrosd` on the
/// machine (when it lacks these very builds), starts its device there,
/// supervised, and records the node here.
fn add_ssh(a: &NodeAddArgs, ssh: Ssh) -> Result<()> {
    let addr = match a.addr {
        Some(addr) => addr,
        None => ssh.host().parse().with_context(|| {
            format!(
                "--ssh {}: not an address; say which with --addr",
                ssh.host()
            )
        })?,
    };
    if !migros_proto::paths::valid_device_name(&a.dev) {
        bail!("invalid device name {:?}", a.dev);
    }
    let _lock = sys::lock()?;
    if let Ok(old) = load(&a.name) {
        bail!(
            "node {} exists (addr {}{})",
            old.name,
            old.addr,
            old.host().at()
        );
    }
    if let Some(other) = all().into_iter().find(|n| n.addr == addr) {
        bail!("address {addr} is taken by node {}", other.name);
    }
    let host = Host::Ssh(ssh.clone());
    host.run("true", &[])
        .with_context(|| format!("node {}: cannot reach {ssh}", a.name))?;
    let exe = std::env::current_exe().context("locating the migros executable")?;
    let daemon = daemon::find_daemon()?;
    let mut copied = Vec::new();
    for (from, to) in [
        (exe.as_path(), REMOTE_MIGROS.to_string()),
        (
            daemon.as_path(),
            format!("{}/bin/migrosd", crate::remote::REMOTE_DIR),
        ),
    ] {
        if host.install(from, &to)? {
            copied.push(to);
        }
    }
    // The CRIU plugin, so the machine's CRIU moves RDMA state.
    match criu_plugin() {
        Some(p) => {
            let to = "/usr/lib/criu/migros_criu.so";
            if host.install(&p, to)? {
                copied.push(to.to_string());
            }
        }
        None => eprintln!(
            "migros: warning: no migros CRIU plugin here to install on {ssh} (scripts/install-criu-plugin.sh)"
        ),
    }
    // migros' libibverbs, which runc containers there mount (the remote
    // migros finds it in its ../lib/migros).
    if let Some(lib) = crate::env::lib_dir() {
        for e in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
            let e = e?;
            if !e.file_type()?.is_file() {
                continue;
            }
            let to = format!(
                "{}/{}",
                crate::remote::REMOTE_LIB,
                e.file_name().to_string_lossy()
            );
            if host.install(&e.path(), &to)? {
                copied.push(to);
            }
        }
    }
    let mut args = vec![
        "__remote".to_string(),
        "start".into(),
        "--dev".into(),
        a.dev.clone(),
        "--addr".into(),
        addr.to_string(),
    ];
    if let Some(m) = a.mtu {
        args.extend(["--mtu".into(), m.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = host
        .run(REMOTE_MIGROS, &args)
        .with_context(|| format!("starting migrosd on {ssh}"))?;
    let pid: i32 = out
        .trim()
        .parse()
        .with_context(|| format!("{ssh}: migrosd's pid {out:?}"))?;
    std::fs::create_dir_all(node_dir(&a.name))?;
    let node = record_node(a, addr, pid, Some(ssh.clone()))?;
    println!(
        "node {} added: {ssh} addr {addr} device {} pid {pid} (supervised) sockets {ssh}:{}{}",
        node.name,
        node.dev,
        node.socket_dir().display(),
        if copied.is_empty() {
            String::new()
        } else {
            format!("; installed {}", copied.join(", "))
        }
    );
    Ok(())
}

/// The migros CRIU plugin to install on other machines: `$MIGROS_CRIU_PLUGIN`,
/// else the newest of the build beside this executable, the release build
/// and this machine's installed one. The newest, not the first found: a
/// plugin left from an older build speaks an older protocol, and the
/// daemons the node runs (this build's) would refuse its restores.
fn criu_plugin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MIGROS_CRIU_PLUGIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    newest_file([
        bin.join("libmigros_criu.so"),
        bin.join("../release/libmigros_criu.so"),
        bin.join("../../release/libmigros_criu.so"),
        PathBuf::from("/usr/lib/criu/migros_criu.so"),
    ])
}

/// The most recently modified of `paths` that is a regular file.
fn newest_file(paths: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    paths
        .into_iter()
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, p))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, p)| p)
}

/// Starts `migrosd` inside the node's namespace, detached, and waits until
/// its socket answers.
fn start_daemon(a: &NodeAddArgs, addr: Ipv4Addr, ns: &str, sock: &Path) -> Result<i32> {
    let bin = daemon::find_daemon()?;
    let dev = DevAddArgs {
        name: a.dev.clone(),
        addr: IpAddr::V4(addr),
        mtu: a.mtu,
        fault: None,
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(&bin)
        .args(daemon::daemon_args(sock, &dev))
        .env("NO_COLOR", "1");
    // `ip netns exec` execs the daemon: same pid.
    let pid = daemon::spawn(
        cmd,
        sock,
        &a.dev,
        &log_path(&a.name),
        &node_dir(&a.name).join("migrosd.pid"),
    )
    .context("starting migrosd in the node's namespace")?;
    Ok(pid as i32)
}

/// Stops the daemon of a node (admin Shutdown, else SIGTERM, then SIGKILL).
fn stop_daemon(node: &Node) {
    let dir = node.socket_dir();
    if crate::admin::shutdown(&dir, &node.dev).is_err() && sys::alive(node.pid) {
        let _ = kill(Pid::from_raw(node.pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + daemon::STOP_TIMEOUT;
    while sys::alive(node.pid) {
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(node.pid), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes whatever exists of node `name` (best effort, no errors).
fn teardown(name: &str, node: Option<&Node>) {
    if let Some(n) = node {
        stop_daemon(n);
    }
    let _ = sys::netns_del(&netns(name));
    if std::path::Path::new("/sys/class/net")
        .join(host_veth(name))
        .exists()
    {
        let _ = ip(&["link", "del", &host_veth(name)]);
    }
    let _ = std::fs::remove_dir_all(sys::node_socket_dir(name));
    let _ = std::fs::remove_dir_all(migros_proto::paths::admin_dir(&sys::node_socket_dir(name)));
    let _ = std::fs::remove_dir_all(node_dir(name));
}

fn del(name: &str) -> Result<()> {
    sys::need_root("migros node del")?;
    let _lock = sys::lock()?;
    let node = load(name).ok();
    if node.is_none() && !sys::netns_exists(&netns(name)) {
        bail!("node {name} not found");
    }
    let on_it: Vec<String> = container::all()
        .into_iter()
        .filter(|c| c.node == name)
        .map(|c| c.name)
        .collect();
    if !on_it.is_empty() {
        bail!(
            "node {name} still has containers: {} (migros rm -f them first)",
            on_it.join(", ")
        );
    }
    if let Some(n) = node.as_ref().filter(|n| n.ssh.is_some()) {
        // Its machine stays; its daemon stops (a daemon already gone is fine).
        if let Err(e) = n
            .host()
            .run(REMOTE_MIGROS, &["__remote", "stop", "--dev", &n.dev])
        {
            eprintln!("migros: node {name}: stopping its migrosd: {e:#}");
        }
        let _ = std::fs::remove_dir_all(node_dir(name));
        println!("node {name} removed");
        return Ok(());
    }
    teardown(name, node.as_ref());
    remove_bridge_if_unused()?;
    println!("node {name} removed");
    Ok(())
}

fn list(json_out: bool) -> Result<()> {
    let nodes = all();
    if json_out {
        let v: Vec<_> = nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "addr": n.addr.to_string(),
                    "dev": n.dev,
                    "mtu": n.mtu,
                    "pid": n.pid,
                    "state": if n.running() { "running" } else { "down" },
                    "netns": n.ssh.is_none().then(|| n.netns()),
                    "ssh": n.ssh.as_ref().map(|s| s.to_string()),
                    "socket_dir": n.socket_dir(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<16} {:<8} {:<8} {:>8}  SOCKETS",
        "NODE", "ADDR", "DEV", "STATE", "PID"
    );
    for n in nodes {
        println!(
            "{:<12} {:<16} {:<8} {:<8} {:>8}  {}",
            n.name,
            n.addr,
            n.dev,
            if n.running() { "running" } else { "down" },
            n.pid,
            match &n.ssh {
                Some(s) => format!("{s}:{}", n.socket_dir().display()),
                None => n.socket_dir().display().to_string(),
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert!(valid_addr(Ipv4Addr::new(198, 18, 1, 1)));
        assert!(valid_addr(Ipv4Addr::new(198, 18, 0, 2)));
        assert!(!valid_addr(BRIDGE_ADDR));
        assert!(!valid_addr(Ipv4Addr::new(198, 18, 0, 0)));
        assert!(!valid_addr(Ipv4Addr::new(198, 18, 255, 255)));
        assert!(!valid_addr(Ipv4Addr::new(198, 19, 1, 1)));
        assert!(!valid_addr(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn the_newest_plugin_build_is_installed_not_the_first_found() {
        let dir = std::env::temp_dir().join(format!("migros-newest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (dir.join("old.so"), dir.join("new.so"));
        std::fs::write(&old, b"old").unwrap();
        let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(a_minute_ago)
            .unwrap();
        std::fs::write(&new, b"new").unwrap();
        let missing = dir.join("missing.so");
        let picked = newest_file([old.clone(), missing.clone(), new.clone(), dir.clone()]);
        assert_eq!(picked, Some(new));
        assert_eq!(newest_file([missing, dir.clone()]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
