//! Results: latency statistics, bandwidth peaks, and the two outputs (a
//! perftest-like table, or one JSON object).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::exchange::{Direction, LatStats, Params, Summary};

/// The nearest-rank percentile `p` (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Statistics of latency samples in microseconds.
pub fn lat_stats(samples: &[f64]) -> LatStats {
    if samples.is_empty() {
        return LatStats::default();
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let avg = s.iter().sum::<f64>() / n;
    let var = s.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n;
    LatStats {
        count: s.len() as u64,
        min: s[0],
        max: s[s.len() - 1],
        p50: percentile(&s, 50.0),
        avg,
        stdev: var.sqrt(),
        p99: percentile(&s, 99.0),
        p999: percentile(&s, 99.9),
    }
}

/// Completed bytes per fixed time bucket, for the peak bandwidth.
#[derive(Debug)]
pub struct Peak {
    width: Duration,
    start: Option<Instant>,
    buckets: Vec<u64>,
}

impl Peak {
    pub fn new(width: Duration) -> Peak {
        Peak {
            width,
            start: None,
            buckets: Vec::new(),
        }
    }

    pub fn start(&mut self, at: Instant) {
        self.start = Some(at);
    }

    pub fn add(&mut self, at: Instant, bytes: u64) {
        let start = *self.start.get_or_insert(at);
        let i = (at.saturating_duration_since(start).as_nanos() / self.width.as_nanos().max(1))
            as usize;
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += bytes;
    }

    /// The best full bucket's rate in Gbit/s; `average` when no bucket is full.
    pub fn gbps(&self, average: f64) -> f64 {
        let full = self.buckets.len().saturating_sub(1);
        let best = self.buckets[..full].iter().copied().max().unwrap_or(0);
        let peak = best as f64 * 8.0 / self.width.as_secs_f64() / 1e9;
        peak.max(average)
    }
}

/// Everything printed about a run, from both ends' summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub params: Params,
    pub mtu: u32,
    pub directions: Vec<Direction>,
    pub lat: Option<LatStats>,
    pub verified: Option<bool>,
    pub verify_error: Option<String>,
    pub retransmits: u64,
    /// Duplicate and out-of-sequence requests both ends' QPs received.
    pub duplicates: u64,
    pub out_of_sequence: u64,
    pub migration: Option<super::exchange::MigrationInfo>,
    pub pause_ms: Option<f64>,
    /// The steady state around the migration (from the end that stayed).
    pub steady: Option<super::steady::Steady>,
    pub steady_error: Option<String>,
}

impl Report {
    /// Merges this end's and the peer's summaries.
    pub fn merge(params: &Params, mtu: u32, local: &Summary, peer: &Summary) -> Report {
        let directions = [local, peer]
            .iter()
            .filter_map(|s| s.requester.clone())
            .collect();
        let lat = local.lat.clone().or_else(|| peer.lat.clone());
        let sides = [local, peer];
        // An end whose role is to check and that checked nothing fails the
        // verification: it is never counted as verified.
        let unchecked = sides
            .iter()
            .any(|s| s.verify_expected && s.verified.is_none());
        let verified = if !params.verify
            || sides
                .iter()
                .all(|s| s.verified.is_none() && !s.verify_expected)
        {
            None
        } else {
            let failed = sides.iter().any(|s| s.verified == Some(false));
            let checked = sides.iter().any(|s| s.verified == Some(true));
            Some(checked && !failed && !unchecked)
        };
        let verify_error = local
            .verify_error
            .clone()
            .or_else(|| peer.verify_error.clone())
            .or_else(|| {
                (verified == Some(false))
                    .then(|| "an end that had to check the data checked nothing".to_string())
            });
        // The pause is what the partner of the migrated end saw.
        let (migration, pause_ms) = match (&local.migration, &peer.migration) {
            (Some(m), _) => (Some(m.clone()), peer.max_gap_ms),
            (None, Some(m)) => (Some(m.clone()), local.max_gap_ms),
            (None, None) => (None, None),
        };
        Report {
            params: params.clone(),
            mtu,
            directions,
            lat,
            verified,
            verify_error,
            retransmits: local.retransmits + peer.retransmits,
            duplicates: local.duplicates + peer.duplicates,
            out_of_sequence: local.out_of_sequence + peer.out_of_sequence,
            migration,
            pause_ms,
            steady: local.steady.clone().or_else(|| peer.steady.clone()),
            steady_error: local
                .steady_error
                .clone()
                .or_else(|| peer.steady_error.clone()),
        }
    }

    /// Operations of one direction (all QPs): perftest's #iterations.
    pub fn ops(&self) -> u64 {
        let n = self.directions.len().max(1) as u64;
        self.directions.iter().map(|d| d.ops).sum::<u64>() / n
    }

    /// Average Gbit/s, both directions added (as perftest's -b).
    pub fn gbps(&self) -> f64 {
        self.directions
            .iter()
            .filter(|d| d.secs > 0.0)
            .map(|d| d.bytes as f64 * 8.0 / d.secs / 1e9)
            .fold(0.0, |a, b| a + b)
    }

    pub fn peak_gbps(&self) -> f64 {
        self.directions
            .iter()
            .map(|d| d.peak_gbps)
            .fold(0.0, |a, b| a + b)
    }

    pub fn mpps(&self) -> f64 {
        self.directions
            .iter()
            .filter(|d| d.secs > 0.0)
            .map(|d| d.ops as f64 / d.secs / 1e6)
            .fold(0.0, |a, b| a + b)
    }

    pub fn json(&self) -> Value {
        let p = &self.params;
        let mut v = json!({
            "test": p.test.name(),
            "size": p.size,
            "iters": if p.test.is_latency() { self.lat.as_ref().map(|l| l.count).unwrap_or(0) } else { self.ops() },
            "qps": p.qps,
            "bidirectional": p.bidir,
            "mtu": self.mtu,
            "gbps": self.gbps(),
            "peak_gbps": self.peak_gbps(),
            "mpps": self.mpps(),
            "verified": self.verified,
            "retransmits": self.retransmits,
            "duplicates": self.duplicates,
            "out_of_sequence": self.out_of_sequence,
            "migrated": self.migration.is_some(),
        });
        if let Some(l) = &self.lat {
            v["lat_us"] = json!({
                "min": l.min, "p50": l.p50, "avg": l.avg, "stdev": l.stdev,
                "p99": l.p99, "p999": l.p999, "max": l.max,
            });
            if p.test.is_latency() {
                // A latency run moves one message per iteration each way.
                let secs: f64 = l.avg * l.count as f64 / 1e6;
                if secs > 0.0 {
                    let gbps = p.size as f64 * 8.0 * l.count as f64 / secs / 1e9;
                    v["gbps"] = json!(gbps);
                    v["peak_gbps"] = json!(gbps);
                    v["mpps"] = json!(l.count as f64 / secs / 1e6);
                }
            }
        }
        if let Some(e) = &self.verify_error {
            v["verify_error"] = json!(e);
        }
        if let Some(m) = &self.migration {
            v["pause_ms"] = json!(self.pause_ms);
            v["migration"] = json!({
                "from": m.from, "to": m.to, "downtime_ms": m.downtime_ms,
                "image_bytes": m.image_bytes, "qpns": m.qpns,
            });
            if let Some(st) = &self.steady {
                v["steady"] = json!(st);
            }
            if let Some(e) = &self.steady_error {
                v["steady_error"] = json!(e);
            }
        }
        v
    }

    /// The perftest-like table.
    pub fn table(&self) -> String {
        let p = &self.params;
        let line = "-".repeat(87);
        let mut s = String::new();
        s += &format!("{line}\n");
        s += &format!(
            "                    {} {}\n",
            p.test.name(),
            if p.bidir { "(bidirectional)" } else { "" }
        );
        s += &format!(
            " Number of qps   : {:<8} Transport type : IB (RoCE v2, migros)\n",
            p.qps
        );
        s += &format!(
            " Mtu             : {:<8} TX depth       : {}\n",
            self.mtu, p.tx_depth
        );
        s += &format!("{line}\n");
        if let Some(l) = self.lat.as_ref().filter(|_| p.test.is_latency()) {
            s += " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]\n";
            s += &format!(
                " {:<6} {:<10}     {:<10.2}     {:<10.2}     {:<10.2}       {:<10.2}     {:<10.2}      {:<10.2}             {:<10.2}\n",
                p.size, l.count, l.min, l.max, l.p50, l.avg, l.stdev, l.p99, l.p999
            );
        } else {
            s += " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]\n";
            s += &format!(
                " {:<10} {:<10}     {:<10.2}         {:<10.2}           {:.6}\n",
                p.size,
                self.ops(),
                self.peak_gbps(),
                self.gbps(),
                self.mpps()
            );
        }
        s += &format!("{line}\n");
        match self.verified {
            Some(true) if p.test == crate::cli::Test::AtomicBw => {
                s += " verified        : every atomic executed exactly once\n"
            }
            Some(true) => s += " verified        : every byte\n",
            Some(false) => {
                s += &format!(
                    " verified        : FAILED ({})\n",
                    self.verify_error.as_deref().unwrap_or("unknown")
                )
            }
            None => {}
        }
        s += &format!(" retransmits     : {}\n", self.retransmits);
        if let Some(m) = &self.migration {
            s += &format!(
                " migrated        : {} -> {}, downtime {:.3} ms, image {} bytes, qpns {:?}\n",
                m.from, m.to, m.downtime_ms, m.image_bytes, m.qpns
            );
            if let Some(pm) = self.pause_ms {
                s += &format!(" peer's pause    : {pm:.3} ms\n");
            }
            if let Some(st) = &self.steady {
                s += &format!(
                    " steady state    : {:.2} Gbit/s the 1 s before the pause, {:.2} Gbit/s the 1 s after the RESUME: ratio {:.3}\n",
                    st.before_gbps, st.after_gbps, st.ratio
                );
                if let Some(r) = st.ratio_without_move {
                    s += &format!(
                        " without a move  : ratio {r:.3} (the 1 s before the pause over the 1 s before that)\n"
                    );
                }
                s += &format!(
                    " back within 5 % : {} (100 ms rate; counters read every {:.0} ms at most, pause {:.3} ms)\n",
                    st.recovery_ms
                        .map_or("never in this run".into(), |r| format!("{r:.0} ms after the RESUME")),
                    st.max_step_ms,
                    st.pause_ms
                );
            } else if let Some(e) = &self.steady_error {
                s += &format!(" steady state    : not measured ({e})\n");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::exchange::MigrationInfo;
    use crate::cli::Test;

    fn params(test: Test) -> Params {
        Params {
            test,
            size: 65536,
            iters: 5000,
            duration: None,
            qps: 1,
            bidir: false,
            tx_depth: 128,
            verify: true,
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let s: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 500.0);
        assert_eq!(percentile(&s, 99.0), 990.0);
        assert_eq!(percentile(&s, 99.9), 999.0);
        assert_eq!(percentile(&s, 100.0), 1000.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.9), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn latency_statistics() {
        let l = lat_stats(&[4.0, 2.0, 6.0, 8.0]);
        assert_eq!(
            (l.count, l.min, l.max, l.p50, l.avg),
            (4, 2.0, 8.0, 4.0, 5.0)
        );
        assert!((l.stdev - 5.0f64.sqrt()).abs() < 1e-9);
        assert_eq!(lat_stats(&[]), LatStats::default());
    }

    #[test]
    fn peak_uses_full_buckets() {
        let t0 = Instant::now();
        let mut p = Peak::new(Duration::from_millis(10));
        p.start(t0);
        p.add(t0 + Duration::from_millis(1), 1_000_000);
        p.add(t0 + Duration::from_millis(12), 2_500_000);
        p.add(t0 + Duration::from_millis(25), 9_000_000); // last bucket: partial
                                                          // 2.5 MB in 10 ms = 2 Gbit/s.
        assert!((p.gbps(0.5) - 2.0).abs() < 1e-9);
        assert_eq!(Peak::new(Duration::from_millis(10)).gbps(1.5), 1.5);
    }

    #[test]
    fn bandwidth_json_and_table() {
        let local = Summary {
            verified: Some(true),
            retransmits: 2,
            max_gap_ms: Some(0.1),
            ..Default::default()
        };
        let peer = Summary {
            requester: Some(Direction {
                ops: 5000,
                bytes: 5000 * 65536,
                secs: 2.0,
                peak_gbps: 1.5,
            }),
            retransmits: 3,
            duplicates: 4,
            out_of_sequence: 6,
            max_gap_ms: Some(42.0),
            ..Default::default()
        };
        let r = Report::merge(&params(Test::WriteBw), 4096, &local, &peer);
        let v = r.json();
        assert_eq!(v["test"], "write-bw");
        assert_eq!(v["size"], 65536);
        assert_eq!(v["iters"], 5000);
        assert!((v["gbps"].as_f64().unwrap() - 1.31072).abs() < 1e-9);
        assert!((v["mpps"].as_f64().unwrap() - 0.0025).abs() < 1e-9);
        assert_eq!(v["verified"], true);
        assert_eq!(v["retransmits"], 5);
        assert_eq!(
            (v["duplicates"].as_u64(), v["out_of_sequence"].as_u64()),
            (Some(4), Some(6))
        );
        assert_eq!(v["migrated"], false);
        assert!(v.get("pause_ms").is_none() && v.get("lat_us").is_none());
        let t = r.table();
        assert!(t.contains("BW peak[Gb/sec]"), "{t}");
        assert!(
            t.contains(" 65536      5000           1.50               1.31"),
            "{t}"
        );
        assert!(t.contains("verified        : every byte"));
    }

    /// A move from node a to c of QP 0x42: 3.5 ms down, a 1234-byte image.
    fn moved_from_a_to_c() -> MigrationInfo {
        MigrationInfo {
            from: "a".into(),
            to: "c".into(),
            downtime_ms: 3.5,
            image_bytes: 1234,
            qpns: vec![0x42],
        }
    }

    #[test]
    fn migration_fields_take_the_peers_pause() {
        let local = Summary {
            max_gap_ms: Some(1.0),
            migration: Some(moved_from_a_to_c()),
            ..Default::default()
        };
        let peer = Summary {
            max_gap_ms: Some(17.0),
            verified: Some(false),
            verify_error: Some("qp 0 message 3: byte 1".into()),
            ..Default::default()
        };
        let r = Report::merge(&params(Test::SendBw), 1024, &local, &peer);
        let v = r.json();
        assert_eq!(v["migrated"], true);
        assert_eq!(v["pause_ms"], 17.0);
        assert_eq!(v["migration"]["downtime_ms"], 3.5);
        assert_eq!(v["migration"]["image_bytes"], 1234);
        assert_eq!(v["migration"]["qpns"], json!([0x42]));
        assert_eq!(v["verified"], false);
        assert!(r.table().contains("FAILED (qp 0 message 3"));
        // Seen from the other end, the same.
        let r2 = Report::merge(&params(Test::SendBw), 1024, &peer, &local);
        assert_eq!(r2.json()["pause_ms"], 17.0);
    }

    #[test]
    fn the_steady_state_comes_from_the_end_that_stayed() {
        let moved = Summary {
            migration: Some(moved_from_a_to_c()),
            ..Default::default()
        };
        let stayed = Summary {
            steady: Some(crate::bench::steady::Steady {
                before_gbps: 10.0,
                after_gbps: 9.7,
                ratio: 0.97,
                ratio_without_move: Some(1.01),
                pause_ms: 12.0,
                recovery_ms: Some(40.0),
                max_step_ms: 21.0,
            }),
            ..Default::default()
        };
        let r = Report::merge(&params(Test::WriteBw), 1024, &moved, &stayed);
        assert_eq!(r.json()["steady"]["ratio"], 0.97);
        assert_eq!(r.json()["steady"]["recovery_ms"], 40.0);
        let t = r.table();
        assert!(t.contains("ratio 0.970"), "{t}");
        assert!(t.contains("40 ms after the RESUME"), "{t}");
        let failed = Summary {
            steady_error: Some("no counter readings".into()),
            ..Default::default()
        };
        let r = Report::merge(&params(Test::WriteBw), 1024, &failed, &moved);
        assert_eq!(r.json()["steady_error"], "no counter readings");
        assert!(r.table().contains("not measured (no counter readings)"));
    }

    #[test]
    fn an_end_that_had_to_check_and_checked_nothing_is_not_verified() {
        let checker = Summary {
            verify_expected: true,
            ..Default::default()
        };
        let requester = Summary {
            requester: Some(Direction {
                ops: 10,
                bytes: 10 * 65536,
                secs: 1.0,
                peak_gbps: 1.0,
            }),
            ..Default::default()
        };
        for (a, b) in [(&checker, &requester), (&requester, &checker)] {
            let r = Report::merge(&params(Test::SendBw), 1024, a, b);
            assert_eq!(r.verified, Some(false), "{r:?}");
            assert!(
                r.table().contains("FAILED (an end that had to check"),
                "{}",
                r.table()
            );
        }
        // Bidirectional: one end checked, the other had to and did not.
        let good = Summary {
            verified: Some(true),
            verify_expected: true,
            ..Default::default()
        };
        let r = Report::merge(&params(Test::SendBw), 1024, &good, &checker);
        assert_eq!(r.verified, Some(false));
        // Both checked what they had to.
        let r = Report::merge(&params(Test::SendBw), 1024, &good, &good.clone());
        assert_eq!(r.verified, Some(true));
        // One end checks, the other has nothing to check.
        let r = Report::merge(&params(Test::SendBw), 1024, &good, &requester);
        assert_eq!(r.verified, Some(true));
        // Nothing was to be checked at all: no verdict.
        let r = Report::merge(&params(Test::SendBw), 1024, &requester, &requester.clone());
        assert_eq!(r.verified, None);
    }

    #[test]
    fn latency_json_and_table() {
        let samples: Vec<f64> = (1..=1000).map(|i| i as f64 / 100.0).collect();
        let local = Summary {
            lat: Some(lat_stats(&samples)),
            ..Default::default()
        };
        let mut p = params(Test::SendLat);
        p.size = 2;
        p.verify = false;
        let r = Report::merge(&p, 1024, &local, &Summary::default());
        let v = r.json();
        assert_eq!(v["iters"], 1000);
        assert_eq!(v["lat_us"]["min"], 0.01);
        assert_eq!(v["lat_us"]["p50"], 5.0);
        assert_eq!(v["lat_us"]["p99"], 9.9);
        assert_eq!(v["lat_us"]["max"], 10.0);
        assert_eq!(v["verified"], Value::Null);
        assert!(v["peak_gbps"].as_f64().unwrap().is_sign_positive());
        assert!(r.table().contains("t_typical[usec]"));
    }
}
