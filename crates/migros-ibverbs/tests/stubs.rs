//! The companion stubs (libmlx5.so.1, libefa.so.1 in target/ibverbs,
//! made by scripts/ibverbs.sh from stubs/*.txt) carry the
//! real libraries' version nodes: `objdump -T` shows every listed function
//! bound to its node (`MLX5_1.3 mlx5dv_create_qp`, not `Base`), and the
//! Debian programs that load them (perftest, ibverbs-utils) start without
//! the loader's "no version information available" warning. Needs no
//! daemon and no root, but objdump, perftest and ibverbs-utils (skips
//! without them, or fails with `MIGROS_TESTS_REQUIRED=1`).

use std::path::Path;
use std::process::Command;

use migros_test_support::daemon::{script_once, workspace_root as root};
use migros_test_support::require::{file, program, require};
use migros_test_support::symbols::defined_functions;

/// The Debian programs that load the stubs.
const PROGRAMS: [&str; 6] = [
    "ib_send_bw",
    "ib_write_bw",
    "ib_read_lat",
    "ib_atomic_bw",
    "ibv_devices",
    "ibv_devinfo",
];

#[test]
fn stubs_carry_the_real_version_nodes() {
    let mut checks = vec![program("objdump", "binutils")];
    for p in PROGRAMS {
        checks.push(file(
            Path::new("/usr/bin").join(p),
            "perftest and ibverbs-utils: scripts/setup.sh",
        ));
    }
    checks.push(script_once("ibverbs.sh"));
    if !require(checks) {
        return;
    }
    let dir = root().join("target/ibverbs");
    let stubs = Path::new(env!("CARGO_MANIFEST_DIR")).join("stubs");
    for (lib, list) in [("libmlx5.so.1", "mlx5.txt"), ("libefa.so.1", "efa.txt")] {
        let bound = defined_functions(&dir.join(lib)).expect("objdump runs");
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
    for prog in PROGRAMS {
        let path = Path::new("/usr/bin").join(prog);
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
    assert_eq!(ran, PROGRAMS.len());
    eprintln!("{ran} programs loaded without warnings");
}

/// Debian's libraries of the HPC stack that link the verbs libraries:
/// UCX's transports, Open MPI's verbs parts, libfabric.
const HPC_LIBS: [&str; 5] = [
    "ucx/libuct_ib.so.0",
    "ucx/libuct_rdmacm.so.0",
    "libmca_common_verbs.so.40",
    "openmpi/lib/openmpi3/mca_btl_openib.so",
    "libfabric.so.1",
];

/// `(node, symbol)` of every function `lib` imports from a node of
/// libibverbs, librdmacm, libmlx5 or libefa (rdma-core's private
/// IBVERBS_PRIVATE_* nodes are the providers', never the applications').
fn imports(lib: &Path) -> Vec<(String, String)> {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(lib)
        .output()
        .expect("objdump runs");
    assert!(out.status.success(), "objdump -T {}", lib.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("*UND*"))
        .filter_map(|l| {
            let mut w = l.split_whitespace().rev();
            let sym = w.next()?.to_string();
            let node = w.next()?.trim_matches(['(', ')']).to_string();
            let ours = ["IBVERBS_", "RDMACM_", "MLX5_", "EFA_"]
                .iter()
                .any(|p| node.starts_with(p))
                && !node.starts_with("IBVERBS_PRIVATE_");
            ours.then_some((node, sym))
        })
        .collect()
}

/// Every function Debian's UCX, Open MPI and libfabric import from the
/// verbs libraries exists in target/ibverbs, bound to the node they ask
/// for: the dynamic loader refuses the whole library otherwise (UCX's
/// libuct_ib then does not load: "version `MLX5_1.11' not found").
#[test]
fn hpc_libraries_find_every_import() {
    let libdir = Path::new("/usr/lib/x86_64-linux-gnu");
    let mut checks = vec![program("objdump", "binutils")];
    for l in HPC_LIBS {
        checks.push(file(
            libdir.join(l),
            "UCX, Open MPI and libfabric (libucx0, openmpi-bin): scripts/setup.sh",
        ));
    }
    checks.push(script_once("ibverbs.sh"));
    if !require(checks) {
        return;
    }
    let dir = root().join("target/ibverbs");
    let mut exported = std::collections::BTreeMap::new();
    for lib in [
        "libibverbs.so.1",
        "librdmacm.so.1",
        "libmlx5.so.1",
        "libefa.so.1",
    ] {
        for (sym, node) in defined_functions(&dir.join(lib)).expect("objdump runs") {
            exported.insert(sym, node);
        }
    }
    let mut missing = Vec::new();
    let mut n = 0;
    for l in HPC_LIBS {
        for (node, sym) in imports(&libdir.join(l)) {
            if exported.get(&sym) != Some(&node) {
                missing.push(format!("{l}: {node} {sym}"));
            }
            n += 1;
        }
    }
    assert!(missing.is_empty(), "missing:\n{}", missing.join("\n"));
    assert!(n > 100, "only {n} imports found");
    eprintln!("{n} imports of {} libraries found", HPC_LIBS.len());
}
