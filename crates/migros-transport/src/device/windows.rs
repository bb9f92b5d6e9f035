//! Memory window verbs of the device: `alloc_mw`, `dealloc_mw`, and what
//! an owner's migration carries of its windows. Binding and invalidating
//! are work requests (`local_ops`, the responder).

use super::{exists, not_found, Device};
use crate::error::VerbsError;
use crate::mw::MemoryWindow;
use migros_proto::verbs::*;

impl Device {
    /// `ibv_alloc_mw`: a window of `pd` whose rkey is `rkey` (its index,
    /// `rkey >> 8`, must be free: no other window and no region's rkey
    /// has it). A type 1 window starts valid and bound to nothing, a type
    /// 2 window free.
    pub fn alloc_mw(
        &mut self,
        owner: OwnerId,
        pd: Pdn,
        mw_type: MwType,
        rkey: u32,
    ) -> Result<(), VerbsError> {
        if self.objs.pds.get(&pd) != Some(&owner) {
            return Err(not_found("pd", pd));
        }
        self.objs
            .mrs
            .insert_window(MemoryWindow::new(owner, pd, mw_type, rkey))
            .map_err(|_| exists("memory window", rkey))
    }

    /// `ibv_dealloc_mw`: the window (named by any rkey it had) goes,
    /// whether bound or not.
    pub fn dealloc_mw(&mut self, rkey: u32) -> Result<(), VerbsError> {
        self.objs
            .mrs
            .remove_window(rkey)
            .map(|_| ())
            .ok_or_else(|| not_found("memory window", rkey))
    }

    /// The window with index `rkey >> 8`, as it is now (its current rkey,
    /// state and binding).
    pub fn query_mw(&self, rkey: u32) -> Option<MemoryWindow> {
        self.objs
            .mrs
            .windows()
            .find(|w| crate::mw::index_of(w.rkey) == crate::mw::index_of(rkey))
            .copied()
    }

    /// The windows of `owner` (for its checkpoint image).
    pub(crate) fn owner_windows(&self, owner: OwnerId) -> Vec<MemoryWindow> {
        self.objs
            .mrs
            .windows()
            .filter(|w| w.owner == owner)
            .copied()
            .collect()
    }

    /// Fails if one of `windows` has an index taken here.
    pub(crate) fn check_windows_free(&self, windows: &[MemoryWindow]) -> Result<(), VerbsError> {
        match windows.iter().find(|w| self.objs.mrs.window_collides(w)) {
            Some(w) => Err(exists("memory window", w.rkey)),
            None => Ok(()),
        }
    }

    /// Removes every window of `owner`.
    pub(crate) fn remove_owner_windows(&mut self, owner: OwnerId) {
        for rkey in self.owner_windows(owner).iter().map(|w| w.rkey) {
            self.objs.mrs.remove_window(rkey);
        }
    }
}
