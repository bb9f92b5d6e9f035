//! The `/sys/class` of a container: the kernel's classes, plus an
//! `infiniband` class describing the node's migros devices the way the
//! kernel describes a RoCE device, for the libraries that read it.
//!
//! UCX (1.13 and later) takes a GID's RoCE version only from
//! `/sys/class/infiniband/<dev>/ports/<port>/gid_attrs/types/<index>`;
//! without the file it calls the GID RoCE v1 and refuses peers on kernel
//! RoCE v2 devices. sysfs has no `mkdir`, so the class cannot be added to
//! a sysfs mount. Instead the container gets a second sysfs at
//! [`SYSFS`] (mounted inside its network namespace, so its `class/net` is
//! the container's) and, bind-mounted read-only over `/sys/class`, a host
//! directory this module writes: one absolute symlink per class of the
//! host's sysfs (`net -> /.migros/sys/class/net`), and real directories
//! and files for `infiniband/<dev>/ports/1/gids/<i>` (the GID as the
//! kernel prints it) and `…/gid_attrs/types/<i>` (`RoCE v2`: the device
//! speaks nothing else) for every entry of each device's GID table.
//! A kernel `infiniband` class, on a host with RDMA hardware, keeps its
//! devices as symlinks beside the migros ones.
//!
//! The table is the daemon's when the bundle is written (at `run`, and on
//! the destination at each migration's prepare step); addresses added to
//! the node's interface later are not listed.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

/// Where a container's own, complete sysfs is mounted.
pub const SYSFS: &str = "/.migros/sys";
/// The class directory name the tree adds.
const INFINIBAND: &str = "infiniband";

/// One migros device as the tree shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IbDevice {
    pub name: String,
    /// The GID table's addresses, in index order.
    pub gids: Vec<IpAddr>,
}

/// How long a daemon has to answer with its GID table.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The devices whose sockets are in `sock` and whose daemons answer
/// within [`ANSWER_TIMEOUT`], with their GID tables; a device that does
/// not answer is left out (its libibverbs would not list it either), and
/// a daemon that hangs does not hang the caller (the asking thread is
/// left behind: callers are short-lived commands).
pub fn devices(sock: &Path) -> Vec<IbDevice> {
    migros_proto::paths::list_devices(sock)
        .into_iter()
        .filter_map(|name| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (dir, n) = (sock.to_owned(), name.clone());
            std::thread::spawn(move || {
                let gids = migros_verbs::Context::open_in(&dir, &n)
                    .ok()
                    .map(|ctx| ctx.device().gids.clone());
                let _ = tx.send(gids);
            });
            let gids = rx.recv_timeout(ANSWER_TIMEOUT).ok().flatten()?;
            Some(IbDevice { name, gids })
        })
        .collect()
}

/// The class names of this machine's sysfs (`/sys/class`), sorted.
pub fn host_classes() -> Vec<String> {
    names_in(Path::new("/sys/class"))
}

/// The devices of the kernel's `infiniband` class on this machine.
pub fn host_ib_devices() -> Vec<String> {
    names_in(&Path::new("/sys/class").join(INFINIBAND))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// A GID as the kernel's sysfs prints it: eight groups of four hex digits.
pub fn gid_text(addr: IpAddr) -> String {
    crate::dev::gid_hex(addr)
}

/// Writes the class directory at `dir` (replacing what is there):
/// symlinks to [`SYSFS`]`/class/<c>` for each of `classes`, and the
/// `infiniband` class with `devices` and symlinks for the kernel's
/// `kernel_ib` devices (a migros device of the same name wins).
pub fn build(
    dir: &Path,
    classes: &[String],
    devices: &[IbDevice],
    kernel_ib: &[String],
) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    if std::fs::symlink_metadata(dir).is_ok() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let sys_class = Path::new(SYSFS).join("class");
    for c in classes.iter().filter(|c| *c != INFINIBAND && safe_name(c)) {
        symlink(sys_class.join(c), dir.join(c))?;
    }
    let ib = dir.join(INFINIBAND);
    std::fs::create_dir(&ib)?;
    for d in devices.iter().filter(|d| safe_name(&d.name)) {
        let port = ib.join(&d.name).join("ports/1");
        let (gids, types) = (port.join("gids"), port.join("gid_attrs/types"));
        std::fs::create_dir_all(&gids)?;
        std::fs::create_dir_all(&types)?;
        for (i, a) in d.gids.iter().enumerate() {
            read_only(&gids.join(i.to_string()), &format!("{}\n", gid_text(*a)))?;
            read_only(&types.join(i.to_string()), "RoCE v2\n")?;
        }
    }
    for k in kernel_ib.iter().filter(|k| safe_name(k)) {
        if !devices.iter().any(|d| &d.name == k) {
            symlink(sys_class.join(INFINIBAND).join(k), ib.join(k))?;
        }
    }
    Ok(())
}

/// A single path component that is a name (never `..`, `.` or a path).
fn safe_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/')
}

/// A file of `text`, mode 0444 as sysfs attributes.
fn read_only(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tree_has_the_classes_and_the_gid_tables() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("sys-class");
        let dev = IbDevice {
            name: "rxe0".into(),
            gids: vec![
                "198.18.0.1".parse().unwrap(),
                "198.18.0.9".parse().unwrap(),
                "fe80::1".parse().unwrap(),
            ],
        };
        build(
            &dir,
            &names(&["block", "net", "infiniband", "..", "tty"]),
            &[dev],
            &names(&["mlx5_0", "rxe0"]),
        )
        .expect("build");
        for (c, target) in [
            ("net", "/.migros/sys/class/net"),
            ("block", "/.migros/sys/class/block"),
            ("tty", "/.migros/sys/class/tty"),
        ] {
            assert_eq!(std::fs::read_link(dir.join(c)).unwrap(), Path::new(target));
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            4,
            "block net tty infiniband"
        );
        let port = dir.join("infiniband/rxe0/ports/1");
        let read = |p: &str| std::fs::read_to_string(port.join(p)).unwrap();
        assert_eq!(read("gid_attrs/types/0"), "RoCE v2\n");
        assert_eq!(read("gid_attrs/types/2"), "RoCE v2\n");
        assert_eq!(read("gids/0"), "0000:0000:0000:0000:0000:ffff:c612:0001\n");
        assert_eq!(read("gids/1"), "0000:0000:0000:0000:0000:ffff:c612:0009\n");
        assert_eq!(read("gids/2"), "fe80:0000:0000:0000:0000:0000:0000:0001\n");
        assert!(!port.join("gids/3").exists());
        let mode = std::fs::metadata(port.join("gids/0"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o444);
        // The kernel's device stays reachable; a migros device of the same
        // name is the migros one.
        assert_eq!(
            std::fs::read_link(dir.join("infiniband/mlx5_0")).unwrap(),
            Path::new("/.migros/sys/class/infiniband/mlx5_0")
        );
        assert!(std::fs::symlink_metadata(dir.join("infiniband/rxe0"))
            .unwrap()
            .is_dir());
    }

    #[test]
    fn rebuild_replaces_the_old_tree() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("sys-class");
        let dev = |gids: Vec<IpAddr>| IbDevice {
            name: "d".into(),
            gids,
        };
        let two = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        build(&dir, &names(&["net"]), &[dev(two)], &[]).unwrap();
        build(
            &dir,
            &names(&["net"]),
            &[dev(vec!["10.0.0.3".parse().unwrap()])],
            &[],
        )
        .unwrap();
        let port = dir.join("infiniband/d/ports/1");
        assert_eq!(
            std::fs::read_to_string(port.join("gids/0")).unwrap(),
            "0000:0000:0000:0000:0000:ffff:0a00:0003\n"
        );
        assert!(!port.join("gids/1").exists());
        assert!(!port.join("gid_attrs/types/1").exists());
    }

    #[test]
    fn no_devices_leaves_an_empty_class() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("c");
        build(&dir, &names(&["net"]), &[], &[]).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.join("infiniband")).unwrap().count(),
            0
        );
    }
}
