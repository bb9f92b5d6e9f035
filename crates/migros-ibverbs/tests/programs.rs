//! The unmodified Debian 12 programs (ibverbs-utils, perftest) on two
//! daemons on loopback addresses, through target/ibverbs (built by
//! scripts/ibverbs.sh). Needs root (the daemons reach the programs' memory)
//! and the Debian packages (scripts/setup.sh installs them).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ready, root_dir, Net};
use migros_test_support::perftest;
use migros_test_support::require::program;

const A: (&str, &str) = ("devA", "127.0.0.151");
const B: (&str, &str) = ("devB", "127.0.0.152");
/// The Debian programs this test runs.
const PROGRAMS: &[&str] = &[
    "ibv_devices",
    "ibv_devinfo",
    "ibv_rc_pingpong",
    "ib_send_bw",
    "ib_write_bw",
    "ib_read_bw",
    "ib_atomic_bw",
    "ib_send_lat",
    "ib_write_lat",
    "ib_read_lat",
    "ib_atomic_lat",
];

/// `objdump -T` shows every export of versions.txt bound to its node
/// (`IBVERBS_1.1 ibv_get_device_list`), not to `Base`.
fn exports_are_versioned() {
    let lib = root_dir().join("target/ibverbs/libibverbs.so.1");
    let out = Command::new("objdump")
        .arg("-T")
        .arg(&lib)
        .output()
        .expect("objdump (a prerequisite of this test)");
    assert!(out.status.success(), "objdump -T failed");
    let dump = String::from_utf8_lossy(&out.stdout);
    // symbol → version node, from lines ending in `NODE symbol`.
    let bound: std::collections::BTreeMap<&str, &str> = dump
        .lines()
        .filter(|l| l.contains(" DF "))
        .filter_map(|l| {
            let mut w = l.split_whitespace().rev();
            let sym = w.next()?;
            Some((sym, w.next()?))
        })
        .collect();
    let list = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("versions.txt"))
        .expect("versions.txt");
    let mut checked = 0;
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let Some(node) = words.next() else { continue };
        for sym in words {
            assert_eq!(bound.get(sym), Some(&node), "{sym} in\n{dump}");
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} exports listed");
}

#[test]
fn debian_programs_run_unmodified() {
    let Some(bin) = ready(PROGRAMS, vec![program("objdump", "binutils")]) else {
        return;
    };
    exports_are_versioned();
    let net = Net::start(&bin, [A, B], &[]);

    let list = net.run(&["ibv_devices"]);
    assert!(list.contains("devA") && list.contains("devB"), "{list}");

    let info = net.run(&["ibv_devinfo", "-v", "-d", "devA"]);
    for want in [
        "PORT_ACTIVE (4)",
        "link_layer:\t\tEthernet",
        "vendor_id:\t\t\t0xffffff",
        "::ffff:127.0.0.151, RoCE v2",
        // The daemon's --mtu (1024 by default) is the largest path MTU it
        // accepts: both MTUs say so.
        "max_mtu:\t\t1024 (3)",
        "active_mtu:\t\t1024 (3)",
    ] {
        assert!(info.contains(want), "no {want:?} in\n{info}");
    }

    let none: &[&str] = &[];
    for (size, extra) in [
        ("1024", none),
        ("4096", none),
        ("65536", none),
        ("4096", &["-e"]),
        // Extended CQ with completion timestamps, and the ibv_wr_* API.
        ("4096", &["-t"]),
        // Timestamps with completion events: after each event the CQ
        // must not be empty ("poll CQ failed 2" otherwise).
        ("4096", &["-t", "-e"]),
        ("4096", &["-N"]),
        ("64", &["-N"]),
    ] {
        let args = |dev| {
            let mut v = rc_pingpong(dev, "18611", &["-s", size, "-n", "50"]);
            v.extend(extra);
            v
        };
        let s = args("devA");
        let mut c = args("devB");
        c.push("127.0.0.1");
        let (so, co) = net.pair(&s, &c);
        assert!(
            co.contains("50 iters in") && so.contains("50 iters in"),
            "{so}\n{co}"
        );
        if extra.contains(&"-t") {
            assert!(
                co.contains("Average receive completion clock cycles"),
                "{co}"
            );
        }
    }

    perftest(&net);
    daemon_death(net);
}

/// `ibv_rc_pingpong` on `dev` (GID index 0) with TCP port `port`, then
/// `more`.
fn rc_pingpong<'a>(dev: &'a str, port: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["ibv_rc_pingpong", "-d", dev, "-g", "0", "-p", port];
    args.extend(more);
    args
}

/// Kills devA's daemon under a running ibv_rc_pingpong: the program on
/// devA stops with an error instead of hanging (its posted receives
/// complete with a flush error, then poll_cq fails with EIO; or, if it
/// had a completion to take, its next post fails),
/// and ibv_asyncwatch on devA reports IBV_EVENT_DEVICE_FATAL.
fn daemon_death(mut net: Net) {
    let spawn = |args: &[&str]| {
        net.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let watch = spawn(&["stdbuf", "-oL", "ibv_asyncwatch", "-d", "devA"]);
    let ping = |dev| rc_pingpong(dev, "18613", &["-n", "100000000"]);
    let srv = spawn(&ping("devA"));
    std::thread::sleep(Duration::from_millis(500));
    let mut c = ping("devB");
    c.push("127.0.0.1");
    let cli = spawn(&c);
    std::thread::sleep(Duration::from_millis(1000));
    let _ = net.daemons[0].kill();
    let _ = net.daemons[0].wait();
    let killed = Instant::now();
    let out = srv.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    // `timeout` exits with 124 when the program hung.
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "server: {} {err}",
        out.status
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "server took too long"
    );
    // Usually the server waits in poll_cq and gets its receives flushed;
    // if the daemon died right after writing a completion, the server
    // polls that and its next post (a send, or the receive it reposts
    // for the one just completed) fails instead. Either way it stops.
    assert!(
        err.contains("Failed status Work Request Flushed Error (5)")
            || err.contains("Couldn't post send")
            || err.contains("Couldn't post receive"),
        "server: {err}"
    );
    // The peer on devB only learns of it if it has something in flight
    // (a retry error); waiting for a receive it waits forever, as on any
    // RC device. Stop it and ibv_asyncwatch (SIGTERM to `timeout`, which
    // passes it on).
    std::thread::sleep(Duration::from_millis(200));
    for p in [&cli, &watch] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = cli.wait_with_output();
    let out = watch.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("IBV_EVENT_DEVICE_FATAL"), "{text}");
}

/// One perftest run: the program and its extra flags (both sides), and
/// the result line the client must print: message size and, when the
/// run has a fixed count, iterations.
struct Case {
    prog: &'static str,
    flags: &'static [&'static str],
    size: u64,
    iters: Option<u64>,
}

const fn case(
    prog: &'static str,
    flags: &'static [&'static str],
    size: u64,
    iters: Option<u64>,
) -> Case {
    Case {
        prog,
        flags,
        size,
        iters,
    }
}

/// perftest programs and flags, a few at a time on distinct ports (the
/// programs busy-poll, so more at once only slows each down).
fn perftest(net: &Net) {
    let cases = [
        // perftest's defaults (1000 iterations of 64 KiB for bandwidth,
        // 5000 for WRITE, 1000 of 2 B for latency; atomics move 8 B).
        case("ib_send_bw", &[], 65536, Some(1000)),
        case("ib_write_bw", &[], 65536, Some(5000)),
        case("ib_read_bw", &[], 65536, Some(1000)),
        case("ib_atomic_bw", &[], 8, Some(1000)),
        case("ib_send_lat", &[], 2, Some(1000)),
        case("ib_write_lat", &[], 2, Some(1000)),
        case("ib_read_lat", &[], 2, Some(1000)),
        case("ib_atomic_lat", &[], 8, Some(1000)),
        // All sizes, 2 B to 8 MiB (the largest row is checked).
        case("ib_write_bw", &["-a", "-n", "5"], 8388608, Some(5)),
        case("ib_send_lat", &["-a", "-n", "5"], 8388608, Some(5)),
        // Bidirectional.
        case("ib_send_bw", &["-b", "-n", "200"], 65536, Some(200)),
        case("ib_read_bw", &["-b", "-n", "100"], 65536, Some(100)),
        case("ib_atomic_bw", &["-b", "-n", "200"], 8, Some(200)),
        // Several QPs (the iterations of all four are counted).
        case("ib_write_bw", &["-q", "4", "-n", "200"], 65536, Some(800)),
        case("ib_send_bw", &["-q", "4", "-n", "100"], 65536, Some(400)),
        case("ib_atomic_bw", &["-q", "4", "-n", "100"], 8, Some(400)),
        // Completion events (perftest refuses -e for WRITE).
        case("ib_send_bw", &["-e", "-n", "200"], 65536, Some(200)),
        case("ib_read_bw", &["-e", "-n", "200"], 65536, Some(200)),
        case("ib_send_lat", &["-e", "-n", "200"], 2, Some(200)),
        case("ib_read_lat", &["-e", "-n", "200"], 2, Some(200)),
        // Fixed duration.
        case("ib_write_bw", &["-D", "2"], 65536, None),
        case("ib_read_lat", &["-D", "2"], 2, None),
    ];
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = cases.get(i) else { break };
                let port = (18700 + i).to_string();
                let base = [c.prog, "-x", "0", "-p", port.as_str()];
                let mut srv: Vec<&str> = base.to_vec();
                srv.extend(["-d", "devA"]);
                srv.extend(c.flags);
                let mut cli: Vec<&str> = base.to_vec();
                cli.extend(["-d", "devB"]);
                cli.extend(c.flags);
                cli.push("127.0.0.1");
                let (so, co) = net.pair(&srv, &cli);
                let who = format!("{cli:?}");
                if c.prog.ends_with("_lat") {
                    perftest::assert_lat(&who, &co, c.size, c.iters);
                } else {
                    perftest::assert_bw(&who, &co, c.size, c.iters);
                }
                for out in [&so, &co] {
                    assert!(!out.contains("Completion with error"), "{who}: {out}");
                }
            });
        }
    });
}
