//! A drop-in `librdmacm.so.1` (the rdma-core v44 ABI, as in Debian 12)
//! over migros devices: `rping`, `ucmatose`, `udaddy`, `rdma_server`,
//! perftest's `-R` and other unmodified programs connect with the RDMA
//! connection manager as they do on a kernel RDMA device.
//!
//! The kernel's `rdma_ucm` is replaced by the device daemons: each runs the
//! InfiniBand CM on QP1 of its device (`migros-cm`, the real protocol on
//! the wire, so a kernel peer can be on the other side) and this library
//! talks to it through `migros_proto::cm`, one connection per device. What
//! librdmacm does in user space, this library does too, with the same
//! semantics: ids and their states, event channels (a pollable descriptor,
//! blocking or not), QPs made and moved to RTR/RTS from what the REQ or REP
//! said, ids without a channel whose calls wait for their event
//! (`rdma_create_ep`), `rdma_getaddrinfo`.
//!
//! Devices are the ones libibverbs lists (the migros drop-in libibverbs,
//! linked as `libibverbs.so.1`); the library opens each once and hands its
//! context out as `id->verbs`, so the application's verbs calls and the
//! library's act on the same objects. An IP address is mapped to a device
//! by the address the device has (see `route`).
//!
//! Modules: `sys` (the v44 `rdma_cma.h` types, bindgen output committed;
//! the `verbs.h` types and functions come from `migros-rdma-sys`, shared
//! with the drop-in libibverbs) and `abi` (offset checks); `util`;
//! `device` (the devices); `daemon` (a device's CM connection and its
//! reader thread); `registry` (which id an event is for); `channel` (event
//! channels); `id` (ids and the calls on them: `life`, `addr`, `conn`,
//! `options`); `event` (`rdma_get_cm_event` and what it does on the way);
//! `qp` and `ep` (QPs, SRQs, endpoints); `route` (address → device);
//! `addrinfo`; `misc` (devices, multicast); `rsocket` (not implemented:
//! ENOTSUP/EBADF).
//!
//! Every export is bound to its version node of `librdmacm.map`
//! (`objdump -T` shows `RDMACM_1.0 rdma_connect`): `build.rs` makes the
//! version script and `.symver` directives from `exports.txt`, which needs
//! one codegen unit (a profile override in the root Cargo.toml).
//!
//! Every exported function follows the contract of its librdmacm man page;
//! that contract is the `# Safety` section of each, so the lint asking for
//! one per function is off.
#![allow(clippy::missing_safety_doc)]
// The C constants keep their header names.
#![allow(non_upper_case_globals)]

mod abi;
mod addrinfo;
mod channel;
mod daemon;
mod device;
mod ep;
mod event;
mod id;
mod misc;
mod qp;
mod registry;
mod route;
mod rsocket;
#[allow(unsafe_op_in_unsafe_fn)]
mod sys;
mod util;

// Binds every export to its version node (`rdma_connect@@RDMACM_1.0`).
core::arch::global_asm!(include_str!(concat!(env!("OUT_DIR"), "/symver.s")));
