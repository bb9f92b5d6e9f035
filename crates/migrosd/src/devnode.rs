//! The device's placeholder node `/dev/infiniband/uverbs-<name>`.
//!
//! Programs never open it: the drop-in libibverbs reaches the daemon
//! through `<name>.sock`. But some libraries decide whether a device is
//! usable by looking at the node the kernel would have made: UCX (1.13,
//! `uct_ib_device_is_accessible`) lists a device only if
//! `/dev/infiniband/<ibv_device.dev_name>` is a character device the
//! process may read and write, and otherwise hides the device from every
//! verbs transport. The library names the device's node
//! `uverbs-<name>` (`ibv_device.dev_name`); the daemon, which runs as
//! root, makes that node with the numbers of `/dev/null` (1, 3), so that
//! a program that does open it gets nothing harmful, mode 0666 as the
//! kernel's `uverbs*` nodes.
//!
//! The node is never removed: daemons of one name may run in several
//! socket directories at once, and a node outliving its daemon is
//! harmless (programs find devices by their sockets; the node only
//! un-hides a device that has one). An existing character device is used
//! as it is.
//! Making the node is best-effort: without the right to (not root, a
//! read-only /dev) the daemon warns and runs on, and only such libraries
//! miss the device.

use std::path::{Path, PathBuf};

/// Where the node of device `name` lives.
pub fn path(name: &str) -> PathBuf {
    Path::new("/dev/infiniband").join(format!("uverbs-{name}"))
}

/// The node of one device.
#[derive(Debug)]
pub struct DevNode {
    path: PathBuf,
    made: bool,
}

impl DevNode {
    /// Makes `path` a character device (1, 3), mode 0666, unless one is
    /// there; the directory is made (0755) if it is missing.
    pub fn ensure(path: PathBuf) -> std::io::Result<DevNode> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.file_type().is_char_device() {
                return Ok(DevNode { path, made: false });
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a character device", path.display()),
            ));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o666);
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(1, 3),
        )?;
        // mknod's mode passes through the umask; the node must be 0666.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(DevNode { path, made: true })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this daemon made the node (it was not there).
    pub fn made(&self) -> bool {
        self.made
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_path_is_the_libraries_dev_name() {
        assert_eq!(path("devA"), Path::new("/dev/infiniband/uverbs-devA"));
    }

    #[test]
    fn a_regular_file_in_the_way_is_refused_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("uverbs-x");
        std::fs::write(&p, b"").expect("write");
        let e = DevNode::ensure(p.clone()).expect_err("not a char device");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(p.exists());
    }

    #[test]
    fn made_node_is_a_char_device_kept_and_reused() {
        if !nix::unistd::Uid::effective().is_root() {
            return; // mknod of a character device needs CAP_MKNOD
        }
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("infiniband/uverbs-x");
        let node = DevNode::ensure(p.clone()).expect("mknod as root");
        assert!(node.made());
        let m = std::fs::metadata(&p).expect("stat");
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(m.permissions().mode() & 0o777, 0o666);
        drop(node);
        let again = DevNode::ensure(p.clone()).expect("already there");
        assert!(!again.made());
        assert_eq!(again.path(), p);
    }
}
