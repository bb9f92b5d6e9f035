//! Memory as the engines reach it: a trait the daemon implements on process
//! memory (and the simulator on plain buffers), and the table of registered
//! memory regions and memory windows that decides what an lkey or rkey may
//! touch, and where in the owner's memory that is.
//!
//! Keys name I/O virtual addresses: a region registered with
//! `ibv_reg_mr_iova` at `addr` answers to `iova..iova + length`, both for
//! SGEs (lkey) and for remote accesses (rkey), and the table translates
//! them to `addr`.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::mw::{self, MemoryWindow, MwState};
use migros_proto::verbs::{Access, MrSpec, MwType, OwnerId, Pdn, Qpn};

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
    #[error("the memory window is not bound, or bound to another qp")]
    WindowNotBound,
}

/// Where an access that passed its key check lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Whose memory.
    pub owner: OwnerId,
    /// The first byte, in the owner's address space.
    pub addr: u64,
}

/// Registered memory regions, by lkey and by rkey, and memory windows by
/// index (`rkey >> 8`). A region's rkey never shares its index with a
/// window, so an rkey names one or the other.
#[derive(Debug, Default, Clone)]
pub struct MrTable {
    by_lkey: BTreeMap<u32, MrSpec>,
    rkey_to_lkey: BTreeMap<u32, u32>,
    windows: BTreeMap<u32, MemoryWindow>,
}

impl MrTable {
    /// Adds a region. Fails if its lkey or rkey is taken (an rkey is also
    /// taken when a window has its index).
    pub fn insert(&mut self, mr: MrSpec) -> Result<(), KeyError> {
        if self.collides(&mr) {
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

    /// Windows bound to the region with this lkey (it may not go while any is).
    pub fn windows_on(&self, lkey: u32) -> usize {
        self.windows
            .values()
            .filter(|w| w.mr_lkey == Some(lkey))
            .count()
    }

    /// Adds a window. Fails if a window has its index or a region's rkey
    /// lies in its index.
    pub fn insert_window(&mut self, mw: MemoryWindow) -> Result<(), KeyError> {
        if self.window_collides(&mw) {
            return Err(KeyError::UnknownKey);
        }
        self.windows.insert(mw::index_of(mw.rkey), mw);
        Ok(())
    }

    /// Whether `mw`'s index is taken by a window or a region's rkey.
    pub fn window_collides(&self, mw: &MemoryWindow) -> bool {
        let index = mw::index_of(mw.rkey);
        let first = index << 8;
        self.windows.contains_key(&index)
            || self
                .rkey_to_lkey
                .range(first..=first | 0xff)
                .next()
                .is_some()
    }

    /// Removes the window whose index is `rkey`'s (any key byte).
    pub fn remove_window(&mut self, rkey: u32) -> Option<MemoryWindow> {
        self.windows.remove(&mw::index_of(rkey))
    }

    /// The window `rkey` names now (its index and its current key byte).
    pub fn window(&self, rkey: u32) -> Option<&MemoryWindow> {
        self.windows
            .get(&mw::index_of(rkey))
            .filter(|w| w.rkey == rkey)
    }

    /// As [`MrTable::window`], to change it.
    pub fn window_mut(&mut self, rkey: u32) -> Option<&mut MemoryWindow> {
        self.windows
            .get_mut(&mw::index_of(rkey))
            .filter(|w| w.rkey == rkey)
    }

    /// Every window, by index.
    pub fn windows(&self) -> impl Iterator<Item = &MemoryWindow> {
        self.windows.values()
    }

    /// Type 2 windows bound to `qpn` become free (the QP is gone).
    pub fn release_windows_of(&mut self, qpn: Qpn) {
        for w in self.windows.values_mut() {
            if w.mw_type == MwType::Type2 && w.qpn == Some(qpn) {
                w.unbind();
            }
        }
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

    /// Whether either key of `mr` is already in use (its rkey also when a
    /// window has the rkey's index).
    pub fn collides(&self, mr: &MrSpec) -> bool {
        self.by_lkey.contains_key(&mr.lkey)
            || self.rkey_to_lkey.contains_key(&mr.rkey)
            || self.windows.contains_key(&mw::index_of(mr.rkey))
    }

    /// Checks a local access through an lkey to `len` bytes at I/O
    /// address `iova`; says where they are.
    pub fn check_local(
        &self,
        lkey: u32,
        pd: Pdn,
        iova: u64,
        len: u64,
        need: Access,
    ) -> Result<Reach, KeyError> {
        let mr = self.by_lkey(lkey).ok_or(KeyError::UnknownKey)?;
        check_region(mr, pd, iova, len, need)
    }

    /// Checks a remote access by QP `qpn` (of `pd`) through an rkey, a
    /// region's or a window's (rxe's `check_rkey`); says where the bytes
    /// are.
    pub fn check_remote(
        &self,
        rkey: u32,
        pd: Pdn,
        qpn: Qpn,
        va: u64,
        len: u64,
        need: Access,
    ) -> Result<Reach, KeyError> {
        if let Some(mr) = self.by_rkey(rkey) {
            return check_region(mr, pd, va, len, need);
        }
        let mw = self.window(rkey).ok_or(KeyError::UnknownKey)?;
        if mw.pd != pd {
            return Err(KeyError::WrongPd);
        }
        let bound_here = mw.state == MwState::Valid
            && mw.length > 0
            && (mw.mw_type == MwType::Type1 || mw.qpn == Some(qpn));
        let lkey = mw.mr_lkey.filter(|_| bound_here);
        let mr = lkey
            .and_then(|l| self.by_lkey(l))
            .ok_or(KeyError::WindowNotBound)?;
        if !mw.access.contains(need) {
            return Err(KeyError::NoPermission);
        }
        // A zero-based window is addressed from 0; the window must hold
        // the whole access (see the `mw` module on rxe).
        let iova = if mw.access.contains(Access::ZERO_BASED) {
            mr.iova.checked_add(mw.addr)
        } else {
            Some(mw.addr)
        }
        .ok_or(KeyError::OutOfBounds)?;
        let offset = if mw.access.contains(Access::ZERO_BASED) {
            va
        } else {
            va.checked_sub(mw.addr).ok_or(KeyError::OutOfBounds)?
        };
        let end = offset.checked_add(len).ok_or(KeyError::OutOfBounds)?;
        if end > mw.length {
            return Err(KeyError::OutOfBounds);
        }
        let at = iova.checked_add(offset).ok_or(KeyError::OutOfBounds)?;
        // The window's rights are the ones checked; the region's were
        // checked when it was bound.
        check_region(mr, pd, at, len, Access::default())
    }
}

/// Checks `len` bytes at I/O address `iova` of `mr` for `need`.
fn check_region(
    mr: &MrSpec,
    pd: Pdn,
    iova: u64,
    len: u64,
    need: Access,
) -> Result<Reach, KeyError> {
    if mr.pd != pd {
        return Err(KeyError::WrongPd);
    }
    let end = iova.checked_add(len).ok_or(KeyError::OutOfBounds)?;
    let mr_end = mr
        .iova
        .checked_add(mr.length)
        .ok_or(KeyError::OutOfBounds)?;
    if iova < mr.iova || end > mr_end {
        return Err(KeyError::OutOfBounds);
    }
    if !mr.access.contains(need) {
        return Err(KeyError::NoPermission);
    }
    Ok(Reach {
        owner: mr.owner,
        // In bounds: addr + offset ≤ addr + length, which registration
        // checked does not wrap.
        addr: mr.addr.wrapping_add(iova - mr.iova),
    })
}
