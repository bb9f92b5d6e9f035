//! `migros stat`: device counters and per-QP counters, as `rdma statistic`.
//!
//! Counters come from the daemon's admin socket (every QP, with its owner's
//! pid, state and destination); without access to it (not root), from a
//! verbs session (`Context::stats`), which shows the device's counters only
//! (a fresh session has no QPs).

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use migros_proto::admin::QpStats;
use migros_proto::paths;
use migros_verbs::{Context, DeviceCounters};
use serde_json::json;

use crate::admin;
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
        let (dev, qps) = match admin::stats(dir, n) {
            Ok(r) => r,
            Err(_) => {
                let ctx = Context::open(n).with_context(|| format!("opening device {n}"))?;
                let (dev, _) = ctx
                    .stats()
                    .with_context(|| format!("reading counters of {n}"))?;
                (dev, Vec::new())
            }
        };
        all.push((n.clone(), dev, qps));
    }
    if a.json {
        let v: Vec<_> = all
            .iter()
            .map(|(n, d, q)| json!({ "device": n, "counters": d, "qps": q }))
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
pub fn render(name: &str, dev: &DeviceCounters, qps: &[QpStats]) -> Result<String> {
    let mut s = format!("link {name}/1");
    for (k, v) in counter_pairs(dev)? {
        s += &format!(" {k} {v}");
    }
    s.push('\n');
    for q in qps {
        let dest = q
            .dest
            .map(|(a, n)| format!("{a}/{n:#x}"))
            .unwrap_or_else(|| "-".into());
        s += &format!(
            "link {name}/1 qpn {:#x} pid {} state {:?} dest {dest}",
            q.qpn, q.pid, q.state
        );
        for (k, v) in counter_pairs(&q.counters)? {
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
        let q = QpStats {
            qpn: 0x42,
            owner: 1,
            pid: 77,
            state: migros_verbs::QpState::Rts,
            dest: Some(("127.0.0.3".parse().unwrap(), 0x43)),
            counters: migros_verbs::QpCounters {
                retransmits: 2,
                ..Default::default()
            },
        };
        let s = render("d0", &d, &[q]).unwrap();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("link d0/1 ") && lines[0].contains(" rx_packets 5"));
        assert!(
            lines[1].starts_with("link d0/1 qpn 0x42 pid 77 state Rts dest 127.0.0.3/0x43 ")
                && lines[1].contains(" retransmits 2")
        );
    }
}
