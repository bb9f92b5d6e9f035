//! The verbs of issue 11 through the C API: tests/c/verbs_strict*.c, built
//! with `cc` against the system's `<infiniband/verbs.h>` (as a user's
//! program is; tests/common) and run on the drop-in library with two
//! daemons. Each case checks the good flow and every bad flow against the
//! kernel SoftRoCE's answers (errno, completion status and opcode):
//!
//! - `exports`: `ibv_rate_to_mbps`/`mbps_to_ibv_rate`, the
//!   `ibv_copy_*_from_kern`/`to_kern` helpers against the kernel ABI
//!   headers, `ibv_is_fork_initialized`, `ibv_resolve_eth_l2_from_gid`;
//! - `gid`: the GID table's empty entries and its end, a loopback
//!   device's one entry;
//! - `gid_port` (its own test, in a network namespace with a veth
//!   interface): the table lists every address of the interface (IPv4
//!   mapped first, then IPv6), `ibv_query_gid`, `ibv_query_gid_ex` and
//!   `ibv_query_gid_table` agree, traffic from GID 0 works and another
//!   GID as the source is EINVAL (address handle and QP); removing the
//!   device's address raises PORT_ERR (the port DOWN), adding it back
//!   PORT_ACTIVE, and traffic flows again;
//! - `ah`: address handles without GRH, on another port, from an empty
//!   source GID;
//! - `cq`: more CQEs than `max_cqe`, a completion vector the device lacks;
//! - `mr`: the access rules of `ibv_reg_mr`;
//! - `post_state`: posting in RESET, INIT and RTR (both APIs);
//! - `bad_wr`: which WR `bad_wr` names when one of a list fails (send,
//!   receive, SRQ receive), and that the ones before it were posted;
//! - `access_flags`: READ, WRITE and atomics the responder's QP does not
//!   allow;
//! - `atomic_write`: `IBV_WR_ATOMIC_WRITE` and `ibv_wr_atomic_write`,
//!   misaligned, and LOCAL_INV of a region's key;
//! - `srq_ex`: `ibv_create_srq_ex` with a CQ, XRC, tag matching, bad masks;
//! - `mw`: type 1 (`ibv_bind_mw`) and type 2 (`IBV_WR_BIND_MW`,
//!   `ibv_wr_bind_mw`) windows, access through them and past their end,
//!   LOCAL_INV, SEND_WITH_INV (the receive's `invalidated_rkey`, and of a
//!   key that cannot be invalidated), bind errors, deregistering a region
//!   a window is bound to;
//! - `iova`: `ibv_reg_mr_iova` with an iova that is not the address;
//! - `resize_cq`: growing with completions waiting, shrinking below them,
//!   past `max_cqe`, an extended CQ, `ibv_modify_cq` (EOPNOTSUPP, as rxe);
//! - `srq`: `ibv_query_srq`, `ibv_modify_srq` (limit, resize, their
//!   refusals), the SRQ limit event, QP_LAST_WQE_REACHED;
//! - `events`: QP_REQ_ERR, QP_ACCESS_ERR, COMM_EST, SQ_DRAINED, EAGAIN;
//! - `solicited`: `ibv_req_notify_cq(cq, 1)` ignores unsolicited
//!   completions;
//! - `queue_full`: a receive queue holds `max_recv_wr` (ENOMEM past it,
//!   room again once one completes);
//! - `wr_ex`: the extended post API (`ibv_wr_start` … `ibv_wr_complete`)
//!   on an RTS QP made with `ibv_create_qp_ex`: SEND, SEND_WITH_IMM,
//!   WRITE from two SGEs, inline SEND, WRITE_WITH_IMM, READ and both
//!   atomics in one batch with every byte checked, an aborted batch, an
//!   unsignaled WR;
//! - `fatal`: IBV_EVENT_QP_FATAL when a region is unmapped under the
//!   daemon and a WRITE into it cannot land, IBV_EVENT_CQ_ERR when a CQ
//!   nobody polls overflows.
//!
//! Needs root and a C compiler with libibverbs-dev (skipped otherwise, or
//! failing with `MIGROS_TESTS_REQUIRED=1`); starts daemons on loopback,
//! so run it under the e2e lock.

mod common;

use std::process::Command;

use common::{c_program, c_program_with, root_dir, spawn_daemon, Net};
use migros_test_support::net::ip;
use migros_test_support::require::program;

const A: (&str, &str) = ("vsA", "127.0.0.171");
const B: (&str, &str) = ("vsB", "127.0.0.172");

const CASES: &[&str] = &[
    "exports",
    "gid",
    "ah",
    "cq",
    "mr",
    "post_state",
    "bad_wr",
    "access_flags",
    "atomic_write",
    "srq_ex",
    "mw",
    "iova",
    "resize_cq",
    "srq",
    "events",
    "solicited",
    "queue_full",
    "wr_ex",
    "fatal",
];

const SOURCES: [&str; 6] = [
    "verbs_strict.c",
    "verbs_strict_device.c",
    "verbs_strict_post.c",
    "verbs_strict_mw.c",
    "verbs_strict_events.c",
    "verbs_strict_ex.c",
];

#[test]
fn every_case_answers_as_the_kernel_softroce() {
    let Some((bin, program)) = c_program("verbs_strict", &SOURCES) else {
        return;
    };
    let exe = program.exe.as_str();
    let net = Net::start(&bin, [A, B], &[]);
    let mut failed = Vec::new();
    for case in CASES {
        let out = net.cmd(&[exe, case, A.0, B.0]).output().expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{case}: {}", stdout.trim());
        if !out.status.success() || !stdout.contains(&format!("{case} ok")) {
            failed.push(format!(
                "{case}: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A network namespace of this test's own; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        Netns(name)
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend(args);
        ip(&all);
    }

    /// `args` run inside the namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn gid_table_and_port_events_of_a_real_interface() {
    let more = vec![program("ip", "iproute2")];
    let Some((bin, program)) = c_program_with("verbs_strict", &SOURCES, more) else {
        return;
    };
    let ns = Netns::new(format!("migros-gid-{}", std::process::id()));
    ns.ip(&["link", "set", "lo", "up"]);
    // A veth pair (kernels without the dummy module have veth, which
    // containers need).
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    // Another subnet for the second IPv4 address: deleting the first
    // would take its secondaries with it.
    ns.ip(&["addr", "add", "198.18.77.1/24", "dev", "d0"]);
    ns.ip(&["addr", "add", "198.18.78.1/24", "dev", "d0"]);
    ns.ip(&["addr", "add", "2001:db8:77::1/64", "dev", "d0", "nodad"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut daemon = spawn_daemon(
        ns.cmd(&[bin.to_str().expect("utf-8 path")]),
        dir.path(),
        "gidM",
        "198.18.77.1",
    );
    let out = ns
        .cmd(&["timeout", "90", program.exe.as_str(), "gid_port", "gidM"])
        .arg("198.18.77.1/24 dev d0")
        .env("LD_LIBRARY_PATH", root_dir().join("target/ibverbs"))
        .env("MIGROS_SOCKET_DIR", dir.path())
        .output()
        .expect("run");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("gid_port ok"),
        "{}\n{stdout}{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("gidM.log")).unwrap_or_default()
    );
}
