//! `migros host add|del|list|exec`: simulated machines on this one, for
//! the tests and `migros demo --swarm`, separate in every way this machine
//! allows without a VM.
//!
//! A host `<name>` is a network namespace `mhost-<name>` (a veth into
//! bridge `migros-hb0`, 198.18.64.1/24 on this side, the host's address in
//! 198.18.64.0/24, no default route), a mount namespace and a UTS
//! namespace (its hostname), bound to `/run/migros-hosts/<name>.{mnt,uts}`.
//! In its mount namespace it has its own
//! - `/run` (a tmpfs: docker, containerd, sshd and migros sockets),
//! - `/var/lib/docker`, `/var/lib/containerd`, `/etc/docker`,
//!   `/var/lib/migros`, `/etc/ssh`, `/root/.ssh`, `/tmp`, `/var/tmp`,
//!   `/etc/hosts`, `/etc/hostname` and root's `.bashrc` (empty: ssh
//!   commands do not run this machine's) (bind mounts of its directory
//!   `/var/lib/migros-hosts/<name>/`, hidden from every host by a tmpfs over
//!   `/var/lib/migros-hosts`),
//! - `/usr/lib/criu` (CRIU's plugins: a copy of the machine's at first;
//!   `node add --ssh` installs the migros plugin there),
//! - `/sys` of its network namespace (the cgroup mounts kept),
//!
//! and runs its own dockerd (which starts its own containerd; containers
//! under cgroup `/migros-host-<name>`) and its own sshd: root logs in with
//! keys only; every host's key is authorised on every host and every host
//! key is known, under the hosts' names (`/etc/hosts`) and addresses. This
//! machine reaches them with `ssh -F /var/lib/migros-hosts/ssh_config
//! root@<name or address>`. What a host shares with the others: the rest
//! of the file system read as the machine has it (`/usr`, the programs),
//! the kernel, and `/proc` (no pid namespace).

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cli::HostCommand;
use crate::remote::quote;
use crate::sys::{self, ip, ip_in};

/// Where hosts keep their files (each host's directory, the ssh set-up).
pub const HOSTS_DIR: &str = "/var/lib/migros-hosts";
/// Where the namespaces are bound (a private mount).
pub const NS_DIR: &str = "/run/migros-hosts";
/// The bridge joining the hosts and this machine.
pub const BRIDGE: &str = "migros-hb0";
/// This machine's address on it.
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 1);
/// Longest host name (`mhv-<name>` is an interface name).
pub const MAX_NAME: usize = 10;
/// Where CRIU loads its plugins from (each host has its own).
pub const CRIU_LIB: &str = "/usr/lib/criu";
/// How long dockerd and sshd get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `host add` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub addr: Ipv4Addr,
}

impl Host {
    pub fn dir(&self) -> PathBuf {
        host_dir(&self.name)
    }

    /// `ssh` as this machine reaches the host.
    pub fn ssh(&self) -> crate::remote::Ssh {
        crate::remote::Ssh {
            target: format!("root@{}", self.addr),
            port: None,
            config: Some(ssh_config()),
        }
    }
}

fn host_dir(name: &str) -> PathBuf {
    Path::new(HOSTS_DIR).join(name)
}

fn netns(name: &str) -> String {
    format!("mhost-{name}")
}

fn veth(name: &str) -> String {
    format!("mhv-{name}")
}

fn ns_file(name: &str, kind: &str) -> PathBuf {
    Path::new(NS_DIR).join(format!("{name}.{kind}"))
}

fn cgroup_parent(name: &str) -> String {
    format!("migros-host-{name}")
}

/// This machine's ssh configuration for the hosts (identity, known hosts).
pub fn ssh_config() -> PathBuf {
    Path::new(HOSTS_DIR).join("ssh_config")
}

fn operator_key() -> PathBuf {
    Path::new(HOSTS_DIR).join("id_ed25519")
}

pub fn run(cmd: HostCommand) -> Result<()> {
    match cmd {
        HostCommand::Add(a) => {
            let h = add(&a.name, a.addr)?;
            println!(
                "host {} added: addr {} (ssh -F {} root@{}), dockerd and sshd running",
                h.name,
                h.addr,
                ssh_config().display(),
                h.name
            );
            Ok(())
        }
        HostCommand::Del { name } => {
            del(&name)?;
            println!("host {name} removed");
            Ok(())
        }
        HostCommand::List { json } => list(json),
        HostCommand::Swarm { names } => {
            let hosts = names.iter().map(|n| load(n)).collect::<Result<Vec<_>>>()?;
            let ssh: Vec<_> = hosts
                .iter()
                .map(|h| (h.name.clone(), h.addr, h.ssh()))
                .collect();
            let s = crate::swarm::form(&ssh)?;
            print!("{s}");
            Ok(())
        }
        HostCommand::Exec { name, cmd } => {
            let status = enter(&name)?
                .args(&cmd)
                .status()
                .with_context(|| format!("running {:?} in host {name}", cmd))?;
            std::process::exit(status.code().unwrap_or(1))
        }
    }
}

/// The host called `name`.
pub fn load(name: &str) -> Result<Host> {
    let p = host_dir(name).join("host.json");
    if !p.exists() {
        bail!("host {name} not found (see `migros host list`)");
    }
    sys::read_json(&p)
}

/// Every host, sorted by name.
pub fn all() -> Vec<Host> {
    sys::read_records(Path::new(HOSTS_DIR), "host.json")
}

/// Whether `addr` may be a host's address.
pub fn valid_addr(addr: Ipv4Addr) -> bool {
    let o = addr.octets();
    o[..3] == [198, 18, 64] && o[3] > 1 && o[3] < 255
}

/// A command run inside host `name` (its network, mount and UTS namespaces).
pub fn enter(name: &str) -> Result<Command> {
    let mnt = ns_file(name, "mnt");
    if !mnt.exists() {
        bail!("host {name} not found (no {})", mnt.display());
    }
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", netns(name)))
        .arg(format!("--mount={}", mnt.display()))
        .arg(format!("--uts={}", ns_file(name, "uts").display()))
        .arg("--")
        .env("PATH", PATH);
    Ok(c)
}

/// Runs `program args…` in host `name`; its stdout.
pub fn exec(name: &str, program: &str, args: &[&str]) -> Result<String> {
    let out = enter(name)?
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("entering host {name}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} in host {name} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates host `name` at `addr` and starts its dockerd and sshd.
pub fn add(name: &str, addr: Ipv4Addr) -> Result<Host> {
    sys::need_root("migros host add")?;
    if !sys::valid_name(name, MAX_NAME) {
        bail!("invalid host name {name:?}: 1 to {MAX_NAME} of a-z 0-9 - _, starting with a letter or digit");
    }
    if !valid_addr(addr) {
        bail!("host address {addr} is not in 198.18.64.0/24 (198.18.64.1 is this machine's)");
    }
    let _lock = sys::lock()?;
    if let Ok(old) = load(name) {
        bail!("host {name} exists (addr {})", old.addr);
    }
    if let Some(other) = all().into_iter().find(|h| h.addr == addr) {
        bail!("address {addr} is taken by host {}", other.name);
    }
    teardown(name);
    let h = Host {
        name: name.to_string(),
        addr,
    };
    match setup(&h) {
        Ok(()) => Ok(h),
        Err(e) => {
            teardown(name);
            let _ = refresh_keys();
            remove_shared_if_unused();
            Err(e)
        }
    }
}

fn setup(h: &Host) -> Result<()> {
    let (name, d) = (&h.name, h.dir());
    for sub in [
        "docker",
        "containerd",
        "etc-docker",
        "migros",
        "etc-ssh",
        "root-ssh",
        "tmp",
        "var-tmp",
        "log",
        "criu-lib",
    ] {
        std::fs::create_dir_all(d.join(sub))?;
    }
    // root's shell start-up file: the host's own, empty, so a command run
    // over ssh does not run this machine's (which may be slow or hang).
    std::fs::write(d.join("bashrc"), "# written by migros host add\n")?;
    // CRIU's plugin directory: the machine's, then the host's own (a
    // node installs its plugin there).
    if Path::new(CRIU_LIB).is_dir() {
        sys::copy_tree(Path::new(CRIU_LIB), &d.join("criu-lib"))?;
    }
    sys::run("chmod", &["700", &path(&d.join("root-ssh"))])?;
    sys::run(
        "chmod",
        &["1777", &path(&d.join("tmp")), &path(&d.join("var-tmp"))],
    )?;
    std::fs::write(d.join("hostname"), format!("{name}\n"))?;
    std::fs::write(d.join("hosts"), "")?;
    std::fs::write(
        d.join("etc-docker/daemon.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "experimental": true,
            "cgroup-parent": format!("/{}", cgroup_parent(name)),
            "bip": "198.19.250.1/24",
            "default-address-pools": [{"base": "198.19.192.0/19", "size": 24}],
        }))?,
    )?;
    std::fs::write(d.join("etc-ssh/sshd_config"), SSHD_CONFIG)?;
    std::fs::write(d.join("etc-ssh/ssh_config"), SSH_CLIENT_CONFIG)?;
    keygen(
        &d.join("etc-ssh/ssh_host_ed25519_key"),
        &format!("host {name}"),
    )?;
    keygen(&d.join("root-ssh/id_ed25519"), &format!("root@{name}"))?;
    sys::write_json(&d.join("host.json"), h)?;

    shared_setup()?;
    let (ns, hv) = (netns(name), veth(name));
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link", "add", &hv, "mtu", "9000", "type", "veth", "peer", "name", "eth0", "mtu", "9000",
        "netns", &ns,
    ])?;
    ip(&["link", "set", &hv, "master", BRIDGE, "up"])?;
    ip_in(&ns, &["link", "set", "lo", "up"])?;
    ip_in(
        &ns,
        &["addr", "add", &format!("{}/24", h.addr), "dev", "eth0"],
    )?;
    ip_in(&ns, &["link", "set", "eth0", "up"])?;

    // Mount points on the machine's file system for the bind mounts.
    for p in [
        "/var/lib/docker",
        "/var/lib/containerd",
        "/var/lib/migros",
        "/etc/docker",
        "/root/.ssh",
    ] {
        std::fs::create_dir_all(p)?;
    }
    for kind in ["mnt", "uts"] {
        std::fs::write(ns_file(name, kind), "")?;
    }
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["--", "unshare"])
        .arg(format!("--mount={}", ns_file(name, "mnt").display()))
        .arg(format!("--uts={}", ns_file(name, "uts").display()))
        .args(["--propagation", "private", "--", "sh", "-ec"])
        .arg(mount_script(h))
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .output()
        .context("running unshare")?;
    if !out.status.success() {
        bail!(
            "making host {name}'s mount namespace failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    refresh_keys()?;
    start_daemons(h)
}

/// The mount namespace's set-up, run inside it.
fn mount_script(h: &Host) -> String {
    let d = h.dir();
    let b = |sub: &str, at: &str| {
        format!(
            "mount --bind {} {}\n",
            quote(&path(&d.join(sub))),
            quote(at)
        )
    };
    let mut s = format!("hostname {}\n", quote(&h.name));
    s += "mount -t tmpfs -o mode=0755 tmpfs /run\nmkdir -p /run/sshd /run/migros /run/lock /run/.cgroup\n";
    s += &b("docker", "/var/lib/docker");
    s += &b("containerd", "/var/lib/containerd");
    s += &b("etc-docker", "/etc/docker");
    s += &b("migros", "/var/lib/migros");
    s += &b("etc-ssh", "/etc/ssh");
    s += &b("root-ssh", "/root/.ssh");
    s += &b("tmp", "/tmp");
    s += &b("var-tmp", "/var/tmp");
    s += &b("hosts", "/etc/hosts");
    s += &b("hostname", "/etc/hostname");
    if Path::new("/root/.bashrc").is_file() {
        s += &b("bashrc", "/root/.bashrc");
    }
    s += &format!("mkdir -p {CRIU_LIB}\n");
    s += &b("criu-lib", CRIU_LIB);
    // sysfs of the host's network namespace, the cgroup hierarchy kept.
    s += "mount --rbind /sys/fs/cgroup /run/.cgroup\nmount -t sysfs sysfs /sys\n";
    s += "mount --move /run/.cgroup /sys/fs/cgroup\nrmdir /run/.cgroup\n";
    // No host sees any host's directory.
    s += &format!("mount -t tmpfs -o mode=0700 tmpfs {HOSTS_DIR}\n");
    s
}

const SSHD_CONFIG: &str = "# written by migros host add\n\
Port 22\n\
HostKey /etc/ssh/ssh_host_ed25519_key\n\
PermitRootLogin prohibit-password\n\
PubkeyAuthentication yes\n\
PasswordAuthentication no\n\
KbdInteractiveAuthentication no\n\
UsePAM no\n\
AuthorizedKeysFile .ssh/authorized_keys\n\
PidFile /run/sshd.pid\n\
MaxStartups 100\n\
MaxSessions 100\n\
Subsystem sftp /usr/lib/openssh/sftp-server\n";

const SSH_CLIENT_CONFIG: &str = "# written by migros host add\n\
Host *\n\
  BatchMode yes\n\
  StrictHostKeyChecking yes\n\
  UserKnownHostsFile /root/.ssh/known_hosts\n";

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn keygen(file: &Path, comment: &str) -> Result<()> {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file.with_extension("pub"));
    sys::run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            comment,
            "-f",
            &path(file),
        ],
    )
    .map(|_| ())
}

/// The bridge, the private namespace directory, this machine's key.
fn shared_setup() -> Result<()> {
    if !Path::new("/sys/class/net").join(BRIDGE).exists() {
        ip(&["link", "add", BRIDGE, "mtu", "9000", "type", "bridge"])?;
    }
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", BRIDGE])?;
    if !addrs.contains(&format!("{BRIDGE_ADDR}/24")) {
        ip(&["addr", "add", &format!("{BRIDGE_ADDR}/24"), "dev", BRIDGE])?;
    }
    ip(&["link", "set", BRIDGE, "up"])?;
    let rule = [
        "-w", "-C", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
    ];
    if sys::run("iptables", &rule).is_err() {
        let mut add = rule;
        add[1] = "-I";
        let _ = sys::run("iptables", &add);
    }
    std::fs::create_dir_all(NS_DIR)?;
    let mounted =
        sys::run("findmnt", &["-n", "-o", "TARGET", NS_DIR]).is_ok_and(|o| !o.trim().is_empty());
    if !mounted {
        sys::run("mount", &["--bind", NS_DIR, NS_DIR])?;
        sys::run("mount", &["--make-private", NS_DIR])?;
    }
    if !operator_key().exists() {
        keygen(&operator_key(), "migros hosts operator")?;
    }
    Ok(())
}

/// Every host's key authorised on every host, every host key known (here
/// and on every host), `/etc/hosts` naming every host, this machine's ssh
/// configuration.
fn refresh_keys() -> Result<()> {
    let hosts = all();
    let read = |p: PathBuf| -> String {
        std::fs::read_to_string(&p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut authorized = read(operator_key().with_extension("pub")) + "\n";
    let mut known = String::new();
    let mut etc_hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
    let mut config = String::from("# written by migros host add: ssh -F this root@<host>\n");
    for h in &hosts {
        let d = h.dir();
        authorized += &(read(d.join("root-ssh/id_ed25519.pub")) + "\n");
        let key = read(d.join("etc-ssh/ssh_host_ed25519_key.pub"));
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        known += &format!("{},{} {}\n", h.name, h.addr, key.join(" "));
        etc_hosts += &format!("{}\t{}\n", h.addr, h.name);
        config += &format!("\nHost {} {}\n  HostName {}\n", h.name, h.addr, h.addr);
    }
    config += &format!(
        "\nHost *\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  BatchMode yes\n  ControlMaster auto\n  ControlPath {NS_DIR}/ssh-%C\n  ControlPersist 30\n",
        operator_key().display(),
        Path::new(HOSTS_DIR).join("known_hosts").display()
    );
    for h in &hosts {
        let d = h.dir();
        // Written in place: /etc/hosts is a bind mount of that file.
        write_in_place(&d.join("hosts"), &etc_hosts)?;
        std::fs::write(d.join("root-ssh/authorized_keys"), &authorized)?;
        std::fs::write(d.join("root-ssh/known_hosts"), &known)?;
    }
    std::fs::write(Path::new(HOSTS_DIR).join("known_hosts"), &known)?;
    std::fs::write(ssh_config(), config)?;
    Ok(())
}

fn write_in_place(p: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(true)
        .open(p)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Starts the host's dockerd and sshd and waits until both answer.
fn start_daemons(h: &Host) -> Result<()> {
    let log = h.dir().join("log");
    spawn_in(&h.name, &["dockerd"], &log.join("dockerd.log"))?;
    spawn_in(
        &h.name,
        &["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"],
        &log.join("sshd.log"),
    )?;
    let deadline = Instant::now() + START_TIMEOUT;
    while exec(&h.name, "docker", &["info", "--format", "{{.ID}}"]).is_err() {
        if Instant::now() >= deadline {
            bail!(
                "host {}: dockerd did not answer within {START_TIMEOUT:?}; its log ends with:\n{}",
                h.name,
                crate::daemon::log_tail(&log.join("dockerd.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let remote = crate::remote::Host::Ssh(h.ssh());
    while let Err(e) = remote.run("true", &[]) {
        if Instant::now() >= deadline {
            bail!(
                "host {}: ssh does not answer: {e:#}; sshd's log ends with:\n{}",
                h.name,
                crate::daemon::log_tail(&log.join("sshd.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Starts `argv` detached inside host `name`, its output in `log`.
fn spawn_in(name: &str, argv: &[&str], log: &Path) -> Result<()> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut c = enter(name)?;
    c.args(argv).stdin(Stdio::null()).stdout(out).stderr(err);
    sys::detach(&mut c);
    c.spawn()
        .with_context(|| format!("starting {} in host {name}", argv[0]))?;
    Ok(())
}

/// Removes host `name`: its containers, every process in it, its
/// namespaces, cgroups and files.
pub fn del(name: &str) -> Result<()> {
    sys::need_root("migros host del")?;
    let _lock = sys::lock()?;
    if load(name).is_err() && !ns_file(name, "mnt").exists() && !host_dir(name).exists() {
        bail!("host {name} not found");
    }
    teardown(name);
    refresh_keys()?;
    remove_shared_if_unused();
    Ok(())
}

/// Best effort, no errors: whatever exists of host `name` goes.
fn teardown(name: &str) {
    let mnt = ns_file(name, "mnt");
    if mnt.exists() {
        // Containers first, while dockerd runs (they are in their own
        // namespaces, under the host's cgroup).
        if let Ok(ids) = exec(name, "docker", &["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = exec(name, "docker", &args);
            }
        }
        let _ = exec(name, "docker", &["swarm", "leave", "--force"]);
        if let Ok(ino) = std::fs::metadata(&mnt).map(|m| m.ino()) {
            stop_processes(name, ino);
        }
    }
    kill_cgroup(name);
    for kind in ["mnt", "uts"] {
        let f = ns_file(name, kind);
        let _ = sys::run("umount", &[&path(&f)]);
        let _ = std::fs::remove_file(&f);
    }
    let _ = sys::netns_del(&netns(name));
    if Path::new("/sys/class/net").join(veth(name)).exists() {
        let _ = ip(&["link", "del", &veth(name)]);
    }
    remove_cgroups(name);
    let d = host_dir(name);
    for _ in 0..20 {
        if !d.exists() || std::fs::remove_dir_all(&d).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The processes whose mount namespace is `ino`.
fn processes_in(ino: u64) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .ok()
                .and_then(|l| {
                    let s = l.to_string_lossy().into_owned();
                    s.strip_prefix("mnt:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                == Some(ino)
        })
        .collect()
}

/// SIGTERM (dockerd first, so it stops its containerd), then SIGKILL.
fn stop_processes(name: &str, ino: u64) {
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let pids = processes_in(ino);
    for &p in pids.iter().filter(|&&p| comm(p).trim() == "dockerd") {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while processes_in(ino)
        .iter()
        .any(|&p| comm(p).trim() == "dockerd")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in processes_in(ino) {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_in(ino).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in processes_in(ino) {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !processes_in(ino).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = name;
}

/// The host's cgroup directories, deepest first.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(es) = std::fs::read_dir(d) {
            for e in es.filter_map(|e| e.ok()) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    for c in ctrls.filter_map(|c| c.ok()) {
        let d = c.path().join(cgroup_parent(name));
        if d.is_dir() {
            walk(&d, &mut out);
        }
    }
    out
}

/// Kills whatever still runs in the host's cgroups (containers whose
/// dockerd is gone).
fn kill_cgroup(name: &str) {
    for _ in 0..3 {
        let mut any = false;
        for d in cgroup_dirs(name) {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for p in procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                any = true;
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        if !any {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn remove_cgroups(name: &str) {
    for d in cgroup_dirs(name) {
        let _ = std::fs::remove_dir(d);
    }
}

/// The bridge, its rule and the namespace directory go with the last host.
fn remove_shared_if_unused() {
    if !all().is_empty() {
        return;
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let _ = ip(&["link", "del", BRIDGE]);
    }
    while sys::run(
        "iptables",
        &[
            "-w", "-D", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT",
        ],
    )
    .is_ok()
    {}
    let _ = sys::run("umount", &[NS_DIR]);
    let _ = std::fs::remove_dir(NS_DIR);
}

fn list(json_out: bool) -> Result<()> {
    let hosts = all();
    let up = |h: &Host| {
        exec(
            &h.name,
            "docker",
            &["info", "--format", "{{.Swarm.LocalNodeState}}"],
        )
    };
    if json_out {
        let v: Vec<_> = hosts
            .iter()
            .map(|h| {
                serde_json::json!({
                    "name": h.name,
                    "addr": h.addr.to_string(),
                    "docker": up(h).is_ok(),
                    "swarm": up(h).ok().map(|s| s.trim().to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<10} {:<16} {:<8} SWARM", "HOST", "ADDR", "DOCKER");
    for h in hosts {
        let st = up(&h);
        println!(
            "{:<10} {:<16} {:<8} {}",
            h.name,
            h.addr,
            if st.is_ok() { "running" } else { "down" },
            st.map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "-".into())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_and_names() {
        assert!(valid_addr(Ipv4Addr::new(198, 18, 64, 11)));
        assert!(!valid_addr(BRIDGE_ADDR));
        assert!(!valid_addr(Ipv4Addr::new(198, 18, 64, 255)));
        assert!(!valid_addr(Ipv4Addr::new(198, 18, 0, 11)));
        assert!(veth(&"a".repeat(MAX_NAME)).len() <= 15);
    }

    #[test]
    fn the_mount_script_hides_every_host() {
        let s = mount_script(&Host {
            name: "h1".into(),
            addr: Ipv4Addr::new(198, 18, 64, 11),
        });
        for at in [
            "/run",
            "/var/lib/docker",
            "/etc/docker",
            "/var/lib/migros",
            "/root/.ssh",
        ] {
            assert!(s.contains(&format!(" {at}\n")), "{at}: {s}");
        }
        assert!(s.ends_with(&format!("tmpfs {HOSTS_DIR}\n")), "{s}");
    }
}
