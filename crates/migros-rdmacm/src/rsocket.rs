//! rsockets (RDMA sockets) are not implemented: `rsocket` fails with
//! ENOTSUP, so no rsocket descriptor ever exists, and every call on one
//! fails with EBADF, as librdmacm answers for a descriptor that is not an
//! rsocket (`rclose` returns EBADF itself, as librdmacm's does). `rpoll`
//! and `rselect` on ordinary descriptors behave as `poll` and `select`, as
//! librdmacm's do (the example programs call `rpoll` on plain sockets).

use crate::util::set_errno;

fn ebadf<T>(v: T) -> T {
    set_errno(libc::EBADF);
    v
}

#[no_mangle]
pub extern "C" fn rsocket(_domain: i32, _type: i32, _protocol: i32) -> i32 {
    set_errno(libc::ENOTSUP);
    -1
}
#[no_mangle]
pub extern "C" fn rbind(_s: i32, _a: *const libc::sockaddr, _l: libc::socklen_t) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rlisten(_s: i32, _backlog: i32) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn raccept(_s: i32, _a: *mut libc::sockaddr, _l: *mut libc::socklen_t) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rconnect(_s: i32, _a: *const libc::sockaddr, _l: libc::socklen_t) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rshutdown(_s: i32, _how: i32) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rclose(_s: i32) -> i32 {
    libc::EBADF
}
#[no_mangle]
pub extern "C" fn rrecv(_s: i32, _b: *mut libc::c_void, _l: usize, _f: i32) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rrecvfrom(
    _s: i32,
    _b: *mut libc::c_void,
    _l: usize,
    _f: i32,
    _a: *mut libc::sockaddr,
    _al: *mut libc::socklen_t,
) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rrecvmsg(_s: i32, _m: *mut libc::msghdr, _f: i32) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rsend(_s: i32, _b: *const libc::c_void, _l: usize, _f: i32) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rsendto(
    _s: i32,
    _b: *const libc::c_void,
    _l: usize,
    _f: i32,
    _a: *const libc::sockaddr,
    _al: libc::socklen_t,
) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rsendmsg(_s: i32, _m: *const libc::msghdr, _f: i32) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rread(_s: i32, _b: *mut libc::c_void, _l: usize) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rreadv(_s: i32, _v: *const libc::iovec, _n: i32) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rwrite(_s: i32, _b: *const libc::c_void, _l: usize) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rwritev(_s: i32, _v: *const libc::iovec, _n: i32) -> isize {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rgetpeername(_s: i32, _a: *mut libc::sockaddr, _l: *mut libc::socklen_t) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rgetsockname(_s: i32, _a: *mut libc::sockaddr, _l: *mut libc::socklen_t) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rsetsockopt(
    _s: i32,
    _level: i32,
    _name: i32,
    _v: *const libc::c_void,
    _l: libc::socklen_t,
) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn rgetsockopt(
    _s: i32,
    _level: i32,
    _name: i32,
    _v: *mut libc::c_void,
    _l: *mut libc::socklen_t,
) -> i32 {
    ebadf(-1)
}
/// `int rfcntl(int socket, int cmd, ...)`: the variable arguments are not
/// read (the descriptor is never an rsocket).
#[no_mangle]
pub extern "C" fn rfcntl(_s: i32, _cmd: i32) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn riomap(
    _s: i32,
    _b: *mut libc::c_void,
    _l: usize,
    _prot: i32,
    _flags: i32,
    _off: libc::off_t,
) -> libc::off_t {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn riounmap(_s: i32, _b: *mut libc::c_void, _l: usize) -> i32 {
    ebadf(-1)
}
#[no_mangle]
pub extern "C" fn riowrite(
    _s: i32,
    _b: *const libc::c_void,
    _l: usize,
    _off: libc::off_t,
    _f: i32,
) -> usize {
    ebadf(usize::MAX)
}

/// # Safety
/// As `poll(2)`.
#[no_mangle]
pub unsafe extern "C" fn rpoll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: i32) -> i32 {
    // SAFETY: the caller's poll arguments.
    unsafe { libc::poll(fds, nfds, timeout) }
}

/// # Safety
/// As `select(2)`.
#[no_mangle]
pub unsafe extern "C" fn rselect(
    nfds: i32,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    t: *mut libc::timeval,
) -> i32 {
    // SAFETY: the caller's select arguments.
    unsafe { libc::select(nfds, r, w, e, t) }
}
