//! Protection domains and memory regions.

use migros_verbs::{Access, Pd as VPd, RawMr};

use crate::context::Ctx;
use crate::sys::*;
use crate::util::{null_errno, set_errno};

/// What a PD pointer points to.
#[repr(C)]
pub(crate) struct Pd {
    pub pd: ibv_pd,
    pub inner: VPd,
}

/// What an MR pointer points to.
#[repr(C)]
struct Mr {
    mr: ibv_mr,
    /// `None` once deregistered (the block is then freed).
    inner: Option<RawMr>,
}

/// # Safety
/// `pd` must come from [`ibv_alloc_pd`] and not be deallocated.
pub(crate) unsafe fn pd<'a>(pd: *mut ibv_pd) -> &'a Pd {
    // SAFETY: PD pointers are Pd blocks (contract).
    unsafe { &*pd.cast::<Pd>() }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_alloc_pd(context: *mut ibv_context) -> *mut ibv_pd {
    if context.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: live context (contract).
    let ctx = unsafe { Ctx::from_ibv(context) };
    match ctx.dev.alloc_pd() {
        Ok(inner) => {
            let pd = ibv_pd {
                context,
                handle: inner.handle,
            };
            Box::into_raw(Box::new(Pd { pd, inner })).cast()
        }
        Err(e) => null_errno(e.errno()),
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_dealloc_pd(pd: *mut ibv_pd) -> libc::c_int {
    if pd.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in ibv_alloc_pd, released once (contract).
    drop(unsafe { Box::from_raw(pd.cast::<Pd>()) });
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_reg_mr(
    pd: *mut ibv_pd,
    addr: *mut libc::c_void,
    length: usize,
    access: libc::c_int,
) -> *mut ibv_mr {
    // SAFETY: same contract.
    unsafe { ibv_reg_mr_iova2(pd, addr, length, addr as u64, access as u32) }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_reg_mr_iova2(
    pd: *mut ibv_pd,
    addr: *mut libc::c_void,
    length: usize,
    iova: u64,
    access: libc::c_uint,
) -> *mut ibv_mr {
    if pd.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: a live PD (contract).
    let p = unsafe { self::pd(pd) };
    // Every bit goes to the device, which applies the kernel's rules
    // (remote write or atomic without local write: EINVAL; optional
    // hints such as relaxed ordering are ignored).
    let access = Access(access);
    // SAFETY: the caller keeps addr..addr+length mapped until ibv_dereg_mr
    // (the ibv_reg_mr contract), which drops the RawMr.
    match unsafe { p.inner.reg_mr_raw_iova(addr as u64, length, iova, access) } {
        Ok(inner) => {
            let mr = ibv_mr {
                // SAFETY: reading the PD block's own field.
                context: unsafe { (*pd).context },
                pd,
                addr,
                length,
                handle: inner.lkey,
                lkey: inner.lkey,
                rkey: inner.rkey,
            };
            Box::into_raw(Box::new(Mr {
                mr,
                inner: Some(inner),
            }))
            .cast()
        }
        Err(e) => null_errno(e.errno()),
    }
}

/// Deregisters and frees the MR; if the device refuses (memory windows
/// are bound to it: EINVAL, as rxe) the MR stays valid.
#[no_mangle]
pub unsafe extern "C" fn ibv_dereg_mr(mr: *mut ibv_mr) -> libc::c_int {
    if mr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: a live MR block (contract).
    let block = unsafe { &mut *mr.cast::<Mr>() };
    let Some(inner) = block.inner.take() else {
        return libc::EINVAL;
    };
    if let Err((inner, e)) = inner.deregister() {
        block.inner = Some(inner);
        return e.errno();
    }
    // SAFETY: made by Box::into_raw in ibv_reg_mr_iova2, released once.
    drop(unsafe { Box::from_raw(mr.cast::<Mr>()) });
    0
}

/// `ibv_reg_mr_iova` (IBVERBS_1.7): SGEs and remote peers name the
/// region's first byte `iova` (see [`ibv_reg_mr_iova2`]).
#[no_mangle]
pub unsafe extern "C" fn ibv_reg_mr_iova(
    pd: *mut ibv_pd,
    addr: *mut libc::c_void,
    length: usize,
    iova: u64,
    access: libc::c_int,
) -> *mut ibv_mr {
    // SAFETY: same contract.
    unsafe { ibv_reg_mr_iova2(pd, addr, length, iova, access as u32) }
}

/// Re-registration is not supported: as rdma-core with a provider without
/// `rereg_mr`, no flags succeeds (nothing to do), anything else fails
/// with IBV_REREG_MR_ERR_INPUT (-1) and errno EOPNOTSUPP.
#[no_mangle]
pub extern "C" fn ibv_rereg_mr(
    mr: *mut ibv_mr,
    flags: libc::c_int,
    _pd: *mut ibv_pd,
    _addr: *mut libc::c_void,
    _length: usize,
    _access: libc::c_int,
) -> libc::c_int {
    if mr.is_null() || flags & !7 != 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    if flags == 0 {
        return 0;
    }
    set_errno(libc::EOPNOTSUPP);
    -1
}

/// dma-buf MRs are not supported: NULL, errno EOPNOTSUPP (rdma-core's
/// answer for a provider without `reg_dmabuf_mr`).
#[no_mangle]
pub extern "C" fn ibv_reg_dmabuf_mr(
    _pd: *mut ibv_pd,
    _offset: u64,
    _length: usize,
    _iova: u64,
    _fd: libc::c_int,
    _access: libc::c_int,
) -> *mut ibv_mr {
    null_errno(libc::EOPNOTSUPP)
}

/// Objects are not shared between processes through a command fd:
/// importing fails with EOPNOTSUPP, unimporting has nothing to do.
#[no_mangle]
pub extern "C" fn ibv_import_pd(_context: *mut ibv_context, _handle: u32) -> *mut ibv_pd {
    null_errno(libc::EOPNOTSUPP)
}

#[no_mangle]
pub extern "C" fn ibv_unimport_pd(_pd: *mut ibv_pd) {}

#[no_mangle]
pub extern "C" fn ibv_import_mr(_pd: *mut ibv_pd, _handle: u32) -> *mut ibv_mr {
    null_errno(libc::EOPNOTSUPP)
}

#[no_mangle]
pub extern "C" fn ibv_unimport_mr(_mr: *mut ibv_mr) {}

#[no_mangle]
pub extern "C" fn ibv_import_dm(_context: *mut ibv_context, _handle: u32) -> *mut ibv_dm {
    null_errno(libc::EOPNOTSUPP)
}

#[no_mangle]
pub extern "C" fn ibv_unimport_dm(_dm: *mut ibv_dm) {}
