//! The verbs of issue 11 through the C API: tests/c/verbs_strict*.c, built
//! with `cc` against the system's `<infiniband/verbs.h>` (as a user's
//! program is; tests/common) and run on the drop-in library with two
//! daemons. Each case checks the good flow and every bad flow against the
//! kernel SoftRoCE's answers (errno, completion status and opcode):
//!
//! - `exports`: `ibv_rate_to_mbps`/`mbps_to_ibv_rate`, the
//!   `ibv_copy_*_from_kern`/`to_kern` helpers against the kernel ABI
//!   headers, `ibv_is_fork_initialized`, `ibv_resolve_eth_l2_from_gid`;
//! - `gid`: the GID table's empty entries and its end;
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

use common::{c_program, Net};

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
