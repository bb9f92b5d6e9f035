//! A drop-in `libibverbs.so.1` (the rdma-core v44 ABI, as in Debian 12)
//! over migros devices: unmodified programs (ibverbs-utils, perftest,
//! python3-pyverbs) run on `migrosd`. What migros does not do (XRC, device
//! memory, flow steering, counters, parent domains, importing objects,
//! dma-buf MRs, UD multicast, CQ moderation) fails with EOPNOTSUPP, as
//! libibverbs answers for a provider without the operation.
//!
//! Every daemon in the socket directory (`MIGROS_SOCKET_DIR`, else
//! `/run/migros`) is a device named as the daemon. Each C object handed out
//! is a heap block that starts with the C struct the headers define
//! (`sys`, generated from the v44 headers) followed by the
//! [`migros_verbs`] object doing the work; the C pointer is a pointer to the
//! block. The logic lives in migros-verbs: this crate only converts.
//!
//! Modules:
//! - `sys`: the v44 types (bindgen output, committed in the
//!   `migros-rdma-sys` crate, which the drop-in librdmacm shares); `abi`:
//!   compile-time checks of every offset the programs rely on;
//! - `util`: errno, strings, GID ⇄ address;
//! - `device`: device list, open/close, queries (device, port, GID, pkey);
//! - `events`: asynchronous events (a daemon that dies: IBV_EVENT_DEVICE_FATAL);
//! - `context`: the context block, its `ibv_context_ops` and `verbs_context`
//!   tables;
//! - `mr`: PDs and MRs; `mw`: memory windows; `cq`: CQs and completion channels (`channel`: the
//!   descriptor programs wait on); `cqx`: the
//!   extended CQ polling ops; `qp`: QPs; `post`: the data path (posting
//!   send and receive WRs); `srq`: SRQs and their receives flushed when
//!   the daemon dies; `ah`: address handles;
//!   `qpx`: extended QPs and the `ibv_wr_*` ops; `misc`: strings and small calls;
//!   `kern`: the `ibv_copy_*_from_kern`/`to_kern` marshalling helpers;
//!   `l2`: `ibv_resolve_eth_l2_from_gid`.
//!
//! The version nodes programs ask for (`IBVERBS_1.1`, …) are defined by a
//! version script made from `versions.txt` by `build.rs`, which also makes
//! the `.symver` directives binding each export to its node (`objdump -T`
//! shows `IBVERBS_1.1 ibv_get_device_list`). `.symver` only applies to
//! symbols of its own object file, so the crate is built as one codegen
//! unit (a profile override in the root Cargo.toml).
//!
//! Every exported function follows the contract of its libibverbs man page
//! (pointers valid as documented there); that contract is the `# Safety`
//! section of each, so the lint asking for one per function is off.
#![allow(clippy::missing_safety_doc)]
// The C constants keep their header names (`ibv_qp_state_IBV_QPS_RTS`).
#![allow(non_upper_case_globals)]

mod abi;
mod ah;
mod channel;
mod context;
mod cq;
mod cqx;
mod device;
mod events;
mod kern;
mod l2;
mod misc;
mod mr;
mod mw;
mod post;
mod qp;
mod qpx;
mod srq;
// The v44 verbs.h types, shared with the drop-in librdmacm.
use migros_rdma_sys as sys;
mod util;

// Binds every export to its version node (`ibv_get_device_list@@IBVERBS_1.1`);
// see the crate docs for why this needs one codegen unit.
core::arch::global_asm!(include_str!(concat!(env!("OUT_DIR"), "/symver.s")));
