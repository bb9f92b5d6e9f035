//! The agent's notion of time: it never reads a clock; every entry point
//! takes `now` and deadlines come back as [`Instant`]s.

use std::time::Duration;

/// Nanoseconds since an epoch the caller chooses (the daemon: its
/// monotonic clock; a simulation: virtual time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

/// The CM's conversion of an IB time exponent (4.096 µs × 2^t) to
/// milliseconds: `1 << max(t − 8, 0)` (as the kernel's `cm_convert_to_ms`).
pub fn ib_time_to_ms(t: u8) -> u64 {
    1u64 << u32::from(t.saturating_sub(8)).min(40)
}
