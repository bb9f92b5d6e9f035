//! Memory windows: remote keys onto part of a memory region, bound and
//! unbound by work requests (see `WrOpcode::BindMw`, `WrOpcode::LocalInv`
//! and the transport's `mw` module for the rules, rxe's).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use migros_proto::msg::{Request, Response};
use migros_proto::verbs::{Access, MwBind, MwType, SendData, SendFlags, SendWr, WrOpcode};

use crate::conn::unexpected;
use crate::error::Result;
use crate::memory::{Pd, PdShared};
use crate::qp::Qp;

/// A memory window. Deallocated on drop.
pub struct Mw {
    mw_type: MwType,
    /// The current rkey: a type 1 bind through [`Mw::bind`] moves it on
    /// (a type 2 bind's new rkey is the WR's, see [`Mw::bind_wr`]).
    rkey: AtomicU32,
    pd: Arc<PdShared>,
}

impl Mw {
    pub(crate) fn alloc(pd: &Pd, mw_type: MwType) -> Result<Mw> {
        let rkey = match pd.inner.ctx.request(&Request::AllocMw {
            pd: pd.handle,
            mw_type,
        })? {
            Response::Mw { rkey } => rkey,
            other => return Err(unexpected("AllocMw", &other)),
        };
        Ok(Mw {
            mw_type,
            rkey: AtomicU32::new(rkey),
            pd: pd.inner.clone(),
        })
    }

    pub fn mw_type(&self) -> MwType {
        self.mw_type
    }

    /// The rkey the window answers to now (as the library last set it).
    pub fn rkey(&self) -> u32 {
        self.rkey.load(Ordering::Acquire)
    }

    /// Sets the rkey the program now knows the window by (after a type 2
    /// bind completed, or to undo a failed type 1 bind).
    pub fn set_rkey(&self, rkey: u32) {
        self.rkey.store(rkey, Ordering::Release);
    }

    /// The BIND_MW work request that binds this window to `length` bytes
    /// at I/O address `addr` of region `mr_lkey` with `access`, giving it
    /// the next key (`ibv_inc_rkey`); returns it and the new rkey.
    pub fn bind_wr(
        &self,
        wr_id: u64,
        flags: SendFlags,
        (mr_lkey, addr, length): (u32, u64, u64),
        access: Access,
    ) -> (SendWr, u32) {
        let old = self.rkey();
        let new = (old & !0xff) | (old.wrapping_add(1) & 0xff);
        let bind = MwBind {
            mw_rkey: old,
            new_rkey: new,
            mr_lkey,
            addr,
            length,
            access,
        };
        let wr = SendWr {
            wr_id,
            opcode: WrOpcode::BindMw(bind),
            flags,
            data: SendData::Sges(Vec::new()),
            ud: None,
        };
        (wr, new)
    }

    /// `ibv_bind_mw` of a type 1 window: posts the bind on `qp` and, once
    /// posted, takes the new rkey (the program undoes it if the bind
    /// completes in error, as with libibverbs).
    pub fn bind(
        &self,
        qp: &Qp,
        wr_id: u64,
        flags: SendFlags,
        region: (u32, u64, u64),
        access: Access,
    ) -> Result<u32> {
        let (wr, new) = self.bind_wr(wr_id, flags, region, access);
        qp.post_send(&[wr])?;
        self.set_rkey(new);
        Ok(new)
    }
}

impl Drop for Mw {
    fn drop(&mut self) {
        let _ = self
            .pd
            .ctx
            .request_ok(&Request::DeallocMw { rkey: self.rkey() });
    }
}

impl std::fmt::Debug for Mw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mw({:#x}, {:?})", self.rkey(), self.mw_type)
    }
}
