//! The devices librdmacm works with (`ucma_init`): every migros device
//! libibverbs lists, opened once for the life of the process, with what the
//! connection manager needs to know of it (its address, MTU, limits), a
//! protection domain given to ids bound to it (as librdmacm does), and the
//! connection to its daemon's connection manager, opened on first use.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::daemon::CmConn;
use crate::sys::*;
use crate::util::{addr_of_gid, lock};

/// A device.
pub(crate) struct Dev {
    pub idx: usize,
    pub name: String,
    /// The context every id on this device hands out as `id->verbs`.
    pub ctx: usize,
    pub addr: IpAddr,
    /// Active MTU of port 1 (IB code).
    pub mtu: u8,
    pub max_responder_resources: u8,
    pub max_initiator_depth: u8,
    socket: PathBuf,
    pd: Mutex<usize>,
    cm: Mutex<Option<Arc<CmConn>>>,
}

static DEVICES: Mutex<Vec<Arc<Dev>>> = Mutex::new(Vec::new());

impl Dev {
    pub fn ctx(&self) -> *mut ibv_context {
        self.ctx as *mut ibv_context
    }

    /// The device's default protection domain (allocated on first use).
    pub fn pd(&self) -> *mut ibv_pd {
        let mut pd = lock(&self.pd);
        if *pd == 0 {
            // SAFETY: a context opened by `sync` and never closed.
            *pd = unsafe { ibv_alloc_pd(self.ctx()) } as usize;
        }
        *pd as *mut ibv_pd
    }

    /// The connection to the daemon's connection manager.
    pub fn cm(&self) -> Result<Arc<CmConn>, i32> {
        let mut cm = lock(&self.cm);
        if let Some(c) = cm.as_ref() {
            if !c.is_dead() {
                return Ok(c.clone());
            }
            return Err(libc::ENODEV);
        }
        let c = CmConn::open(&self.socket, self.idx)?;
        *cm = Some(c.clone());
        Ok(c)
    }
}

/// Opens the devices libibverbs lists that are not open yet
/// (`sync_devices_list`); ENODEV if there is none at all.
pub(crate) fn sync() -> Result<(), i32> {
    let mut devs = lock(&DEVICES);
    let mut n: libc::c_int = 0;
    // SAFETY: plain libibverbs call; the list is freed below.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        return if devs.is_empty() {
            Err(libc::ENODEV)
        } else {
            Ok(())
        };
    }
    for i in 0..n.max(0) as usize {
        // SAFETY: `i` < n entries of the list.
        let d = unsafe { *list.add(i) };
        // SAFETY: a device of the list; its name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr(ibv_get_device_name(d)) }
            .to_string_lossy()
            .into_owned();
        if devs.iter().any(|x| x.name == name) {
            continue;
        }
        // SAFETY: a device of the list; `dev_path` is NUL-terminated.
        let socket = PathBuf::from(
            unsafe { std::ffi::CStr::from_ptr((*d).dev_path.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        );
        // SAFETY: as above; the context stays open for the process.
        let ctx = unsafe { ibv_open_device(d) };
        if ctx.is_null() {
            continue;
        }
        // SAFETY: all-zero attribute structs are valid; the context is live.
        let (mut port, mut attr, mut gid): (ibv_port_attr, ibv_device_attr, ibv_gid) =
            unsafe { core::mem::zeroed() };
        // SAFETY: queries on a live context into local structs.
        let ok = unsafe {
            ibv_query_port(ctx, 1, (&mut port as *mut ibv_port_attr).cast()) == 0
                && ibv_query_device(ctx, &mut attr) == 0
                && ibv_query_gid(ctx, 1, 0, &mut gid) == 0
        };
        if !ok {
            // SAFETY: the context opened above, used by nobody.
            unsafe { ibv_close_device(ctx) };
            continue;
        }
        let idx = devs.len();
        devs.push(Arc::new(Dev {
            idx,
            name,
            ctx: ctx as usize,
            // SAFETY: every bit pattern is a valid raw GID.
            addr: addr_of_gid(unsafe { gid.raw }),
            mtu: port.active_mtu as u8,
            max_responder_resources: attr.max_qp_rd_atom.clamp(0, 255) as u8,
            max_initiator_depth: attr.max_qp_init_rd_atom.clamp(0, 255) as u8,
            socket,
            pd: Mutex::new(0),
            cm: Mutex::new(None),
        }));
    }
    // SAFETY: the list from ibv_get_device_list above.
    unsafe { ibv_free_device_list(list) };
    if devs.is_empty() {
        Err(libc::ENODEV)
    } else {
        Ok(())
    }
}

/// Opens the devices once (`ucma_init`).
pub(crate) fn init() -> Result<(), i32> {
    if !lock(&DEVICES).is_empty() {
        return Ok(());
    }
    sync()
}

pub(crate) fn all() -> Vec<Arc<Dev>> {
    lock(&DEVICES).clone()
}

pub(crate) fn get(idx: usize) -> Option<Arc<Dev>> {
    lock(&DEVICES).get(idx).cloned()
}

/// The device whose address is `a`.
pub(crate) fn by_addr(a: IpAddr) -> Option<Arc<Dev>> {
    lock(&DEVICES).iter().find(|d| d.addr == a).cloned()
}
