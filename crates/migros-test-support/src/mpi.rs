//! Open MPI command lines.

/// The `mpirun` options that make the ranks talk through UCX only: the
/// UCX point-to-point layer, no shared memory or TCP byte transfer layer
/// (`btl self`), and not UCX's one-sided component.
pub const UCX_ONLY: [&str; 9] = [
    "--mca", "pml", "ucx", "--mca", "btl", "self", "--mca", "osc", "^ucx",
];
