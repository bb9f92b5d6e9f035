//! Memory as the engines reach it: a trait the daemon implements on process
//! memory (and the simulator on plain buffers), and the table of registered
//! memory regions that decides what an lkey or rkey may touch.

use std::collections::BTreeMap;

use thiserror::Error;

use migros_proto::verbs::{Access, MrSpec, OwnerId, Pdn};

/// The memory of the owners of verbs objects, reached like DMA.
pub trait Memory {
    /// Reads `buf.len()` bytes at `addr` of `owner`'s address space.
    fn read(&mut self, owner: OwnerId, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault>;
    /// Writes `data` at `addr` of `owner`'s address space.
    fn write(&mut self, owner: OwnerId, addr: u64, data: &[u8]) -> Result<(), MemoryFault>;
}

/// The memory behind a registered region could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("memory of owner {owner} at {addr:#x}+{len} is not reachable")]
pub struct MemoryFault {
    pub owner: OwnerId,
    pub addr: u64,
    pub len: usize,
}

/// Why a key check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("no memory region has this key")]
    UnknownKey,
    #[error("the memory region belongs to another protection domain")]
    WrongPd,
    #[error("the range lies outside the memory region")]
    OutOfBounds,
    #[error("the memory region does not allow this access")]
    NoPermission,
}

/// Registered memory regions, by lkey and by rkey.
#[derive(Debug, Default, Clone)]
pub struct MrTable {
    by_lkey: BTreeMap<u32, MrSpec>,
    rkey_to_lkey: BTreeMap<u32, u32>,
}

impl MrTable {
    /// Adds a region. Fails if its lkey or rkey is taken.
    pub fn insert(&mut self, mr: MrSpec) -> Result<(), KeyError> {
        if self.by_lkey.contains_key(&mr.lkey) || self.rkey_to_lkey.contains_key(&mr.rkey) {
            return Err(KeyError::UnknownKey);
        }
        self.by_lkey.insert(mr.lkey, mr);
        self.rkey_to_lkey.insert(mr.rkey, mr.lkey);
        Ok(())
    }

    /// Removes the region with this lkey.
    pub fn remove(&mut self, lkey: u32) -> Option<MrSpec> {
        let mr = self.by_lkey.remove(&lkey)?;
        self.rkey_to_lkey.remove(&mr.rkey);
        Some(mr)
    }

    pub fn by_lkey(&self, lkey: u32) -> Option<&MrSpec> {
        self.by_lkey.get(&lkey)
    }

    pub fn by_rkey(&self, rkey: u32) -> Option<&MrSpec> {
        self.rkey_to_lkey
            .get(&rkey)
            .and_then(|l| self.by_lkey.get(l))
    }

    pub fn iter(&self) -> impl Iterator<Item = &MrSpec> {
        self.by_lkey.values()
    }

    /// Whether either key of `mr` is already in use.
    pub fn collides(&self, mr: &MrSpec) -> bool {
        self.by_lkey.contains_key(&mr.lkey) || self.rkey_to_lkey.contains_key(&mr.rkey)
    }

    /// Checks a local access through an lkey; returns the owner to reach.
    pub fn check_local(
        &self,
        lkey: u32,
        pd: Pdn,
        addr: u64,
        len: u64,
        need: Access,
    ) -> Result<OwnerId, KeyError> {
        let mr = self.by_lkey(lkey).ok_or(KeyError::UnknownKey)?;
        check_region(mr, pd, addr, len, need)
    }

    /// Checks a remote access through an rkey; returns the owner to reach.
    pub fn check_remote(
        &self,
        rkey: u32,
        pd: Pdn,
        addr: u64,
        len: u64,
        need: Access,
    ) -> Result<OwnerId, KeyError> {
        let mr = self.by_rkey(rkey).ok_or(KeyError::UnknownKey)?;
        check_region(mr, pd, addr, len, need)
    }
}

fn check_region(
    mr: &MrSpec,
    pd: Pdn,
    addr: u64,
    len: u64,
    need: Access,
) -> Result<OwnerId, KeyError> {
    if mr.pd != pd {
        return Err(KeyError::WrongPd);
    }
    let end = addr.checked_add(len).ok_or(KeyError::OutOfBounds)?;
    let mr_end = mr
        .addr
        .checked_add(mr.length)
        .ok_or(KeyError::OutOfBounds)?;
    if addr < mr.addr || end > mr_end {
        return Err(KeyError::OutOfBounds);
    }
    if !mr.access.contains(need) {
        return Err(KeyError::NoPermission);
    }
    Ok(mr.owner)
}
