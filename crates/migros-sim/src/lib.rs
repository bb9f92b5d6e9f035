//! Virtual-time network of migros devices, with fault rules and live
//! migration of QPs between simulated nodes (test support; never shipped).
//!
//! Place in the workspace: `migros-transport` is a sans-IO state machine
//! (datagrams, verbs calls and time in; datagrams, events and deadlines
//! out). This crate supplies everything around it that a test needs, the
//! way quinn-proto's test `Pair` and smoltcp's netsim do:
//!
//! - [`SimMemory`]: per-owner sparse memory the devices reach through
//!   [`migros_transport::Memory`]; it moves with a migrated owner at the
//!   same addresses, as CRIU restores a process.
//! - [`Sim`]: nodes (one [`migros_transport::Device`] each, at 198.18.0.1,
//!   .2, …) on a [`Network`] with a per-sender link (5 µs latency,
//!   10 Gbit/s serialization by default) and a seeded generator. Time is
//!   virtual and advances input by input ([`Sim::run_until`],
//!   [`Sim::run_for`]); runs with one seed are identical.
//! - [`Rule`]s, added and removed while a test runs: drop, delay, reorder,
//!   duplicate, corrupt, partition and "drop the next n", each filtered by
//!   source, destination and BTH opcode.
//! - Migration ([`Sim::migrate_owner`], [`Sim::migrate_two`],
//!   [`Sim::migrate_node`]): pause, snapshot through the encoded image,
//!   evict to tombstones, move memory, downtime with the network running,
//!   restore, forward tombstones, resume.
//! - [`support`]: verbs setup as applications do it ([`support::rc_pair`],
//!   [`support::ud_pair`], [`support::srq_host`]), work request builders,
//!   waiting for completions and data patterns. Identifiers (QPNs, keys,
//!   handles, owners) come from one counter per simulation, so migrated
//!   objects never collide with local ones.
//!
//! ```no_run
//! use std::time::Duration;
//! use migros_sim::support::{rc_pair, wr, RcOptions};
//! use migros_sim::Sim;
//!
//! let mut sim = Sim::new(42);
//! let (n0, n1) = (sim.add_node(), sim.add_node());
//! let (a, b) = rc_pair(&mut sim, n0, n1, &RcOptions::default());
//! b.recv(&mut sim, 1, 0, 64);
//! let data = a.fill_tx(&mut sim, 0, 64, 7);
//! a.post_send(&mut sim, wr::send(10, a.tx.sges(0, 64))).expect("posted");
//! let wcs = b.expect_recv(&mut sim, 1, Duration::from_secs(1));
//! assert_eq!(wcs[0].byte_len, 64);
//! migros_sim::support::assert_buf_eq(&sim, &b.rx, 0, &data);
//! ```

pub mod memory;
pub mod migrate;
pub mod net;
pub mod sim;
pub mod support;

pub use memory::{OwnerMemory, SimMemory};
pub use migrate::{MigrateError, MigrationReport, PendingMigration};
pub use net::{
    Action, CaptureId, Captured, Datagram, Filter, LinkConfig, NetCounters, Network, Rule, RuleId,
};
pub use sim::{Deadline, NodeId, Sim, SimConfig, SlowReceiver};
