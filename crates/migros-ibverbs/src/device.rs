//! Devices (one per daemon in the socket directory) and the queries:
//! device, port, GID, pkey. The identity is rxe's (vendor 0xffffff, part
//! 0) so programs take the generic paths.
//!
//! The GID table has rxe's length (1024); the entries the device has come
//! first, the rest are empty. They are RoCE v2 GIDs of the addresses of
//! the interface the daemon's address belongs to, as the daemon found
//! them when the context was opened (IPv4 ones mapped, `::ffff:a.b.c.d`):
//! index 0 is the device's own address, then its interface's other IPv4
//! addresses, then its IPv6 ones; a device on a loopback address has that
//! address only (migrosd's `port` module says why index 0 is not the
//! kernel's MAC-derived link-local GID). Only index 0 can carry traffic:
//! a QP (`ibv_modify_qp` with `IBV_QP_AV`) or address handle whose
//! `sgid_index` names another listed GID is refused with EINVAL, since
//! the daemon can neither send from nor hear at an address it is not
//! bound to. As with libibverbs on a kernel device: `ibv_query_gid` of an
//! empty entry gives the zero GID, `ibv_query_gid_ex` ENODATA,
//! `ibv_query_gid_type` RoCE v1; an index past the table is EINVAL.
//!
//! The port is ACTIVE (phys state LinkUp) while the daemon's address is
//! up, DOWN (Disabled) after a PORT_ERR and until a PORT_ACTIVE (the
//! `events` watcher keeps the state).

use std::path::PathBuf;
use std::sync::Mutex;

use migros_verbs::DeviceInfo;

use crate::context::{lock, Ctx};
use crate::sys::*;
use crate::util::{copy_cstr, from_cstr, gid_of, null_errno, set_errno};

/// Entries in the port's GID table (rxe's `RXE_PORT_GID_TBL_LEN`).
pub(crate) const GID_TBL_LEN: i32 = 1024;

/// What a device pointer points to. Never freed: contexts keep pointing
/// at their device, and one block per (directory, name) is ever made.
#[repr(C)]
pub(crate) struct Device {
    /// First, so the block's address is the `ibv_device`'s.
    pub dev: ibv_device,
    pub dir: PathBuf,
    pub name: String,
    pub index: i32,
}

/// Every device block made so far.
static DEVICES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The block of `name` in `dir`, made on first use.
fn device_block(dir: &std::path::Path, name: &str) -> *mut Device {
    let mut all = lock(&DEVICES);
    for &p in all.iter() {
        // SAFETY: every address in DEVICES is a leaked, never-freed Device.
        let d = unsafe { &*(p as *const Device) };
        if d.dir == dir && d.name == name {
            return p as *mut Device;
        }
    }
    // SAFETY: all-zero is a valid ibv_device (arrays and `None` ops).
    let mut dev: ibv_device = unsafe { core::mem::zeroed() };
    dev.node_type = ibv_node_type_IBV_NODE_CA;
    dev.transport_type = ibv_transport_type_IBV_TRANSPORT_IB;
    copy_cstr(&mut dev.name, name);
    copy_cstr(&mut dev.dev_name, &format!("uverbs-{name}"));
    copy_cstr(
        &mut dev.dev_path,
        &dir.join(format!("{name}.sock")).to_string_lossy(),
    );
    copy_cstr(
        &mut dev.ibdev_path,
        &format!("/sys/class/infiniband/{name}"),
    );
    let block = Box::into_raw(Box::new(Device {
        dev,
        dir: dir.to_owned(),
        name: name.to_owned(),
        index: all.len() as i32,
    }));
    all.push(block as usize);
    block
}

/// # Safety
/// `device` must come from `ibv_get_device_list`.
unsafe fn block<'a>(device: *mut ibv_device) -> &'a Device {
    // SAFETY: device pointers are Device blocks that are never freed.
    unsafe { &*device.cast::<Device>() }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_list(
    num_devices: *mut libc::c_int,
) -> *mut *mut ibv_device {
    let dir = migros_proto::paths::socket_dir();
    let names = migros_verbs::devices_in(&dir);
    // SAFETY: calloc of names+1 pointers; freed by ibv_free_device_list.
    let list = unsafe { libc::calloc(names.len() + 1, core::mem::size_of::<*mut ibv_device>()) }
        .cast::<*mut ibv_device>();
    if list.is_null() {
        return null_errno(libc::ENOMEM);
    }
    for (i, name) in names.iter().enumerate() {
        // SAFETY: `i` < names.len() and the array has names.len()+1 slots.
        unsafe { *list.add(i) = device_block(&dir, name).cast() };
    }
    if !num_devices.is_null() {
        // SAFETY: the caller passes a valid int pointer or NULL.
        unsafe { *num_devices = names.len() as libc::c_int };
    }
    if names.is_empty() {
        // No daemon: an empty list, and errno says why.
        set_errno(libc::ENODEV);
    }
    list
}

#[no_mangle]
pub unsafe extern "C" fn ibv_free_device_list(list: *mut *mut ibv_device) {
    // SAFETY: `list` came from ibv_get_device_list's calloc (contract).
    unsafe { libc::free(list.cast()) }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_name(device: *mut ibv_device) -> *const libc::c_char {
    if device.is_null() {
        return null_errno(libc::EINVAL);
    }
    // SAFETY: a device from the list (contract); `name` is NUL-terminated.
    unsafe { (*device).name.as_ptr() }
}

#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_index(device: *mut ibv_device) -> libc::c_int {
    // SAFETY: a device from the list (contract).
    unsafe { block(device).index }
}

/// The node GUID in network byte order (0 if the daemon does not answer).
#[no_mangle]
pub unsafe extern "C" fn ibv_get_device_guid(device: *mut ibv_device) -> u64 {
    // SAFETY: a device from the list (contract).
    let d = unsafe { block(device) };
    match migros_verbs::Context::open_in(&d.dir, &d.name) {
        Ok(c) => c.device().node_guid.to_be(),
        Err(e) => {
            set_errno(e.errno());
            0
        }
    }
}

/// The device's information (from the daemon's Hello).
unsafe fn info<'a>(ctx: *mut ibv_context) -> &'a DeviceInfo {
    // SAFETY: a live context (caller).
    unsafe { Ctx::from_ibv(ctx).dev.device() }
}

fn device_attr(info: &DeviceInfo, name: &str) -> ibv_device_attr {
    // SAFETY: all-zero is a valid ibv_device_attr (integers and arrays).
    let mut a: ibv_device_attr = unsafe { core::mem::zeroed() };
    let _ = name;
    copy_cstr(&mut a.fw_ver, env!("CARGO_PKG_VERSION"));
    a.node_guid = info.node_guid.to_be();
    a.sys_image_guid = info.node_guid.to_be();
    a.max_mr_size = info.max_mr_size;
    a.page_size_cap = 0xffff_f000;
    a.vendor_id = 0xffffff;
    a.vendor_part_id = 0;
    a.hw_ver = 0;
    a.max_qp = info.max_qp as i32;
    a.max_qp_wr = info.max_qp_wr as i32;
    a.device_cap_flags = ibv_device_cap_flags_IBV_DEVICE_RC_RNR_NAK_GEN
        | ibv_device_cap_flags_IBV_DEVICE_SRQ_RESIZE
        | ibv_device_cap_flags_IBV_DEVICE_N_NOTIFY_CQ
        | ibv_device_cap_flags_IBV_DEVICE_MEM_WINDOW
        | ibv_device_cap_flags_IBV_DEVICE_MEM_WINDOW_TYPE_2B;
    a.max_mw = migros_proto::msg::MAX_MW as i32;
    a.max_sge = info.max_sge as i32;
    a.max_sge_rd = info.max_sge as i32;
    a.max_cq = info.max_cq as i32;
    a.max_cqe = info.max_cqe as i32;
    a.max_mr = info.max_mr as i32;
    a.max_pd = info.max_pd as i32;
    a.max_qp_rd_atom = info.max_qp_rd_atom as i32;
    a.max_qp_init_rd_atom = info.max_qp_rd_atom as i32;
    a.max_res_rd_atom = (info.max_qp_rd_atom * info.max_qp) as i32;
    a.atomic_cap = ibv_atomic_cap_IBV_ATOMIC_HCA;
    a.max_ah = info.max_qp as i32;
    a.max_srq = info.max_srq as i32;
    a.max_srq_wr = info.max_srq_wr as i32;
    a.max_srq_sge = info.max_sge as i32;
    a.max_pkeys = 1;
    a.local_ca_ack_delay = 15;
    a.phys_port_cnt = 1;
    a
}

#[no_mangle]
pub unsafe extern "C" fn ibv_query_device(
    context: *mut ibv_context,
    attr: *mut ibv_device_attr,
) -> libc::c_int {
    if context.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: live context and a writable attr (contract).
    unsafe {
        let name = from_cstr(&(*(*context).device).name);
        *attr = device_attr(info(context), &name);
    }
    0
}

/// `verbs_context.query_device_ex`: the legacy attributes, the rest zero.
pub(crate) unsafe extern "C" fn query_device_ex(
    context: *mut ibv_context,
    _input: *const ibv_query_device_ex_input,
    attr: *mut ibv_device_attr_ex,
    attr_size: usize,
) -> libc::c_int {
    if context.is_null() || attr.is_null() {
        return libc::EINVAL;
    }
    // SAFETY: all-zero is a valid ibv_device_attr_ex (integers).
    let mut ex: ibv_device_attr_ex = unsafe { core::mem::zeroed() };
    // SAFETY: live context (contract).
    unsafe {
        let name = from_cstr(&(*(*context).device).name);
        ex.orig_attr = device_attr(info(context), &name);
    }
    ex.phys_port_cnt_ex = 1;
    // Completion timestamps: CLOCK_MONOTONIC nanoseconds (see `cqx`).
    ex.completion_timestamp_mask = u64::MAX;
    ex.hca_core_clock = 1_000_000;
    let n = attr_size.min(core::mem::size_of::<ibv_device_attr_ex>());
    // SAFETY: the caller's attr holds attr_size bytes; n is at most that.
    unsafe {
        core::ptr::copy_nonoverlapping(
            (&ex as *const ibv_device_attr_ex).cast::<u8>(),
            attr.cast::<u8>(),
            n,
        )
    };
    0
}

fn port_attr(info: &DeviceInfo, active: bool) -> ibv_port_attr {
    // SAFETY: all-zero is a valid ibv_port_attr (integers).
    let mut p: ibv_port_attr = unsafe { core::mem::zeroed() };
    p.state = if active {
        ibv_port_state_IBV_PORT_ACTIVE
    } else {
        ibv_port_state_IBV_PORT_DOWN
    };
    // The device accepts path MTUs up to its --mtu and no more (modify_qp
    // refuses larger ones), so that is its maximum as well as its active MTU.
    p.max_mtu = info.mtu as u32;
    p.active_mtu = info.mtu as u32;
    p.gid_tbl_len = GID_TBL_LEN;
    p.port_cap_flags = ibv_port_cap_flags_IBV_PORT_CM_SUP;
    p.max_msg_sz = 1 << 31;
    p.pkey_tbl_len = 1;
    p.max_vl_num = 1;
    p.active_width = 1; // 1X
    p.active_speed = 1; // 2.5 Gb/s, as rxe reports
    p.phys_state = if active { 5 } else { 3 }; // LinkUp, Disabled
    p.link_layer = IBV_LINK_LAYER_ETHERNET as u8;
    p
}

/// The exported `ibv_query_port` (the compat struct: fields up to
/// `link_layer`), called when `verbs_context.query_port` is not used.
#[no_mangle]
pub unsafe extern "C" fn ibv_query_port(
    context: *mut ibv_context,
    port_num: u8,
    attr: *mut ibv_port_attr,
) -> libc::c_int {
    let compat = core::mem::offset_of!(ibv_port_attr, link_layer) + 1;
    // SAFETY: as query_port_ex, with the compat struct's size.
    unsafe { query_port_ex(context, port_num, attr, compat) }
}

/// `verbs_context.query_port`.
pub(crate) unsafe extern "C" fn query_port_ex(
    context: *mut ibv_context,
    port_num: u8,
    attr: *mut ibv_port_attr,
    attr_len: usize,
) -> libc::c_int {
    if context.is_null() || attr.is_null() || port_num != 1 {
        return libc::EINVAL;
    }
    // SAFETY: live context (contract).
    let (p_info, active) = unsafe { (info(context), Ctx::from_ibv(context).events.port_active()) };
    let p = port_attr(p_info, active);
    let n = attr_len.min(core::mem::size_of::<ibv_port_attr>());
    // SAFETY: attr holds attr_len bytes (contract); n is at most that.
    unsafe {
        core::ptr::copy_nonoverlapping(
            (&p as *const ibv_port_attr).cast::<u8>(),
            attr.cast::<u8>(),
            n,
        )
    };
    0
}

/// A GID table entry as the kernel answers it (ioctl QUERY_GID_ENTRY):
/// the GID, EINVAL past the table (or on another port), ENODATA for an
/// empty entry.
///
/// # Safety
/// `context` must be a live context.
pub(crate) unsafe fn gid_entry(
    context: *mut ibv_context,
    port_num: u32,
    index: u32,
) -> Result<ibv_gid_entry, i32> {
    if port_num != 1 || index >= GID_TBL_LEN as u32 {
        return Err(libc::EINVAL);
    }
    // SAFETY: a live context (caller).
    let addrs = gid_addrs(unsafe { info(context) });
    let addr = *addrs.get(index as usize).ok_or(libc::ENODATA)?;
    Ok(ibv_gid_entry {
        gid: gid_of(addr),
        gid_index: index,
        port_num: 1,
        gid_type: ibv_gid_type_IBV_GID_TYPE_ROCE_V2,
        ndev_ifindex: 0,
    })
}

/// The addresses in the GID table, in index order.
fn gid_addrs(info: &DeviceInfo) -> Vec<std::net::IpAddr> {
    if info.gids.first() == Some(&info.addr) {
        info.gids.clone()
    } else {
        vec![info.addr]
    }
}

/// Whether GID `index` may be the source of a QP's or an address
/// handle's traffic: an empty or missing entry is the kernel's error
/// (ENODATA, EINVAL), a listed address other than the device's own
/// (index 0) EINVAL.
///
/// # Safety
/// `context` must be a live context.
pub(crate) unsafe fn source_gid(context: *mut ibv_context, index: u32) -> Result<(), i32> {
    // SAFETY: a live context (caller).
    unsafe { gid_entry(context, 1, index) }?;
    if index != 0 {
        return Err(libc::EINVAL);
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn ibv_query_gid(
    context: *mut ibv_context,
    port_num: u8,
    index: libc::c_int,
    gid: *mut ibv_gid,
) -> libc::c_int {
    if context.is_null() || gid.is_null() || index < 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: live context (contract).
    let entry = unsafe { gid_entry(context, port_num.into(), index as u32) };
    let value = match entry {
        Ok(e) => e.gid,
        // libibverbs keeps the old answer for an empty entry: zero.
        // SAFETY: all-zero is the zero GID.
        Err(libc::ENODATA) => unsafe { core::mem::zeroed() },
        Err(e) => {
            set_errno(e);
            return -1;
        }
    };
    // SAFETY: writable gid (contract).
    unsafe { *gid = value };
    0
}

#[no_mangle]
pub unsafe extern "C" fn _ibv_query_gid_ex(
    context: *mut ibv_context,
    port_num: u32,
    gid_index: u32,
    entry: *mut ibv_gid_entry,
    flags: u32,
    entry_size: usize,
) -> libc::c_int {
    if context.is_null() || entry.is_null() || flags != 0 {
        return libc::EINVAL;
    }
    if entry_size < core::mem::size_of::<ibv_gid_entry>() {
        return libc::EINVAL;
    }
    // SAFETY: live context (contract).
    match unsafe { gid_entry(context, port_num, gid_index) } {
        Ok(e) => {
            // SAFETY: an entry of at least entry_size bytes (contract).
            unsafe { *entry = e };
            0
        }
        Err(e) => {
            set_errno(e);
            e
        }
    }
}

/// Every valid entry of the table; EINVAL if they do not fit (as the
/// kernel's QUERY_GID_TABLE).
#[no_mangle]
pub unsafe extern "C" fn _ibv_query_gid_table(
    context: *mut ibv_context,
    entries: *mut ibv_gid_entry,
    max_entries: usize,
    flags: u32,
    entry_size: usize,
) -> isize {
    let einval = -(libc::EINVAL as isize);
    if context.is_null() || entries.is_null() || flags != 0 {
        return einval;
    }
    if entry_size < core::mem::size_of::<ibv_gid_entry>() {
        return einval;
    }
    // SAFETY: live context (contract).
    let count = gid_addrs(unsafe { info(context) }).len();
    if count > max_entries {
        return einval;
    }
    for i in 0..count {
        // SAFETY: live context; entry i lies within max_entries entries
        // of entry_size bytes (contract).
        unsafe {
            match gid_entry(context, 1, i as u32) {
                Ok(e) => {
                    *entries
                        .cast::<u8>()
                        .add(i * entry_size)
                        .cast::<ibv_gid_entry>() = e
                }
                Err(e) => return -(e as isize),
            }
        }
    }
    count as isize
}

/// `enum ibv_gid_type_sysfs`: 0 is IB/RoCE v1 (libibverbs' answer for an
/// empty entry), 1 RoCE v2.
#[no_mangle]
pub unsafe extern "C" fn ibv_query_gid_type(
    context: *mut ibv_context,
    port_num: u8,
    index: libc::c_uint,
    gid_type: *mut libc::c_int,
) -> libc::c_int {
    if context.is_null() || gid_type.is_null() {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: live context (contract).
    let t = match unsafe { gid_entry(context, port_num.into(), index) } {
        Ok(_) => 1,
        Err(libc::ENODATA) => 0,
        Err(e) => {
            set_errno(e);
            return -1;
        }
    };
    // SAFETY: writable (contract).
    unsafe { *gid_type = t };
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_query_pkey(
    context: *mut ibv_context,
    port_num: u8,
    index: libc::c_int,
    pkey: *mut u16,
) -> libc::c_int {
    if context.is_null() || pkey.is_null() || port_num != 1 || index != 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: writable (contract).
    unsafe { *pkey = 0xffff };
    0
}

#[no_mangle]
pub unsafe extern "C" fn ibv_get_pkey_index(
    _context: *mut ibv_context,
    port_num: u8,
    pkey: u16,
) -> libc::c_int {
    if port_num == 1 && pkey == 0xffff {
        0
    } else {
        set_errno(libc::ENOENT);
        -1
    }
}
