//! Protection domains and memory regions.

use std::sync::Arc;

use migros_proto::msg::{Request, Response};
use migros_proto::verbs::{Access, MwType, Pdn, Sge};

use crate::conn::unexpected;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::mw::Mw;
use crate::qp::{Qp, QpInitAttr, Srq};
use crate::shm::ShmBuf;

/// A protection domain. MRs, QPs and SRQs made from it keep it alive.
pub struct Pd {
    pub(crate) inner: Arc<PdShared>,
    pub handle: Pdn,
}

pub(crate) struct PdShared {
    pub(crate) ctx: Context,
    pub(crate) handle: Pdn,
}

impl Drop for PdShared {
    fn drop(&mut self) {
        let _ = self.ctx.request_ok(&Request::DeallocPd { pd: self.handle });
    }
}

impl Pd {
    pub(crate) fn alloc(ctx: &Context) -> Result<Pd> {
        let handle = match ctx.request(&Request::AllocPd)? {
            Response::Pd { pd } => pd,
            other => return Err(unexpected("AllocPd", &other)),
        };
        Ok(Pd {
            inner: Arc::new(PdShared {
                ctx: ctx.clone(),
                handle,
            }),
            handle,
        })
    }

    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// Allocates and registers `len` bytes of page-aligned, zeroed memory.
    pub fn alloc_mr(&self, len: usize, access: Access) -> Result<Mr> {
        let mut buf = ShmBuf::zeroed(len)
            .ok_or_else(|| Error::InvalidArgument(format!("cannot allocate {len} bytes")))?;
        match self.register(buf.addr(), len, buf.addr(), access) {
            Ok((lkey, rkey)) => Ok(Mr {
                lkey,
                rkey,
                buf,
                pd: self.inner.clone(),
            }),
            Err(e) => {
                // A failed RegMr registered nothing, but a broken connection
                // leaves that unknown: keep the memory rather than risk it.
                if !matches!(e, Error::Daemon { .. }) {
                    buf.leak_on_drop();
                }
                Err(e)
            }
        }
    }

    /// Registers memory the caller owns.
    ///
    /// # Safety
    /// `addr..addr+len` must stay valid and mapped until the returned
    /// `RawMr` is deregistered; the device writes into it when allowed.
    pub unsafe fn reg_mr_raw(&self, addr: u64, len: usize, access: Access) -> Result<RawMr> {
        // SAFETY: as this function's.
        unsafe { self.reg_mr_raw_iova(addr, len, addr, access) }
    }

    /// Registers memory the caller owns, named by the I/O virtual
    /// address `iova` (`ibv_reg_mr_iova`): SGEs and remote peers address
    /// its first byte as `iova`.
    ///
    /// # Safety
    /// As [`Pd::reg_mr_raw`].
    pub unsafe fn reg_mr_raw_iova(
        &self,
        addr: u64,
        len: usize,
        iova: u64,
        access: Access,
    ) -> Result<RawMr> {
        let (lkey, rkey) = self.register(addr, len, iova, access)?;
        Ok(RawMr {
            lkey,
            rkey,
            addr,
            len,
            pd: self.inner.clone(),
            registered: true,
        })
    }

    pub fn create_qp(&self, attr: &QpInitAttr) -> Result<Qp> {
        Qp::create(self, attr)
    }

    /// A shared receive queue of at least `max_wr` entries (rounded up to a
    /// power of two); `limit` arms the SRQ limit event (0: none).
    pub fn create_srq(&self, max_wr: u32, max_sge: u32, limit: u32) -> Result<Srq> {
        Srq::create(self, max_wr, max_sge, limit)
    }

    /// A memory window of this PD (`ibv_alloc_mw`).
    pub fn alloc_mw(&self, mw_type: MwType) -> Result<Mw> {
        Mw::alloc(self, mw_type)
    }

    fn register(&self, addr: u64, len: usize, iova: u64, access: Access) -> Result<(u32, u32)> {
        match self.inner.ctx.request(&Request::RegMr {
            pd: self.handle,
            addr,
            length: len as u64,
            iova,
            access,
        })? {
            Response::Mr { lkey, rkey } => Ok((lkey, rkey)),
            other => Err(unexpected("RegMr", &other)),
        }
    }
}

/// Deregisters `lkey`; whether the daemon confirmed it.
fn deregister(pd: &PdShared, lkey: u32) -> bool {
    pd.ctx.request_ok(&Request::DeregMr { lkey }).is_ok()
}

/// Registered memory owned by the MR (page-aligned, zeroed). Deregistered
/// and freed on drop (kept allocated if the daemon cannot confirm the
/// deregistration, as it might still write into it).
pub struct Mr {
    pub lkey: u32,
    pub rkey: u32,
    buf: ShmBuf,
    pd: Arc<PdShared>,
}

impl Mr {
    pub fn addr(&self) -> u64 {
        self.buf.addr()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The memory, for reading what the peer wrote. The device may write
    /// into it concurrently; the caller orders accesses with completions.
    pub fn as_slice(&self) -> &[u8] {
        self.buf.bytes()
    }

    /// The memory, for filling what will be sent.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.bytes_mut()
    }

    /// An SGE covering `len` bytes at `offset`.
    ///
    /// # Panics
    /// If the range is outside the MR or `len` exceeds `u32::MAX` (as
    /// slice indexing does).
    pub fn sge(&self, offset: usize, len: usize) -> Sge {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len()),
            "sge {offset}+{len} outside an mr of {} bytes",
            self.len()
        );
        Sge {
            addr: self.addr() + offset as u64,
            length: u32::try_from(len).expect("sge length exceeds u32::MAX"),
            lkey: self.lkey,
        }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        if !deregister(&self.pd, self.lkey) {
            self.buf.leak_on_drop();
        }
    }
}

impl std::fmt::Debug for Mr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Mr(lkey {:#x}, {} bytes at {:#x})",
            self.lkey,
            self.len(),
            self.addr()
        )
    }
}

/// Memory registered by address (see [`Pd::reg_mr_raw`]); deregistered on
/// drop, or by [`RawMr::deregister`] to learn whether it worked.
pub struct RawMr {
    pub lkey: u32,
    pub rkey: u32,
    pub addr: u64,
    pub len: usize,
    pd: Arc<PdShared>,
    /// Not yet deregistered.
    registered: bool,
}

impl RawMr {
    /// Deregisters the region; on failure (memory windows are still
    /// bound to it: EINVAL, as rxe) it stays registered and is handed back.
    pub fn deregister(mut self) -> std::result::Result<(), (RawMr, Error)> {
        match self
            .pd
            .ctx
            .request_ok(&Request::DeregMr { lkey: self.lkey })
        {
            Ok(()) => {
                self.registered = false;
                Ok(())
            }
            // The daemon kept it: it stays ours.
            Err(e @ Error::Daemon { .. }) => Err((self, e)),
            // The connection is gone and the region with it.
            Err(e) => {
                self.registered = false;
                Err((self, e))
            }
        }
    }

    /// An SGE covering `len` bytes at `offset` (not checked against the MR).
    pub fn sge(&self, offset: usize, len: u32) -> Sge {
        Sge {
            addr: self.addr + offset as u64,
            length: len,
            lkey: self.lkey,
        }
    }
}

impl Drop for RawMr {
    fn drop(&mut self) {
        if self.registered {
            deregister(&self.pd, self.lkey);
        }
    }
}
