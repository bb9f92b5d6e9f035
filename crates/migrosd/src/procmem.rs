//! The transport's [`Memory`] over `process_vm_readv` / `process_vm_writev`:
//! an owner's address space is the process (pid) of the client session
//! that owns it.
//!
//! Two optimisations keep system calls off the per-packet path:
//! - **read-ahead**: a small read is widened to up to [`READAHEAD`] bytes,
//!   but never past the end of the registered region (or ring) that holds
//!   it, and kept until [`ProcMem::end_batch`]. Send buffers may not change
//!   while their WR is outstanding, so this is safe within one loop turn.
//! - **write coalescing**: writes are staged and sent with one
//!   `process_vm_writev` of many iovecs, before any read, before the
//!   daemon writes completions ([`ProcMem::flush`]) and at the end of every
//!   loop turn. A staged write that fails (the process unmapped registered
//!   memory, or died) is logged and lost.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};

use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

use migros_transport::{Memory, MemoryFault, OwnerId};

/// Largest read-ahead.
pub const READAHEAD: usize = 64 << 10;
/// Staged bytes that force a flush.
const STAGE_LIMIT: usize = 1 << 20;
/// Iovecs per system call (the kernel's `UIO_MAXIOV`).
pub const MAX_IOV: usize = 1024;

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
    pids: BTreeMap<OwnerId, Pid>,
    /// Regions read-ahead may cover: owner → start → end.
    regions: BTreeMap<OwnerId, BTreeMap<u64, u64>>,
    cache: Option<ReadCache>,
    staged: Staged,
    /// Reads and writes that failed (the process went away, or unmapped).
    pub faults: u64,
}

impl ProcMem {
    pub fn new() -> ProcMem {
        ProcMem::default()
    }

    /// `owner`'s memory is process `pid`'s.
    pub fn bind(&mut self, owner: OwnerId, pid: i32) {
        self.pids.insert(owner, Pid::from_raw(pid));
    }

    /// Forgets `owner` (after its objects were destroyed or moved away).
    pub fn unbind(&mut self, owner: OwnerId) {
        self.flush();
        self.pids.remove(&owner);
        self.regions.remove(&owner);
        self.cache = None;
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

    fn pid(&self, owner: OwnerId) -> Option<Pid> {
        self.pids.get(&owner).copied()
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
        let pid = self.pid(owner).ok_or(fault.clone())?;
        let want = buf.len();
        let remote = [RemoteIoVec {
            base: addr as usize,
            len: want,
        }];
        match process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &remote) {
            Ok(n) if n == want => Ok(()),
            _ => {
                self.faults += 1;
                Err(fault)
            }
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
        let pid = self.pid(owner).ok_or(fault.clone())?;
        let remote: Vec<RemoteIoVec> = pieces
            .iter()
            .map(|(a, l)| RemoteIoVec {
                base: *a as usize,
                len: *l,
            })
            .collect();
        match process_vm_readv(pid, &mut [IoSliceMut::new(&mut buf[..total])], &remote) {
            Ok(n) if n == total => Ok(()),
            _ => {
                self.faults += 1;
                Err(fault)
            }
        }
    }

    /// Writes pieces: each `(remote address, bytes)`, with one system call
    /// (at most [`MAX_IOV`] pieces), in order.
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
        let pid = self.pid(owner).ok_or(fault.clone())?;
        let local: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p.1)).collect();
        let remote: Vec<RemoteIoVec> = pieces
            .iter()
            .map(|p| RemoteIoVec {
                base: p.0 as usize,
                len: p.1.len(),
            })
            .collect();
        match process_vm_writev(pid, &local, &remote) {
            Ok(n) if n == total => Ok(()),
            _ => {
                self.faults += 1;
                Err(fault)
            }
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
                tracing::warn!(owner, error = %e, "staged write into client memory failed");
            }
        }
        // Keep the allocations for the next batch.
        let mut staged = staged;
        staged.data.clear();
        staged.iovs.clear();
        self.staged = staged;
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
        if self.pid(owner).is_none() {
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

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn reads_and_writes_own_memory() {
        let mut m = ProcMem::new();
        m.bind(1, me());
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
        // SAFETY: dst is alive and was written by process_vm_writev.
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
