//! The OCI runtime configuration (`config.json`) of a container: a rootfs
//! directory made of read-only bind mounts of the host's system directories,
//! the node's socket directory at `/run/migros` (read-only: clients only
//! connect; the daemon's admin directory beside it is not mounted, see
//! `migros_proto::paths`), migros' libibverbs at
//! `/opt/migros/lib`, and a network namespace made beforehand; with the
//! node's devices, their nodes in `/dev/infiniband` and an `infiniband`
//! class in `/sys/class` (see [`super::sysfs`]).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::container::Volume;

/// Host directories bind-mounted read-only (or recreated as symlinks when
/// they are symlinks on the host, as with a merged /usr).
pub const HOST_DIRS: [&str; 6] = ["/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc"];
/// Where the node's socket directory appears inside a container.
pub const SOCKET_DIR: &str = "/run/migros";
/// Where migros' libibverbs appears inside a container.
pub const LIB_DIR: &str = "/opt/migros/lib";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a container's configuration depends on.
pub struct Spec<'a> {
    pub hostname: &'a str,
    pub rootfs: &'a Path,
    pub args: &'a [String],
    /// `KEY=VALUE` lines added to the defaults.
    pub env: &'a [String],
    pub netns: PathBuf,
    /// The node's socket directory on the host.
    pub socket_dir: &'a Path,
    /// migros' libibverbs directory on the host, if built.
    pub lib_dir: Option<&'a Path>,
    /// The CRIU configuration runc uses for this container's checkpoints
    /// and restores (annotation `org.criu.config`).
    pub criu_config: Option<&'a Path>,
    /// Extra bind mounts: host path, destination, read-only.
    pub volumes: &'a [Volume],
    /// The host directories without the mounts under them (`bind`, not
    /// `rbind`): on a simulated host those are bind mounts of files CRIU
    /// cannot reach (`/etc/hostname`, `/usr/lib/criu`…).
    pub flat_host_dirs: bool,
    /// The node's migros devices: each gets its placeholder node
    /// `/dev/infiniband/uverbs-<name>` (what UCX checks before listing a
    /// device; see migrosd's `devnode`).
    pub ib_devices: &'a [String],
    /// The host directory bind-mounted over `/sys/class` (written by
    /// [`super::sysfs::build`]), with the container's own sysfs at
    /// [`super::sysfs::SYSFS`] beside it; `None`: `/sys` as it is.
    pub sys_class: Option<&'a Path>,
}

/// The major and minor numbers of a device's placeholder node: `/dev/null`'s.
pub const DEVNODE_NUMBERS: (u32, u32) = (1, 3);

/// Where a device's placeholder node is (as migrosd makes it on the host).
pub fn devnode(dev: &str) -> String {
    format!("/dev/infiniband/uverbs-{dev}")
}

fn bind(src: &Path, dst: &str, ro: bool) -> Value {
    bind_as(src, dst, ro, "rbind")
}

fn bind_as(src: &Path, dst: &str, ro: bool, how: &str) -> Value {
    let mut opts = vec![how, "nosuid", "nodev"];
    if ro {
        opts.push("ro");
    }
    json!({ "destination": dst, "type": "bind", "source": src, "options": opts })
}

impl Spec<'_> {
    /// Host directories that become bind mounts (not symlinks).
    pub fn bound_dirs() -> Vec<&'static str> {
        HOST_DIRS
            .into_iter()
            .filter(|d| {
                Path::new(d).is_dir()
                    && !std::fs::symlink_metadata(d).is_ok_and(|m| m.file_type().is_symlink())
            })
            .collect()
    }

    pub fn env(&self) -> Vec<String> {
        let mut env = vec![
            PATH.to_string(),
            "HOME=/tmp".to_string(),
            format!("{}={SOCKET_DIR}", migros_proto::paths::SOCKET_DIR_ENV),
        ];
        if self.lib_dir.is_some() {
            env.push(format!("LD_LIBRARY_PATH={LIB_DIR}"));
        }
        env.extend(self.env.iter().cloned());
        env
    }

    pub fn to_json(&self) -> Value {
        let mut mounts = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                   "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                   "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
            json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                   "options": ["nosuid", "noexec", "nodev"]}),
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                   "options": ["nosuid", "noexec", "nodev", "ro"]}),
        ];
        let mut masked = vec![
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ];
        if let Some(class) = self.sys_class {
            // runc mounts in this order: the second sysfs, then the class
            // directory over the first one's `class`.
            mounts.push(json!({"destination": super::sysfs::SYSFS, "type": "sysfs",
                "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}));
            mounts.push(bind_as(class, "/sys/class", true, "bind"));
            masked.push(SYSFS_FIRMWARE);
        }
        mounts.extend([
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777"]}),
            json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=755"]}),
        ]);
        let how = if self.flat_host_dirs { "bind" } else { "rbind" };
        for d in Self::bound_dirs() {
            mounts.push(bind_as(Path::new(d), d, true, how));
        }
        mounts.push(bind(self.socket_dir, SOCKET_DIR, true));
        if let Some(lib) = self.lib_dir {
            mounts.push(bind(lib, LIB_DIR, true));
        }
        for v in self.volumes {
            mounts.push(bind(&v.host, &v.dest, v.ro));
        }
        let caps = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
            "CAP_IPC_LOCK",
        ];
        let (major, minor) = DEVNODE_NUMBERS;
        let devices: Vec<Value> = self
            .ib_devices
            .iter()
            .map(|d| {
                json!({"path": devnode(d), "type": "c", "major": major, "minor": minor,
                       "fileMode": 0o666, "uid": 0, "gid": 0})
            })
            .collect();
        let mut allowed = vec![json!({"allow": false, "access": "rwm"})];
        if !devices.is_empty() {
            allowed.push(
                json!({"allow": true, "type": "c", "major": major, "minor": minor,
                                "access": "rwm"}),
            );
        }
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": self.args,
                "env": self.env(),
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
                },
                "noNewPrivileges": true,
            },
            "root": {"path": self.rootfs, "readonly": true},
            "hostname": self.hostname,
            "annotations": match self.criu_config {
                Some(p) => json!({"org.criu.config": p}),
                None => json!({}),
            },
            "mounts": mounts,
            "linux": {
                "resources": {"devices": allowed},
                "devices": devices,
                "namespaces": [
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"},
                    {"type": "mount"},
                    {"type": "network", "path": self.netns},
                ],
                "maskedPaths": masked,
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
                ],
            },
        })
    }
}

/// The second sysfs' firmware directory, masked as `/sys/firmware`.
const SYSFS_FIRMWARE: &str = "/.migros/sys/firmware";

/// The CRIU action script of every container: CRIU runs it (through runc,
/// with `CRTOOLS_SCRIPT_ACTION` and `CRTOOLS_INIT_PID` set) at `pre-dump`,
/// just before it freezes the container, at `network-lock`, right after,
/// and at `network-unlock`.
///
/// `pre-dump` freezes the container's cgroup-v1 freezer when the final
/// dump of a migration asks it (`freezer::FREEZE_ENV`): CRIU then finds
/// it frozen and does not poll the freezer every 100 ms, and everything
/// runc and CRIU do before this point happens while the container runs.
/// It retries the freeze as the cgroup-v1 freezer may need, and fails the
/// dump when the cgroup is not frozen within about two seconds.
///
/// CRIU cannot lock a network namespace it does not own (runc's, made by
/// us), so without `network-lock` the kernel would answer the peers of the
/// dumped TCP connections with resets until the namespace goes.
pub const ACTION_SCRIPT: &str = r#"#!/bin/sh
# CRIU action script of migros containers (written by `migros run`).
# pre-dump: freeze $MIGROS_FREEZE (a freezer.state file), if set, and
# write when to $MIGROS_FROZEN_AT;
# network-lock: drop every packet in the container's network namespace;
# network-unlock: remove those rules. One iptables-restore each: the
# unlock is part of the migration's downtime.
PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
[ -n "$CRTOOLS_INIT_PID" ] || exit 0
rules() {
  printf '*filter\n-%s INPUT %s-j DROP\n-%s OUTPUT %s-j DROP\nCOMMIT\n' "$1" "$2" "$1" "$2" |
    nsenter -t "$CRTOOLS_INIT_PID" -n iptables-restore -w --noflush
}
freeze() {
  [ -n "$MIGROS_FREEZE" ] || return 0
  [ -z "$MIGROS_FROZEN_AT" ] || date +%s.%N >"$MIGROS_FROZEN_AT"
  echo FROZEN >"$MIGROS_FREEZE" || return 1
  i=0
  while read -r state <"$MIGROS_FREEZE" && [ "$state" != FROZEN ]; do
    i=$((i + 1))
    [ "$i" -le 2000 ] || { echo "migros: $MIGROS_FREEZE still $state" >&2; return 1; }
    [ $((i % 100)) != 0 ] || echo FROZEN >"$MIGROS_FREEZE"
    sleep 0.001
  done
  [ "$state" = FROZEN ]
}
case "$CRTOOLS_SCRIPT_ACTION" in
pre-dump) freeze || exit 1 ;;
network-lock) rules I "1 " || exit 1 ;;
network-unlock) rules D "" 2>/dev/null || true ;;
esac
exit 0
"#;

/// The CRIU configuration of a container: the action script, plus what
/// `/etc/criu/runc.conf` says (runc reads only one of the two).
pub fn criu_config(action_script: &Path) -> String {
    let mut s = String::from("# written by migros run\n");
    if let Ok(global) = std::fs::read_to_string("/etc/criu/runc.conf") {
        for l in global.lines() {
            if !l.trim_start().starts_with("action-script") {
                s += l;
                s += "\n";
            }
        }
    }
    s += &format!("action-script {}\n", action_script.display());
    s
}

/// Makes the rootfs directory: mount points for every mount, and the host's
/// symlinked system directories (`/bin -> usr/bin`) as the same symlinks.
pub fn make_rootfs(rootfs: &Path) -> std::io::Result<()> {
    for d in [
        "proc",
        "dev",
        "sys",
        "tmp",
        "run",
        "opt/migros/lib",
        ".migros/sys",
        "usr",
        "etc",
    ] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    for d in HOST_DIRS {
        let rel = d.trim_start_matches('/');
        if let Ok(target) = std::fs::read_link(d) {
            let link = rootfs.join(rel);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(target, link)?;
            }
        } else if Path::new(d).is_dir() {
            std::fs::create_dir_all(rootfs.join(rel))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_mounts_and_namespaces() {
        let args = vec!["sh".to_string(), "-c".to_string(), "true".to_string()];
        let env = vec!["A=1".to_string()];
        let s = Spec {
            hostname: "srv",
            rootfs: Path::new("/r"),
            args: &args,
            env: &env,
            netns: PathBuf::from("/run/netns/migros-c-srv-0"),
            socket_dir: Path::new("/run/migros/nodes/a"),
            lib_dir: Some(Path::new("/w/target/ibverbs")),
            criu_config: Some(Path::new("/s/criu.conf")),
            volumes: &["/h/bin:/opt/bin:ro".parse().unwrap()],
            flat_host_dirs: false,
            ib_devices: &[],
            sys_class: None,
        };
        let v = s.to_json();
        assert_eq!(v["process"]["args"][2], "true");
        assert_eq!(v["process"]["terminal"], false);
        let env: Vec<&str> = v["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.contains(&"LD_LIBRARY_PATH=/opt/migros/lib"), "{env:?}");
        assert!(env.contains(&"MIGROS_SOCKET_DIR=/run/migros"), "{env:?}");
        assert_eq!(env.last(), Some(&"A=1"));
        let mounts = v["mounts"].as_array().unwrap();
        let find = |d: &str| mounts.iter().find(|m| m["destination"] == d).cloned();
        let sock = find("/run/migros").expect("socket dir mounted");
        assert_eq!(sock["source"], "/run/migros/nodes/a");
        assert!(sock["options"].as_array().unwrap().contains(&json!("ro")));
        // Nothing of the admin directory is inside the container.
        assert!(mounts
            .iter()
            .all(|m| !m["source"].as_str().is_some_and(|s| s.ends_with(".admin"))));
        assert_eq!(
            find("/opt/migros/lib").unwrap()["source"],
            "/w/target/ibverbs"
        );
        assert_eq!(find("/usr").unwrap()["options"][3], "ro");
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["annotations"]["org.criu.config"], "/s/criu.conf");
        let vol = find("/opt/bin").expect("volume mounted");
        assert_eq!(
            (vol["source"].as_str(), vol["options"][3].as_str()),
            (Some("/h/bin"), Some("ro"))
        );
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/migros-c-srv-0"));
        // Without devices: no device node, no class directory, and every
        // device refused.
        assert!(find("/sys/class").is_none() && find("/.migros/sys").is_none());
        assert_eq!(v["linux"]["devices"], json!([]));
        assert_eq!(
            v["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
    }

    #[test]
    fn devices_get_their_node_and_the_class_directory() {
        let args = vec!["true".to_string()];
        let devs = vec!["rxe0".to_string()];
        let s = Spec {
            hostname: "srv",
            rootfs: Path::new("/r"),
            args: &args,
            env: &[],
            netns: PathBuf::from("/run/netns/x"),
            socket_dir: Path::new("/run/migros/nodes/a"),
            lib_dir: None,
            criu_config: None,
            volumes: &[],
            flat_host_dirs: false,
            ib_devices: &devs,
            sys_class: Some(Path::new("/c/gen-0/sys-class")),
        };
        let v = s.to_json();
        let dev = &v["linux"]["devices"][0];
        assert_eq!(dev["path"], "/dev/infiniband/uverbs-rxe0");
        assert_eq!(
            (&dev["type"], &dev["major"], &dev["minor"]),
            (&json!("c"), &json!(1), &json!(3))
        );
        assert_eq!(dev["fileMode"], 0o666);
        let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false, "deny all first");
        assert!(rules
            .iter()
            .any(|r| r["allow"] == true && r["type"] == "c" && r["major"] == 1 && r["minor"] == 3));
        let mounts = v["mounts"].as_array().unwrap();
        let at = |d: &str| {
            mounts
                .iter()
                .position(|m| m["destination"] == d)
                .unwrap_or_else(|| panic!("{d} mounted"))
        };
        // The container's sysfs first, then the second one, then the class
        // directory over it, read-only.
        assert!(at("/sys") < at("/.migros/sys") && at("/.migros/sys") < at("/sys/class"));
        let sys2 = &mounts[at("/.migros/sys")];
        assert_eq!(sys2["type"], "sysfs");
        assert!(sys2["options"].as_array().unwrap().contains(&json!("ro")));
        let class = &mounts[at("/sys/class")];
        assert_eq!(class["source"], "/c/gen-0/sys-class");
        assert!(class["options"].as_array().unwrap().contains(&json!("ro")));
        let masked = v["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.contains(&json!("/sys/firmware")));
        assert!(masked.contains(&json!(format!(
            "{}/firmware",
            crate::engine::runc::sysfs::SYSFS
        ))));
    }
}
