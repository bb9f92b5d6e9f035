//! Address handles: created from attributes or from a received
//! completion, destroyed.

use std::net::IpAddr;

use crate::sys::*;
use crate::util::{addr_of, gid_of, null_errno, set_errno};

/// What an AH pointer points to.
#[repr(C)]
pub(crate) struct Ah {
    ah: ibv_ah,
    pub addr: IpAddr,
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_ah(pd: *mut ibv_pd, attr: *mut ibv_ah_attr) -> *mut ibv_ah {
    if pd.is_null() || attr.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: readable attr (contract).
    let a = unsafe { &*attr };
    // As the kernel's rdma_check_ah_attr: the port must exist and RoCE
    // needs the GRH (the destination is its GID, the source its
    // sgid_index, which must name a GID the device has and can send
    // from: see `device`).
    if a.is_global == 0 || a.port_num != 1 {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: the PD's context is open (contract).
    if let Err(e) = unsafe { crate::device::source_gid((*pd).context, a.grh.sgid_index.into()) } {
        return null_errno(e);
    }
    let ah = ibv_ah {
        // SAFETY: reading the PD block's own field.
        context: unsafe { (*pd).context },
        pd,
        handle: 0,
    };
    Box::into_raw(Box::new(Ah {
        ah,
        addr: addr_of(&a.grh.dgid),
    }))
    .cast()
}

#[no_mangle]
pub unsafe extern "C" fn ibv_init_ah_from_wc(
    _context: *mut ibv_context,
    port_num: u8,
    wc: *mut ibv_wc,
    grh: *mut ibv_grh,
    ah_attr: *mut ibv_ah_attr,
) -> libc::c_int {
    if wc.is_null() || grh.is_null() || ah_attr.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: readable wc and GRH (the first 40 bytes of the receive
    // buffer), writable ah_attr (contract).
    unsafe {
        if (*wc).wc_flags & ibv_wc_flags_IBV_WC_GRH == 0 {
            set_errno(libc::ENOENT);
            return -1;
        }
        // RoCE v2 over IPv4 puts the IPv4 header in the last 20 bytes.
        let raw = std::slice::from_raw_parts(grh.cast::<u8>(), 40);
        let src = if raw[20] >> 4 == 4 {
            gid_of(IpAddr::from([raw[32], raw[33], raw[34], raw[35]]))
        } else {
            (*grh).sgid
        };
        *ah_attr = core::mem::zeroed();
        (*ah_attr).is_global = 1;
        (*ah_attr).grh.dgid = src;
        (*ah_attr).grh.hop_limit = 0xff;
        (*ah_attr).port_num = port_num;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_create_ah_from_wc(
    pd: *mut ibv_pd,
    wc: *mut ibv_wc,
    grh: *mut ibv_grh,
    port_num: u8,
) -> *mut ibv_ah {
    // SAFETY: all-zero is a valid ibv_ah_attr.
    let mut attr: ibv_ah_attr = unsafe { core::mem::zeroed() };
    // SAFETY: same contract, PD's context.
    unsafe {
        if pd.is_null() || ibv_init_ah_from_wc((*pd).context, port_num, wc, grh, &mut attr) != 0 {
            return std::ptr::null_mut();
        }
        ibv_create_ah(pd, &mut attr)
    }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_destroy_ah(ah: *mut ibv_ah) -> libc::c_int {
    if ah.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: made by Box::into_raw in ibv_create_ah, released once.
    drop(unsafe { Box::from_raw(ah.cast::<Ah>()) });
    0
}
