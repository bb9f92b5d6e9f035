//! Sans-IO RoCE v2 transport: the protocol half of a migros device.
//!
//! A [`Device`] holds every verbs object of one node (PDs, MRs, CQs, SRQs,
//! QPs) and runs the RC, UC and UD engines as deterministic state machines:
//! it is fed datagrams, verbs calls and time, and asked for datagrams,
//! events and its next deadline. It never performs I/O, reads a clock or
//! spawns a thread; memory is reached through the [`Memory`] trait. This is
//! what makes loss, reordering and live migration testable in virtual time
//! (`migros-sim`), and what makes a checkpoint plain data ([`OwnerSnapshot`],
//! encoded as a versioned [`image`] with its own types).
//!
//! Engines, as in the kernel's rxe: the requester (`requester`) builds
//! request packets within the QP's send window (`window`: congestion
//! control after a loss), the completer (`completer`) handles what comes
//! back and completes send WRs, the responder (`responder`) checks requests
//! under rxe's names (`check_psn`, `check_op_seq`, …), maps each refusal to
//! its NAK in one place and executes the rest. All of them write packets
//! with one builder (`packet_builder`): headers, payload, pad, ICRC.
//!
//! Memory windows ([`mw`]) give a peer access to part of a region until
//! they are invalidated; BIND_MW and LOCAL_INV run in the requester
//! (`local_ops`), SEND_WITH_INV in the responder. Every rkey check goes
//! through the [`MrTable`], which holds regions and windows.
//!
//! Live migration ([`resume`], `tombstone`): [`Device::pause_owner`] stops
//! every QP of an owner, [`Device::snapshot_owner`] serialises them,
//! [`Device::evict_owner`] leaves tombstones that answer with the pause NAK,
//! [`Device::restore`] recreates the objects on another device with the
//! same identifiers and [`Device::resume_owner`] announces the new location
//! with RESUME, which a partner takes only from its peer: it carries the
//! QP's connection key, learned from the peer's old location (see
//! [`resume`]).

mod completer;
pub mod device;
mod dma;
pub mod error;
pub mod image;
mod local_ops;
pub mod memory;
pub mod mw;
mod packet_builder;
mod qp;
mod queues;
mod requester;
mod responder;
pub mod resume;
mod secret;
pub mod snapshot;
pub mod time;
mod tombstone;
mod transition;
mod ud_redirect;
mod window;

pub use device::{Device, DeviceConfig, SrqAttr, Transmit, WorkQueue};
pub use error::VerbsError;
pub use memory::{KeyError, Memory, MemoryFault, MrTable, Reach};
pub use migros_proto::counters::{DeviceCounters, QpCounters};
pub use migros_proto::verbs::*;
pub use mw::{MemoryWindow, MwState};
pub use queues::Arm;
pub use responder::GRH_LEN;
pub use secret::SecretSeed;
pub use snapshot::OwnerSnapshot;
pub use time::Instant;
pub use tombstone::{MAX_TOMBSTONES, TOMBSTONE_TTL};
