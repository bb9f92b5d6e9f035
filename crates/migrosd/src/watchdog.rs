//! A watchdog for accesses into client memory that do not return.
//!
//! The event loop reaches client memory from its one thread
//! ([`crate::procmem`]). Registration refuses memory whose page faults may
//! wait on another process or the network ([`crate::backing`]), but the
//! daemon pins nothing: a client can map a FUSE file over memory it
//! already registered (`MAP_FIXED`), and the loop's next access into it
//! then waits for a FUSE server that may never answer, holding every
//! session of the device. Such a wait ends only with a fatal signal or
//! with the FUSE connection's end.
//!
//! So the loop publishes each access ([`Activity::begin`]: a few plain
//! stores into atomics, no system call) with the client's pid and the
//! address range, and a thread of its own ([`Watchdog`]) looks every
//! [`tick`] whether one access has been running longer than the bound
//! (`--memory-stall-ms`, [`DEFAULT_STALL`]). Then it reads the client's
//! `/proc/<pid>/maps`, takes the file mappings overlapping the range and,
//! for those on FUSE (the client's or the daemon's `mountinfo` says
//! `fuse`, `fuse.*` or `fuseblk`, or a fusectl directory bears the
//! mapping's device number), writes `1` to
//! `/sys/fs/fuse/connections/<dev>/abort` of each such connection with a
//! request waiting. The kernel ends every request of that connection with
//! an error, the access fails (`EFAULT`) and the loop handles it as any
//! failed access: a failed write NAKs and fails the owner's QPs
//! ([`migros_transport::Device::memory_lost`]), a failed read answers the
//! peer with an access error. The FUSE filesystem is dead from then on,
//! for every process using it: what a hostile or broken server costs its
//! own users, not the device's. Accesses stuck on anything else (NFS,
//! CIFS, a FUSE connection the watchdog cannot reach) are logged at error
//! level with the pid and the mappings, every bound while they last, and
//! counted; no client process is killed.
//!
//! The FUSE control filesystem (`fusectl`) must be mounted at
//! `/sys/fs/fuse/connections`; it is mounted when the watchdog first needs
//! it (not at start: a daemon that never meets a stalled access changes
//! nothing on the node). Where it cannot be (a read-only `/sys`), the
//! stall is logged with the command that would end it.
//!
//! Counters: [`Watchdog::stalls`] (accesses found stuck, each once) and
//! [`Watchdog::aborts`] (connections aborted), shown with the device's
//! counters (`watchdog_stalls`, `watchdog_aborts`).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backing::{Dev, Mapping, Mounts};

/// How long one access may run before the watchdog acts.
pub const DEFAULT_STALL: Duration = Duration::from_secs(2);
/// Where the FUSE control filesystem lives.
pub const FUSECTL: &str = "/sys/fs/fuse/connections";
/// `statfs` type of the FUSE control filesystem.
const FUSE_CTL_SUPER_MAGIC: i64 = 0x6573_5543;

/// How often the watchdog looks, for a bound of `stall`.
pub fn tick(stall: Duration) -> Duration {
    (stall / 8).clamp(Duration::from_millis(5), Duration::from_millis(250))
}

/// The access the event loop is making, published for the watchdog.
///
/// `seq` is odd while an access runs and counts accesses; the pid and
/// range are stored before it turns odd (a seqlock with one writer, the
/// event loop).
#[derive(Debug, Default)]
pub struct Activity {
    seq: AtomicU64,
    pid: AtomicI32,
    lo: AtomicU64,
    hi: AtomicU64,
}

/// One access, as the watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Which access (the sequence number while it runs).
    pub seq: u64,
    pub pid: i32,
    /// The addresses it covers: `[lo, hi)` spans every piece.
    pub lo: u64,
    pub hi: u64,
}

/// Ends the access begun by [`Activity::begin`] when dropped.
#[must_use]
pub struct Running<'a>(&'a Activity);

impl Activity {
    /// The event loop starts an access of process `pid` covering
    /// `[lo, hi)`. Only the event loop calls this (one writer).
    #[inline]
    pub fn begin(&self, pid: i32, lo: u64, hi: u64) -> Running<'_> {
        // The previous access's end is ordered before these stores (a
        // compiler barrier on x86), so a reader that sees them also sees
        // the sequence number move on.
        fence(Ordering::Release);
        self.pid.store(pid, Ordering::Relaxed);
        self.lo.store(lo, Ordering::Relaxed);
        self.hi.store(hi, Ordering::Relaxed);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Release);
        Running(self)
    }

    /// The access running now, if one is (and was read whole).
    pub fn current(&self) -> Option<Busy> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq & 1 == 0 {
            return None;
        }
        let pid = self.pid.load(Ordering::Relaxed);
        let lo = self.lo.load(Ordering::Relaxed);
        let hi = self.hi.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then_some(Busy { seq, pid, lo, hi })
    }
}

impl Drop for Running<'_> {
    #[inline]
    fn drop(&mut self) {
        let s = self.0.seq.load(Ordering::Relaxed);
        self.0.seq.store(s + 1, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct Shared {
    activity: Arc<Activity>,
    stalls: AtomicU64,
    aborts: AtomicU64,
    stop: AtomicBool,
}

/// The watchdog thread (stopped and joined when dropped).
#[derive(Debug)]
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts a watchdog over `activity` that acts on accesses running
    /// longer than `stall`; a zero `stall` starts no thread (counters stay
    /// zero).
    pub fn start(activity: Arc<Activity>, stall: Duration) -> io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            activity,
            ..Shared::default()
        });
        let thread = if stall.is_zero() {
            tracing::warn!("the memory watchdog is off (--memory-stall-ms 0)");
            None
        } else {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("migrosd-watchdog".into())
                    .spawn(move || watch(&s, stall, Path::new(FUSECTL)))?,
            )
        };
        Ok(Watchdog { shared, thread })
    }

    /// Accesses found running longer than the bound (each counted once).
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::Relaxed)
    }

    /// FUSE connections aborted to end a stalled access.
    pub fn aborts(&self) -> u64 {
        self.shared.aborts.load(Ordering::Relaxed)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// What the watchdog knows of the access it is looking at.
struct Seen {
    seq: u64,
    since: Instant,
    /// When it last acted on it.
    acted: Option<Instant>,
}

fn watch(shared: &Shared, stall: Duration, fusectl: &Path) {
    let mut seen: Option<Seen> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(tick(stall));
        let Some(busy) = shared.activity.current() else {
            seen = None;
            continue;
        };
        let now = Instant::now();
        let s = match &mut seen {
            Some(s) if s.seq == busy.seq => s,
            _ => {
                seen = Some(Seen {
                    seq: busy.seq,
                    since: now,
                    acted: None,
                });
                continue;
            }
        };
        let stuck = now - s.since;
        if stuck < stall || s.acted.is_some_and(|t| now - t < stall) {
            continue;
        }
        if s.acted.is_none() {
            shared.stalls.fetch_add(1, Ordering::Relaxed);
        }
        s.acted = Some(now);
        let aborted = end_stall(&busy, stuck, fusectl);
        shared.aborts.fetch_add(aborted, Ordering::Relaxed);
    }
}

/// Acts on an access stuck for `stuck`: aborts the FUSE connections it
/// may wait on, or says loudly why it cannot. Returns how many it
/// aborted.
fn end_stall(busy: &Busy, stuck: Duration, fusectl: &Path) -> u64 {
    let Busy { pid, lo, hi, .. } = *busy;
    let maps = match fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(
                pid, lo = format_args!("{lo:#x}"), hi = format_args!("{hi:#x}"), ?stuck, error = %e,
                "an access into client memory is stuck, and the client's maps cannot be read: \
                 the device is blocked"
            );
            return 0;
        }
    };
    let mut mounts = Mounts::default();
    for who in [pid.to_string(), "self".to_string()] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{who}/mountinfo")) {
            mounts.add(&text);
        }
    }
    // The control filesystem is needed (and mounted if it is not) only
    // for a file that is on FUSE or on a device no mountinfo names (a FUSE
    // lower layer under an overlay, a mount of another namespace).
    let mounted = if may_be_fuse(&maps, lo, hi, &mounts) {
        ensure_fusectl(fusectl)
    } else {
        Ok(())
    };
    let found = classify(&maps, lo, hi, &mounts, fusectl);
    let mut aborted = 0;
    let mut unended = Vec::new();
    for b in &found {
        match b {
            Backing::Fuse { conn, mapping } => {
                if let Err(e) = &mounted {
                    tracing::error!(
                        pid, mapping = %mapping, ?stuck, error = %e,
                        "an access into client memory is stuck on a FUSE file, and the FUSE \
                         control filesystem cannot be mounted: the device is blocked until \
                         `mount -t fusectl none {}` and `echo 1 > {}/{conn}/abort`",
                        fusectl.display(), fusectl.display()
                    );
                    continue;
                }
                if waiting(fusectl, *conn) == Some(0) {
                    // Not what the access waits on.
                    unended.push(mapping.clone());
                    continue;
                }
                match abort(fusectl, *conn) {
                    Ok(()) => {
                        aborted += 1;
                        tracing::error!(
                            pid, mapping = %mapping, conn, ?stuck,
                            "an access into client memory was stuck on a FUSE file: \
                             its FUSE connection is aborted"
                        );
                    }
                    Err(e) => {
                        tracing::error!(
                            pid, mapping = %mapping, conn, ?stuck, error = %e,
                            "an access into client memory is stuck on a FUSE file, and its \
                             connection cannot be aborted: the device is blocked"
                        );
                    }
                }
            }
            Backing::Other { mapping } => unended.push(mapping.clone()),
        }
    }
    if aborted == 0 {
        tracing::error!(
            pid, lo = format_args!("{lo:#x}"), hi = format_args!("{hi:#x}"), ?stuck,
            mappings = ?unended,
            "an access into client memory is stuck and the watchdog cannot end it (not a \
             FUSE file with a waiting request): every session of this device waits"
        );
    }
    aborted
}

/// A file mapping in the range of a stuck access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// On the FUSE connection `conn` (its fusectl directory's name).
    Fuse { conn: u32, mapping: String },
    /// Anything else (anonymous memory included: the watchdog cannot end
    /// a wait on it).
    Other { mapping: String },
}

/// The FUSE connection number of a filesystem on device `dev`: the
/// kernel's internal `dev_t` (`major << 20 | minor`), which for FUSE's
/// anonymous devices (major 0) is the minor.
pub fn connection_number(dev: Dev) -> u32 {
    (dev.0 << 20) | (dev.1 & 0xf_ffff)
}

/// The mappings of a `/proc/<pid>/maps` text overlapping `[lo, hi)` (an
/// empty range: its first byte).
fn in_range(maps: &str, lo: u64, hi: u64) -> impl Iterator<Item = Mapping<'_>> {
    let hi = hi.max(lo.saturating_add(1));
    maps.lines()
        .filter_map(Mapping::parse)
        .filter(move |m| m.end > lo && m.start < hi)
}

fn is_fuse(fstype: &str) -> bool {
    fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.")
}

/// Whether a file mapping in `[lo, hi)` is on FUSE or on a device that
/// `mounts` does not know.
fn may_be_fuse(maps: &str, lo: u64, hi: u64, mounts: &Mounts) -> bool {
    in_range(maps, lo, hi).any(|m| !m.is_anonymous() && mounts.fstype(m.dev).is_none_or(is_fuse))
}

/// The mappings of a `/proc/<pid>/maps` text overlapping `[lo, hi)`: FUSE
/// ones (by `mounts`, or a directory of the connection's number under
/// `fusectl`) with their connection, the others as they are.
pub fn classify(maps: &str, lo: u64, hi: u64, mounts: &Mounts, fusectl: &Path) -> Vec<Backing> {
    let mut out = Vec::new();
    for m in in_range(maps, lo, hi) {
        let desc = format!(
            "{:#x}-{:#x} {} {:02x}:{:02x} {} {}",
            m.start, m.end, m.perms, m.dev.0, m.dev.1, m.inode, m.path
        );
        let desc = desc.trim_end().to_string();
        let conn = connection_number(m.dev);
        let fstype = mounts.fstype(m.dev);
        let fuse = !m.is_anonymous()
            && match fstype {
                Some(t) => is_fuse(t),
                None => fusectl.join(conn.to_string()).is_dir(),
            };
        out.push(if fuse {
            Backing::Fuse {
                conn,
                mapping: desc,
            }
        } else {
            Backing::Other {
                mapping: match fstype {
                    Some(t) => format!("{desc} ({t})"),
                    None => desc,
                },
            }
        });
    }
    out
}

/// Requests waiting on connection `conn` (its `waiting` file), if known.
fn waiting(fusectl: &Path, conn: u32) -> Option<u64> {
    fs::read_to_string(fusectl.join(conn.to_string()).join("waiting"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Aborts FUSE connection `conn`: its requests end with an error.
fn abort(fusectl: &Path, conn: u32) -> io::Result<()> {
    fs::write(fusectl.join(conn.to_string()).join("abort"), "1")
}

/// Mounts the FUSE control filesystem at `dir` unless it is there.
fn ensure_fusectl(dir: &Path) -> io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a zeroed statfs buffer, filled by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a writable buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 == FUSE_CTL_SUPER_MAGIC {
        return Ok(());
    }
    // SAFETY: valid C strings; mounts the kernel's fusectl filesystem.
    let r = unsafe {
        libc::mount(
            c"fusectl".as_ptr(),
            c.as_ptr(),
            c"fusectl".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        // Mounted by someone else meanwhile.
        if e.raw_os_error() == Some(libc::EBUSY) {
            return Ok(());
        }
        return Err(e);
    }
    tracing::info!(dir = %dir.display(), "mounted the FUSE control filesystem");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
40 27 0:45 / /mnt/s rw,nosuid,nodev,relatime shared:9 - fuse.sshfs host:/ rw,user_id=0
41 27 0:46 / /mnt/n rw,relatime - nfs4 server:/export rw,vers=4.2
42 27 8:17 / /mnt/ntfs rw,relatime - fuseblk /dev/sdb1 rw,user_id=0
";

    const MAPS: &str = "\
1000-3000 rw-p 00000000 00:00 0
3000-4000 rw-p 00000000 00:2d 7 /mnt/s/stall
4000-5000 rw-p 00000000 00:2e 9 /mnt/n/slow
5000-6000 rw-p 00000000 08:11 3 /mnt/ntfs/f
6000-7000 rw-p 00000000 00:12c 4 /mnt/raw/f
7000-8000 rw-p 00000000 fe:00 12 /lib/x
";

    fn mounts() -> Mounts {
        let mut m = Mounts::default();
        m.add(MOUNTINFO);
        m
    }

    #[test]
    fn connection_numbers_are_the_kernel_dev_t() {
        assert_eq!(connection_number((0, 45)), 45);
        assert_eq!(connection_number((0, 0x12c)), 300);
        assert_eq!(connection_number((8, 17)), (8 << 20) | 17);
    }

    #[test]
    fn finds_the_fuse_mapping_under_a_stuck_range() {
        let none = Path::new("/nonexistent-fusectl");
        // Only the range's mappings, from the one it starts in.
        let b = classify(MAPS, 0x2800, 0x3400, &mounts(), none);
        assert_eq!(
            b,
            vec![
                Backing::Other {
                    mapping: "0x1000-0x3000 rw-p 00:00 0".into()
                },
                Backing::Fuse {
                    conn: 45,
                    mapping: "0x3000-0x4000 rw-p 00:2d 7 /mnt/s/stall".into()
                },
            ]
        );
        // NFS is not FUSE; fuseblk is, by its block device's number.
        let b = classify(MAPS, 0x4000, 0x6000, &mounts(), none);
        assert!(
            matches!(&b[0], Backing::Other { mapping } if mapping.ends_with("(nfs4)")),
            "{b:?}"
        );
        assert_eq!(
            b[1],
            Backing::Fuse {
                conn: (8 << 20) | 17,
                mapping: "0x5000-0x6000 rw-p 08:11 3 /mnt/ntfs/f".into()
            }
        );
        assert_eq!(b.len(), 2);
        // A one-byte range; an empty one counts its first byte.
        assert_eq!(classify(MAPS, 0x3fff, 0x4000, &mounts(), none).len(), 1);
        assert_eq!(classify(MAPS, 0x3000, 0x3000, &mounts(), none).len(), 1);
        assert!(classify(MAPS, 0x9000, 0xa000, &mounts(), none).is_empty());
        // The control filesystem is wanted for FUSE and unknown devices only.
        assert!(!may_be_fuse(MAPS, 0x1000, 0x3000, &mounts()));
        assert!(!may_be_fuse(MAPS, 0x4000, 0x5000, &mounts()));
        assert!(may_be_fuse(MAPS, 0x2000, 0x3001, &mounts()));
        assert!(may_be_fuse(MAPS, 0x6000, 0x7000, &mounts()));
    }

    #[test]
    fn a_device_mounted_nowhere_is_fuse_if_fusectl_knows_it() {
        // Mounted in a namespace neither mountinfo shows: the connection's
        // directory decides.
        let dir = tempfile::tempdir().unwrap();
        let b = classify(MAPS, 0x6000, 0x7000, &mounts(), dir.path());
        assert!(matches!(&b[0], Backing::Other { .. }), "{b:?}");
        fs::create_dir(dir.path().join("300")).unwrap();
        let b = classify(MAPS, 0x6000, 0x7000, &mounts(), dir.path());
        assert!(matches!(&b[0], Backing::Fuse { conn: 300, .. }), "{b:?}");
        // A mounted local filesystem is never taken for FUSE.
        fs::create_dir(dir.path().join(connection_number((254, 0)).to_string())).unwrap();
        let b = classify(MAPS, 0x7000, 0x8000, &mounts(), dir.path());
        assert!(matches!(&b[0], Backing::Other { mapping } if mapping.ends_with("(ext4)")));
    }

    #[test]
    fn aborts_through_the_connection_directory() {
        let dir = tempfile::tempdir().unwrap();
        let conn = dir.path().join("45");
        fs::create_dir(&conn).unwrap();
        fs::write(conn.join("waiting"), "1\n").unwrap();
        assert_eq!(waiting(dir.path(), 45), Some(1));
        assert_eq!(waiting(dir.path(), 46), None);
        abort(dir.path(), 45).unwrap();
        assert_eq!(fs::read_to_string(conn.join("abort")).unwrap(), "1");
        assert!(abort(dir.path(), 46).is_err());
    }

    #[test]
    fn publishes_the_running_access() {
        let a = Activity::default();
        assert_eq!(a.current(), None);
        let r = a.begin(42, 0x1000, 0x2000);
        let busy = a.current().unwrap();
        assert_eq!((busy.pid, busy.lo, busy.hi), (42, 0x1000, 0x2000));
        drop(r);
        assert_eq!(a.current(), None);
        let r = a.begin(43, 1, 2);
        let next = a.current().unwrap();
        assert_ne!(next.seq, busy.seq);
        assert_eq!(next.pid, 43);
        drop(r);
    }

    #[test]
    fn counts_a_stall_once_and_leaves_short_accesses_alone() {
        let activity = Arc::new(Activity::default());
        let stall = Duration::from_millis(100);
        let w = Watchdog::start(activity.clone(), stall).unwrap();
        // Short accesses: nothing.
        for _ in 0..50 {
            let _r = activity.begin(std::process::id() as i32, 0, 1);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(w.stalls(), 0);
        // One that lasts three bounds (on this process's first page, which
        // is not mapped: nothing to abort).
        {
            let _r = activity.begin(std::process::id() as i32, 0, 4096);
            std::thread::sleep(stall * 3 + tick(stall) * 2);
        }
        assert_eq!((w.stalls(), w.aborts()), (1, 0));
        drop(w);
        let off = Watchdog::start(activity, Duration::ZERO).unwrap();
        assert_eq!(off.stalls(), 0);
    }
}
