//! The monotonic clock, mapped onto the transport's [`Instant`].

use migros_transport::Instant;

/// Nanoseconds since the daemon started, from the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: std::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Instant::from_nanos(nanos)
    }

    /// Time from `now` until `deadline` (zero if it passed).
    pub fn until(&self, now: Instant, deadline: Instant) -> std::time::Duration {
        deadline.saturating_duration_since(now)
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
