//! The InfiniBand communication manager (IB CM) and the RDMA CM's use of
//! it, over RoCE v2, as a deterministic sans-IO state machine: what lets
//! `rdma_connect` on one migros device (or a Linux kernel with SoftRoCE)
//! reach `rdma_listen` on another.
//!
//! - [`bits`]: bit fields numbered as the IBA tables number them.
//! - [`mad`]: the common MAD header; [`msg`]: the CM messages (REQ, MRA,
//!   REJ, REP, RTU, DREQ, DREP, SIDR_REQ, SIDR_REP), parsed and emitted
//!   from one field table each, byte-compatible with the kernel's layouts.
//! - [`cma`]: the RDMA CM's private-data header (the IP addresses) and
//!   service IDs made of a port space and a port.
//! - [`gsi`]: MADs as RoCE v2 datagrams to QP1 (UD SEND, Q_Key 0x80010000).
//! - [`ports`]: port bindings with the RDMA CM's conflict rules.
//! - [`agent`]: one device's connection manager: listeners, connections
//!   through REQ/REP/RTU, REJ, MRA, DREQ/DREP and time-wait, SIDR for UD,
//!   resends and timeouts as the kernel does them.
//! - [`migrate`]: a process's CM state moved to another device (snapshot,
//!   restore with the same identifiers, tombstones that forward the
//!   peer's MADs to the new node); [`tombstone`]: those tombstones,
//!   bounded and expiring.
//!
//! The daemon (`migrosd`) owns QP1 of its device and runs an [`Agent`];
//! librdmacm reaches it through `migros_proto::cm`. Nothing here reads a
//! clock, does I/O or panics on input from the network.

pub mod agent;
pub mod bits;
pub mod cma;
pub mod conn;
pub mod error;
pub mod gsi;
pub mod mad;
pub mod migrate;
pub mod msg;
pub mod ports;
pub mod time;
pub mod tombstone;

pub use agent::{Agent, AgentConfig, AgentCounters, Connecting, Transmit};
pub use conn::State;
pub use error::{CmError, MadError};
pub use time::Instant;
