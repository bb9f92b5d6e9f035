//! The library's ABI without any device: every export of `exports.txt`
//! is bound to its version node (`objdump -T` shows `RDMACM_1.0
//! rdma_connect`, not `Base`); every function Debian's own librdmacm
//! exports is there with the same node; the library needs
//! `libibverbs.so.1` with versioned references; and every Debian program
//! that links librdmacm loads it without the loader complaining. Needs
//! objdump (binutils), rdmacm-utils and perftest (no root, no daemon).

use std::path::{Path, PathBuf};
use std::process::Command;

use migros_test_support::daemon::{script_once, workspace_root};
use migros_test_support::require::{file, program, require};
use migros_test_support::symbols::defined_functions;

fn root() -> PathBuf {
    workspace_root()
}

/// Debian's librdmacm (rdmacm-utils brings it).
const DEBIAN: &str = "/usr/lib/x86_64-linux-gnu/librdmacm.so.1";

#[test]
fn exports_match_rdma_core_v44() {
    if !require([
        program("objdump", "binutils"),
        file(DEBIAN, "rdmacm-utils: scripts/setup.sh"),
        script_once("ibverbs.sh"),
    ]) {
        return;
    }
    let lib = root().join("target/ibverbs/librdmacm.so.1");
    let ours = defined_functions(&lib).expect("objdump runs");

    let list = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("exports.txt"))
        .expect("exports.txt");
    let mut n = 0;
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let mut w = line.split_whitespace();
        let Some(node) = w.next() else { continue };
        for sym in w {
            assert_eq!(ours.get(sym).map(String::as_str), Some(node), "{sym}");
            n += 1;
        }
    }
    assert!(n >= 68, "only {n} exports listed");

    let theirs = defined_functions(Path::new(DEBIAN)).expect("objdump runs");
    for (sym, node) in &theirs {
        assert_eq!(ours.get(sym), Some(node), "Debian's {sym}@{node}");
    }
    assert_eq!(ours.len(), theirs.len(), "extra exports: {ours:?}");
    eprintln!(
        "{} exports, the same as Debian's librdmacm.so.1",
        ours.len()
    );

    let dynamic = Command::new("objdump")
        .arg("-p")
        .arg(&lib)
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains("NEEDED               libibverbs.so.1"),
        "{dynamic}"
    );
    assert!(
        dynamic.contains("SONAME               librdmacm.so.1"),
        "{dynamic}"
    );
    let syms = Command::new("objdump")
        .arg("-T")
        .arg(&lib)
        .output()
        .unwrap();
    let syms = String::from_utf8_lossy(&syms.stdout);
    assert!(syms.contains("(IBVERBS_1.1) ibv_modify_qp"), "{syms}");
}

#[test]
fn debian_programs_load_it() {
    // rdmacm-utils' programs and perftest's that link librdmacm.
    let progs = [
        "rping",
        "ucmatose",
        "udaddy",
        "mckey",
        "rdma_server",
        "rdma_client",
        "rdma_xserver",
        "rdma_xclient",
        "cmtime",
        "rstream",
        "riostream",
        "udpong",
        "rcopy",
        "ib_send_bw",
        "ib_write_bw",
        "ib_read_lat",
    ];
    let mut checks: Vec<_> = progs
        .iter()
        .map(|p| {
            file(
                Path::new("/usr/bin").join(p),
                "rdmacm-utils and perftest: scripts/setup.sh",
            )
        })
        .collect();
    checks.push(script_once("ibverbs.sh"));
    if !require(checks) {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let mut ran = 0;
    for prog in progs {
        let path = Path::new("/usr/bin").join(prog);
        let out = Command::new("timeout")
            .arg("10")
            .arg(&path)
            .arg("-h")
            .env("LD_LIBRARY_PATH", root().join("target/ibverbs"))
            .env("MIGROS_SOCKET_DIR", sockets.path())
            .output()
            .expect("run program");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for bad in [
            "symbol lookup error",
            "not found",
            "no version information",
            "error while loading",
        ] {
            assert!(!stderr.contains(bad), "{prog}: {stderr}");
        }
        ran += 1;
    }
    eprintln!("{ran} programs loaded librdmacm.so.1 without loader errors");
}
