//! The companion stubs (libmlx5.so.1, libefa.so.1, librdmacm.so.1 in
//! target/ibverbs, made by scripts/ibverbs.sh from stubs/*.txt) carry the
//! real libraries' version nodes: `objdump -T` shows every listed function
//! bound to its node (`MLX5_1.3 mlx5dv_create_qp`, not `Base`), and the
//! Debian programs that load them (perftest, ibverbs-utils) start without
//! the loader's "no version information available" warning. Needs no
//! daemon and no root; programs that are not installed are left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn build() {
    let status = Command::new(root().join("scripts/ibverbs.sh"))
        .status()
        .expect("run scripts/ibverbs.sh");
    assert!(status.success(), "scripts/ibverbs.sh failed");
}

/// symbol → version node of a library's defined functions.
fn bound(lib: &Path) -> Option<BTreeMap<String, String>> {
    let out = Command::new("objdump").arg("-T").arg(lib).output().ok()?;
    assert!(out.status.success(), "objdump -T {}", lib.display());
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" DF .text"))
            .filter_map(|l| {
                let mut w = l.split_whitespace().rev();
                let sym = w.next()?.to_string();
                Some((sym, w.next()?.to_string()))
            })
            .collect(),
    )
}

#[test]
fn stubs_carry_the_real_version_nodes() {
    build();
    let dir = root().join("target/ibverbs");
    let stubs = Path::new(env!("CARGO_MANIFEST_DIR")).join("stubs");
    for (lib, list) in [
        ("libmlx5.so.1", "mlx5.txt"),
        ("libefa.so.1", "efa.txt"),
        ("librdmacm.so.1", "rdmacm.txt"),
    ] {
        let Some(bound) = bound(&dir.join(lib)) else {
            eprintln!("objdump missing: version check of {lib} skipped");
            continue;
        };
        let text = std::fs::read_to_string(stubs.join(list)).expect("stub list");
        let mut n = 0;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(node) = words.next() else { continue };
            for sym in words {
                let sym = sym.trim_end_matches(['*', '-', '0']);
                assert_eq!(
                    bound.get(sym).map(String::as_str),
                    Some(node),
                    "{lib}: {sym}"
                );
                n += 1;
            }
        }
        assert!(n > 0, "{list} is empty");
        eprintln!("{lib}: {n} functions bound to their nodes");
    }

    let sockets = tempfile::tempdir().expect("temp dir");
    let mut ran = 0;
    for prog in [
        "ib_send_bw",
        "ib_write_bw",
        "ib_read_lat",
        "ib_atomic_bw",
        "ibv_devices",
        "ibv_devinfo",
    ] {
        let path = Path::new("/usr/bin").join(prog);
        if !path.is_file() {
            continue;
        }
        // --help for perftest; ibv_devices lists the (no) devices.
        let mut cmd = Command::new(&path);
        if prog.starts_with("ib_") {
            cmd.arg("--help");
        }
        let out = cmd
            .env("LD_LIBRARY_PATH", &dir)
            .env("MIGROS_SOCKET_DIR", sockets.path())
            .output()
            .expect("run program");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("no version information") && !stderr.contains("not found"),
            "{prog}:\n{stderr}"
        );
        ran += 1;
    }
    eprintln!("{ran} programs loaded without warnings");
}
