//! Errors a user can act on, reported as librdmacm reports them and never
//! a hang: no device at all (ENODEV: "No RDMA devices were detected"), a
//! connection to a port nobody listens on (REJECTED, status 8: the IB
//! CM's "invalid service ID"), a daemon that dies under a running
//! program (the program stops: device removal or flushed work requests).
//! Needs root and rdmacm-utils (skips without, or fails with
//! `MIGROS_TESTS_REQUIRED=1`: see `migros_test_support::require`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ready, root, spawn, stdout, text, wait_or_kill, Hosts, ADDR};

/// Exited on its own with a failure (`timeout` says 124 when it hung).
fn failed_cleanly(o: &std::process::Output) -> bool {
    !o.status.success() && o.status.code() != Some(124)
}

#[test]
fn no_device_is_enodev() {
    let Some(_) = ready(&["rping", "ucmatose", "udaddy", "rdma_client"]) else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["rping", "-s"][..],
        &["rping", "-c", "-a", "198.18.212.1"],
        &["ucmatose"],
        &["udaddy", "-s", "198.18.212.1"],
        &["rdma_client", "-s", "198.18.212.1"],
    ] {
        let start = Instant::now();
        let o = Command::new("timeout")
            .arg("20")
            .args(args)
            .env("LD_LIBRARY_PATH", root().join("target/ibverbs"))
            .env("MIGROS_SOCKET_DIR", empty.path())
            .output()
            .unwrap();
        assert!(failed_cleanly(&o), "{args:?}: {}", text(&o));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            start.elapsed()
        );
        if args[0] != "rdma_client" {
            let all = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
            assert!(
                all.contains("No RDMA devices were detected"),
                "{args:?}: {all}"
            );
        }
    }
}

#[test]
fn nobody_listening_is_rejected_with_status_8() {
    let Some(bin) = ready(&["rping"]) else { return };
    let h = Hosts::new(&bin, "rej", &[]);
    let start = Instant::now();
    let o = h
        .cmd(
            1,
            30,
            &["rping", "-c", "-a", ADDR[0], "-p", "7999", "-C", "1"],
        )
        .output()
        .unwrap();
    assert!(failed_cleanly(&o), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cma event RDMA_CM_EVENT_REJECTED, error 8"),
        "{}",
        text(&o)
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

/// The daemon of one end is killed while rping runs: the program on that
/// end stops by itself (its device is removed, its work requests are
/// flushed), without hanging. (Its peer only learns of it if it has work
/// in flight, as with any RC peer whose NIC dies: the test stops it.)
#[test]
fn daemon_gone_stops_the_program_on_its_device() {
    let Some(bin) = ready(&["rping"]) else { return };
    for victim in 0..2 {
        let mut h = Hosts::new(&bin, "gone", &[]);
        let srv = spawn(h.cmd(0, 120, &["rping", "-s", "-C", "0"]));
        std::thread::sleep(Duration::from_millis(700));
        let cli = spawn(h.cmd(1, 120, &["rping", "-c", "-a", ADDR[0], "-C", "0"]));
        std::thread::sleep(Duration::from_secs(2));
        h.kill_daemon(victim);
        let killed = Instant::now();
        let (mine, peer) = if victim == 0 { (srv, cli) } else { (cli, srv) };
        let o = wait_or_kill(mine, Duration::from_secs(30));
        let took = killed.elapsed();
        let _ = wait_or_kill(peer, Duration::from_millis(100));
        assert!(failed_cleanly(&o), "victim {victim}: {}", text(&o));
        assert!(took < Duration::from_secs(30), "victim {victim}: {took:?}");
        eprintln!(
            "daemon {victim} killed: its rping ended after {took:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
}

/// A process that dies with a connection: its daemon tells the peer (a
/// DREQ when the process's CM connection closes, as the kernel does when a
/// process exits), and the peer's rping stops on DISCONNECTED.
#[test]
fn killed_process_disconnects_its_peer() {
    let Some(bin) = ready(&["rping"]) else { return };
    let h = Hosts::new(&bin, "kill", &[]);
    let srv = spawn(h.cmd(0, 120, &["rping", "-s", "-C", "0"]));
    std::thread::sleep(Duration::from_millis(700));
    let cli = spawn(h.cmd(1, 120, &["rping", "-c", "-a", ADDR[0], "-C", "0"]));
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    let _ = wait_or_kill(srv, Duration::ZERO);
    let o = wait_or_kill(cli, Duration::from_secs(30));
    let took = killed.elapsed();
    // rping stops its loop and exits (with 0, as with the kernel's CM).
    assert_ne!(o.status.code(), Some(124), "hung: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("client DISCONNECT EVENT"), "{}", text(&o));
    assert!(took < Duration::from_secs(30), "{took:?}");
    eprintln!("server killed: the client saw DISCONNECTED and ended after {took:?}");
}
