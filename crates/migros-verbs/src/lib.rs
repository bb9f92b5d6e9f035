//! Safe Rust verbs API for clients of a migros device (`migrosd`).
//!
//! A [`Context`] is a session with one daemon over its unix socket. Rings
//! (send, receive, completion) and memory regions live in this process's
//! memory; the daemon reads and writes them directly. Posting a work request
//! writes a ring entry and one doorbell frame; polling a CQ reads this
//! process's memory only (no system call).
//!
//! Modules, each with one job:
//! - `shm`: page-aligned memory shared with the daemon — the crate's only
//!   `unsafe` code, with its invariants;
//! - `ring`: ring index arithmetic, WQE producers, the CQE consumer;
//! - `conn`: one socket to a daemon (Hello, requests, doorbells);
//! - `context`, `memory`, `mw`, `cq`, `qp`, `channel`: the verbs objects;
//! - `flush`: outstanding work requests, flushed when the daemon is gone;
//! - `migrate`: [`Context::migrate_to`].
//!
//! Objects keep what they depend on alive (a QP its PD, CQs and SRQ; every
//! object its context) and are destroyed on drop; errors while dropping are
//! ignored, and memory the daemon did not confirm it released stays
//! allocated rather than being freed under its feet.
//!
//! A daemon that dies: once the context knows its connection is lost
//! ([`Context::connection_lost`] returned true, or a request or doorbell
//! failed on the socket), posting fails with [`Error::Io`] and every work
//! request posted to a QP and not yet completed comes out of its CQ as a
//! `WrFlushErr` completion, in posting order, after whatever the daemon
//! wrote before it died. Writes to the daemon never raise SIGPIPE.

mod channel;
mod conn;
mod context;
mod cq;
mod error;
mod flush;
mod memory;
mod migrate;
mod mw;
mod qp;
mod ring;
mod shm;

pub use migros_proto::counters::{DeviceCounters, QpCounters};
pub use migros_proto::msg::{AsyncEvent, AsyncKind, ChannelId, DeviceInfo};
pub use migros_proto::verbs::*;

pub use channel::CompChannel;
pub use context::Context;
pub use cq::Cq;
pub use error::{Error, PostError, Result};
pub use memory::{Mr, Pd, RawMr};
pub use migrate::MigrationReport;
pub use mw::Mw;
pub use qp::{Qp, QpInitAttr, Srq};

/// Names of the devices in the socket directory (`MIGROS_SOCKET_DIR`, else `/run/migros`).
pub fn devices() -> Vec<String> {
    migros_proto::paths::list_devices(&migros_proto::paths::socket_dir())
}

/// Names of the devices with a socket in `dir`.
pub fn devices_in(dir: &std::path::Path) -> Vec<String> {
    migros_proto::paths::list_devices(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_in_a_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        for f in ["dev1.sock", "dev0.sock", "dev0.admin.sock", "other"] {
            std::fs::write(dir.path().join(f), b"").expect("write");
        }
        assert_eq!(devices_in(dir.path()), ["dev0", "dev1"]);
        assert!(devices_in(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn missing_device_is_no_device() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Context::open_in(dir.path(), "nothing")
            .err()
            .expect("no daemon");
        assert!(matches!(err, Error::NoDevice(_)), "{err}");
        assert_eq!(err.errno(), 19);
        // A socket file nobody listens on refuses the connection.
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let err = Context::open_in(dir.path(), "stale")
            .err()
            .expect("refused");
        assert!(matches!(err, Error::NoDevice(_)), "{err}");
        let err = Context::open_in(dir.path(), "../x")
            .err()
            .expect("bad name");
        assert!(matches!(err, Error::NoDevice(_)), "{err}");
    }
}
