//! The agent's notion of time: it never reads a clock; every entry point
//! takes `now` and deadlines come back as [`Instant`]s, the transport's own
//! (the daemon feeds the agent and its devices the same clock).

pub use migros_transport::Instant;

/// The CM's conversion of an IB time exponent (4.096 µs × 2^t) to
/// milliseconds: `1 << max(t − 8, 0)` (as the kernel's `cm_convert_to_ms`).
pub fn ib_time_to_ms(t: u8) -> u64 {
    1u64 << u32::from(t.saturating_sub(8)).min(40)
}
