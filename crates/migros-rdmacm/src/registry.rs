//! Which id an event from a daemon is for. Every id has a handle; the
//! registry maps handles to ids, (device, connection) and (device,
//! listener) pairs to handles, and holds events that arrive for a
//! connection before the id that asked for it has learnt its number (the
//! reply to `Connect` and the first events travel on one socket, but reach
//! different threads).
//!
//! Lock order: the registry, then an id's own lock; never the other way.

use std::collections::BTreeMap;
use std::sync::Mutex;

use migros_proto::cm::CmEvent;

use crate::channel::{Item, Local};
use crate::id::IdBlock;
use crate::util::lock;

#[derive(Default)]
struct Registry {
    ids: BTreeMap<u64, usize>,
    conns: BTreeMap<(usize, u32), u64>,
    listens: BTreeMap<(usize, u32), u64>,
    parked: BTreeMap<(usize, u32), Vec<CmEvent>>,
    next: u64,
}

static REG: Mutex<Registry> = Mutex::new(Registry {
    ids: BTreeMap::new(),
    conns: BTreeMap::new(),
    listens: BTreeMap::new(),
    parked: BTreeMap::new(),
    next: 0,
});

/// Registers an id; its handle.
pub(crate) fn insert(b: *mut IdBlock) -> u64 {
    let mut r = lock(&REG);
    r.next += 1;
    let h = r.next;
    r.ids.insert(h, b as usize);
    h
}

/// The id of a handle (NULL: destroyed).
pub(crate) fn get(h: u64) -> Option<*mut IdBlock> {
    lock(&REG).ids.get(&h).map(|p| *p as *mut IdBlock)
}

/// Forgets an id and its connections and listeners.
pub(crate) fn remove(h: u64) {
    let mut r = lock(&REG);
    r.ids.remove(&h);
    let conns: Vec<(usize, u32)> = r
        .conns
        .iter()
        .filter(|(_, v)| **v == h)
        .map(|(k, _)| *k)
        .collect();
    for k in conns {
        r.conns.remove(&k);
        r.parked.remove(&k);
    }
    r.listens.retain(|_, v| *v != h);
}

/// The id `h` now owns connection `conn` of device `dev`: events parked
/// for it go to its channel.
pub(crate) fn claim_conn(dev: usize, conn: u32, h: u64) {
    let mut r = lock(&REG);
    r.conns.insert((dev, conn), h);
    let parked = r.parked.remove(&(dev, conn)).unwrap_or_default();
    if let Some(&p) = r.ids.get(&h) {
        // SAFETY: registered ids are live until removed (under this lock).
        let b = unsafe { &*(p as *const IdBlock) };
        let chan = lock(&b.p).chan.clone();
        for ev in parked {
            chan.push(Item::Cm { id: h, dev, ev });
        }
    }
}

/// The id that owns connection `conn` of `dev`.
pub(crate) fn conn_owner(dev: usize, conn: u32) -> Option<u64> {
    lock(&REG).conns.get(&(dev, conn)).copied()
}

/// Forgets connection `conn` of `dev` (destroyed).
pub(crate) fn drop_conn(dev: usize, conn: u32) {
    let mut r = lock(&REG);
    r.conns.remove(&(dev, conn));
    r.parked.remove(&(dev, conn));
}

pub(crate) fn claim_listen(dev: usize, listen: u32, h: u64) {
    lock(&REG).listens.insert((dev, listen), h);
}

/// An event from device `dev`'s daemon (called by its reader thread):
/// a connection request makes the new id at once (as the kernel does), so
/// that what follows for the connection finds it.
pub(crate) fn route(dev: usize, ev: CmEvent) {
    let mut r = lock(&REG);
    let (listen, conn) = match &ev {
        CmEvent::ConnectRequest { listen, conn, .. }
        | CmEvent::SidrRequest { listen, conn, .. } => (Some(*listen), *conn),
        other => (None, other.conn()),
    };
    if let Some(listen) = listen {
        let Some(&lh) = r.listens.get(&(dev, listen)) else {
            return;
        };
        let Some(&lp) = r.ids.get(&lh) else {
            return;
        };
        // SAFETY: registered ids are live until removed (under this lock).
        let lb = unsafe { &*(lp as *const IdBlock) };
        let Some(nb) = IdBlock::child_of(lb) else {
            return;
        };
        r.next += 1;
        let nh = r.next;
        // SAFETY: a fresh block; nobody else sees it yet.
        unsafe { (*nb).handle = nh };
        r.ids.insert(nh, nb as usize);
        r.conns.insert((dev, conn), nh);
        let chan = lock(&lb.p).chan.clone();
        chan.push(Item::Cm { id: lh, dev, ev });
        return;
    }
    match r.conns.get(&(dev, conn)).copied() {
        Some(h) => {
            if let Some(&p) = r.ids.get(&h) {
                // SAFETY: as above.
                let b = unsafe { &*(p as *const IdBlock) };
                let chan = lock(&b.p).chan.clone();
                chan.push(Item::Cm { id: h, dev, ev });
            }
        }
        None => r.parked.entry((dev, conn)).or_default().push(ev),
    }
}

/// Device `dev`'s daemon is gone: every id on it hears
/// `RDMA_CM_EVENT_DEVICE_REMOVAL`.
pub(crate) fn device_gone(dev: usize) {
    let r = lock(&REG);
    for (&h, &p) in &r.ids {
        // SAFETY: as above.
        let b = unsafe { &*(p as *const IdBlock) };
        let p = lock(&b.p);
        let on = p.dev.as_ref().is_some_and(|d| d.idx == dev)
            || p.listens.iter().any(|(d, _)| *d == dev);
        if on {
            p.chan.push(Item::Local {
                id: h,
                ev: Local::DeviceRemoval,
            });
        }
    }
}
