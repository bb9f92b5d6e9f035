//! `rdma_getaddrinfo` / `rdma_freeaddrinfo`, as librdmacm does them
//! without ibacm: the system's `getaddrinfo` for the name and service, the
//! port space and QP type from the hints or from the socket type, the
//! passive flag deciding whether the address is the source or the
//! destination. Errors are `getaddrinfo`'s codes, as librdmacm returns
//! them (its callers use `gai_strerror`); AF_IB addresses are not offered
//! (migros devices are RoCE only).

use core::ptr::null_mut;

use crate::sys::*;
use crate::util::fail;

const RAI_PASSIVE: i32 = 0x1;
const RAI_NUMERICHOST: i32 = 0x2;

/// A malloc'd copy of `len` bytes (NULL on failure).
unsafe fn dup(src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: `len` bytes to copy from a valid `src` (caller).
    unsafe {
        let p = libc::malloc(len.max(1)).cast::<u8>();
        if !p.is_null() {
            core::ptr::copy_nonoverlapping(src, p, len);
        }
        p
    }
}

unsafe fn strdup(s: *const libc::c_char) -> *mut libc::c_char {
    if s.is_null() {
        return null_mut();
    }
    // SAFETY: a NUL-terminated string (caller).
    unsafe { libc::strdup(s) }
}

#[no_mangle]
pub unsafe extern "C" fn rdma_getaddrinfo(
    node: *const libc::c_char,
    service: *const libc::c_char,
    hints: *const rdma_addrinfo,
    res: *mut *mut rdma_addrinfo,
) -> libc::c_int {
    if service.is_null() && node.is_null() && hints.is_null() {
        return fail(libc::EINVAL);
    }
    if res.is_null() {
        return fail(libc::EINVAL);
    }
    if let Err(e) = crate::device::init() {
        return fail(e);
    }
    // SAFETY: every pointer is valid or NULL (contract); allocations are
    // checked and freed by rdma_freeaddrinfo.
    unsafe {
        let none: rdma_addrinfo = core::mem::zeroed();
        let h = if hints.is_null() { &none } else { &*hints };
        let rai = libc::calloc(1, core::mem::size_of::<rdma_addrinfo>()).cast::<rdma_addrinfo>();
        if rai.is_null() {
            return fail(libc::ENOMEM);
        }
        let r = &mut *rai;
        if !node.is_null() || !service.is_null() {
            let mut ai_hints: libc::addrinfo = core::mem::zeroed();
            if h.ai_flags & RAI_PASSIVE != 0 {
                ai_hints.ai_flags = libc::AI_PASSIVE;
            }
            if h.ai_flags & RAI_NUMERICHOST != 0 {
                ai_hints.ai_flags |= libc::AI_NUMERICHOST;
            }
            ai_hints.ai_family = h.ai_family;
            ai_hints.ai_socktype = match h.ai_qp_type as ibv_qp_type {
                ibv_qp_type_IBV_QPT_RC | ibv_qp_type_IBV_QPT_UC => libc::SOCK_STREAM,
                ibv_qp_type_IBV_QPT_UD => libc::SOCK_DGRAM,
                _ => 0,
            };
            ai_hints.ai_protocol = match h.ai_port_space {
                0x0106 => libc::IPPROTO_TCP,
                0x0111 | 0x0002 => libc::IPPROTO_UDP,
                0x013f => match ai_hints.ai_socktype {
                    libc::SOCK_STREAM => libc::IPPROTO_TCP,
                    libc::SOCK_DGRAM => libc::IPPROTO_UDP,
                    _ => 0,
                },
                _ => 0,
            };
            let mut ai: *mut libc::addrinfo = null_mut();
            let p = if hints.is_null() {
                core::ptr::null()
            } else {
                &ai_hints as *const libc::addrinfo
            };
            let ret = libc::getaddrinfo(node, service, p, &mut ai);
            if ret != 0 {
                libc::free(rai.cast());
                return ret;
            }
            let a = &*ai;
            r.ai_qp_type = if h.ai_qp_type != 0 {
                h.ai_qp_type
            } else {
                match a.ai_socktype {
                    libc::SOCK_STREAM => ibv_qp_type_IBV_QPT_RC as i32,
                    libc::SOCK_DGRAM => ibv_qp_type_IBV_QPT_UD as i32,
                    _ => 0,
                }
            };
            r.ai_port_space = if h.ai_port_space != 0 {
                h.ai_port_space
            } else {
                match a.ai_protocol {
                    libc::IPPROTO_TCP => 0x0106,
                    libc::IPPROTO_UDP => 0x0111,
                    _ => 0,
                }
            };
            r.ai_family = a.ai_family;
            let addr = dup(a.ai_addr.cast(), a.ai_addrlen as usize).cast::<sockaddr>();
            if a.ai_flags & libc::AI_PASSIVE != 0 {
                r.ai_flags = RAI_PASSIVE;
                r.ai_src_canonname = strdup(a.ai_canonname);
                r.ai_src_addr = addr;
                r.ai_src_len = a.ai_addrlen;
            } else {
                r.ai_dst_canonname = strdup(a.ai_canonname);
                r.ai_dst_addr = addr;
                r.ai_dst_len = a.ai_addrlen;
            }
            libc::freeaddrinfo(ai);
            if addr.is_null() {
                rdma_freeaddrinfo(rai);
                return fail(libc::ENOMEM);
            }
        } else {
            r.ai_flags = h.ai_flags;
            r.ai_family = h.ai_family;
            r.ai_qp_type = h.ai_qp_type;
            r.ai_port_space = h.ai_port_space;
            if h.ai_dst_len > 0 && !h.ai_dst_addr.is_null() {
                r.ai_dst_addr = dup(h.ai_dst_addr.cast(), h.ai_dst_len as usize).cast();
                r.ai_dst_len = h.ai_dst_len;
            }
        }
        if r.ai_src_len == 0 && h.ai_src_len > 0 && !h.ai_src_addr.is_null() {
            r.ai_src_addr = dup(h.ai_src_addr.cast(), h.ai_src_len as usize).cast();
            r.ai_src_len = h.ai_src_len;
        }
        *res = rai;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn rdma_freeaddrinfo(res: *mut rdma_addrinfo) {
    let mut p = res;
    while !p.is_null() {
        // SAFETY: a list made by rdma_getaddrinfo; every member malloc'd or NULL.
        unsafe {
            let next = (*p).ai_next;
            for m in [
                (*p).ai_connect,
                (*p).ai_route,
                (*p).ai_src_canonname.cast(),
                (*p).ai_dst_canonname.cast(),
                (*p).ai_src_addr.cast(),
                (*p).ai_dst_addr.cast(),
            ] {
                libc::free(m);
            }
            libc::free(p.cast());
            p = next;
        }
    }
}
