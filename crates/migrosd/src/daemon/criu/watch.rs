//! The watchdog: a checkpointed process seen running again with its
//! connection open is rolled back; restored channels whose session never
//! came are dropped.

use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::registry::Hold;

/// How often a checkpointed process's state is looked at.
pub const WATCHDOG_PERIOD: Duration = Duration::from_millis(20);
/// How long a restored channel waits for its session.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(60);
/// `PF_EXITING` in the flags of `/proc/<pid>/stat`.
const PF_EXITING: u64 = 0x4;

/// What a look at `/proc/<pid>` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// Stopped ('t', 'T') or traced (CRIU's parasite runs in a traced task).
    Frozen,
    Running,
    /// Gone, a zombie, or being killed.
    Dying,
}

impl Daemon {
    // ---- watchdog and expiry ----

    /// When the CRIU bookkeeping wants the loop to wake up.
    pub(in crate::daemon) fn criu_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let watch = self
            .criu
            .next_watch
            .map(|t| t.saturating_duration_since(now));
        let park = self
            .criu
            .parked
            .iter()
            .map(|p| (p.since + PARK_TIMEOUT).saturating_duration_since(now))
            .min();
        match (watch, park) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Rolls back checkpointed sessions whose process runs again with its
    /// connection open (seen twice in a row), and drops stale parked channels.
    pub(in crate::daemon) fn criu_tick(&mut self) {
        let now = Instant::now();
        let expired: Vec<usize> = self
            .criu
            .parked
            .iter()
            .filter(|p| now >= p.since + PARK_TIMEOUT)
            .map(|p| p.token)
            .collect();
        if !expired.is_empty() {
            self.criu.parked.retain(|p| now < p.since + PARK_TIMEOUT);
            for t in expired {
                tracing::info!(token = t, "restored channel never saw its session: dropped");
                if let Some(c) = self.conns.get_mut(&t) {
                    c.closing = true;
                }
            }
        }
        let Some(due) = self.criu.next_watch else {
            return;
        };
        if now < due {
            return;
        }
        let watched: Vec<(u64, i32, bool)> = self
            .reg
            .sessions()
            .filter(|s| s.hold == Hold::Checkpointed)
            .map(|s| (s.id(), s.pid, s.seen_running))
            .collect();
        self.criu.next_watch = (!watched.is_empty()).then(|| now + WATCHDOG_PERIOD);
        for (sid, pid, seen) in watched {
            let open = self
                .reg
                .get(sid)
                .and_then(|s| self.conns.get(&s.conn))
                .is_some_and(|c| !c.dead);
            let running = open && proc_state(pid) == ProcState::Running;
            if running && seen {
                tracing::warn!(
                    session = sid,
                    pid,
                    "checkpointed process runs again with its connection open: rolling back"
                );
                if let Err(e) = self.start_session(sid) {
                    tracing::warn!(session = sid, error = %e.message, "rollback failed");
                }
                self.set_hold(sid, Hold::Running);
            } else if let Some(s) = self.reg.get_mut(sid) {
                s.seen_running = running;
            }
        }
    }
}

/// Whether process `pid` is frozen, running or on its way out, from
/// `/proc/<pid>/stat` (state and flags) and `/proc/<pid>/status`
/// (`TracerPid`, pending SIGKILL).
pub fn proc_state(pid: i32) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Dying;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return ProcState::Dying;
    };
    parse_proc_state(&stat, &status)
}

/// [`proc_state`] on the two files' contents.
pub fn parse_proc_state(stat: &str, status: &str) -> ProcState {
    // The command name may hold anything: the fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcState::Dying;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    // Fields after the name: state ppid pgrp session tty_nr tpgid flags.
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let traced = field("TracerPid:").is_some_and(|v| v != "0");
    let sigkill = ["SigPnd:", "ShdPnd:"].iter().any(|f| {
        field(f)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0)
    });
    match state {
        None | Some('Z' | 'X' | 'x') => ProcState::Dying,
        _ if flags & PF_EXITING != 0 || sigkill => ProcState::Dying,
        Some('t' | 'T') => ProcState::Frozen,
        _ if traced => ProcState::Frozen,
        _ => ProcState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tx\nState:\tS (sleeping)\nTracerPid:\t0\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";

    #[test]
    fn proc_states() {
        let stat = |st: char, flags: u64| format!("12 (a) b) c) {st} 1 12 12 0 -1 {flags} 0 0");
        assert_eq!(parse_proc_state(&stat('S', 0), STATUS), ProcState::Running);
        assert_eq!(parse_proc_state(&stat('R', 0), STATUS), ProcState::Running);
        assert_eq!(parse_proc_state(&stat('T', 0), STATUS), ProcState::Frozen);
        assert_eq!(parse_proc_state(&stat('t', 0), STATUS), ProcState::Frozen);
        assert_eq!(parse_proc_state(&stat('Z', 0), STATUS), ProcState::Dying);
        assert_eq!(parse_proc_state(&stat('R', 0x4), STATUS), ProcState::Dying);
        let traced = STATUS.replace("TracerPid:\t0", "TracerPid:\t99");
        assert_eq!(parse_proc_state(&stat('S', 0), &traced), ProcState::Frozen);
        let killed = STATUS.replace("SigPnd:\t0000000000000000", "SigPnd:\t0000000000000100");
        assert_eq!(parse_proc_state(&stat('R', 0), &killed), ProcState::Dying);
        assert_eq!(parse_proc_state("garbage", ""), ProcState::Dying);
        assert_eq!(parse_proc_state("1 (x)", ""), ProcState::Dying);
    }

    #[test]
    fn this_process_runs() {
        assert_eq!(proc_state(std::process::id() as i32), ProcState::Running);
        assert_eq!(proc_state(-1), ProcState::Dying);
    }
}
