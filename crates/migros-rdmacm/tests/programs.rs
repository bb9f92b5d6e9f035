//! The unmodified Debian 12 programs of rdmacm-utils and perftest's `-R`
//! (RDMA CM) mode between two hosts with a migros device each, through
//! target/ibverbs (librdmacm.so.1 and libibverbs.so.1). Every program runs
//! as server on one host and client on the other, then the other way
//! round, with its usual options. Needs root and the Debian packages
//! (scripts/setup.sh installs them); fails under MIGROS_TESTS_REQUIRED=1
//! if they are missing.

#![allow(clippy::needless_range_loop)] // host `s` serves, the other connects to ADDR[s]

mod common;

use common::{ready, stdout, text, Hosts, ADDR};

fn both_ok(what: &str, s: &std::process::Output, c: &std::process::Output) {
    assert!(
        s.status.success() && c.status.success(),
        "{what}\nserver: {}\nclient: {}",
        text(s),
        text(c)
    );
}

/// `rping -s` / `rping -c -C 1000 -v`: 1000 verified ping-pongs (the
/// client checks every reply with `-v` printing it), both ways. The
/// client's run time (connect, 1000 pings, disconnect) is printed.
#[test]
fn rping() {
    let Some(bin) = ready(&["rping"]) else { return };
    let h = Hosts::new(&bin, "rping", &[]);
    for s in 0..2 {
        let (so, co, took) = h.pair_timed(
            s,
            &["rping", "-s", "-C", "1000", "-v"],
            &["rping", "-c", "-a", ADDR[s], "-C", "1000", "-v"],
        );
        both_ok("rping", &so, &co);
        eprintln!("rping -C 1000 -v, server on host {s}: client ran {took:?}");
        let out = stdout(&co);
        let pings = out
            .lines()
            .filter(|l| l.starts_with("ping data: rdma-ping-"))
            .count();
        assert_eq!(pings, 1000, "{out}");
        assert!(out.contains("rdma-ping-999: "), "{out}");
        assert!(
            stdout(&so).contains("server ping data: rdma-ping-999"),
            "{}",
            text(&so)
        );
    }
}

/// `ucmatose` with ten connections (`-c 10` on both ends), both ways.
#[test]
fn ucmatose() {
    let Some(bin) = ready(&["ucmatose"]) else {
        return;
    };
    let h = Hosts::new(&bin, "ucma", &[]);
    for s in 0..2 {
        let (so, co) = h.pair(
            s,
            &["ucmatose", "-c", "10"],
            &["ucmatose", "-s", ADDR[s], "-c", "10"],
        );
        both_ok("ucmatose", &so, &co);
        for o in [&so, &co] {
            let t = stdout(o);
            assert!(
                t.contains("data transfers complete") && t.contains("return status 0"),
                "{t}"
            );
        }
    }
}

/// `udaddy`: UD through SIDR, both ways.
#[test]
fn udaddy() {
    let Some(bin) = ready(&["udaddy"]) else {
        return;
    };
    let h = Hosts::new(&bin, "udad", &[]);
    for s in 0..2 {
        let (so, co) = h.pair(s, &["udaddy"], &["udaddy", "-s", ADDR[s]]);
        both_ok("udaddy", &so, &co);
        for o in [&so, &co] {
            let t = stdout(o);
            assert!(t.contains("return status 0"), "{t}");
        }
    }
}

/// `rdma_server` / `rdma_client` (synchronous ids from `rdma_create_ep`,
/// `rdma_get_request`), both ways.
#[test]
fn rdma_server_client() {
    let Some(bin) = ready(&["rdma_server", "rdma_client"]) else {
        return;
    };
    let h = Hosts::new(&bin, "rsrv", &[]);
    for s in 0..2 {
        let (so, co) = h.pair(s, &["rdma_server"], &["rdma_client", "-s", ADDR[s]]);
        both_ok("rdma_server/rdma_client", &so, &co);
        assert!(stdout(&so).contains("rdma_server: end 0"), "{}", text(&so));
        assert!(stdout(&co).contains("rdma_client: end 0"), "{}", text(&co));
    }
}

/// `rdma_xserver` / `rdma_xclient` with RC (`-c r`, their default); XRC
/// (`-c x`) does not exist on migros devices and fails cleanly.
#[test]
fn rdma_xserver_xclient() {
    let Some(bin) = ready(&["rdma_xserver", "rdma_xclient"]) else {
        return;
    };
    let h = Hosts::new(&bin, "xsrv", &[]);
    for s in 0..2 {
        let (so, co) = h.pair(
            s,
            &["rdma_xserver", "-c", "r"],
            &["rdma_xclient", "-s", ADDR[s], "-c", "r"],
        );
        both_ok("rdma_xserver/rdma_xclient", &so, &co);
        assert!(stdout(&so).contains("end 0"), "{}", text(&so));
        assert!(stdout(&co).contains("end 0"), "{}", text(&co));
    }
    // XRC: the server cannot make its endpoint and says so, without hanging.
    let o = h.cmd(0, 20, &["rdma_xserver", "-c", "x"]).output().unwrap();
    assert!(
        !o.status.success() && o.status.code() != Some(124),
        "{}",
        text(&o)
    );
}

/// perftest's RDMA CM mode: `ib_send_bw -R`, `ib_write_bw -R`,
/// `ib_read_lat -R`, both ways.
#[test]
fn perftest_rdma_cm() {
    let progs = ["ib_send_bw", "ib_write_bw", "ib_read_lat"];
    let Some(bin) = ready(&progs) else { return };
    let h = Hosts::new(&bin, "perf", &[]);
    for prog in progs {
        for s in 0..2 {
            let (so, co) = h.pair(
                s,
                &[prog, "-R", "-d", "rxe0", "-n", "1000"],
                &[prog, "-R", "-d", "rxe0", "-n", "1000", ADDR[s]],
            );
            both_ok(prog, &so, &co);
            assert!(stdout(&co).contains("#bytes"), "{}", text(&co));
        }
    }
}

/// `cmtime`: every step of 1 and of 100 connections (connect is
/// `rdma_connect` until ESTABLISHED), both ways. The figures are printed,
/// not asserted (speed belongs to benchmarks). A cmtime server serves
/// for ever: only the client has to finish.
#[test]
fn cmtime_connect_figures() {
    let Some(bin) = ready(&["cmtime"]) else {
        return;
    };
    let h = Hosts::new(&bin, "cmti", &[]);
    for n in ["1", "100"] {
        for s in 0..2 {
            let (so, co) =
                h.pair_serving(s, &["cmtime", "-c", n], &["cmtime", "-s", ADDR[s], "-c", n]);
            assert!(
                co.status.success(),
                "cmtime\nserver: {}\nclient: {}",
                text(&so),
                text(&co)
            );
            let out = stdout(&co);
            let line = out
                .lines()
                .find(|l| l.starts_with("connect ") && l.contains(':'))
                .unwrap_or_else(|| panic!("no connect step in\n{out}"));
            eprintln!("cmtime -c {n}, server on host {s}:\n{out}");
            // total ms, max ms, min us, us / conn: the step was timed.
            let figures: Vec<f64> = line
                .split_once(':')
                .map(|(_, f)| {
                    f.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                figures.len() == 4 && figures.iter().all(|f| f.is_finite() && *f > 0.0),
                "connect step: {line}"
            );
        }
    }
}
