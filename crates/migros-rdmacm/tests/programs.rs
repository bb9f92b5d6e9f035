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
            let mut tries = 0;
            let (so, co) = loop {
                let (so, co) = h.pair(
                    s,
                    &[prog, "-R", "-d", "rxe0", "-n", "1000"],
                    &[prog, "-R", "-d", "rxe0", "-n", "1000", ADDR[s]],
                );
                tries += 1;
                // perftest's own race: its server listens for the test's
                // connection only after their handshake (itself over RDMA
                // CM), so the client's REQ can come first. The REJ
                // (reason 8, invalid service ID) is right, as the kernel's
                // CM does; perftest then retries, and Debian 12's perftest
                // 4.5-0.17 retries with the ids and node array it has just
                // destroyed and freed (rdma_cm_client_connection; fixed
                // upstream in 2025): the client crashes (SIGSEGV in
                // rdma_resolve_addr on a freed id). Once more.
                if tries < 3 && text(&co).contains(REJECTED_BEFORE_LISTEN) {
                    eprintln!(
                        "{prog}, server on host {s}: client connected before the server \
                         listened (REJECTED, 8), client {}; again",
                        co.status
                    );
                    continue;
                }
                break (so, co);
            };
            both_ok(prog, &so, &co);
            assert!(stdout(&co).contains("#bytes"), "{}", text(&co));
        }
    }
}

/// What perftest -R prints when its REQ was rejected because nothing
/// listened on the port yet (IB reason 8, invalid service ID).
const REJECTED_BEFORE_LISTEN: &str = "Event: RDMA_CM_EVENT_REJECTED; error: 8.";

/// What `perftest_rdma_cm` tries again on, made to happen every time: the
/// `ib_write_bw -R` server runs under gdb, which holds its second
/// `rdma_listen` (the first is perftest's handshake connection, the
/// second the test's) for 3 s, so the client's REQ finds nobody listening
/// and is rejected with reason 8, as by the kernel's CM. Debian 12's
/// perftest 4.5-0.17 then crashes in its retry (the use after free
/// described in `perftest_rdma_cm`). Ignored: it needs gdb, which
/// scripts/setup.sh does not install (`cargo test -p migros-rdmacm --test
/// programs -- --ignored perftest_rdma_cm_listen_late`).
#[test]
#[ignore]
fn perftest_rdma_cm_listen_late() {
    use migros_test_support::require;
    if !require::require([require::program("gdb", "apt-get install gdb")]) {
        return;
    }
    let Some(bin) = ready(&["ib_write_bw"]) else {
        return;
    };
    let h = Hosts::new(&bin, "late", &[]);
    let script = h.dir.path().join("late.gdb");
    std::fs::write(
        &script,
        "set breakpoint pending on\nbreak rdma_listen\nignore 1 1\n\
         commands 1\nsilent\nshell sleep 3\ncontinue\nend\nrun\n",
    )
    .expect("gdb script");
    let script = script.to_str().expect("utf-8 path");
    let server = ["gdb", "-batch", "-x", script, "--args", "ib_write_bw"];
    let args = ["-R", "-d", "rxe0", "-n", "1000"];
    let srv = common::spawn(h.cmd(0, 60, &[&server[..], &args[..]].concat()));
    // gdb starts the server, which listens for the handshake.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let co = h
        .cmd(1, 60, &[&["ib_write_bw"], &args[..], &[ADDR[0]]].concat())
        .output()
        .expect("run client");
    let so = common::wait_or_kill(srv, std::time::Duration::from_secs(15));
    let out = text(&co);
    assert!(
        !co.status.success() && out.contains(REJECTED_BEFORE_LISTEN),
        "client: {out}\nserver: {}",
        text(&so)
    );
    eprintln!(
        "ib_write_bw -R, server listening 3 s late: client {}",
        co.status
    );
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
