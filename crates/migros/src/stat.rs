//! `migros stat`: device counters and per-QP counters, as `rdma statistic`.
//!
//! Counters are read through a verbs session (`Context::stats`), which shows
//! the device's counters and the QPs of that session only; a device-wide
//! per-QP view needs the daemon's admin socket.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use migros_proto::paths;
use migros_verbs::{Context, DeviceCounters, QpCounters, Qpn};
use serde_json::json;

use crate::cli::StatArgs;
use crate::dev::counter_pairs;

pub fn run(dir: &Path, a: StatArgs) -> Result<()> {
    let names = match a.name {
        Some(n) => vec![n],
        None => paths::list_devices(dir),
    };
    if names.is_empty() {
        bail!("no devices in {}", dir.display());
    }
    let mut all = Vec::new();
    for n in &names {
        let ctx = Context::open(n).with_context(|| format!("opening device {n}"))?;
        let (dev, qps) = ctx
            .stats()
            .with_context(|| format!("reading counters of {n}"))?;
        all.push((n.clone(), dev, qps));
    }
    if a.json {
        let v: Vec<_> = all
            .iter()
            .map(|(n, d, q)| {
                json!({
                    "device": n,
                    "counters": d,
                    "qps": q.iter().map(|(qpn, c)| json!({"qpn": qpn, "counters": c})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (n, d, q) in &all {
            print!("{}", render(n, d, q)?);
        }
    }
    Ok(())
}

/// `rdma statistic`-like lines: `link NAME/1 counter value …`, then one line per QP.
pub fn render(name: &str, dev: &DeviceCounters, qps: &[(Qpn, QpCounters)]) -> Result<String> {
    let mut s = format!("link {name}/1");
    for (k, v) in counter_pairs(dev)? {
        s += &format!(" {k} {v}");
    }
    s.push('\n');
    for (qpn, c) in qps {
        s += &format!("link {name}/1 qpn {qpn:#x}");
        for (k, v) in counter_pairs(c)? {
            s += &format!(" {k} {v}");
        }
        s.push('\n');
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let d = DeviceCounters {
            rx_packets: 5,
            ..Default::default()
        };
        let q = QpCounters {
            retransmits: 2,
            ..Default::default()
        };
        let s = render("d0", &d, &[(0x42, q)]).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("link d0/1 ") && lines[0].contains(" rx_packets 5"));
        assert!(lines[1].starts_with("link d0/1 qpn 0x42 ") && lines[1].contains(" retransmits 2"));
    }
}
