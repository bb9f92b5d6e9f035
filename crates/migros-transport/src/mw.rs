//! Memory windows (rxe's `rxe_mw.c`): a window is a remote key onto part
//! of a memory region, bound and unbound by work requests, so a peer can
//! be given access to a buffer for one exchange and lose it afterwards.
//!
//! A window's rkey is its index (the upper 24 bits, fixed at allocation)
//! and its key (the low 8 bits, chosen by each bind, `ibv_inc_rkey`). The
//! table ([`crate::memory::MrTable`]) keeps windows by index, so an old
//! rkey of a rebound window no longer matches.
//!
//! | | type 1 | type 2 |
//! |---|---|---|
//! | after `alloc_mw` | valid, bound to nothing | free |
//! | bound by | `ibv_bind_mw` (a BIND_MW WR of any QP of its PD) | a BIND_MW WR; only that QP may use it |
//! | unbound by | binding it again with length 0 | LOCAL_INV, SEND_WITH_INV |
//!
//! The checks follow rxe's `rxe_check_bind_mw` (IBA C10-72 … C10-75) and
//! `rxe_lookup_mw`. Where migros is stricter than rxe, on purpose:
//! - a remote access must stay inside the window, not only inside the
//!   region behind it (rxe checks the region's bounds only, so a peer
//!   could reach the whole region through a small window);
//! - the region, and for a type 1 window the binding QP, must belong to
//!   the window's PD;
//! - SEND_WITH_INV and LOCAL_INV of a type 2 window must come from the
//!   QP it is bound to, in its PD (IBA o10-37.2.26; rxe does not check).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use migros_proto::verbs::{Access, MrSpec, MwBind, MwType, OwnerId, Pdn, Qpn};

/// Rights a window may grant (rxe's `RXE_ACCESS_SUPPORTED_MW`).
pub const MW_ACCESS: Access = Access(
    Access::LOCAL_WRITE.0
        | Access::REMOTE_WRITE.0
        | Access::REMOTE_READ.0
        | Access::REMOTE_ATOMIC.0
        | Access::MW_BIND.0
        | Access::ZERO_BASED.0,
);

/// The window index of an rkey (what stays the same across binds).
pub fn index_of(rkey: u32) -> u32 {
    rkey >> 8
}

/// Where a window stands (rxe's `RXE_MW_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MwState {
    /// Usable for remote access if bound to a region (a type 1 window is
    /// valid from its allocation, with nothing bound).
    Valid,
    /// A type 2 window waiting for a bind.
    Free,
}

/// A memory window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryWindow {
    pub owner: OwnerId,
    pub pd: Pdn,
    pub mw_type: MwType,
    /// The current rkey (index and key).
    pub rkey: u32,
    pub state: MwState,
    pub access: Access,
    /// Start of the window in the region's I/O virtual addresses.
    pub addr: u64,
    pub length: u64,
    /// The region bound (`None`: bound to nothing).
    pub mr_lkey: Option<u32>,
    /// Type 2: the QP that bound it, the only one that may use it.
    pub qpn: Option<Qpn>,
}

impl MemoryWindow {
    /// A window just allocated (`ibv_alloc_mw`).
    pub fn new(owner: OwnerId, pd: Pdn, mw_type: MwType, rkey: u32) -> MemoryWindow {
        MemoryWindow {
            owner,
            pd,
            mw_type,
            rkey,
            state: match mw_type {
                MwType::Type1 => MwState::Valid,
                MwType::Type2 => MwState::Free,
            },
            access: Access::default(),
            addr: 0,
            length: 0,
            mr_lkey: None,
            qpn: None,
        }
    }

    /// Forgets the binding: a type 2 window becomes free again.
    pub fn unbind(&mut self) {
        self.access = Access::default();
        self.addr = 0;
        self.length = 0;
        self.mr_lkey = None;
        self.qpn = None;
        if self.mw_type == MwType::Type2 {
            self.state = MwState::Free;
        }
    }
}

/// Why a BIND_MW work request failed (its completion: `MwBindErr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BindError {
    #[error("no memory window has this rkey")]
    UnknownWindow,
    #[error("no memory region has this lkey")]
    UnknownRegion,
    #[error("the access flags include rights a window cannot grant")]
    UnsupportedAccess,
    #[error("a type 1 window is bound with ibv_bind_mw, a type 2 window must be free")]
    WrongState,
    #[error("a type 1 window cannot be zero based")]
    ZeroBasedType1,
    #[error("a type 2 window belongs to another protection domain than the qp")]
    WrongPd,
    #[error("a type 2 window needs a region and a length")]
    NothingToBind,
    #[error("the region does not allow binding windows")]
    NoBindRight,
    #[error("a writable window needs a region with local write access")]
    NotLocallyWritable,
    #[error("the window lies outside the region")]
    OutOfRegion,
}

/// Why a LOCAL_INV or SEND_WITH_INV could not invalidate its rkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InvalidateError {
    #[error("no memory window has this rkey")]
    UnknownWindow,
    #[error("a memory region's key cannot be invalidated (no fast registration here)")]
    Region,
    #[error("a type 1 window is invalidated by binding it again")]
    Type1,
    #[error("the window is not bound")]
    NotBound,
    #[error("the window belongs to another qp or protection domain")]
    NotOurs,
}

/// Checks a bind of `mw` by QP `qpn` of `qp_pd` to `mr` (`None` when the
/// bind names no region: only a type 1 unbind), rxe's `rxe_check_bind_mw`.
pub fn check_bind(
    mw: &MemoryWindow,
    qp_pd: Pdn,
    bind: &MwBind,
    mr: Option<&MrSpec>,
) -> Result<(), BindError> {
    let access = bind.access;
    if !MW_ACCESS.contains(access) {
        return Err(BindError::UnsupportedAccess);
    }
    // C10-72 for type 2; for type 1 too here (rxe does not check).
    if mw.pd != qp_pd {
        return Err(BindError::WrongPd);
    }
    match mw.mw_type {
        MwType::Type1 => {
            if mw.state != MwState::Valid {
                return Err(BindError::WrongState);
            }
            if access.contains(Access::ZERO_BASED) {
                return Err(BindError::ZeroBasedType1);
            }
        }
        MwType::Type2 => {
            if mw.state != MwState::Free {
                return Err(BindError::WrongState);
            }
            if mr.is_none() || bind.length == 0 {
                return Err(BindError::NothingToBind);
            }
        }
    }
    let Some(mr) = mr else {
        return Ok(());
    };
    if mr.pd != mw.pd {
        return Err(BindError::WrongPd);
    }
    if !mr.access.contains(Access::MW_BIND) {
        return Err(BindError::NoBindRight);
    }
    if access.remote_writable() && !mr.access.contains(Access::LOCAL_WRITE) {
        return Err(BindError::NotLocallyWritable);
    }
    let inside = if access.contains(Access::ZERO_BASED) {
        bind.length <= mr.length
    } else {
        let end = bind.addr.checked_add(bind.length);
        let mr_end = mr.iova.checked_add(mr.length);
        matches!((end, mr_end), (Some(e), Some(me)) if bind.addr >= mr.iova && e <= me)
    };
    if !inside {
        return Err(BindError::OutOfRegion);
    }
    Ok(())
}

/// Applies a checked bind (rxe's `rxe_do_bind_mw`): the key byte of the
/// rkey changes, the window becomes valid over its new range.
pub fn do_bind(mw: &mut MemoryWindow, qpn: Qpn, bind: &MwBind) {
    mw.rkey = (mw.rkey & !0xff) | (bind.new_rkey & 0xff);
    mw.access = bind.access;
    mw.state = MwState::Valid;
    mw.addr = bind.addr;
    mw.length = bind.length;
    mw.mr_lkey = (bind.length > 0).then_some(bind.mr_lkey);
    mw.qpn = (mw.mw_type == MwType::Type2).then_some(qpn);
}

/// Checks an invalidation of `mw` asked by QP `qpn` of `qp_pd`.
pub fn check_invalidate(mw: &MemoryWindow, qpn: Qpn, qp_pd: Pdn) -> Result<(), InvalidateError> {
    if mw.mw_type == MwType::Type1 {
        return Err(InvalidateError::Type1);
    }
    if mw.state != MwState::Valid {
        return Err(InvalidateError::NotBound);
    }
    if mw.pd != qp_pd || mw.qpn != Some(qpn) {
        return Err(InvalidateError::NotOurs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PD: Pdn = 7;

    fn mr(access: Access) -> MrSpec {
        MrSpec {
            owner: 1,
            pd: PD,
            addr: 0x10_0000,
            length: 0x1000,
            iova: 0x5000,
            lkey: 0x11,
            rkey: 0x22,
            access,
        }
    }

    fn bind(addr: u64, length: u64, access: Access) -> MwBind {
        MwBind {
            mw_rkey: 0x1234_5600,
            new_rkey: 0x1234_5601,
            mr_lkey: 0x11,
            addr,
            length,
            access,
        }
    }

    const BINDABLE: Access = Access(Access::LOCAL_WRITE.0 | Access::MW_BIND.0);

    #[test]
    fn a_new_type_2_window_is_free_and_binds_to_its_qp() {
        let mut mw = MemoryWindow::new(1, PD, MwType::Type2, 0x1234_5600);
        assert_eq!(mw.state, MwState::Free);
        let b = bind(0x5100, 0x100, Access::REMOTE_WRITE);
        check_bind(&mw, PD, &b, Some(&mr(BINDABLE))).expect("bindable");
        do_bind(&mut mw, 0x42, &b);
        assert_eq!(mw.rkey, 0x1234_5601, "the key byte follows the bind");
        assert_eq!(
            (mw.state, mw.qpn, mw.mr_lkey),
            (MwState::Valid, Some(0x42), Some(0x11))
        );
        // A bound type 2 window must be invalidated before binding again.
        assert_eq!(
            check_bind(&mw, PD, &b, Some(&mr(BINDABLE))),
            Err(BindError::WrongState)
        );
        assert_eq!(
            check_invalidate(&mw, 0x43, PD),
            Err(InvalidateError::NotOurs)
        );
        check_invalidate(&mw, 0x42, PD).expect("its qp");
        mw.unbind();
        assert_eq!((mw.state, mw.qpn, mw.length), (MwState::Free, None, 0));
        assert_eq!(
            check_invalidate(&mw, 0x42, PD),
            Err(InvalidateError::NotBound)
        );
    }

    #[test]
    fn bind_checks_in_rxe_order() {
        let t1 = MemoryWindow::new(1, PD, MwType::Type1, 0x100);
        let t2 = MemoryWindow::new(1, PD, MwType::Type2, 0x200);
        let ok = bind(0x5000, 0x1000, Access::REMOTE_READ);
        let rw = BINDABLE;
        let cases = [
            (
                t2,
                bind(0x5000, 8, Access(1 << 6)),
                Some(mr(rw)),
                BindError::UnsupportedAccess,
            ),
            (
                t1,
                bind(0x5000, 8, Access::ZERO_BASED),
                Some(mr(rw)),
                BindError::ZeroBasedType1,
            ),
            (t2, ok, None, BindError::NothingToBind),
            (
                t2,
                bind(0x5000, 0, Access::REMOTE_READ),
                Some(mr(rw)),
                BindError::NothingToBind,
            ),
            (
                t2,
                ok,
                Some(mr(Access::LOCAL_WRITE)),
                BindError::NoBindRight,
            ),
            (
                t2,
                bind(0x5000, 8, Access::REMOTE_ATOMIC),
                Some(mr(Access::MW_BIND)),
                BindError::NotLocallyWritable,
            ),
            (
                t2,
                bind(0x4fff, 8, Access::REMOTE_READ),
                Some(mr(rw)),
                BindError::OutOfRegion,
            ),
            (
                t2,
                bind(0x5ff9, 8, Access::REMOTE_READ),
                Some(mr(rw)),
                BindError::OutOfRegion,
            ),
            (
                t2,
                bind(u64::MAX, 8, Access::REMOTE_READ),
                Some(mr(rw)),
                BindError::OutOfRegion,
            ),
            (
                t2,
                bind(0, 0x1001, Access::REMOTE_READ | Access::ZERO_BASED),
                Some(mr(rw)),
                BindError::OutOfRegion,
            ),
        ];
        for (mw, b, region, err) in cases {
            assert_eq!(check_bind(&mw, PD, &b, region.as_ref()), Err(err), "{b:?}");
        }
        assert_eq!(
            check_bind(&t2, PD + 1, &ok, Some(&mr(rw))),
            Err(BindError::WrongPd)
        );
        let mut other_pd = mr(rw);
        other_pd.pd = PD + 1;
        assert_eq!(
            check_bind(&t1, PD, &ok, Some(&other_pd)),
            Err(BindError::WrongPd)
        );
        check_bind(&t1, PD, &ok, Some(&mr(rw))).expect("type 1 in range");
        check_bind(&t1, PD, &bind(0, 0, Access::default()), None).expect("type 1 unbind");
        let zb = bind(0, 0x1000, Access::REMOTE_READ | Access::ZERO_BASED);
        check_bind(&t2, PD, &zb, Some(&mr(rw))).expect("zero based within the length");
    }

    #[test]
    fn type_1_windows_are_not_invalidated_by_work_requests() {
        let mw = MemoryWindow::new(1, PD, MwType::Type1, 0x100);
        assert_eq!(check_invalidate(&mw, 1, PD), Err(InvalidateError::Type1));
    }
}
