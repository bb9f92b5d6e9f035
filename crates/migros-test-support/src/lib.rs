//! What the tests of the migros workspace share (a dev-dependency only,
//! never in a shipped binary):
//!
//! - [`require`]: the required-tests switch. An end-to-end test asks
//!   [`require::require`] for its prerequisites (root, programs, files,
//!   builds) before it starts. Without `MIGROS_TESTS_REQUIRED=1` a missing
//!   one makes the test print `skipped: …` and return; with it (CI sets it
//!   through `scripts/test.sh`) the test fails and names what is missing.
//!   Every decision is appended to the ledger `$MIGROS_TESTS_LEDGER`, from
//!   which `scripts/test.sh` prints how many end-to-end tests ran and how
//!   many skipped.
//! - [`rc`]: the verbs attributes of an RC connection (INIT → RTR → RTS)
//!   and of a UD QP, the all-access flags, an RC QP's creation and a
//!   signaled send WR, for every kind of client (migros-verbs, the raw
//!   daemon protocol, the simulator).
//! - [`wait`]: bounded waits: polling a condition, a child process, a
//!   command's output.
//! - [`daemon`]: building workspace binaries from a test, starting
//!   `migrosd` on a loopback address with its log kept, killed on drop.
//! - [`capture`]: RoCE v2 packets seen on the loopback interface (which
//!   node sent which opcode to which), for assertions about the wire.
//! - [`mpi`]: Open MPI's `mpirun` options for UCX-only runs.
//! - [`net`]: `ip` commands that must succeed (namespaces, veth links).
//! - [`perftest`]: perftest's result lines.
//! - [`symbols`]: a shared library's functions and their version nodes
//!   (`objdump -T`).
//! - [`role`]: a test binary running itself again as a second process.
//!
//! TESTING.md at the repository root describes the test layers.

pub mod capture;
pub mod daemon;
pub mod mpi;
pub mod net;
pub mod perftest;
pub mod rc;
pub mod require;
pub mod role;
pub mod symbols;
pub mod wait;

pub use rc::{RcParams, ALL_ACCESS};
pub use require::{require, required};
pub use wait::wait_until;
