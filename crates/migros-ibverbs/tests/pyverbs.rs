//! Debian 12's python3-pyverbs (rdma-core's Python bindings, Cython
//! modules linked against libibverbs.so.1 and librdmacm.so.1) on the
//! drop-in library: every pyverbs module loads (each version node and
//! symbol it imports is there), and tests/pyverbs_rc.py runs an RC
//! connection between two daemons (SEND/RECV, RDMA WRITE, a completion
//! event, the unsupported verbs failing with EOPNOTSUPP). Needs root and
//! python3-pyverbs (scripts/setup.sh installs it; without them the test
//! skips, or fails with `MIGROS_TESTS_REQUIRED=1`).

mod common;

use std::path::Path;

use common::{ready, Net};
use migros_test_support::require::file;

const A: (&str, &str) = ("devA", "127.0.0.161");
const B: (&str, &str) = ("devB", "127.0.0.162");
const PYVERBS: &str = "/usr/lib/python3/dist-packages/pyverbs";

#[test]
fn pyverbs_loads_and_runs_rc() {
    let pyverbs = file(
        Path::new(PYVERBS).join("__init__.py"),
        "python3-pyverbs: scripts/setup.sh installs it",
    );
    let Some(bin) = ready(&["python3"], vec![pyverbs]) else {
        return;
    };
    let net = Net::start(&bin, [A, B], &[]);

    // Every module, the provider ones (stub libmlx5/libefa) included:
    // Python loads them with RTLD_NOW, so a missing symbol or version node
    // is an ImportError here.
    let modules = "pyverbs.device pyverbs.pd pyverbs.mr pyverbs.cq pyverbs.qp pyverbs.srq \
        pyverbs.addr pyverbs.wr pyverbs.xrcd pyverbs.flow pyverbs.wq pyverbs.fork \
        pyverbs.cmid pyverbs.dmabuf pyverbs.spec pyverbs.providers.mlx5.mlx5dv \
        pyverbs.providers.mlx5.dr_domain pyverbs.providers.mlx5.dr_action \
        pyverbs.providers.mlx5.mlx5_vfio pyverbs.providers.efa.efadv";
    let script = format!(
        "import importlib\nfor m in '{modules}'.split(): importlib.import_module(m)\n\
         import pyverbs.fork as f\nprint('imported', f.is_fork_initialized())\n"
    );
    let out = net
        .cmd(&["/usr/bin/python3", "-c", &script])
        .output()
        .expect("python3");
    let stdout = common::check(&["python3", "-c", "import …"], &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("no version information"),
        "loader warnings:\n{stderr}"
    );
    // IBV_FORK_UNNEEDED
    assert!(stdout.contains("imported 2"), "{stdout}");

    let rc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyverbs_rc.py");
    let out = net.run(&[
        "/usr/bin/python3",
        rc.to_str().expect("utf-8 path"),
        A.0,
        B.0,
    ]);
    eprintln!("{out}");
    for want in [
        "send/recv ok",
        "rdma write ok",
        "completion event ok",
        "ibv_alloc_mw ok",
        "ibv_open_xrcd: EOPNOTSUPP",
        "pyverbs ok",
    ] {
        assert!(out.contains(want), "no {want:?} in\n{out}");
    }
}
