//! `results.tsv` as `scripts/vm/guest.sh` writes it, one case a line:
//! `NAME  pass|fail  SECONDS  KERNEL_ERRS  MIGROS_ERRS  LOST  INFO`, tab
//! separated; the counters as `name=delta,…` or `-`, LOST as
//! `to_kernel=N,to_migros=N` or `-` (when no kernel↔migros traffic).

use std::fmt;

use crate::plan::Expected;

/// The kernel's counter of requester retries (timeouts and NAKs alike).
pub const KERNEL_TIMER_RETRIES: &str = "completer_retry_err";

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub seconds: u64,
    /// Error counters of the kernel's device that moved, with their deltas.
    pub kernel_errors: Vec<(String, i64)>,
    /// Error counters of the migros device rxe0 that moved.
    pub migros_errors: Vec<(String, i64)>,
    /// Datagrams migros sent that the kernel did not count as received
    /// (`rcvd_pkts` counts only packets that passed its checks, the ICRC
    /// among them), and the reverse.
    pub lost: Option<(i64, i64)>,
    /// The client's result line (figures), or why it failed.
    pub info: String,
}

/// A line that is not what guest.sh writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub why: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "results.tsv line {}: {}", self.line, self.why)
    }
}

impl std::error::Error for ParseError {}

impl CaseResult {
    /// Passed with no error counter moved and nothing lost.
    pub fn clean(&self) -> bool {
        self.passed
            && self.kernel_errors.is_empty()
            && self.migros_errors.is_empty()
            && self.lost.is_none_or(|l| l == (0, 0))
    }

    /// As [`CaseResult::clean`], except for the kernel's spurious
    /// retransmissions: rxe (6.1) arms its retransmission timer when it
    /// sends with none pending and does not stop it once everything is
    /// acknowledged, so the timer can expire just after the next message
    /// went out and resend packets the peer already has (its completer
    /// says as much: "we still might get spurious timeouts"). That happens
    /// at most once per timer period (`timer_ms`, 4.096 µs × 2^timeout),
    /// so up to `seconds / timer_ms + 1` such retries are accepted; more
    /// would be real timeouts.
    /// `overshoot`: datagrams the program may send that its finished peer
    /// drops (see `plan::Case::overshoot`); "lost" and migros'
    /// `rx_unknown_qp` may go up to that.
    pub fn clean_but_kernel_timer(&self, timer_ms: f64, overshoot: i64) -> bool {
        let allowed = (self.seconds as f64 * 1000.0 / timer_ms).ceil() as i64 + 1;
        let retries = self.counter(KERNEL_TIMER_RETRIES);
        self.passed
            && retries <= allowed
            && self
                .kernel_errors
                .iter()
                .all(|(n, _)| n == KERNEL_TIMER_RETRIES)
            && self
                .migros_errors
                .iter()
                .all(|(n, d)| n == "rx_unknown_qp" && (0..=overshoot).contains(d))
            && self
                .lost
                .is_none_or(|(k, m)| (0..=overshoot).contains(&k) && (0..=overshoot).contains(&m))
    }

    /// For an error path: passed, each counter of `expect` moved within its
    /// bounds, no other error counter moved but the kernel's timer retries
    /// (bounded as in [`CaseResult::clean_but_kernel_timer`]), and at most
    /// `overshoot` datagrams went uncounted. `Err` says what was not so.
    pub fn as_expected(
        &self,
        expect: &[Expected],
        timer_ms: f64,
        overshoot: i64,
    ) -> Result<(), String> {
        let mut why = Vec::new();
        if !self.passed {
            why.push(format!("failed ({})", self.info));
        }
        for e in expect {
            let d = self.counter(e.counter);
            if !(e.min..=e.max).contains(&d) {
                why.push(format!(
                    "{} moved by {d}, expected {}..={}",
                    e.counter, e.min, e.max
                ));
            }
        }
        let allowed = (self.seconds as f64 * 1000.0 / timer_ms).ceil() as i64 + 1;
        for (name, d) in self.kernel_errors.iter().chain(&self.migros_errors) {
            let expected = expect.iter().any(|e| e.counter == name);
            let timer = name == KERNEL_TIMER_RETRIES && *d <= allowed;
            if !expected && !timer {
                why.push(format!("{name} moved by {d}"));
            }
        }
        if let Some((k, m)) = self.lost {
            if !(0..=overshoot).contains(&k) || !(0..=overshoot).contains(&m) {
                why.push(format!("lost to_kernel={k},to_migros={m}"));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    /// The delta of one migros or kernel counter (0 when it did not move).
    pub fn counter(&self, name: &str) -> i64 {
        self.kernel_errors
            .iter()
            .chain(&self.migros_errors)
            .find(|(n, _)| n == name)
            .map_or(0, |&(_, v)| v)
    }
}

/// Parses the whole file.
pub fn parse(text: &str) -> Result<Vec<CaseResult>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l).map_err(|why| ParseError { line: i + 1, why }))
        .collect()
}

fn parse_line(line: &str) -> Result<CaseResult, String> {
    let f: Vec<&str> = line.split('\t').collect();
    let [name, status, seconds, kernel, migros, lost, info] = f[..] else {
        return Err(format!("{} fields, expected 7", f.len()));
    };
    let passed = match status {
        "pass" => true,
        "fail" => false,
        s => return Err(format!("status {s:?}")),
    };
    let seconds = seconds
        .parse()
        .map_err(|_| format!("seconds {seconds:?}"))?;
    let lost = match counters(lost)?.as_slice() {
        [] => None,
        [(a, x), (b, y)] if a == "to_kernel" && b == "to_migros" => Some((*x, *y)),
        _ => return Err(format!("lost {lost:?}")),
    };
    Ok(CaseResult {
        name: name.to_owned(),
        passed,
        seconds,
        kernel_errors: counters(kernel)?,
        migros_errors: counters(migros)?,
        lost,
        info: info.trim().to_owned(),
    })
}

fn counters(field: &str) -> Result<Vec<(String, i64)>, String> {
    if field == "-" {
        return Ok(Vec::new());
    }
    field
        .split(',')
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("counter {kv:?}"))?;
            let v = v.parse().map_err(|_| format!("counter value {kv:?}"))?;
            Ok((k.to_owned(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_guest_writes() {
        let text = "rc.k_m\tfail\t120\tduplicate_request=7\trx_icrc_errors=7,retransmits=7\tto_kernel=3,to_migros=0\texit server=124 client=1; \n\
                    rc.k_k\tpass\t6\t-\t-\t-\t819200 bytes in 1.11 seconds\n";
        let r = parse(text).unwrap();
        assert_eq!(r.len(), 2);
        assert!(!r[0].passed && !r[0].clean());
        assert_eq!(r[0].counter("rx_icrc_errors"), 7);
        assert_eq!(r[0].counter("duplicate_request"), 7);
        assert_eq!(r[0].lost, Some((3, 0)));
        assert!(r[1].clean());
        assert_eq!(r[1].info, "819200 bytes in 1.11 seconds");
    }

    #[test]
    fn kernel_timer_retries_are_bounded_by_the_timer() {
        let r = |line: &str| parse(line).unwrap().remove(0);
        // 2 s at 67 ms: up to 31.
        let few = r("x\tpass\t2\tcompleter_retry_err=4\t-\tto_kernel=0,to_migros=0\t\n");
        assert!(!few.clean() && few.clean_but_kernel_timer(67.1, 0));
        let storm = r("x\tpass\t2\tcompleter_retry_err=40\t-\t-\t\n");
        assert!(!storm.clean_but_kernel_timer(67.1, 0));
        let other = r("x\tpass\t2\tcompleter_retry_err=1,rcvd_seq_err=1\t-\t-\t\n");
        assert!(!other.clean_but_kernel_timer(67.1, 0));
        let migros = r("x\tpass\t2\t-\tretransmits=1\t-\t\n");
        assert!(!migros.clean_but_kernel_timer(67.1, 0));
    }

    #[test]
    fn overshoot_allows_that_many_lost_and_no_more() {
        let r = parse("x\tpass\t1\t-\t-\tto_kernel=40,to_migros=0\t\n").unwrap();
        assert!(r[0].clean_but_kernel_timer(67.1, 60));
        assert!(!r[0].clean_but_kernel_timer(67.1, 39));
        let r = parse("x\tpass\t1\t-\t-\tto_kernel=-1,to_migros=0\t\n").unwrap();
        assert!(!r[0].clean_but_kernel_timer(67.1, 60));
        let r = parse("x\tpass\t1\t-\trx_unknown_qp=4\t-\t\n").unwrap();
        assert!(r[0].clean_but_kernel_timer(67.1, 60));
        assert!(!r[0].clean_but_kernel_timer(67.1, 0));
    }

    #[test]
    fn expected_counters_must_move_and_nothing_else() {
        let e = |counter, min, max| Expected { counter, min, max };
        let r = |line: &str| parse(line).unwrap().remove(0);
        let rnr = [e("send_rnr_err", 1, 100), e("rnr_naks_received", 1, 100)];
        let ok = r("x\tpass\t2\tsend_rnr_err=9,completer_retry_err=1\trnr_naks_received=9\tto_kernel=0,to_migros=0\t\n");
        assert_eq!(ok.as_expected(&rnr, 67.1, 0), Ok(()));
        let missing = r("x\tpass\t2\tsend_rnr_err=9\t-\tto_kernel=0,to_migros=0\t\n");
        assert!(missing
            .as_expected(&rnr, 67.1, 0)
            .unwrap_err()
            .contains("rnr_naks_received moved by 0"));
        let other = r("x\tpass\t2\tsend_rnr_err=9\trnr_naks_received=9,rx_icrc_errors=1\t-\t\n");
        assert!(other
            .as_expected(&rnr, 67.1, 0)
            .unwrap_err()
            .contains("rx_icrc_errors"));
        let failed = r("x\tfail\t2\tsend_rnr_err=9\trnr_naks_received=9\t-\texit 1\n");
        assert!(failed.as_expected(&rnr, 67.1, 0).is_err());
        let too_many = r("x\tpass\t2\t-\tnaks_sent=6\t-\t\n");
        assert!(too_many
            .as_expected(&[e("naks_sent", 5, 5)], 67.1, 0)
            .is_err());
        let dropped = r("x\tpass\t2\t-\t-\tto_kernel=2,to_migros=0\t\n");
        assert_eq!(dropped.as_expected(&[], 67.1, 2), Ok(()));
        assert!(dropped.as_expected(&[], 67.1, 1).is_err());
    }

    #[test]
    fn a_lost_datagram_is_not_clean() {
        let r = parse("x\tpass\t1\t-\t-\tto_kernel=0,to_migros=2\t\n").unwrap();
        assert!(!r[0].clean());
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "x\tok\t1\t-\t-\t-\t",
            "x\tpass\t1\t-\t-\t-",
            "x\tpass\tone\t-\t-\t-\t",
            "x\tpass\t1\tdup\t-\t-\t",
            "x\tpass\t1\t-\t-\tto_kernel=1\t",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
