//! Simulated process memory: sparse, per-owner address spaces made of
//! allocated regions, reached by the devices through [`Memory`].
//!
//! Every owner (a simulated process) has its own address space. Regions are
//! handed out page-aligned from [`BASE_ADDR`] upwards with an unmapped guard
//! page between neighbours, so an access that runs one byte past a region
//! faults instead of silently touching the next one. An owner's memory can be
//! taken out of one node's [`SimMemory`] and inserted into another's with the
//! same addresses, as CRIU restores a process.

use std::collections::BTreeMap;

use migros_transport::{Memory, MemoryFault, OwnerId};

/// The first address handed out in every owner's address space.
pub const BASE_ADDR: u64 = 0x10_0000_0000;
/// Allocation granularity and alignment.
pub const PAGE_SIZE: u64 = 4096;

/// The memory of every owner living on one simulated node.
#[derive(Debug, Default, Clone)]
pub struct SimMemory {
    owners: BTreeMap<OwnerId, OwnerMemory>,
}

/// One owner's address space: allocated regions by start address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OwnerMemory {
    regions: BTreeMap<u64, Vec<u8>>,
    next_addr: u64,
}

impl SimMemory {
    pub fn new() -> SimMemory {
        SimMemory::default()
    }

    /// Allocates `len` zeroed bytes in `owner`'s address space and returns
    /// their (page-aligned) address. Creates the owner's space if needed.
    /// A zero-length allocation still gets its own address.
    pub fn alloc(&mut self, owner: OwnerId, len: usize) -> u64 {
        self.owners.entry(owner).or_default().alloc(len)
    }

    /// Sets `len` bytes at `addr` to `byte`.
    pub fn fill(
        &mut self,
        owner: OwnerId,
        addr: u64,
        len: usize,
        byte: u8,
    ) -> Result<(), MemoryFault> {
        self.region_mut(owner, addr, len)?.fill(byte);
        Ok(())
    }

    /// Copies `len` bytes at `addr` out of `owner`'s memory.
    pub fn read_vec(&self, owner: OwnerId, addr: u64, len: usize) -> Result<Vec<u8>, MemoryFault> {
        Ok(self.region(owner, addr, len)?.to_vec())
    }

    /// Writes `data` at `addr` of `owner`'s memory.
    pub fn write_bytes(
        &mut self,
        owner: OwnerId,
        addr: u64,
        data: &[u8],
    ) -> Result<(), MemoryFault> {
        self.region_mut(owner, addr, data.len())?
            .copy_from_slice(data);
        Ok(())
    }

    /// Reads the little-endian `u64` at `addr` (the layout of atomic
    /// operands and results on x86 hosts).
    pub fn read_u64(&self, owner: OwnerId, addr: u64) -> Result<u64, MemoryFault> {
        let bytes = self.region(owner, addr, 8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// Writes `value` little-endian at `addr`.
    pub fn write_u64(&mut self, owner: OwnerId, addr: u64, value: u64) -> Result<(), MemoryFault> {
        self.write_bytes(owner, addr, &value.to_le_bytes())
    }

    /// Removes and returns `owner`'s whole address space (migration source).
    pub fn take_owner(&mut self, owner: OwnerId) -> Option<OwnerMemory> {
        self.owners.remove(&owner)
    }

    /// Installs an address space taken from another node (migration target),
    /// replacing any memory `owner` had here.
    pub fn insert_owner(&mut self, owner: OwnerId, mem: OwnerMemory) {
        self.owners.insert(owner, mem);
    }

    /// Whether `owner` has an address space here.
    pub fn has_owner(&self, owner: OwnerId) -> bool {
        self.owners.contains_key(&owner)
    }

    /// The owners with memory on this node, in ascending order.
    pub fn owners(&self) -> impl Iterator<Item = OwnerId> + '_ {
        self.owners.keys().copied()
    }

    fn region(&self, owner: OwnerId, addr: u64, len: usize) -> Result<&[u8], MemoryFault> {
        let fault = || MemoryFault { owner, addr, len };
        let mem = self.owners.get(&owner).ok_or_else(fault)?;
        let (start, off) = mem.range(addr, len).ok_or_else(fault)?;
        mem.regions
            .get(&start)
            .and_then(|r| r.get(off..off + len))
            .ok_or_else(fault)
    }

    fn region_mut(
        &mut self,
        owner: OwnerId,
        addr: u64,
        len: usize,
    ) -> Result<&mut [u8], MemoryFault> {
        let fault = || MemoryFault { owner, addr, len };
        let mem = self.owners.get_mut(&owner).ok_or_else(fault)?;
        let (start, off) = mem.range(addr, len).ok_or_else(fault)?;
        mem.regions
            .get_mut(&start)
            .and_then(|r| r.get_mut(off..off + len))
            .ok_or_else(fault)
    }
}

impl OwnerMemory {
    fn alloc(&mut self, len: usize) -> u64 {
        if self.next_addr == 0 {
            self.next_addr = BASE_ADDR;
        }
        let addr = self.next_addr;
        let pages = (len as u64).div_ceil(PAGE_SIZE).max(1);
        // One unmapped guard page after every region.
        self.next_addr = addr + (pages + 1) * PAGE_SIZE;
        self.regions.insert(addr, vec![0; len]);
        addr
    }

    /// The region holding `addr..addr+len` entirely, as (region start,
    /// offset of `addr` in it).
    fn range(&self, addr: u64, len: usize) -> Option<(u64, usize)> {
        let (&start, bytes) = self.regions.range(..=addr).next_back()?;
        let off = usize::try_from(addr - start).ok()?;
        let end = off.checked_add(len)?;
        (end <= bytes.len()).then_some((start, off))
    }

    /// Total bytes allocated.
    pub fn allocated_bytes(&self) -> usize {
        self.regions.values().map(Vec::len).sum()
    }
}

impl Memory for SimMemory {
    fn read(&mut self, owner: OwnerId, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        buf.copy_from_slice(self.region(owner, addr, buf.len())?);
        Ok(())
    }

    fn write(&mut self, owner: OwnerId, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        self.write_bytes(owner, addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_is_page_aligned_disjoint_and_deterministic() {
        let mut a = SimMemory::new();
        let mut b = SimMemory::new();
        let x = a.alloc(1, 10);
        let y = a.alloc(1, 4096);
        let z = a.alloc(1, 0);
        let w = a.alloc(1, 5000);
        assert_eq!(x, BASE_ADDR);
        for addr in [x, y, z, w] {
            assert_eq!(addr % PAGE_SIZE, 0);
        }
        assert!(x + 10 < y && y + 4096 < z && z < w);
        // Same sequence on another node, and owners are independent.
        assert_eq!(b.alloc(1, 10), x);
        assert_eq!(a.alloc(2, 10), BASE_ADDR);
    }

    #[test]
    fn reads_and_writes_inside_regions() {
        let mut m = SimMemory::new();
        let addr = m.alloc(7, 100);
        m.write_bytes(7, addr + 10, &[1, 2, 3]).expect("inside");
        assert_eq!(m.read_vec(7, addr + 9, 5).expect("inside"), [0, 1, 2, 3, 0]);
        let mut buf = [0u8; 3];
        Memory::read(&mut m, 7, addr + 10, &mut buf).expect("inside");
        assert_eq!(buf, [1, 2, 3]);
        m.fill(7, addr, 100, 0xab).expect("inside");
        assert_eq!(m.read_vec(7, addr + 99, 1).expect("inside"), [0xab]);
        m.write_u64(7, addr + 8, 0x0102_0304_0506_0708)
            .expect("inside");
        assert_eq!(
            m.read_u64(7, addr + 8).expect("inside"),
            0x0102_0304_0506_0708
        );
        // Zero-length access at the end of a region is fine.
        assert!(m.read_vec(7, addr + 100, 0).is_ok());
    }

    #[test]
    fn accesses_outside_regions_fault() {
        let mut m = SimMemory::new();
        let addr = m.alloc(7, 100);
        let next = m.alloc(7, 100);
        assert!(m.read_vec(7, addr + 99, 2).is_err(), "one past the end");
        assert!(
            m.read_vec(7, addr - 1, 1).is_err(),
            "before the first region"
        );
        assert!(m.read_vec(7, next - 1, 2).is_err(), "guard page");
        assert!(m.write_bytes(8, addr, &[1]).is_err(), "other owner");
        assert!(m.read_vec(7, u64::MAX, 1).is_err());
        assert!(m.read_vec(7, addr, usize::MAX).is_err());
        let err = m
            .write_bytes(7, addr + 100, &[1])
            .expect_err("past the end");
        assert_eq!(
            err,
            MemoryFault {
                owner: 7,
                addr: addr + 100,
                len: 1
            }
        );
    }

    #[test]
    fn owner_memory_moves_with_same_addresses() {
        let mut src = SimMemory::new();
        let mut dst = SimMemory::new();
        let addr = src.alloc(3, 64);
        src.write_bytes(3, addr, b"hello").expect("inside");
        let mem = src.take_owner(3).expect("owner 3 has memory");
        assert!(src.read_vec(3, addr, 5).is_err());
        assert!(!src.has_owner(3));
        dst.insert_owner(3, mem);
        assert_eq!(dst.read_vec(3, addr, 5).expect("moved"), b"hello");
        // Allocation continues after the moved regions.
        assert!(dst.alloc(3, 1) > addr);
        assert_eq!(dst.owners().collect::<Vec<_>>(), [3]);
    }
}
