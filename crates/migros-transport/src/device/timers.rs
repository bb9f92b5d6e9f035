//! The device's index of armed QP timers: each QP's earliest deadline,
//! ordered, so that [`super::Device::poll_timeout`] and
//! [`super::Device::handle_timeout`] cost O(log n) and O(due · log n)
//! instead of a scan of every QP (100,000 QPs made each turn of the
//! daemon's loop walk them all).
//!
//! The device re-reads a QP's deadline ([`TimerIndex::set`]) after every
//! call that may change it (each goes through `with_qp`, the packet
//! scheduler, or a migration step), and removes it with the QP.

use std::collections::{BTreeMap, BTreeSet};

use crate::time::Instant;
use migros_proto::verbs::Qpn;

/// Deadlines by QP and QPs by deadline, kept in step.
#[derive(Debug, Default)]
pub(super) struct TimerIndex {
    by_time: BTreeSet<(Instant, Qpn)>,
    of_qp: BTreeMap<Qpn, Instant>,
}

impl TimerIndex {
    /// Records `deadline` as QP `qpn`'s earliest (none: no timer armed).
    pub(super) fn set(&mut self, qpn: Qpn, deadline: Option<Instant>) {
        let old = match deadline {
            Some(d) => self.of_qp.insert(qpn, d),
            None => self.of_qp.remove(&qpn),
        };
        if old == deadline {
            return;
        }
        if let Some(o) = old {
            self.by_time.remove(&(o, qpn));
        }
        if let Some(d) = deadline {
            self.by_time.insert((d, qpn));
        }
    }

    /// Forgets QP `qpn` (destroyed, evicted).
    pub(super) fn remove(&mut self, qpn: Qpn) {
        self.set(qpn, None);
    }

    /// The earliest deadline of any QP.
    pub(super) fn earliest(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// QPs whose deadline is at or before `now`, earliest first.
    pub(super) fn due(&self, now: Instant) -> Vec<Qpn> {
        self.by_time
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, q)| *q)
            .collect()
    }

    /// How many QPs have a timer armed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.by_time.len(), self.of_qp.len());
        self.of_qp.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }

    #[test]
    fn earliest_and_due_follow_changes() {
        let mut t = TimerIndex::default();
        assert_eq!(t.earliest(), None);
        t.set(5, Some(at(30)));
        t.set(6, Some(at(10)));
        t.set(7, Some(at(20)));
        assert_eq!(t.earliest(), Some(at(10)));
        assert_eq!(t.due(at(20)), vec![6, 7]);
        // Moving a deadline drops the old entry.
        t.set(6, Some(at(40)));
        assert_eq!(t.earliest(), Some(at(20)));
        assert_eq!(t.due(at(39)), vec![7, 5]);
        assert_eq!(t.len(), 3);
        // Disarming and removing.
        t.set(7, None);
        t.remove(5);
        t.remove(99);
        assert_eq!(t.due(at(100)), vec![6]);
        assert_eq!(t.len(), 1);
        t.set(6, None);
        assert_eq!((t.earliest(), t.len()), (None, 0));
    }

    #[test]
    fn equal_deadlines_of_different_qps_are_kept_apart() {
        let mut t = TimerIndex::default();
        for q in 0..1000 {
            t.set(q, Some(at(7)));
        }
        // Setting the same deadline again changes nothing.
        t.set(3, Some(at(7)));
        assert_eq!(t.len(), 1000);
        assert_eq!(t.due(at(6)), Vec::<Qpn>::new());
        assert_eq!(t.due(at(7)).len(), 1000);
        for q in 0..1000 {
            t.remove(q);
        }
        assert_eq!(t.earliest(), None);
    }
}
