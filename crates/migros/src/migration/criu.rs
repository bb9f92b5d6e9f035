//! What CRIU tells about a dump or a restore: its `stats-dump` /
//! `stats-restore` image (protobuf `stats_entry`, decoded here: a handful of
//! varint fields) and the timestamps of its log (`(SS.UUUUUU) text`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use super::timeline::ms;

/// CRIU's service image magic, then the stats image's own.
const SERVICE_MAGIC: u32 = 0x5510_5940;
const STATS_MAGIC: u32 = 0x5709_3306;

/// The fields of `dump_stats_entry` and `restore_stats_entry` we show
/// (times in microseconds).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub freezing_time: u64,
    pub frozen_time: u64,
    pub memdump_time: u64,
    pub memwrite_time: u64,
    pub pages_scanned: u64,
    pub pages_written: u64,
    pub forking_time: u64,
    pub restore_time: u64,
    pub pages_restored: u64,
}

pub fn read_stats(path: &Path) -> Result<Stats> {
    parse_stats(&std::fs::read(path)?)
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*i) else {
            bail!("truncated varint");
        };
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// A protobuf field's value: a varint, or a length-delimited range of bytes.
enum Value {
    Varint(u64),
    Bytes(usize, usize),
}

/// The (field, value) pairs of a protobuf message.
fn fields(b: &[u8]) -> Result<Vec<(u64, Value)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, Value::Varint(varint(b, &mut i)?))),
            1 => i += 8,
            2 => {
                let len = varint(b, &mut i)? as usize;
                if i + len > b.len() {
                    bail!("truncated field {field}");
                }
                out.push((field, Value::Bytes(i, i + len)));
                i += len;
            }
            5 => i += 4,
            w => bail!("unsupported wire type {w}"),
        }
    }
    Ok(out)
}

pub fn parse_stats(b: &[u8]) -> Result<Stats> {
    if b.len() < 12 {
        bail!("stats image too short");
    }
    let word = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    if word(0) != SERVICE_MAGIC || word(4) != STATS_MAGIC {
        bail!("not a CRIU stats image");
    }
    let len = word(8) as usize;
    let msg = b
        .get(12..12 + len)
        .ok_or_else(|| anyhow::anyhow!("truncated stats entry"))?;
    let mut s = Stats::default();
    for (field, v) in fields(msg)? {
        let Value::Bytes(from, to) = v else {
            continue;
        };
        for (f, v) in fields(&msg[from..to])? {
            let Value::Varint(v) = v else {
                continue;
            };
            match (field, f) {
                (1, 1) => s.freezing_time = v,
                (1, 2) => s.frozen_time = v,
                (1, 3) => s.memdump_time = v,
                (1, 4) => s.memwrite_time = v,
                (1, 5) => s.pages_scanned = v,
                (1, 7) => s.pages_written = v,
                (2, 3) => s.forking_time = v,
                (2, 4) => s.restore_time = v,
                (2, 5) => s.pages_restored = v,
                _ => {}
            }
        }
    }
    Ok(s)
}

/// Timestamps (seconds since CRIU started) of a CRIU log.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogTimes {
    /// When the tasks were frozen.
    pub freeze: Option<f64>,
    /// The last line.
    pub end: Option<f64>,
    /// The migros plugin's lines.
    pub plugin: Vec<(f64, String)>,
}

impl LogTimes {
    /// Seconds from the first plugin line containing `from` to the last
    /// one containing `to` after it.
    pub fn plugin_step(&self, from: &str, to: &str) -> Option<f64> {
        let i = self.plugin.iter().position(|(_, m)| m.contains(from))?;
        let last = self.plugin[i..]
            .iter()
            .rev()
            .find(|(_, m)| m.contains(to))?;
        Some(last.0 - self.plugin[i].0)
    }

    /// `, <label> <ms>` for each (from, to, label) of `steps` the log
    /// has (see [`plugin_step`](Self::plugin_step)), for a timeline line.
    pub fn plugin_steps(&self, steps: &[(&str, &str, &str)]) -> String {
        steps
            .iter()
            .filter_map(|(from, to, label)| {
                let took = self.plugin_step(from, to)?;
                Some(format!(", {label} {}", ms(Duration::from_secs_f64(took))))
            })
            .collect()
    }

    /// When the process stopped: the plugin's pause (before the freeze) or
    /// the freeze, whichever came first.
    pub fn stopped(&self) -> Option<f64> {
        let pause = self
            .plugin
            .iter()
            .find(|(_, m)| m.contains("PAUSE_DEVICES"))
            .map(|p| p.0);
        match (pause, self.freeze) {
            (Some(p), Some(f)) => Some(p.min(f)),
            (p, f) => p.or(f),
        }
    }
}

pub fn read_log(path: &Path) -> LogTimes {
    parse_log(&std::fs::read_to_string(path).unwrap_or_default())
}

pub fn parse_log(text: &str) -> LogTimes {
    let mut t = LogTimes::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('(') else {
            continue;
        };
        let Some((ts, msg)) = rest.split_once(')') else {
            continue;
        };
        let Ok(ts) = ts.trim().parse::<f64>() else {
            continue;
        };
        let msg = msg.trim();
        t.end = Some(ts);
        if t.freeze.is_none() && (msg.starts_with("freezing") || msg.starts_with("Freezing")) {
            t.freeze = Some(ts);
        }
        if msg.contains("migros-criu") {
            t.plugin.push((ts, msg.to_string()));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_dump_stats_image() {
        // A stats-dump written by CRIU 4.1.1 (runc checkpoint of a python3).
        let b = [
            0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x25, 0x00, 0x00, 0x00, 0x0a, 0x23,
            0x08, 0xaa, 0x03, 0x10, 0xc4, 0xe8, 0x07, 0x18, 0x9a, 0x13, 0x20, 0x8a, 0x0b, 0x28,
            0xff, 0x08, 0x30, 0x00, 0x38, 0xbd, 0x08, 0x40, 0x00, 0x48, 0x00, 0x50, 0x08, 0x58,
            0x08, 0x60, 0x00, 0x68, 0x00, 0x70, 0x00,
        ];
        let s = parse_stats(&b).unwrap();
        assert_eq!(
            (
                s.freezing_time,
                s.frozen_time,
                s.memdump_time,
                s.memwrite_time
            ),
            (426, 128068, 2458, 1418)
        );
        assert_eq!((s.pages_scanned, s.pages_written), (1151, 1085));
        assert!(parse_stats(&b[..20]).is_err());
        assert!(parse_stats(&[0; 16]).is_err());
    }

    #[test]
    fn restore_stats_fields() {
        // stats_entry { restore { pages_compared: 0, forking_time: 300, restore_time: 70000, pages_restored: 9 } }
        let inner = [
            0x08, 0x00, 0x18, 0xac, 0x02, 0x20, 0xf0, 0xa2, 0x04, 0x28, 0x09,
        ];
        let mut b = vec![0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57];
        b.extend_from_slice(&((inner.len() + 2) as u32).to_le_bytes());
        b.extend_from_slice(&[0x12, inner.len() as u8]);
        b.extend_from_slice(&inner);
        let s = parse_stats(&b).unwrap();
        assert_eq!(
            (s.forking_time, s.restore_time, s.pages_restored),
            (300, 70000, 9)
        );
    }

    #[test]
    fn log_times() {
        let t = parse_log(
            "(00.000000) CRIU run id = x\n\
             (00.055776) cg:     `- [freezer] -> [/] [0]\n\
             (00.055798) freezing cgroup /sys/fs/cgroup/freezer/cli.0\n\
             (00.060000) migros-criu: paused 1 session(s)\n\
             (00.070000) migros-criu: checkpointed\n\
             garbage\n\
             (00.184428) Dumping finished successfully\n",
        );
        assert_eq!(t.freeze, Some(0.055798));
        assert_eq!(t.end, Some(0.184428));
        assert_eq!(t.plugin.len(), 2);
        assert_eq!(t.stopped(), Some(0.055798));
        let r = parse_log(
            "(00.010000) migros-criu: PAUSE_DEVICES pid 7\n\
             (00.012000) migros-criu: paused 1 session(s) of pid 7\n\
             (00.020000) freezing cgroup x\n\
             (00.030000) migros-criu: CHECKPOINT_DEVICES pid 7\n\
             (00.034000) migros-criu: checkpointed session 0x1 of pid 7\n",
        );
        assert_eq!(r.stopped(), Some(0.01));
        let step = r.plugin_step("CHECKPOINT_DEVICES", "checkpointed").unwrap();
        assert!((step - 0.004).abs() < 1e-9, "{step}");
        assert!(r.plugin_step("RESUME_DEVICES_LATE", "resumed").is_none());
        assert_eq!(
            r.plugin_steps(&[
                ("PAUSE_DEVICES", "paused", "RDMA pause"),
                ("RESUME_DEVICES_LATE", "resumed", "RDMA resume"),
                ("CHECKPOINT_DEVICES", "checkpointed", "RDMA dump"),
            ]),
            ", RDMA pause 2.0 ms, RDMA dump 4.0 ms"
        );
    }
}
