//! The transport's [`Memory`] over client processes: an owner's address
//! space is the one its session's process had when it connected
//! ([`ClientProcess`]: small reads through its `/proc/<pid>/mem`, large
//! reads with `process_vm_readv` checked against it, writes through the
//! memory file). An owner whose
//! process exec'd or exited is noted ([`ProcMem::take_gone`]) and faults.
//!
//! Two optimisations keep system calls off the per-packet path:
//! - **read-ahead**: a small read is widened to up to [`READAHEAD`] bytes,
//!   but never past the end of the registered region (or ring) that holds
//!   it, and kept until [`ProcMem::end_batch`]. Send buffers may not change
//!   while their WR is outstanding, so this is safe within one loop turn.
//! - **write coalescing**: writes are staged and sent with one
//!   `pwritev` per run of adjacent pieces, before any read, before the
//!   daemon writes completions ([`ProcMem::flush`]) and at the end of every
//!   loop turn. A staged write that fails (the process unmapped registered
//!   memory, or died) is kept as a fault of its owner
//!   ([`ProcMem::take_write_faults`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IoSlice, IoSliceMut};
use std::sync::Arc;

use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::client::{Access, ClientProcess};
use crate::watchdog::Activity;

use migros_transport::{Memory, MemoryFault, OwnerId};

/// Largest read-ahead.
pub const READAHEAD: usize = 64 << 10;
/// Staged bytes that force a flush.
const STAGE_LIMIT: usize = 1 << 20;
/// Iovecs per system call (the kernel's `UIO_MAXIOV`).
pub const MAX_IOV: usize = 1024;
/// Reads up to this size go through the bound memory file; larger ones
/// use `process_vm_readv` (one copy instead of two) and a check after.
const SMALL_READ: usize = 8 << 10;

#[derive(Debug, Default)]
struct ReadCache {
    owner: OwnerId,
    addr: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Staged {
    owner: Option<OwnerId>,
    data: Vec<u8>,
    /// (remote address, offset in `data`, length)
    iovs: Vec<(u64, usize, usize)>,
}

/// Memory of client processes.
#[derive(Debug, Default)]
pub struct ProcMem {
    procs: BTreeMap<OwnerId, ClientProcess>,
    /// Owners whose process exec'd or exited since last asked.
    gone: BTreeSet<OwnerId>,
    /// Owners a staged write failed for since last asked.
    write_faults: BTreeSet<OwnerId>,
    /// Regions read-ahead may cover: owner → start → end.
    regions: BTreeMap<OwnerId, BTreeMap<u64, u64>>,
    cache: Option<ReadCache>,
    staged: Staged,
    /// Reads and writes that failed (the process went away, or unmapped).
    pub faults: u64,
    /// The access running, for the watchdog.
    activity: Arc<Activity>,
}

impl ProcMem {
    pub fn new() -> ProcMem {
        ProcMem::default()
    }

    /// Where each access is published while it runs (for
    /// [`crate::watchdog::Watchdog::start`]).
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// `owner`'s memory is process `proc`'s.
    pub fn bind(&mut self, owner: OwnerId, proc: ClientProcess) {
        self.procs.insert(owner, proc);
        self.gone.remove(&owner);
    }

    /// Binds `owner` to this very process (tests).
    #[cfg(test)]
    pub fn bind_self(&mut self, owner: OwnerId) {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let me = std::process::id() as i32;
        let p = ClientProcess::open(None, me, uid, gid).expect("this process is a client");
        self.bind(owner, p);
    }

    /// The process bound to `owner`.
    pub fn process(&self, owner: OwnerId) -> Option<&ClientProcess> {
        self.procs.get(&owner)
    }

    /// Forgets `owner` (after its objects were destroyed or moved away)
    /// and returns its process.
    pub fn unbind(&mut self, owner: OwnerId) -> Option<ClientProcess> {
        self.flush();
        self.regions.remove(&owner);
        self.gone.remove(&owner);
        self.write_faults.remove(&owner);
        self.cache = None;
        self.procs.remove(&owner)
    }

    /// `old`'s process and regions become `new`'s.
    pub fn rebind(&mut self, old: OwnerId, new: OwnerId) {
        self.flush();
        if let Some(p) = self.procs.remove(&old) {
            self.procs.insert(new, p);
        }
        self.regions.remove(&old);
        self.gone.remove(&old);
        self.cache = None;
    }

    /// Owners whose process exec'd or exited (seen by an access or by
    /// [`ProcMem::sweep`]) since last asked.
    pub fn take_gone(&mut self) -> BTreeSet<OwnerId> {
        std::mem::take(&mut self.gone)
    }

    /// Owners for which a staged write failed since last asked.
    pub fn take_write_faults(&mut self) -> BTreeSet<OwnerId> {
        std::mem::take(&mut self.write_faults)
    }

    /// Looks at every bound process: notes those that exec'd or exited.
    pub fn sweep(&mut self) {
        for (owner, p) in &self.procs {
            if p.exited() || !p.mm_alive() {
                self.gone.insert(*owner);
            }
        }
    }

    fn note(&mut self, owner: OwnerId, access: Access) -> bool {
        match access {
            Access::Done => true,
            Access::Fault => {
                self.faults += 1;
                false
            }
            Access::Gone => {
                self.faults += 1;
                self.gone.insert(owner);
                false
            }
        }
    }

    /// Read-ahead may cover `[addr, addr + len)` of `owner`.
    pub fn add_region(&mut self, owner: OwnerId, addr: u64, len: u64) {
        let end = addr.saturating_add(len);
        let r = self.regions.entry(owner).or_default();
        let e = r.entry(addr).or_insert(end);
        *e = (*e).max(end);
    }

    pub fn remove_region(&mut self, owner: OwnerId, addr: u64) {
        if let Some(r) = self.regions.get_mut(&owner) {
            r.remove(&addr);
        }
        self.cache = None;
    }

    /// End of a loop turn: flush writes, drop the read-ahead.
    pub fn end_batch(&mut self) {
        self.flush();
        self.cache = None;
    }

    /// The end of the region holding `[addr, addr+len)`, if one does.
    fn region_end(&self, owner: OwnerId, addr: u64, len: u64) -> Option<u64> {
        let end = addr.checked_add(len)?;
        self.regions
            .get(&owner)?
            .range(..=addr)
            .rev()
            .take(8)
            .map(|(_, e)| *e)
            .filter(|e| *e >= end)
            .max()
    }

    /// Reads directly (no cache, no staging).
    pub fn read_now(
        &mut self,
        owner: OwnerId,
        addr: u64,
        buf: &mut [u8],
    ) -> Result<(), MemoryFault> {
        let fault = MemoryFault {
            owner,
            addr,
            len: buf.len(),
        };
        if buf.is_empty() {
            return Ok(());
        }
        let Some(p) = self.procs.get(&owner) else {
            return Err(fault);
        };
        let end = addr.saturating_add(buf.len() as u64);
        let running = self.activity.begin(p.pid(), addr, end);
        let access = if buf.len() <= SMALL_READ {
            p.read_at(addr, buf)
        } else {
            let remote = [RemoteIoVec {
                base: addr as usize,
                len: buf.len(),
            }];
            checked_pvm_read(p, &mut [IoSliceMut::new(buf)], &remote)
        };
        drop(running);
        if self.note(owner, access) {
            Ok(())
        } else {
            Err(fault)
        }
    }

    /// Reads pieces `(addr, len)` into consecutive parts of `buf` with one
    /// system call (at most [`MAX_IOV`] pieces).
    pub fn readv_now(
        &mut self,
        owner: OwnerId,
        pieces: &[(u64, usize)],
        buf: &mut [u8],
    ) -> Result<(), MemoryFault> {
        let total: usize = pieces.iter().map(|p| p.1).sum();
        let fault = MemoryFault {
            owner,
            addr: pieces.first().map_or(0, |p| p.0),
            len: total,
        };
        if total > buf.len() || pieces.len() > MAX_IOV {
            return Err(fault);
        }
        let Some(p) = self.procs.get(&owner) else {
            return Err(fault);
        };
        let (lo, hi) = span(pieces.iter().map(|(a, l)| (*a, *l)));
        let running = self.activity.begin(p.pid(), lo, hi);
        let access = if let [(addr, len)] = pieces {
            if *len <= SMALL_READ {
                p.read_at(*addr, &mut buf[..*len])
            } else {
                let remote = [RemoteIoVec {
                    base: *addr as usize,
                    len: *len,
                }];
                checked_pvm_read(p, &mut [IoSliceMut::new(&mut buf[..total])], &remote)
            }
        } else {
            let remote: Vec<RemoteIoVec> = pieces
                .iter()
                .map(|(a, l)| RemoteIoVec {
                    base: *a as usize,
                    len: *l,
                })
                .collect();
            checked_pvm_read(p, &mut [IoSliceMut::new(&mut buf[..total])], &remote)
        };
        drop(running);
        if self.note(owner, access) {
            Ok(())
        } else {
            Err(fault)
        }
    }

    /// Writes pieces: each `(remote address, bytes)`, in order, through
    /// the bound memory file ([`ClientProcess::write_vectored`]; at most
    /// [`MAX_IOV`] pieces).
    pub fn writev_now(
        &mut self,
        owner: OwnerId,
        pieces: &[(u64, &[u8])],
    ) -> Result<(), MemoryFault> {
        let total: usize = pieces.iter().map(|p| p.1.len()).sum();
        let fault = MemoryFault {
            owner,
            addr: pieces.first().map_or(0, |p| p.0),
            len: total,
        };
        if pieces.is_empty() {
            return Ok(());
        }
        if pieces.len() > MAX_IOV {
            return Err(fault);
        }
        let Some(p) = self.procs.get(&owner) else {
            return Err(fault);
        };
        let local: Vec<IoSlice<'_>> = pieces.iter().map(|(_, d)| IoSlice::new(d)).collect();
        let remote: Vec<RemoteIoVec> = pieces
            .iter()
            .map(|(a, d)| RemoteIoVec {
                base: *a as usize,
                len: d.len(),
            })
            .collect();
        let (lo, hi) = span(pieces.iter().map(|(a, d)| (*a, d.len())));
        let running = self.activity.begin(p.pid(), lo, hi);
        let access = p.write_vectored(&local, &remote);
        drop(running);
        if self.note(owner, access) {
            Ok(())
        } else {
            Err(fault)
        }
    }

    /// Sends every staged write.
    pub fn flush(&mut self) {
        let Some(owner) = self.staged.owner.take() else {
            return;
        };
        let staged = std::mem::take(&mut self.staged);
        let pieces: Vec<(u64, &[u8])> = staged.iov_slices().collect();
        for chunk in pieces.chunks(MAX_IOV) {
            if let Err(e) = self.writev_now(owner, chunk) {
                tracing::info!(owner, error = %e, "staged write into client memory failed");
                self.write_faults.insert(owner);
            }
        }
        // Keep the allocations for the next batch.
        let mut staged = staged;
        staged.data.clear();
        staged.iovs.clear();
        self.staged = staged;
    }
}

/// The addresses `[lo, hi)` that pieces `(address, length)` span.
#[inline]
fn span(pieces: impl Iterator<Item = (u64, usize)>) -> (u64, u64) {
    pieces.fold((u64::MAX, 0), |(lo, hi), (a, l)| {
        (lo.min(a), hi.max(a.saturating_add(l as u64)))
    })
}

/// `process_vm_readv` on the process's pid, kept only if the address space
/// bound at connect time is still alive afterwards: had the process
/// exec'd (or exited and its pid been reused) before the call, the bytes
/// may be another program's and are dropped.
fn checked_pvm_read(
    p: &ClientProcess,
    local: &mut [IoSliceMut<'_>],
    remote: &[RemoteIoVec],
) -> Access {
    let want: usize = remote.iter().map(|r| r.len).sum();
    let r = process_vm_readv(Pid::from_raw(p.pid()), local, remote);
    if !p.mm_alive() {
        return Access::Gone;
    }
    match r {
        Ok(n) if n == want => Access::Done,
        _ => Access::Fault,
    }
}

impl Staged {
    fn iov_slices(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.iovs
            .iter()
            .map(move |(a, off, len)| (*a, &self.data[*off..*off + *len]))
    }
}

impl Memory for ProcMem {
    fn read(&mut self, owner: OwnerId, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        self.flush();
        let len = buf.len() as u64;
        if let Some(c) = &self.cache {
            if c.owner == owner
                && addr >= c.addr
                && addr
                    .checked_add(len)
                    .is_some_and(|end| end <= c.addr + c.data.len() as u64)
            {
                let off = (addr - c.addr) as usize;
                buf.copy_from_slice(&c.data[off..off + buf.len()]);
                return Ok(());
            }
        }
        if buf.len() >= READAHEAD {
            return self.read_now(owner, addr, buf);
        }
        let Some(region_end) = self.region_end(owner, addr, len) else {
            return self.read_now(owner, addr, buf);
        };
        let ahead = (region_end - addr).min(READAHEAD as u64) as usize;
        let mut cache = self.cache.take().unwrap_or_default();
        cache.data.resize(ahead, 0);
        cache.owner = owner;
        cache.addr = addr;
        let r = self.read_now(owner, addr, &mut cache.data);
        if r.is_ok() {
            buf.copy_from_slice(&cache.data[..buf.len()]);
            self.cache = Some(cache);
            Ok(())
        } else {
            // The region may be partly unmapped: read exactly what was asked.
            self.read_now(owner, addr, buf)
        }
    }

    fn write(&mut self, owner: OwnerId, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        if !self.procs.contains_key(&owner) || self.gone.contains(&owner) {
            return Err(MemoryFault {
                owner,
                addr,
                len: data.len(),
            });
        }
        if self.cache.as_ref().is_some_and(|c| c.owner == owner) {
            self.cache = None;
        }
        if self.staged.owner.is_some_and(|o| o != owner)
            || self.staged.iovs.len() >= MAX_IOV
            || self.staged.data.len() + data.len() > STAGE_LIMIT
        {
            self.flush();
        }
        let s = &mut self.staged;
        s.owner = Some(owner);
        let off = s.data.len();
        s.data.extend_from_slice(data);
        match s.iovs.last_mut() {
            Some((a, o, l)) if *a + *l as u64 == addr && *o + *l == off => *l += data.len(),
            _ => s.iovs.push((addr, off, data.len())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_own_memory() {
        let mut m = ProcMem::new();
        m.bind_self(1);
        let src = vec![7u8; 100_000];
        let mut dst = vec![0u8; 100_000];
        let dst_ptr = dst.as_mut_ptr();
        m.add_region(1, src.as_ptr() as u64, src.len() as u64);
        let mut buf = [0u8; 1000];
        m.read(1, src.as_ptr() as u64 + 10, &mut buf).unwrap();
        assert!(buf.iter().all(|b| *b == 7));
        // Served from the read-ahead.
        m.read(1, src.as_ptr() as u64 + 2000, &mut buf).unwrap();
        let base = dst_ptr as u64;
        m.write(1, base, &[1; 10]).unwrap();
        m.write(1, base + 10, &[2; 10]).unwrap();
        m.write(1, base + 50, &[3; 10]).unwrap();
        assert_eq!(m.staged.iovs.len(), 2);
        m.flush();
        // SAFETY: dst is alive and was written through the memory file.
        let (a, b) = unsafe {
            (
                std::ptr::read_volatile(dst_ptr.add(15)),
                std::ptr::read_volatile(dst_ptr.add(50)),
            )
        };
        assert_eq!((a, b), (2, 3));
        drop(dst);
        assert!(m.read(2, base, &mut buf).is_err());
        assert!(m.read(1, 8, &mut buf).is_err());
    }
}
