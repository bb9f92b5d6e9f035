//! Devices (`rdma_get_devices`), multicast (not on migros devices: UD
//! multicast does not exist there, so joining fails with EOPNOTSUPP and
//! leaving finds no group, EADDRNOTAVAIL, as librdmacm says for a group
//! never joined).

use crate::device;
use crate::sys::*;
use crate::util::{addr_len, fail, set_errno};

#[no_mangle]
pub unsafe extern "C" fn rdma_get_devices(num_devices: *mut libc::c_int) -> *mut *mut ibv_context {
    let set = |n: i32| {
        if !num_devices.is_null() {
            // SAFETY: an int pointer or NULL (contract).
            unsafe { *num_devices = n };
        }
    };
    if let Err(e) = device::init().and_then(|()| device::sync()) {
        set(0);
        set_errno(e);
        return core::ptr::null_mut();
    }
    let devs = device::all();
    // SAFETY: malloc of n+1 pointers, freed by rdma_free_devices.
    let list = unsafe { libc::malloc((devs.len() + 1) * core::mem::size_of::<usize>()) }
        .cast::<*mut ibv_context>();
    if list.is_null() {
        set(0);
        set_errno(libc::ENOMEM);
        return list;
    }
    for (i, d) in devs.iter().enumerate() {
        // SAFETY: `i` < len of an array of len + 1.
        unsafe { *list.add(i) = d.ctx() };
    }
    // SAFETY: the last slot.
    unsafe { *list.add(devs.len()) = core::ptr::null_mut() };
    set(devs.len() as i32);
    list
}

#[no_mangle]
pub unsafe extern "C" fn rdma_free_devices(list: *mut *mut ibv_context) {
    // SAFETY: a list of rdma_get_devices (contract); contexts stay open.
    unsafe { libc::free(list.cast()) };
}

#[no_mangle]
pub unsafe extern "C" fn rdma_join_multicast(
    id: *mut rdma_cm_id,
    addr: *mut sockaddr,
    _context: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: a socket address or NULL (contract).
    if id.is_null() || unsafe { addr_len(addr) } == 0 {
        return fail(libc::EINVAL);
    }
    fail(libc::EOPNOTSUPP)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_join_multicast_ex(
    id: *mut rdma_cm_id,
    mc_join_attr: *mut rdma_cm_join_mc_attr_ex,
    _context: *mut libc::c_void,
) -> libc::c_int {
    if id.is_null() || mc_join_attr.is_null() {
        return fail(libc::EINVAL);
    }
    fail(libc::EOPNOTSUPP)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_leave_multicast(
    id: *mut rdma_cm_id,
    addr: *mut sockaddr,
) -> libc::c_int {
    // SAFETY: a socket address or NULL (contract).
    if id.is_null() || unsafe { addr_len(addr) } == 0 {
        return fail(libc::EINVAL);
    }
    fail(libc::EADDRNOTAVAIL)
}
