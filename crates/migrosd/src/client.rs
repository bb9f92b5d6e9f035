//! A client process as the daemon may reach it: bound to the address space
//! the client had when it connected, with no more rights than the client's.
//!
//! The daemon runs as root, and root's `CAP_SYS_PTRACE` passes the kernel's
//! ptrace-access checks for any process. So before it touches a client's
//! memory, [`ClientProcess::open`] applies those checks itself, as the
//! client's uid would meet them: the process's real, effective, saved and
//! filesystem uids and gids must all be the ones `SO_PEERCRED` gave when it
//! connected, and it must be dumpable (a setuid or `PR_SET_DUMPABLE 0`
//! process is not). A root client (uid 0) may reach any root process.
//!
//! Then it opens `/proc/<pid>/mem`. That file stays bound to the address
//! space (the `mm`) it was opened on: after the process execs (a setuid
//! program included) or exits, it reads and writes nothing, even if the
//! pid is reused. Small reads go through it; large reads use
//! `process_vm_readv` on the pid (it copies once where the file copies
//! twice) and are kept only if the bound address space is still alive
//! afterwards ([`ClientProcess::mm_alive`]). Writes go through the
//! memory file only: a write by pid could land in whatever image the pid
//! holds by then, and the one way to make `process_vm_writev` apply the
//! client's rights (the thread taking the client's real uid for the call)
//! also lets that uid signal the daemon, SIGKILL included, while it lasts.
//! Adjacent pieces of a batch are written with one `pwritev`. The pidfd (from
//! `SO_PEERPIDFD`, or `pidfd_open`) becomes readable when the process
//! exits: the daemon polls it and ends the session at once.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use crate::backing::{self, BackingError, Mapping, Mounts};
use nix::errno::Errno;
use nix::sys::uio::RemoteIoVec;
use std::io::IoSlice;

/// Why a process cannot be a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("process {pid} is gone")]
    Gone { pid: i32 },
    #[error("process {pid} runs with other {what} ({found}) than it connected with ({expected})")]
    Credentials {
        pid: i32,
        what: &'static str,
        found: String,
        expected: u32,
    },
    #[error("process {pid} is not dumpable (setuid, or PR_SET_DUMPABLE 0)")]
    NotDumpable { pid: i32 },
    #[error("process {pid}: {what}: {source}")]
    Io {
        pid: i32,
        what: &'static str,
        source: io::Error,
    },
}

/// A verified client process: its pid, a pidfd, and its memory file.
#[derive(Debug)]
pub struct ClientProcess {
    pid: i32,
    uid: u32,
    pidfd: OwnedFd,
    mem: File,
}

impl ClientProcess {
    /// Binds to process `pid` (whose pidfd is `pidfd`, if known) after
    /// checking that it still runs with `uid`/`gid` and is dumpable.
    pub fn open(
        pidfd: Option<OwnedFd>,
        pid: i32,
        uid: u32,
        gid: u32,
    ) -> Result<ClientProcess, ClientError> {
        if pid <= 0 {
            return Err(ClientError::Gone { pid });
        }
        let pidfd = match pidfd {
            Some(fd) => fd,
            None => pidfd_open(pid)?,
        };
        if exited(pidfd.as_raw_fd()) {
            return Err(ClientError::Gone { pid });
        }
        check_identity(pid, uid, gid)?;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/{pid}/mem"))
            .map_err(|source| ClientError::Io {
                pid,
                what: "open its memory",
                source,
            })?;
        // The file is bound to the address space it found. Checked again
        // after the open: the process may have exec'd in between.
        check_identity(pid, uid, gid)?;
        let p = ClientProcess {
            pid,
            uid,
            pidfd,
            mem,
        };
        // While the pidfd's process lives, `pid` is that process.
        if exited(p.pidfd.as_raw_fd()) || !p.mm_alive() {
            return Err(ClientError::Gone { pid });
        }
        Ok(p)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The pidfd: readable once the process exited.
    pub fn pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// Whether the process exited.
    pub fn exited(&self) -> bool {
        exited(self.pidfd.as_raw_fd())
    }

    /// Whether the address space bound at [`ClientProcess::open`] is still
    /// the process's (it dies when the process execs or exits). A read of
    /// one byte at address 0: `EIO` (or a byte) while it lives, end of
    /// file once it is gone.
    pub fn mm_alive(&self) -> bool {
        let mut b = [0u8; 1];
        !matches!(self.mem.read_at(&mut b, 0), Ok(0))
    }

    /// Checks that every page of `[addr, addr + len)` is mapped readable
    /// (and writable if `write`) in the process, as the kernel checks a
    /// memory region's pages when it pins them, and backed by what a page
    /// fault never waits on another process or the network for
    /// ([`crate::backing`]).
    pub fn check_range(&self, addr: u64, len: u64, write: bool) -> Result<(), RangeError> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.pid))
            .map_err(|_| RangeError::Gone)?;
        let files = check_maps(&maps, addr, len, write)?;
        if !files.is_empty() {
            let mut mounts = Mounts::default();
            // The client's view first (its own mounts), then the daemon's
            // (what lies under a container's overlay).
            for who in [self.pid.to_string(), "self".to_string()] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{who}/mountinfo")) {
                    mounts.add(&text);
                }
            }
            for (m, at) in &files {
                backing::check(m, *at, &mounts, backing::internal_shmem())?;
            }
        }
        // The maps were the bound address space's only if it still lives.
        if !self.mm_alive() {
            return Err(RangeError::Gone);
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `addr` of the bound address space.
    pub fn read_at(&self, addr: u64, buf: &mut [u8]) -> Access {
        let mut done = 0;
        while done < buf.len() {
            match self.mem.read_at(&mut buf[done..], addr + done as u64) {
                Ok(0) => return Access::Gone,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Access::Fault,
            }
        }
        Access::Done
    }

    /// Writes `data` at `addr` of the bound address space.
    pub fn write_at(&self, addr: u64, data: &[u8]) -> Access {
        let mut done = 0;
        while done < data.len() {
            match self.mem.write_at(&data[done..], addr + done as u64) {
                Ok(0) => return Access::Gone,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Access::Fault,
            }
        }
        Access::Done
    }
}

impl ClientProcess {
    /// Writes each `local[i]` at `remote[i]` of the bound address space,
    /// through the memory file: one `pwritev` for each run of pieces that
    /// follow each other in the client's memory.
    pub fn write_vectored(&self, local: &[IoSlice<'_>], remote: &[RemoteIoVec]) -> Access {
        // By pid: once the process exited, the pid may be another's.
        if self.exited() {
            return Access::Gone;
        }
        let mut i = 0;
        while i < remote.len() {
            let mut j = i + 1;
            let mut next = remote[i].base.wrapping_add(remote[i].len);
            while j < remote.len() && remote[j].base == next {
                next = next.wrapping_add(remote[j].len);
                j += 1;
            }
            let a = self.write_run(remote[i].base as u64, &local[i..j], &remote[i..j]);
            if a != Access::Done {
                return a;
            }
            i = j;
        }
        Access::Done
    }

    /// Writes `local` (each cut to its `remote` length) one after the
    /// other from `addr` on, going on after a short write.
    fn write_run(&self, addr: u64, local: &[IoSlice<'_>], remote: &[RemoteIoVec]) -> Access {
        let pieces: Vec<&[u8]> = local
            .iter()
            .zip(remote)
            .map(|(l, r)| &l[..r.len.min(l.len())])
            .collect();
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let mut done = 0usize;
        while done < total {
            // The pieces from `done` on.
            let mut skip = done;
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(pieces.len());
            for p in &pieces {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                iov.push(IoSlice::new(&p[skip..]));
                skip = 0;
            }
            match nix::sys::uio::pwritev(&self.mem, &iov, (addr + done as u64) as i64) {
                Ok(0) => return Access::Gone,
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(_) => {
                    return if self.mm_alive() {
                        Access::Fault
                    } else {
                        Access::Gone
                    }
                }
            }
        }
        Access::Done
    }
}

/// What a memory access came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Done,
    /// Not mapped (or not accessible) in the process.
    Fault,
    /// The address space is gone: the process exec'd or exited.
    Gone,
}

/// Why a range of client memory cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the process is gone")]
    Gone,
    #[error("client memory at {0:#x} is not mapped")]
    Unmapped(u64),
    #[error("client memory at {addr:#x} is not {right}")]
    Rights { addr: u64, right: &'static str },
    #[error("client memory wraps the address space")]
    Wraps,
    #[error(transparent)]
    Backing(#[from] BackingError),
}

/// Whether the mappings of a `/proc/<pid>/maps` text cover
/// `[addr, addr + len)` without a gap, readable (and writable); returns
/// the file mappings among them, with the first address of each in range.
fn check_maps(
    maps: &str,
    addr: u64,
    len: u64,
    write: bool,
) -> Result<Vec<(Mapping<'_>, u64)>, RangeError> {
    let end = addr.checked_add(len).ok_or(RangeError::Wraps)?;
    let mut at = addr;
    let mut files = Vec::new();
    for line in maps.lines() {
        if at >= end {
            break;
        }
        let Some(m) = Mapping::parse(line) else {
            continue;
        };
        if m.end <= at {
            continue;
        }
        if m.start > at {
            return Err(RangeError::Unmapped(at));
        }
        let p = m.perms.as_bytes();
        if p.first() != Some(&b'r') {
            return Err(RangeError::Rights {
                addr: at,
                right: "readable",
            });
        }
        if write && p.get(1) != Some(&b'w') {
            return Err(RangeError::Rights {
                addr: at,
                right: "writable",
            });
        }
        let next = m.end;
        if !m.is_anonymous() {
            files.push((m, at));
        }
        at = next;
    }
    if at < end {
        return Err(RangeError::Unmapped(at));
    }
    Ok(files)
}

fn pidfd_open(pid: i32) -> Result<OwnedFd, ClientError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(ClientError::Gone { pid });
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the process behind `pidfd` exited (the pidfd polls readable).
fn exited(pidfd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n != 0
}

/// The kernel's ptrace-access rules as a process of `uid`/`gid` without
/// capabilities meets them: same uids and gids, dumpable.
fn check_identity(pid: i32, uid: u32, gid: u32) -> Result<(), ClientError> {
    let gone = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            ClientError::Gone { pid }
        } else {
            ClientError::Io {
                pid,
                what: "read its status",
                source,
            }
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(gone)?;
    let (uids, gids) = parse_ids(&status).ok_or(ClientError::Io {
        pid,
        what: "read its status",
        source: io::ErrorKind::InvalidData.into(),
    })?;
    if uids.iter().any(|u| *u != uid) {
        return Err(ClientError::Credentials {
            pid,
            what: "uids",
            found: format!("{uids:?}"),
            expected: uid,
        });
    }
    if uid == 0 {
        // Root in the daemon's namespace: CAP_SYS_PTRACE reaches any root
        // process, dumpable or not, whatever its groups.
        return Ok(());
    }
    if gids.iter().any(|g| *g != gid) {
        return Err(ClientError::Credentials {
            pid,
            what: "gids",
            found: format!("{gids:?}"),
            expected: gid,
        });
    }
    // A non-dumpable process's /proc directory belongs to root.
    let meta = std::fs::metadata(format!("/proc/{pid}")).map_err(gone)?;
    if meta.uid() != uid {
        return Err(ClientError::NotDumpable { pid });
    }
    Ok(())
}

/// The four uids and four gids (real, effective, saved, filesystem) of a
/// `/proc/<pid>/status` text.
fn parse_ids(status: &str) -> Option<([u32; 4], [u32; 4])> {
    let field = |name: &str| -> Option<[u32; 4]> {
        let line = status.lines().find_map(|l| l.strip_prefix(name))?;
        let mut ids = line.split_whitespace().map(|v| v.parse::<u32>().ok());
        let mut out = [0u32; 4];
        for slot in &mut out {
            *slot = ids.next()??;
        }
        Some(out)
    };
    Some((field("Uid:")?, field("Gid:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_ids() {
        let s = "Name:\tx\nUid:\t1000\t0\t1000\t1000\nGid:\t100\t100\t100\t100\nGroups:\n";
        assert_eq!(parse_ids(s), Some(([1000, 0, 1000, 1000], [100; 4])));
        assert_eq!(parse_ids("Uid:\t1\t2\nGid:\t1\t1\t1\t1\n"), None);
        assert_eq!(parse_ids("Name:\tx\n"), None);
    }

    #[test]
    fn maps_must_cover_the_whole_range() {
        let maps = "\
1000-3000 rw-p 00000000 00:00 0
3000-4000 r--p 00000000 fe:00 12 /lib/x
5000-6000 rw-p 00000000 00:00 0 [heap]
";
        assert_eq!(check_maps(maps, 0x1000, 0x2000, true), Ok(vec![]));
        // The file mapping in range, from where the range enters it.
        let files = check_maps(maps, 0x1800, 0x2000, false).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].0.path, files[0].1), ("/lib/x", 0x3000));
        assert_eq!(
            check_maps(maps, 0x1800, 0x2000, true),
            Err(RangeError::Rights {
                addr: 0x3000,
                right: "writable"
            })
        );
        // First and last byte mapped, a hole in between.
        assert_eq!(
            check_maps(maps, 0x2000, 0x3800, false),
            Err(RangeError::Unmapped(0x4000))
        );
        assert_eq!(
            check_maps(maps, 0x800, 0x10, false),
            Err(RangeError::Unmapped(0x800))
        );
        assert_eq!(
            check_maps(maps, 0x5800, 0x1000, false),
            Err(RangeError::Unmapped(0x6000))
        );
        assert_eq!(check_maps(maps, u64::MAX, 2, false), Err(RangeError::Wraps));
    }

    #[test]
    fn binds_to_this_process_and_reads_and_writes() {
        let me = std::process::id() as i32;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let p = ClientProcess::open(None, me, uid, gid).unwrap();
        assert!(p.mm_alive());
        assert!(!p.exited());
        let src = vec![5u8; 10_000];
        let mut dst = vec![0u8; 10_000];
        assert_eq!(p.read_at(src.as_ptr() as u64, &mut dst), Access::Done);
        assert_eq!(dst, src);
        let target = [0u8; 64];
        assert_eq!(p.write_at(target.as_ptr() as u64, &[9; 64]), Access::Done);
        // SAFETY: target is alive; the write went through the kernel.
        assert_eq!(
            unsafe { std::ptr::read_volatile(target.as_ptr().add(63)) },
            9
        );
        assert_eq!(p.read_at(8, &mut dst[..1]), Access::Fault);
    }

    #[test]
    fn refuses_other_credentials() {
        let me = std::process::id() as i32;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let e = ClientProcess::open(None, me, uid.wrapping_add(1), gid).unwrap_err();
        assert!(
            matches!(e, ClientError::Credentials { what: "uids", .. }),
            "{e}"
        );
    }
}
