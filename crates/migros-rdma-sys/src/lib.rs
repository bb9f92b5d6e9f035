//! What the two drop-in libraries (`migros-ibverbs`, `migros-rdmacm`)
//! share, so that it exists once:
//!
//! - `verbs`: the rdma-core v44 `<infiniband/verbs.h>` types and
//!   constants (bindgen output, committed), re-exported at the crate root;
//!   each library asserts the offsets its programs rely on in its own
//!   `abi.rs`;
//! - [`calls`]: the functions `verbs.h` declares (bindgen output), which
//!   librdmacm calls through `libibverbs.so.1`;
//! - [`eventfd`]: the descriptor both libraries hand out as a channel's
//!   (`ibv_comp_channel.fd`, `rdma_event_channel.fd`).

#[allow(unsafe_op_in_unsafe_fn)]
mod verbs;
pub use verbs::*;

pub mod calls;
pub mod eventfd;
