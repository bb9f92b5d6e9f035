//! perftest's result table: a header line starting with `#bytes`, then one
//! row per message size (`-a` prints several): the size, the iteration
//! count, then the figures (bandwidth: peak, average, message rate;
//! latency: min, max, typical, average, …).

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub bytes: u64,
    pub iterations: u64,
    /// The figures after the iteration count, in the header's order.
    pub figures: Vec<f64>,
}

/// Every result row of `log`: lines after a `#bytes` header whose fields
/// are all numbers.
pub fn rows(log: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in log.lines() {
        let t = line.trim();
        if t.starts_with("#bytes") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let f: Vec<&str> = t.split_whitespace().collect();
        let (Some(bytes), Some(iterations)) = (
            f.first().and_then(|s| s.parse().ok()),
            f.get(1).and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        let figures: Option<Vec<f64>> = f[2..].iter().map(|s| s.parse().ok()).collect();
        match figures {
            Some(figures) if !figures.is_empty() => out.push(Row {
                bytes,
                iterations,
                figures,
            }),
            _ => {}
        }
    }
    out
}

/// The bandwidth row for `bytes`: `iterations` of them (when given), a
/// positive average bandwidth (the second figure). Panics with the log
/// otherwise; `who` names the program in the message.
pub fn assert_bw(who: &str, log: &str, bytes: u64, iterations: Option<u64>) -> Row {
    let found = rows(log).into_iter().find(|r| {
        r.bytes == bytes
            && r.iterations > 0
            && iterations.map_or(true, |n| r.iterations == n)
            && r.figures.len() >= 2
            && r.figures[1] > 0.0
    });
    found.unwrap_or_else(|| {
        panic!(
            "{who}: no bandwidth result line for {bytes} bytes{}:\n{log}",
            iterations
                .map(|n| format!(" and {n} iterations"))
                .unwrap_or_default()
        )
    })
}

/// The latency row for `bytes`: `iterations` of them (when given), the
/// first figure (the minimum, or the average of a timed run) positive and
/// none negative (a deviation may print as 0.00). Panics with the log
/// otherwise.
pub fn assert_lat(who: &str, log: &str, bytes: u64, iterations: Option<u64>) -> Row {
    let found = rows(log).into_iter().find(|r| {
        r.bytes == bytes
            && r.iterations > 0
            && iterations.map_or(true, |n| r.iterations == n)
            && r.figures.first().is_some_and(|&x| x > 0.0)
            && r.figures.iter().all(|x| x.is_finite() && *x >= 0.0)
    });
    found.unwrap_or_else(|| panic!("{who}: no latency result line for {bytes} bytes:\n{log}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BW: &str = "\
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]
 65536      100000           1142.23            1140.01              0.018240
---------------------------------------------------------------------------------------
";

    const LAT: &str = "\
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]
 2       1000          21.33          101.12       25.02              26.11              3.01            40.10                  101.12
";

    #[test]
    fn reads_bandwidth_and_latency_rows() {
        let r = assert_bw("bw", BW, 65536, Some(100000));
        assert_eq!(r.figures, [1142.23, 1140.01, 0.018240]);
        assert_eq!(assert_lat("lat", LAT, 2, Some(1000)).figures.len(), 7);
        assert!(rows("65536 100 1.0 2.0").is_empty(), "no header, no row");
    }

    #[test]
    #[should_panic(expected = "no bandwidth result line")]
    fn wrong_iteration_count_is_no_result() {
        assert_bw("bw", BW, 65536, Some(5000));
    }

    #[test]
    #[should_panic(expected = "no latency result line")]
    fn zero_latency_is_no_result() {
        assert_lat("lat", &LAT.replace("21.33", "0.00"), 2, None);
    }

    #[test]
    #[should_panic(expected = "no bandwidth result line")]
    fn zero_bandwidth_is_no_result() {
        assert_bw("bw", &BW.replace("1140.01", "0.00"), 65536, None);
    }
}
