//! `migros dev …`: add, remove, list and show devices.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use migros_proto::paths;
use migros_verbs::{Context, DeviceInfo};
use serde_json::json;

use crate::cli::{DevAddArgs, DevCommand};
use crate::daemon;

pub fn run(dir: &Path, cmd: DevCommand) -> Result<()> {
    match cmd {
        DevCommand::Add(a) => add(dir, &a),
        DevCommand::Del { name } => del(dir, &name),
        DevCommand::List { json } => list(dir, json),
        DevCommand::Show { name, json } => show(dir, &name, json),
    }
}

fn add(dir: &Path, a: &DevAddArgs) -> Result<()> {
    if !paths::valid_device_name(&a.name) {
        bail!("invalid device name {:?}", a.name);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if daemon::answers(dir, &a.name) {
        bail!("device {} exists", a.name);
    }
    let pid = daemon::start(dir, a)?;
    println!("{} added: addr {} pid {pid}", a.name, a.addr);
    Ok(())
}

fn del(dir: &Path, name: &str) -> Result<()> {
    if daemon::recorded_pid(dir, name).is_none() && !daemon::answers(dir, name) {
        bail!("device {name} not found");
    }
    daemon::stop(dir, name)?;
    println!("{name} removed");
    Ok(())
}

/// The RoCE v2 GID of an address: IPv4-mapped for IPv4.
pub fn gid(addr: IpAddr) -> std::net::Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A GID as `ibv_devinfo` prints it (eight groups of four hex digits).
pub fn gid_hex(addr: IpAddr) -> String {
    gid(addr)
        .segments()
        .iter()
        .map(|s| format!("{s:04x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn list(dir: &Path, json_out: bool) -> Result<()> {
    let names = paths::list_devices(dir);
    let rows: Vec<(String, Option<DeviceInfo>, Option<i32>)> = names
        .into_iter()
        .map(|n| {
            let info = Context::open(&n).ok().map(|c| c.device().clone());
            let pid = daemon::recorded_pid(dir, &n);
            (n, info, pid)
        })
        .collect();
    if json_out {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, info, pid)| {
                json!({
                    "name": n,
                    "state": if info.is_some() { "ACTIVE" } else { "DOWN" },
                    "addr": info.as_ref().map(|i| i.addr.to_string()),
                    "mtu": info.as_ref().map(|i| i.mtu.bytes()),
                    "pid": pid,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<24} {:>5} {:>8}",
        "DEVICE", "STATE", "ADDR", "MTU", "PID"
    );
    for (n, info, pid) in rows {
        let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        match info {
            Some(i) => println!(
                "{:<16} {:<8} {:<24} {:>5} {:>8}",
                n,
                "ACTIVE",
                i.addr,
                i.mtu.bytes(),
                pid
            ),
            None => println!("{:<16} {:<8} {:<24} {:>5} {:>8}", n, "DOWN", "-", "-", pid),
        }
    }
    Ok(())
}

fn show(dir: &Path, name: &str, json_out: bool) -> Result<()> {
    let ctx = Context::open(name)
        .with_context(|| format!("opening device {name} in {}", dir.display()))?;
    let info = ctx.device().clone();
    let (counters, _) = ctx.stats().context("reading counters")?;
    let status = crate::admin::status(dir, name).ok();
    if json_out {
        let v = json!({
            "name": info.name,
            "port": 1,
            "state": "ACTIVE",
            "link_layer": "Ethernet",
            "mtu": info.mtu.bytes(),
            "node_guid": format!("{:016x}", info.node_guid),
            "gids": [{ "index": 0, "gid": gid(info.addr).to_string(), "type": "RoCE v2" }],
            "limits": &info,
            "counters": counters,
            "pid": status.as_ref().map(|s| s.pid as i32).or(daemon::recorded_pid(dir, name)),
            "uptime_secs": status.as_ref().map(|s| s.uptime_secs),
            "sessions": status.as_ref().map(|s| &s.sessions),
            "tombstones": status.as_ref().map(|s| &s.tombstones),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", render_show(&info));
    if let Some(st) = &status {
        println!("\tdaemon:\t\t\t\tpid {} up {} s", st.pid, st.uptime_secs);
        println!("\tsessions:\t\t\t{}", st.sessions.len());
        for se in &st.sessions {
            println!(
                "\t\tsession {:#x} pid {} qps {} cqs {} mrs {}{}",
                se.session,
                se.pid,
                se.qps,
                se.cqs,
                se.mrs,
                if se.checkpointed {
                    " (checkpointed)"
                } else {
                    ""
                }
            );
        }
        if !st.tombstones.is_empty() {
            println!("\ttombstones:\t\t\t{:x?}", st.tombstones);
        }
    }
    println!("\tcounters:");
    for (k, v) in counter_pairs(&counters)? {
        println!("\t\t{k:<24}{v}");
    }
    Ok(())
}

/// The `ibv_devinfo -v` like text of a device.
pub fn render_show(i: &DeviceInfo) -> String {
    let g = i.node_guid.to_be_bytes();
    let guid = g
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(":");
    let mtu = format!("{} ({})", i.mtu.bytes(), i.mtu as u8);
    let mut s = String::new();
    s += &format!("hca_id:\t{}\n", i.name);
    s += "\ttransport:\t\t\tInfiniBand (0)\n";
    s += &format!("\tnode_guid:\t\t\t{guid}\n");
    s += &format!("\tmax_mr_size:\t\t\t{:#x}\n", i.max_mr_size);
    s += &format!("\tmax_qp:\t\t\t\t{}\n", i.max_qp);
    s += &format!("\tmax_qp_wr:\t\t\t{}\n", i.max_qp_wr);
    s += &format!("\tmax_sge:\t\t\t{}\n", i.max_sge);
    s += &format!("\tmax_cq:\t\t\t\t{}\n", i.max_cq);
    s += &format!("\tmax_cqe:\t\t\t{}\n", i.max_cqe);
    s += &format!("\tmax_mr:\t\t\t\t{}\n", i.max_mr);
    s += &format!("\tmax_pd:\t\t\t\t{}\n", i.max_pd);
    s += &format!("\tmax_qp_rd_atom:\t\t\t{}\n", i.max_qp_rd_atom);
    s += &format!("\tmax_srq:\t\t\t{}\n", i.max_srq);
    s += &format!("\tmax_srq_wr:\t\t\t{}\n", i.max_srq_wr);
    s += &format!("\tmax_inline_data:\t\t{}\n", i.max_inline_data);
    s += "\tphys_port_cnt:\t\t\t1\n";
    s += "\t\tport:\t1\n";
    s += if i.port_active {
        "\t\t\tstate:\t\t\tPORT_ACTIVE (4)\n"
    } else {
        "\t\t\tstate:\t\t\tPORT_DOWN (1)\n"
    };
    s += &format!("\t\t\tmax_mtu:\t\t{mtu}\n");
    s += &format!("\t\t\tactive_mtu:\t\t{mtu}\n");
    s += "\t\t\tlink_layer:\t\tEthernet\n";
    // The daemon's table starts with its own address; an empty one shows
    // that address alone.
    let gids = if i.gids.is_empty() {
        std::slice::from_ref(&i.addr)
    } else {
        &i.gids[..]
    };
    for (n, a) in gids.iter().enumerate() {
        s += &format!(
            "\t\t\tGID[{n:>3}]:\t\t{}, RoCE v2 ({})\n",
            gid_hex(*a),
            gid(*a)
        );
    }
    s
}

/// Counter names and values, sorted by name (via serde).
pub fn counter_pairs<T: serde::Serialize>(c: &T) -> Result<Vec<(String, u64)>> {
    let v = serde_json::to_value(c)?;
    let serde_json::Value::Object(map) = v else {
        bail!("counters are not a struct");
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_verbs::Mtu;

    fn info() -> DeviceInfo {
        DeviceInfo {
            name: "d0".into(),
            addr: "127.0.0.2".parse().unwrap(),
            gids: vec!["127.0.0.2".parse().unwrap()],
            port_active: true,
            mtu: Mtu::Mtu4096,
            node_guid: 0x0123_4567_89ab_cdef,
            max_qp: 1,
            max_qp_wr: 2,
            max_sge: 3,
            max_cq: 4,
            max_cqe: 5,
            max_mr: 6,
            max_mr_size: 7,
            max_pd: 8,
            max_qp_rd_atom: 9,
            max_srq: 10,
            max_srq_wr: 11,
            max_inline_data: 12,
        }
    }

    #[test]
    fn gids_are_ipv4_mapped() {
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(gid(a).to_string(), "::ffff:127.0.0.2");
        assert_eq!(gid_hex(a), "0000:0000:0000:0000:0000:ffff:7f00:0002");
        let b: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(gid(b).to_string(), "fd00::1");
    }

    #[test]
    fn show_text() {
        let s = render_show(&info());
        for want in [
            "hca_id:\td0",
            "node_guid:\t\t\t0123:4567:89ab:cdef",
            "PORT_ACTIVE (4)",
            "active_mtu:\t\t4096 (5)",
            "link_layer:\t\tEthernet",
            "0000:0000:0000:0000:0000:ffff:7f00:0002, RoCE v2 (::ffff:127.0.0.2)",
            "max_qp_rd_atom:\t\t\t9",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }

    #[test]
    fn show_lists_every_gid_and_a_port_down() {
        let mut i = info();
        i.gids.push("fe80::1".parse().unwrap());
        i.port_active = false;
        let s = render_show(&i);
        assert!(
            s.contains("GID[  0]:\t\t0000:0000:0000:0000:0000:ffff:7f00:0002"),
            "{s}"
        );
        assert!(
            s.contains("GID[  1]:\t\tfe80:0000:0000:0000:0000:0000:0000:0001, RoCE v2 (fe80::1)"),
            "{s}"
        );
        assert!(s.contains("PORT_DOWN (1)"), "{s}");
    }

    #[test]
    fn counters_sorted_by_name() {
        let c = migros_verbs::DeviceCounters {
            tx_packets: 3,
            retransmits: 9,
            ..Default::default()
        };
        let pairs = counter_pairs(&c).unwrap();
        assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(pairs.contains(&("tx_packets".to_string(), 3)));
        assert!(pairs.contains(&("retransmits".to_string(), 9)));
    }
}
