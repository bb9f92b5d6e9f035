//! Completion channels and SRQ flushes through the C API:
//! tests/c/semantics.c, built with `cc` against the system's
//! `<infiniband/verbs.h>` (tests/common) and run on the drop-in library
//! with two daemons.
//!
//! - `events`: three CQs share a channel. Two armed CQs that get a
//!   completion give exactly one event each (right CQ and `cq_context`),
//!   and the channel's descriptor stays readable until both are taken;
//!   CQs disarmed by their event give none; a CQ destroyed with one event
//!   unacknowledged and one not yet taken is destroyed at once and its
//!   event is never returned; with the program's `O_NONBLOCK` on the
//!   channel's descriptor `ibv_get_cq_event` fails with EAGAIN when no
//!   event waits; `ibv_destroy_comp_channel` fails with EBUSY
//!   while CQs use the channel (`refcnt` counts them).
//! - `srq`: two QPs share an SRQ with eight receives, three are consumed,
//!   then the test kills the daemon: the other five come out of the
//!   receive CQ as `IBV_WC_WR_FLUSH_ERR` receives in posting order, once;
//!   then polling and posting fail.
//!
//! Needs root and a C compiler with libibverbs-dev (scripts/setup.sh
//! installs it; without them the test skips, or fails with
//! `MIGROS_TESTS_REQUIRED=1`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{c_program, Net};

const A: (&str, &str) = ("devA", "127.0.0.163");
const B: (&str, &str) = ("devB", "127.0.0.164");

#[test]
fn channel_events_and_srq_flush() {
    let Some((bin, program)) = c_program("semantics", &["semantics.c"]) else {
        return;
    };
    let exe = program.exe.as_str();
    let mut net = Net::start(&bin, [A, B], &[]);

    let out = net.run(&[exe, "events", A.0, B.0]);
    assert!(out.contains("events ok"), "{out}");

    let mut child = net
        .cmd(&[exe, "srq", A.0, B.0])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn semantics srq");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("read stdout");
        seen += &line;
        seen.push('\n');
        if line == "ready" {
            break;
        }
    }
    assert!(seen.ends_with("ready\n"), "no ready:\n{seen}");
    // devA's daemon dies with the SRQ's receives outstanding.
    net.daemons[0].kill().expect("kill devA's daemon");
    let _ = net.daemons[0].wait();
    for line in lines {
        seen += &line.expect("read stdout");
        seen.push('\n');
    }
    let status = child.wait().expect("wait semantics srq");
    assert!(
        status.success() && seen.contains("srq flush ok"),
        "{status}:\n{seen}"
    );
}
