//! migrosd: the migros device daemon, the "NIC" of one node.
//!
//! One daemon plays one RoCE v2 device: it binds UDP `<addr>:4791`, runs the
//! sans-IO transport ([`migros_transport::Device`]) in a single-threaded
//! event loop ([`daemon`]), and serves its clients on a unix socket
//! (`<dev>.sock`) and administrators on a root-only one (`<dev>.admin.sock`).
//! It owns no protocol decisions: those belong to the transport. What it
//! adds is I/O and bookkeeping:
//!
//! - [`udp`]: batched UDP (recvmmsg with GRO, GSO sends to one destination),
//!   with optional test-only fault injection ([`fault`]).
//! - [`daemon`]: the event loop, and in its submodules the connection
//!   protocol, the requests mapped onto the registry and the device,
//!   migration, the admin socket and CRIU ([`daemon::criu`]).
//! - [`registry`]: every session with the objects it owns (PDs, MRs, CQ,
//!   SRQ and QP rings, channels), and one index from each identifier to
//!   its session: teardown, checkpoint and eviction are operations on one
//!   session's objects.
//! - [`datapath`]: work queues read after doorbells and posted to the
//!   device, consumer indices written back, completions moved from the
//!   transport's CQs (the only queue of completions) into client rings.
//! - [`rings`]: the send / receive / completion rings in client memory:
//!   doorbells are read in batches, completions written body first and
//!   phase byte last.
//! - [`client`]: a client process checked as the kernel's ptrace rules
//!   would for its own uid, bound to its address space and its pidfd.
//! - [`procmem`]: the transport's `Memory` over client processes (owner →
//!   [`client::ClientProcess`]), with read-ahead inside registered regions
//!   and coalesced writes; failed writes are reported, never dropped.
//! - [`watchdog`]: a thread that notices an access into client memory
//!   that does not return (a FUSE file mapped over registered memory) and
//!   aborts the FUSE connection it waits on, or reports it.
//! - [`conn`]: a unix socket connection (framing, write queue).
//! - [`image`]: the daemon's checkpoint image (versioned JSON wrapping the
//!   transport's `OwnerSnapshot` plus the rings' state).
//! - [`limits`]: the device limits and what clients learn of the device.
//! - [`port`]: the GID table (the addresses of the device's interface) and
//!   the port's state (PORT_ACTIVE / PORT_ERR).
//! - [`cm`]: QP1 and the connection manager librdmacm talks to (the
//!   daemon's side of its connections is `daemon::cm`).
//!
//! # Identifiers
//!
//! The transport takes identifiers from its caller; the daemon picks them at
//! random so that objects can move between daemons without manual ranges:
//! QPNs uniformly in `2..2^24`, retried while they collide with a local QP
//! or a tombstone; lkeys and rkeys random non-zero `u32`s that collide with
//! no key in use (lkeys and rkeys share one space); PD, CQ, SRQ and
//! completion channel handles random `u32`s, unique per kind; owner ids and
//! session ids random `u64`s. A restored image keeps its identifiers; if
//! one of them is taken on the destination, `check_restore` (and the
//! daemon's own checks) refuse the restore before the source is touched.
//! The chance that a restored QP collides is (QPs on the destination)/2^24.
//!
//! # Migration with CRIU
//!
//! The CRIU plugin (`migros-criu`) moves a process with its sessions; the
//! daemon's side, in [`daemon::criu`]:
//!
//! 1. Admin `Pause{pid}` (before CRIU freezes the process): every QP of
//!    the process stops (peers get the pause NAK), pending memory writes
//!    are flushed, and from then on nothing is written into the process:
//!    completions, consumer indices and socket output are held back.
//! 2. Admin `Checkpoint{pid}` (frozen): what the process already sent is
//!    read and handled (requests, doorbells), then each session is
//!    snapshotted with the image of `Request::Checkpoint`, plus the socket
//!    paths, inodes and the output still queued (the outbox). Nothing is
//!    removed. When the session's connection closes (the process was
//!    killed after a good dump) its QPs become tombstones. If the process
//!    runs again with the connection open (`/proc/<pid>` neither stopped,
//!    traced nor dying on two looks 20 ms apart), the daemon rolls back:
//!    QPs resume from where they were and what was held is written.
//!    Admin `Resume{pid}` rolls back explicitly.
//! 3. `RestoreSession` (first message of a connection opened inside the
//!    restored process) recreates the session with its identifiers, QPs
//!    stopped and memory untouched; `RestoreChannel` attaches channels,
//!    parked (up to 60 s) if they come before their session. Both write
//!    the client's replay bytes verbatim after their answer.
//! 4. Admin `Resume{pid}` on the destination starts the restored QPs
//!    (RESUME to their peers) and writes what was held; admin
//!    `ForwardTombstones` on the source sends late RESUMEs on.
//!
//! `examples/restore_time.rs` times these steps for a process with N
//! connected RC QPs (`cargo run --release -p migrosd --example
//! restore_time -- 1 100 1000`, as root).
//!
//! # Safety of client memory
//!
//! The daemon only reads and writes a client's registered memory regions
//! (after the transport's key checks) and the rings it declared, and only
//! in the address space that client's process had when it connected,
//! with no more rights than the client's own uid (see [`client`] and the
//! threat model in ARCHITECTURE.md).

pub mod backing;
pub mod client;
pub mod clock;
pub mod cm;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod datapath;
pub mod devnode;
pub mod errno;
pub mod fault;
pub mod ids;
pub mod image;
pub mod limits;
pub mod port;
pub mod procmem;
pub mod registry;
pub mod rings;
pub mod udp;
pub mod watchdog;

pub use config::Config;
pub use daemon::Daemon;
