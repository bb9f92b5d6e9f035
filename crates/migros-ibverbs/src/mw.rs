//! Memory windows: `ibv_alloc_mw`, `ibv_dealloc_mw` and `ibv_bind_mw`
//! (inline in verbs.h, reached through `ibv_context_ops`). A type 1 bind
//! is a BIND_MW work request posted to the QP, as rdma-core's rxe provider
//! does: the window's `rkey` takes the next key at once and the program
//! puts it back if the bind completes in error. A type 2 window is bound
//! with `IBV_WR_BIND_MW` or `ibv_wr_bind_mw`; the program sets its `rkey`.

use migros_verbs::{Access, Mw as VMw, MwType, SendFlags};

use crate::mr::pd;
use crate::post;
use crate::qp::Qp;
use crate::sys::*;
use crate::util::null_errno;

/// What an MW pointer points to.
#[repr(C)]
struct Mw {
    mw: ibv_mw,
    inner: VMw,
}

/// `ops.alloc_mw`.
pub(crate) unsafe extern "C" fn alloc_mw(pd: *mut ibv_pd, mw_type: ibv_mw_type) -> *mut ibv_mw {
    if pd.is_null() {
        return null_errno(libc::EINVAL);
    }
    let t = match mw_type {
        ibv_mw_type_IBV_MW_TYPE_1 => MwType::Type1,
        ibv_mw_type_IBV_MW_TYPE_2 => MwType::Type2,
        _ => return null_errno(libc::EINVAL),
    };
    // SAFETY: a live PD (contract).
    let p = unsafe { self::pd(pd) };
    match p.inner.alloc_mw(t) {
        Ok(inner) => {
            let mw = ibv_mw {
                // SAFETY: reading the PD block's own field.
                context: unsafe { (*pd).context },
                pd,
                rkey: inner.rkey(),
                handle: inner.rkey() >> 8,
                type_: mw_type,
            };
            Box::into_raw(Box::new(Mw { mw, inner })).cast()
        }
        Err(e) => null_errno(e.errno()),
    }
}

/// `ops.dealloc_mw`: the window goes, bound or not.
pub(crate) unsafe extern "C" fn dealloc_mw(mw: *mut ibv_mw) -> libc::c_int {
    if mw.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in alloc_mw, released once.
    drop(unsafe { Box::from_raw(mw.cast::<Mw>()) });
    0
}

/// `ops.bind_mw` (`ibv_bind_mw`, type 1 windows; verbs.h checked the
/// type and that the MR shares the window's PD).
pub(crate) unsafe extern "C" fn bind_mw(
    qp: *mut ibv_qp,
    mw: *mut ibv_mw,
    mw_bind: *mut ibv_mw_bind,
) -> libc::c_int {
    if qp.is_null() || mw.is_null() || mw_bind.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live QP, window and bind (contract).
    let (q, m, b) = unsafe { (&*qp.cast::<Qp>(), &mut *mw.cast::<Mw>(), &*mw_bind) };
    // As rdma-core's rxe: a type 1 window is never zero based.
    if b.bind_info.mw_access_flags & Access::ZERO_BASED.0 != 0 {
        return libc::EINVAL;
    }
    let new = (m.mw.rkey & !0xff) | (m.mw.rkey.wrapping_add(1) & 0xff);
    // SAFETY: the window is live; the bind's MR is live or null (contract).
    let bind = unsafe { post::mw_bind(mw, new, &b.bind_info) };
    let wr = migros_verbs::SendWr {
        wr_id: b.wr_id,
        opcode: migros_verbs::WrOpcode::BindMw(bind),
        flags: SendFlags(b.send_flags & 0xf),
        data: migros_verbs::SendData::Sges(Vec::new()),
        ud: None,
    };
    match q.inner.post_send(&[wr]) {
        Ok(()) => {
            m.mw.rkey = new;
            m.inner.set_rkey(new);
            0
        }
        Err(e) => e.errno(),
    }
}
