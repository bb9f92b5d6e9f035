//! What backs a client's memory, and whether the daemon may reach it.
//!
//! The daemon reads and writes client memory from its one event-loop
//! thread. A page that is not resident is faulted in by that thread; if it
//! belongs to a file whose filesystem waits on another process (FUSE) or
//! on the network (NFS, CIFS, 9p, Ceph), a server that never answers holds
//! the thread, and every session on the device, for ever. So registered
//! memory (MRs and rings) must be backed by what a fault can only wait on
//! the kernel or a local disk for: anonymous memory, shared memory
//! (memfd, SysV, `/dev/shm` and other tmpfs, hugetlbfs) or a file on a
//! local disk filesystem ([`LOCAL_FILESYSTEMS`]). Anything else is refused
//! when it is registered, naming the filesystem.
//!
//! A mapping's filesystem is found without touching the file: its device
//! number in `/proc/<pid>/maps`, looked up in the client's
//! `/proc/<pid>/mountinfo` and then the daemon's own (a file of a
//! container's overlay can show the host device underneath). A device
//! found in neither (a filesystem unmounted while still mapped) is
//! refused, except the kernel's internal shared-memory mounts, which the
//! daemon learns from memfds of its own.

use std::collections::BTreeMap;
use std::sync::LazyLock;

/// Filesystems whose page faults wait only on memory or a local disk.
pub const LOCAL_FILESYSTEMS: &[&str] = &[
    "tmpfs",
    "hugetlbfs",
    "ramfs",
    "devtmpfs",
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "f2fs",
    "bcachefs",
    "jfs",
    "vfat",
    "exfat",
    "overlay",
];

/// A device number: (major, minor).
pub type Dev = (u32, u32);

/// One line of `/proc/<pid>/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a str,
    pub dev: Dev,
    pub inode: u64,
    /// The file's path, `[heap]` and the like, or empty.
    pub path: &'a str,
}

impl<'a> Mapping<'a> {
    /// Parses `start-end perms offset major:minor inode [path]`.
    pub fn parse(line: &'a str) -> Option<Mapping<'a>> {
        let mut rest = line;
        let mut field = || {
            let t = rest.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            let (f, r) = t.split_at(end);
            rest = r;
            Some(f).filter(|f| !f.is_empty())
        };
        let (s, e) = field()?.split_once('-')?;
        let perms = field()?;
        let _offset = field()?;
        let (maj, min) = field()?.split_once(':')?;
        let inode = field()?.parse().ok()?;
        Some(Mapping {
            start: u64::from_str_radix(s, 16).ok()?,
            end: u64::from_str_radix(e, 16).ok()?,
            perms,
            dev: (
                u32::from_str_radix(maj, 16).ok()?,
                u32::from_str_radix(min, 16).ok()?,
            ),
            inode,
            path: rest.trim(),
        })
    }

    /// Anonymous memory (heap, stack, `MAP_ANONYMOUS`): no file behind it.
    pub fn is_anonymous(&self) -> bool {
        self.inode == 0
    }
}

/// Filesystem types by device, from mountinfo texts.
#[derive(Debug, Default, Clone)]
pub struct Mounts {
    by_dev: BTreeMap<Dev, String>,
}

impl Mounts {
    /// Adds the mounts of a `/proc/<pid>/mountinfo` text (a device already
    /// known keeps its type).
    pub fn add(&mut self, mountinfo: &str) {
        for line in mountinfo.lines() {
            let mut fields = line.split_whitespace();
            let Some((maj, min)) = fields.nth(2).and_then(|d| d.split_once(':')) else {
                continue;
            };
            let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) else {
                continue;
            };
            // After the optional fields, "-" and then the type.
            let Some(fstype) = fields.skip_while(|f| *f != "-").nth(1) else {
                continue;
            };
            self.by_dev
                .entry((maj, min))
                .or_insert_with(|| fstype.to_string());
        }
    }

    pub fn fstype(&self, dev: Dev) -> Option<&str> {
        self.by_dev.get(&dev).map(String::as_str)
    }
}

/// Why a mapping may not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackingError {
    #[error(
        "client memory at {addr:#x} is a file on a {fstype} filesystem ({path}), whose pages \
         may wait on another process or the network: the daemon reaches only anonymous, \
         shared or local-disk memory"
    )]
    Remote {
        addr: u64,
        fstype: String,
        path: String,
    },
    #[error(
        "client memory at {addr:#x} is a file ({path}) on device {}:{} that is not mounted: \
         the daemon reaches only anonymous, shared or local-disk memory",
        dev.0,
        dev.1
    )]
    Unmounted { addr: u64, dev: Dev, path: String },
}

/// Whether the daemon may reach `m` (from `addr` on): `mounts` knows the
/// filesystems, `internal` the kernel's internal shared-memory devices.
pub fn check(
    m: &Mapping,
    addr: u64,
    mounts: &Mounts,
    internal: &[Dev],
) -> Result<(), BackingError> {
    if m.is_anonymous() || internal.contains(&m.dev) {
        return Ok(());
    }
    match mounts.fstype(m.dev) {
        Some(t) if LOCAL_FILESYSTEMS.contains(&t) => Ok(()),
        Some(t) => Err(BackingError::Remote {
            addr,
            fstype: t.to_string(),
            path: m.path.to_string(),
        }),
        None => Err(BackingError::Unmounted {
            addr,
            dev: m.dev,
            path: m.path.to_string(),
        }),
    }
}

/// The devices of the kernel's internal shared-memory mounts (memfds,
/// SysV segments, shared anonymous maps; and with huge pages), which no
/// mountinfo lists: those of memfds the daemon makes and closes.
pub fn internal_shmem() -> &'static [Dev] {
    static DEVS: LazyLock<Vec<Dev>> = LazyLock::new(|| {
        let mut devs = Vec::new();
        for flags in [0, libc::MFD_HUGETLB] {
            let name = c"migrosd-probe";
            // SAFETY: a valid name; the fd is closed below.
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | flags) };
            if fd < 0 {
                continue;
            }
            // SAFETY: a stat buffer for our own fd.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fd is ours and st is writable.
            if unsafe { libc::fstat(fd, &mut st) } == 0 {
                devs.push((libc::major(st.st_dev), libc::minor(st.st_dev)));
            }
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
        }
        devs
    });
    &DEVS
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683784k
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
40 27 0:45 / /mnt/s rw,nosuid,nodev,relatime shared:9 master:2 - fuse.sshfs host:/ rw,user_id=0
41 27 0:46 / /mnt/n rw,relatime - nfs4 server:/export rw,vers=4.2
";

    #[test]
    fn parses_maps_lines() {
        let m = Mapping::parse("7f00-7f10 rw-p 00001000 fe:00 1234   /usr/lib/x y.so").unwrap();
        assert_eq!((m.start, m.end, m.perms), (0x7f00, 0x7f10, "rw-p"));
        assert_eq!(
            (m.dev, m.inode, m.path),
            ((254, 0), 1234, "/usr/lib/x y.so")
        );
        let anon = Mapping::parse("1000-2000 rw-p 00000000 00:00 0").unwrap();
        assert!(anon.is_anonymous());
        assert_eq!(anon.path, "");
        assert_eq!(Mapping::parse("1000-2000 rw-p"), None);
        assert_eq!(Mapping::parse("x-2000 rw-p 0 00:00 0"), None);
    }

    #[test]
    fn mountinfo_gives_each_device_its_type() {
        let mut m = Mounts::default();
        m.add(MOUNTINFO);
        assert_eq!(m.fstype((254, 0)), Some("ext4"));
        assert_eq!(m.fstype((0, 45)), Some("fuse.sshfs"));
        assert_eq!(m.fstype((0, 23)), Some("tmpfs"));
        assert_eq!(m.fstype((9, 9)), None);
        // The first text seen wins.
        m.add("50 1 254:0 / /x rw - fuse fuse rw\n");
        assert_eq!(m.fstype((254, 0)), Some("ext4"));
    }

    #[test]
    fn only_memory_and_local_disks_may_back_registered_memory() {
        let mut mounts = Mounts::default();
        mounts.add(MOUNTINFO);
        let internal = [(0, 1)];
        let line =
            |dev: &str, inode: u32, path: &str| format!("1000-2000 rw-p 0 {dev} {inode} {path}");
        let ok = [
            line("00:00", 0, "[heap]"),
            line("00:00", 0, ""),
            line("fe:00", 77, "/usr/lib/libc.so.6"),
            line("00:17", 5, "/dev/shm/ucx"),
            line("00:01", 9, "/memfd:x (deleted)"),
        ];
        for l in &ok {
            let m = Mapping::parse(l).unwrap();
            assert_eq!(check(&m, 0x1000, &mounts, &internal), Ok(()), "{l}");
        }
        let l = line("00:2d", 3, "/mnt/s/f");
        let m = Mapping::parse(&l).unwrap();
        let e = check(&m, 0x1800, &mounts, &internal).unwrap_err();
        assert!(matches!(&e, BackingError::Remote { fstype, .. } if fstype == "fuse.sshfs"));
        assert!(
            e.to_string().contains("0x1800") && e.to_string().contains("/mnt/s/f"),
            "{e}"
        );
        let l = line("00:2e", 3, "/mnt/n/f");
        let m = Mapping::parse(&l).unwrap();
        assert!(matches!(
            check(&m, 0x1000, &mounts, &internal),
            Err(BackingError::Remote { fstype, .. }) if fstype == "nfs4"
        ));
        // A file whose filesystem is no longer mounted anywhere.
        let l = line("00:63", 3, "/gone/f");
        let m = Mapping::parse(&l).unwrap();
        assert_eq!(
            check(&m, 0x1000, &mounts, &internal),
            Err(BackingError::Unmounted {
                addr: 0x1000,
                dev: (0, 0x63),
                path: "/gone/f".into()
            })
        );
    }

    #[test]
    fn learns_the_internal_shmem_device() {
        // Every kernel has the plain one; the huge-page one may be missing.
        assert!(!internal_shmem().is_empty());
    }
}
