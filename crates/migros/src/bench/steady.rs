//! The steady state around a migration, from the counters of the end that
//! stays: this end's QP counters (bytes sent and received, RESUMEs, the
//! last pause) are read every [`EVERY`] while traffic runs; afterwards the
//! rate over the [`WINDOW`] before the pause (pause NAK received) is
//! compared with the rate over the [`WINDOW`] after the RESUME, and the time
//! until a [`RECOVERY_WINDOW`]-long rate first reached 95 % of the rate
//! before is found. An end whose QPs are only responders gets a RESUME but
//! no pause NAK (its pause reads 0): the window before then ends at the
//! RESUME and so holds the downtime (about a millisecond).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often the counters are read.
pub const EVERY: Duration = Duration::from_millis(20);
/// The windows compared: the second before the pause, the second after.
pub const WINDOW: f64 = 1.0;
/// The window of the rate that must be back within 5 % of the rate before.
pub const RECOVERY_WINDOW: f64 = 0.1;
/// "Back" means at least this share of the rate before.
pub const WITHIN: f64 = 0.95;

/// One reading of this end's counters, summed over its QPs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Seconds since the first reading.
    pub t: f64,
    /// Bytes sent and received.
    pub bytes: u64,
    /// RESUMEs received.
    pub resumes: u64,
    /// The most recent pause (pause NAK to RESUME), nanoseconds.
    pub last_pause_nanos: u64,
}

/// The steady state before and after a migration's pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Steady {
    /// Gbit/s over the second before the pause.
    pub before_gbps: f64,
    /// Gbit/s over the second after the RESUME.
    pub after_gbps: f64,
    /// `after_gbps / before_gbps`.
    pub ratio: f64,
    /// The same ratio for the two seconds before the pause (the second
    /// before the pause over the one before that): how much 1 s rates vary
    /// without a move; `None` if the readings began less than 2 s before.
    #[serde(default)]
    pub ratio_without_move: Option<f64>,
    /// The pause this end's QP saw (pause NAK to RESUME), ms.
    pub pause_ms: f64,
    /// From the RESUME until a 100 ms rate first reached 95 % of the rate
    /// before, ms (it may fall below again); `None` if it never did.
    pub recovery_ms: Option<f64>,
    /// How far apart the readings were at most, ms (the resolution).
    pub max_step_ms: f64,
}

/// Reads the counters at most every [`EVERY`].
#[derive(Debug)]
pub struct Sampler {
    start: Option<Instant>,
    last: Option<Instant>,
    pub readings: Vec<Reading>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            start: None,
            last: None,
            readings: Vec::new(),
        }
    }

    /// Whether a reading is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last.is_none_or(|l| now.duration_since(l) >= EVERY)
    }

    pub fn record(&mut self, now: Instant, bytes: u64, resumes: u64, last_pause_nanos: u64) {
        let start = *self.start.get_or_insert(now);
        self.last = Some(now);
        self.readings.push(Reading {
            t: now.duration_since(start).as_secs_f64(),
            bytes,
            resumes,
            last_pause_nanos,
        });
    }
}

/// The bytes counted by `t`, linear between readings; `None` outside them.
pub fn bytes_at(r: &[Reading], t: f64) -> Option<f64> {
    let first = r.first()?;
    let last = r.last()?;
    if t < first.t || t > last.t {
        return None;
    }
    let i = r.partition_point(|x| x.t < t);
    if i == 0 {
        return Some(first.bytes as f64);
    }
    let (a, b) = (&r[i - 1], &r[i]);
    let span = b.t - a.t;
    if span <= 0.0 {
        return Some(b.bytes as f64);
    }
    let f = (t - a.t) / span;
    Some(a.bytes as f64 + f * (b.bytes as f64 - a.bytes as f64))
}

/// Gbit/s over `[from, to]`; `None` unless readings cover it.
pub fn rate(r: &[Reading], from: f64, to: f64) -> Option<f64> {
    if to <= from {
        return None;
    }
    let b = bytes_at(r, to)? - bytes_at(r, from)?;
    Some(b * 8.0 / (to - from) / 1e9)
}

/// Why the steady state could not be computed, or what it was.
pub fn steady(r: &[Reading]) -> Result<Steady, String> {
    let first = r.first().ok_or("no counter readings")?;
    let i = r
        .iter()
        .position(|x| x.resumes > first.resumes)
        .ok_or("this end's QPs saw no RESUME while it read its counters")?;
    // The RESUME came between readings i-1 and i: take the middle.
    let resume = if i > 0 {
        (r[i - 1].t + r[i].t) / 2.0
    } else {
        r[i].t
    };
    let pause = r[i].last_pause_nanos as f64 / 1e9;
    let paused = resume - pause;
    let before = rate(r, paused - WINDOW, paused).ok_or_else(|| {
        format!("the pause began {paused:.3} s into the readings: less than {WINDOW} s before it")
    })?;
    let after = rate(r, resume, resume + WINDOW).ok_or_else(|| {
        format!(
            "the run ended {:.3} s after the RESUME: less than {WINDOW} s after it",
            r.last().map_or(0.0, |l| l.t) - resume
        )
    })?;
    let ratio_without_move = rate(r, paused - 2.0 * WINDOW, paused - WINDOW)
        .filter(|&g| g > 0.0)
        .map(|g| before / g);
    let recovery_ms = r[i..]
        .iter()
        .map(|x| x.t)
        .chain(std::iter::once(resume))
        .filter(|&t| t >= resume)
        .filter(|&t| rate(r, t, t + RECOVERY_WINDOW).is_some_and(|g| g >= WITHIN * before))
        .map(|t| (t - resume) * 1e3)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.min(t))));
    let max_step_ms = r
        .windows(2)
        .map(|w| (w[1].t - w[0].t) * 1e3)
        .fold(0.0, f64::max);
    Ok(Steady {
        before_gbps: before,
        after_gbps: after,
        ratio: if before > 0.0 { after / before } else { 0.0 },
        ratio_without_move,
        pause_ms: pause * 1e3,
        recovery_ms,
        max_step_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings every 20 ms of a link at `gbps` that stops for the pause
    /// `[p0, p1)` and then runs at `after` Gbit/s (a RESUME at `p1`).
    fn run(gbps: f64, after: f64, p0: f64, p1: f64, end: f64) -> Vec<Reading> {
        let mut out = Vec::new();
        let (mut bytes, mut t) = (0.0_f64, 0.0_f64);
        while t <= end + 1e-9 {
            let resumed = t >= p1;
            out.push(Reading {
                t,
                bytes: bytes as u64,
                resumes: resumed as u64,
                last_pause_nanos: if resumed { ((p1 - p0) * 1e9) as u64 } else { 0 },
            });
            let g = if t < p0 {
                gbps
            } else if t < p1 {
                0.0
            } else {
                after
            };
            bytes += g * 1e9 / 8.0 * 0.02;
            t += 0.02;
        }
        out
    }

    #[test]
    fn windowed_rate_interpolates() {
        let r = run(8.0, 8.0, 10.0, 10.0, 3.0);
        assert!((rate(&r, 0.0, 1.0).unwrap() - 8.0).abs() < 1e-6);
        assert!((rate(&r, 0.01, 0.51).unwrap() - 8.0).abs() < 1e-6);
        assert_eq!(rate(&r, 2.5, 3.5), None);
        assert_eq!(rate(&r, 1.0, 1.0), None);
        assert_eq!(bytes_at(&[], 0.0), None);
    }

    #[test]
    fn same_rate_after_the_pause_is_ratio_one() {
        // Two seconds of readings before the pause, whichever reading the
        // RESUME falls next to.
        let r = run(10.0, 10.0, 2.2, 2.3, 4.5);
        let s = steady(&r).unwrap();
        assert!((s.before_gbps - 10.0).abs() < 0.01, "{s:?}");
        // The RESUME is placed between two readings: at most a 10 ms error.
        assert!((s.ratio - 1.0).abs() < 0.02, "{s:?}");
        assert!((s.pause_ms - 100.0).abs() < 1e-6);
        assert!(s.recovery_ms.unwrap() <= 20.0, "{s:?}");
        assert!((s.max_step_ms - 20.0).abs() < 1e-6);
        assert!((s.ratio_without_move.unwrap() - 1.0).abs() < 1e-6, "{s:?}");
        let short = steady(&run(10.0, 10.0, 1.5, 1.6, 4.0)).unwrap();
        assert_eq!(short.ratio_without_move, None);
    }

    #[test]
    fn slower_after_the_pause_shows() {
        let r = run(10.0, 8.0, 2.0, 2.1, 4.0);
        let s = steady(&r).unwrap();
        assert!((s.ratio - 0.8).abs() < 0.02, "{s:?}");
        assert_eq!(s.recovery_ms, None);
    }

    #[test]
    fn too_short_or_no_pause_is_an_error() {
        assert!(steady(&[]).is_err());
        let no_pause = run(10.0, 10.0, 9.0, 9.0, 3.0);
        assert!(steady(&no_pause).unwrap_err().contains("no RESUME"));
        let early = run(10.0, 10.0, 0.5, 0.6, 3.0);
        assert!(steady(&early).unwrap_err().contains("before it"));
        let late = run(10.0, 10.0, 2.0, 2.1, 2.5);
        assert!(steady(&late).unwrap_err().contains("after the RESUME"));
    }
}
