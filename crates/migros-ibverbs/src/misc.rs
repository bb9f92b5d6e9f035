//! Strings, sysfs reading and the calls that have nothing to do on migros.

use std::ffi::CStr;

use crate::sys::*;
use crate::util::set_errno;

#[no_mangle]
pub extern "C" fn ibv_wc_status_str(status: ibv_wc_status) -> *const libc::c_char {
    name_of(&WC_STATUS_NAMES, status)
}

#[no_mangle]
pub extern "C" fn ibv_node_type_str(node_type: ibv_node_type) -> *const libc::c_char {
    name_of(&NODE_TYPE_NAMES, node_type)
}

#[no_mangle]
pub extern "C" fn ibv_port_state_str(state: ibv_port_state) -> *const libc::c_char {
    name_of(&PORT_STATE_NAMES, state)
}

#[no_mangle]
pub extern "C" fn ibv_event_type_str(event: ibv_event_type) -> *const libc::c_char {
    name_of(&EVENT_TYPE_NAMES, event)
}

/// The name of `value` in `names` (indexed by value), "unknown" past its
/// end, as libibverbs' tables.
fn name_of<T: TryInto<usize>>(names: &[&'static CStr], value: T) -> *const libc::c_char {
    value
        .try_into()
        .ok()
        .and_then(|i| names.get(i))
        .copied()
        .unwrap_or(c"unknown")
        .as_ptr()
}

/// The names of `enum ibv_wc_status`, by value.
const WC_STATUS_NAMES: [&CStr; 24] = [
    c"success",
    c"local length error",
    c"local QP operation error",
    c"local EE context operation error",
    c"local protection error",
    c"Work Request Flushed Error",
    c"memory management operation error",
    c"bad response error",
    c"local access error",
    c"remote invalid request error",
    c"remote access error",
    c"remote operation error",
    c"transport retry counter exceeded",
    c"RNR retry counter exceeded",
    c"local RDD violation error",
    c"remote invalid RD request",
    c"aborted error",
    c"invalid EE context number",
    c"invalid EE context state",
    c"fatal error",
    c"response timeout error",
    c"general error",
    c"TM error",
    c"TM RNDV incomplete",
];

/// The names of `enum ibv_node_type` (0 is none), by value.
const NODE_TYPE_NAMES: [&CStr; 7] = [
    c"unknown",
    c"InfiniBand channel adapter",
    c"InfiniBand switch",
    c"InfiniBand router",
    c"iWARP NIC",
    c"usNIC",
    c"usNIC UDP",
];

/// The names of `enum ibv_port_state`, by value.
const PORT_STATE_NAMES: [&CStr; 6] = [
    c"no state change (NOP)",
    c"down",
    c"init",
    c"armed",
    c"active",
    c"active deferred",
];

/// The names of `enum ibv_event_type`, by value.
const EVENT_TYPE_NAMES: [&CStr; 19] = [
    c"CQ error",
    c"local work queue catastrophic error",
    c"invalid request local work queue error",
    c"local access violation work queue error",
    c"communication established",
    c"send queue drained",
    c"path migrated",
    c"path migration request error",
    c"local catastrophic error",
    c"port active",
    c"port error",
    c"LID change",
    c"P_Key change",
    c"SM change",
    c"SRQ catastrophic error",
    c"SRQ limit reached",
    c"last WQE reached",
    c"client reregistration",
    c"GID table change",
];

/// Reads `dir/file` into `buf` (NUL-terminated, trailing newline
/// dropped); the length read, or -1.
#[no_mangle]
pub unsafe extern "C" fn ibv_read_sysfs_file(
    dir: *const libc::c_char,
    file: *const libc::c_char,
    buf: *mut libc::c_char,
    size: usize,
) -> libc::c_int {
    if dir.is_null() || file.is_null() || buf.is_null() || size == 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: NUL-terminated strings (contract).
    let (d, f) = unsafe { (CStr::from_ptr(dir), CStr::from_ptr(file)) };
    let path = std::path::Path::new(&*d.to_string_lossy()).join(&*f.to_string_lossy());
    let mut data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::EIO));
            return -1;
        }
    };
    data.truncate(size - 1);
    if data.last() == Some(&b'\n') {
        data.pop();
    }
    // SAFETY: buf holds size bytes (contract); data.len() < size.
    unsafe {
        core::ptr::copy_nonoverlapping(data.as_ptr(), buf.cast::<u8>(), data.len());
        *buf.add(data.len()) = 0;
    }
    data.len() as libc::c_int
}

#[no_mangle]
pub extern "C" fn ibv_get_sysfs_path() -> *const libc::c_char {
    c"/sys".as_ptr()
}

#[no_mangle]
pub extern "C" fn ibv_rate_to_mult(rate: libc::c_int) -> libc::c_int {
    match rate {
        2 => 1,
        5 => 2,
        3 => 4,
        6 => 8,
        7 => 12,
        _ => -1,
    }
}

#[no_mangle]
pub extern "C" fn mult_to_ibv_rate(mult: libc::c_int) -> libc::c_int {
    match mult {
        1 => 2,
        2 => 5,
        4 => 3,
        8 => 6,
        12 => 7,
        _ => 0,
    }
}

/// The rate of an `enum ibv_rate` in Mbit/s (-1 for none), libibverbs'
/// table.
#[no_mangle]
pub extern "C" fn ibv_rate_to_mbps(rate: libc::c_int) -> libc::c_int {
    RATES
        .iter()
        .find(|(r, _)| *r == rate)
        .map_or(-1, |(_, mbps)| *mbps)
}

/// The `enum ibv_rate` of exactly `mbps` Mbit/s (IBV_RATE_MAX, 0, if none).
#[no_mangle]
pub extern "C" fn mbps_to_ibv_rate(mbps: libc::c_int) -> libc::c_int {
    RATES
        .iter()
        .find(|(_, m)| *m == mbps)
        .map_or(0, |(rate, _)| *rate)
}

/// `enum ibv_rate` values and their Mbit/s (the IBA's data rates, so
/// 100 Gb/s is 103125).
const RATES: [(libc::c_int, libc::c_int); 23] = [
    (2, 2500),
    (5, 5000),
    (3, 10000),
    (6, 20000),
    (4, 30000),
    (7, 40000),
    (8, 60000),
    (9, 80000),
    (10, 120000),
    (11, 14062),
    (12, 56250),
    (13, 112500),
    (14, 168750),
    (15, 25781),
    (16, 103125),
    (17, 206250),
    (18, 309375),
    (19, 28125),
    (20, 53125),
    (21, 425000),
    (22, 637500),
    (23, 850000),
    (24, 1275000),
];

#[no_mangle]
pub extern "C" fn ibv_fork_init() -> libc::c_int {
    0
}

#[no_mangle]
pub extern "C" fn ibv_dontfork_range(_base: *mut libc::c_void, _size: usize) -> libc::c_int {
    0
}

#[no_mangle]
pub extern "C" fn ibv_dofork_range(_base: *mut libc::c_void, _size: usize) -> libc::c_int {
    0
}

/// UD multicast is not supported: EOPNOTSUPP (the kernel's rxe attaches
/// QPs to IP multicast groups). Doing it over IP multicast needs the
/// destination address of every received datagram on the whole receive
/// path (migrosd receives on one unicast address and verifies the ICRC
/// against it; the transport's `handle_datagram` is not told the
/// destination), group membership on the daemon's socket, delivery of one
/// datagram to every attached QP, and the memberships carried by a
/// migration. The receive path is being reworked for interoperability
/// with the kernel; multicast belongs on top of that work.
#[no_mangle]
pub extern "C" fn ibv_attach_mcast(
    _qp: *mut ibv_qp,
    _gid: *const ibv_gid,
    _lid: u16,
) -> libc::c_int {
    libc::EOPNOTSUPP
}

#[no_mangle]
pub extern "C" fn ibv_detach_mcast(
    _qp: *mut ibv_qp,
    _gid: *const ibv_gid,
    _lid: u16,
) -> libc::c_int {
    libc::EOPNOTSUPP
}

/// Enhanced connection establishment (ECE) is not supported: EOPNOTSUPP,
/// as rdma-core for a provider without `query_ece` / `set_ece`.
#[no_mangle]
pub extern "C" fn ibv_query_ece(_qp: *mut ibv_qp, _ece: *mut ibv_ece) -> libc::c_int {
    libc::EOPNOTSUPP
}

#[no_mangle]
pub extern "C" fn ibv_set_ece(_qp: *mut ibv_qp, _ece: *mut ibv_ece) -> libc::c_int {
    libc::EOPNOTSUPP
}

/// A context from another process's command fd: there is none on migros
/// (NULL, errno EOPNOTSUPP).
#[no_mangle]
pub extern "C" fn ibv_import_device(_cmd_fd: libc::c_int) -> *mut ibv_context {
    set_errno(libc::EOPNOTSUPP);
    core::ptr::null_mut()
}

/// Registered memory is plain process memory: a child's copy-on-write
/// pages never hide it from the daemon, so fork protection is not needed
/// (IBV_FORK_UNNEEDED, as rdma-core on a kernel with copy-on-fork).
#[no_mangle]
pub extern "C" fn ibv_is_fork_initialized() -> ibv_fork_status {
    ibv_fork_status_IBV_FORK_UNNEEDED
}

/// No ordering promise beyond the verbs' (0: "not guaranteed"), as
/// rdma-core for a provider without `query_qp_data_in_order`.
#[no_mangle]
pub extern "C" fn ibv_query_qp_data_in_order(
    _qp: *mut ibv_qp,
    _op: ibv_wr_opcode,
    _flags: u32,
) -> libc::c_int {
    0
}
