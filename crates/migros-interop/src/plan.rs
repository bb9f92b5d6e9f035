//! The cases one VM boot runs, written as the plan `scripts/vm/guest.sh`
//! reads: `NAME SERVER CLIENT PROGRAM ARGS…` per case, `netem …` lines
//! between them.

use std::fmt::Write as _;

/// Where a program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The kernel's SoftRoCE device `rxk` (198.18.10.1, GID index 1).
    Kernel,
    /// migros device `rxe0` (198.18.10.2, GID index 0).
    Migros,
    /// A second migros device `rxe1` (198.18.10.3), for migros↔migros.
    Migros2,
}

impl Side {
    fn code(self) -> char {
        match self {
            Side::Kernel => 'k',
            Side::Migros => 'm',
            Side::Migros2 => 'n',
        }
    }
}

/// What a case is for: its result is judged accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A clean link: the programs succeed, no error counter moves on either
    /// side, no datagram goes missing.
    Clean,
    /// `tc netem` loss and reordering on the veth: the programs succeed;
    /// retransmissions are expected.
    Lossy,
    /// A figure for the side-by-side table (kernel↔kernel, kernel↔migros,
    /// migros↔migros): it must succeed, its figures are reported.
    Figure,
    /// An error path (`rdma_check`): the programs see the errors they
    /// provoke (they check that themselves), these counters move by as
    /// much as they say, and nothing else moves but the kernel's timer
    /// retries.
    Expect(&'static [Expected]),
    /// What a kernel peer does when migros pauses (a migration's pause
    /// NAK and RESUME handshake): reported, not judged.
    Observe,
}

/// A counter an [`Kind::Expect`] case must move (kernel or migros, by its
/// name), by at least `min` and at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub counter: &'static str,
    pub min: i64,
    pub max: i64,
}

const fn e(counter: &'static str, min: i64, max: i64) -> Expected {
    Expected { counter, min, max }
}

/// One program pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    pub server: Side,
    pub client: Side,
    pub program: &'static str,
    pub args: Vec<&'static str>,
    pub kind: Kind,
    /// Datagrams the program may send that its peer never takes because it
    /// has already finished (a clean case's "lost" may go up to this), or
    /// that the receiving device drops before counting them (a UD datagram
    /// with the wrong Q_Key at the kernel).
    pub overshoot: i64,
}

/// A line of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Run(Case),
    /// `tc qdisc replace … netem ARGS` on both ends of the veth.
    Netem(Vec<&'static str>),
    NetemOff,
    /// The next case pauses the sessions of migros device rxe0 `after`
    /// seconds into it for `seconds` (`interop-pause`), then resumes them.
    Pause {
        after: u32,
        seconds: u32,
    },
}

/// The programs of issue 10 and their arguments. Iteration counts are cut
/// from the programs' defaults: TCG runs a fraction of the host's speed.
/// perftest's ACK timeout is raised from 14 (67 ms) to 18 (1.07 s) with
/// `-u`: under TCG the kernel's receive path stalls for more than 67 ms at
/// times (kernel↔kernel runs see timeouts too), and on a clean link a
/// retransmission must mean a protocol fault, not a slow emulator. The
/// ibv_*_pingpong programs have no such option (14).
const PROGRAMS: &[(&str, &str, &[&str])] = &[
    // (case name, program, arguments)
    ("rc_pingpong", "ibv_rc_pingpong", &["-n", "200", "-c"]),
    (
        "rc_pingpong_64k",
        "ibv_rc_pingpong",
        &["-s", "65536", "-n", "50", "-c"],
    ),
    (
        "rc_pingpong_m1024",
        "ibv_rc_pingpong",
        &["-m", "1024", "-s", "8192", "-n", "100", "-c"],
    ),
    (
        "rc_pingpong_m4096",
        "ibv_rc_pingpong",
        &["-m", "4096", "-s", "8192", "-n", "100", "-c"],
    ),
    ("uc_pingpong", "ibv_uc_pingpong", &["-n", "200", "-c"]),
    ("ud_pingpong", "ibv_ud_pingpong", &["-n", "200", "-c"]),
    ("srq_pingpong", "ibv_srq_pingpong", &["-n", "100", "-c"]),
    ("send_bw", "ib_send_bw", &["-u", "18", "-n", "500"]),
    ("write_bw", "ib_write_bw", &["-u", "18", "-n", "500"]),
    ("read_bw", "ib_read_bw", &["-u", "18", "-n", "500"]),
    ("atomic_bw", "ib_atomic_bw", &["-u", "18", "-n", "500"]),
    (
        "atomic_bw_b",
        "ib_atomic_bw",
        &["-u", "18", "-b", "-n", "500"],
    ),
    ("send_lat", "ib_send_lat", &["-u", "18", "-n", "200"]),
    ("write_lat", "ib_write_lat", &["-u", "18", "-n", "200"]),
    ("read_lat", "ib_read_lat", &["-u", "18", "-n", "200"]),
    ("atomic_lat", "ib_atomic_lat", &["-u", "18", "-n", "200"]),
];

/// ibv_srq_pingpong posts a send on each of its 16 QPs whenever the QP's
/// last exchange finished and fewer than `-n` sends have *completed*, so at
/// the end up to 15 sends more than the peer takes are in flight; the peer,
/// done, has destroyed its QPs and drops them (the kernel's `rcvd_pkts`
/// never counts them, migros counts them as `rx_unknown_qp`). 15 messages
/// of 4096 bytes at MTU 1024.
pub const SRQ_PINGPONG_OVERSHOOT: i64 = 15 * 4;

/// Each program with the kernel as server and migros as client, then the
/// other way round.
pub fn matrix() -> Vec<Step> {
    let mut steps = Vec::new();
    for &(name, program, args) in PROGRAMS {
        let overshoot = if program == "ibv_srq_pingpong" {
            SRQ_PINGPONG_OVERSHOOT
        } else {
            0
        };
        push_both_ways(&mut steps, name, program, args, |_| {
            (Kind::Clean, overshoot)
        });
    }
    steps
}

/// Programs that connect through the RDMA CM (librdmacm on both sides: the
/// kernel's `rdma_ucm` and the IB CM on QP1 against migros' drop-in
/// library and its daemon's CM), each side as server and as client:
/// rdmacm-utils' rping (every ping verified), ucmatose (4 connections),
/// udaddy (UD, SIDR), perftest's `-R`, and cmtime (10 connections, each
/// step timed: `connect` is `rdma_connect` until ESTABLISHED; its server
/// serves for ever and is stopped once the client is done). (`ib_write_bw -R` and
/// `ib_read_lat -R` connect exactly as `ib_send_bw -R` does; they run
/// between migros devices in migros-rdmacm's tests, not here, where each
/// case costs seconds of the VM's budget.)
const RDMA_CM_PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("cm_rping", "rping", &["-C", "100", "-v"]),
    ("cm_ucmatose", "ucmatose", &["-c", "4"]),
    ("cm_udaddy", "udaddy", &[]),
    ("cm_send_bw", "ib_send_bw", &["-R", "-u", "18", "-n", "200"]),
    ("cm_cmtime", "cmtime", &["-c", "10"]),
];

/// The RDMA CM programs, kernel as server then migros as server, on a
/// clean link.
pub fn rdma_cm() -> Vec<Step> {
    let mut steps = Vec::new();
    for &(name, program, args) in RDMA_CM_PROGRAMS {
        push_both_ways(&mut steps, name, program, args, |_| (Kind::Clean, 0));
    }
    steps
}

/// Transfers across a faulty link, both directions. First reordering and
/// duplication without loss: `ibv_rc_pingpong -c` checks every received
/// byte while both sides NAK and resend. (Not with loss: when the last ACK
/// of a pingpong is lost its peer has already exited and destroyed the QP,
/// so the requester retries for ever (rxe takes retry_cnt 7 as infinite)
/// or fails; that is the program's end, not the protocol.) Then 1% loss as
/// well, with perftest's bandwidth programs, which end with a TCP barrier
/// after every completion.
pub fn lossy() -> Vec<Step> {
    let mut steps = vec![Step::Netem(vec![
        "delay",
        "1ms",
        "reorder",
        "25%",
        "duplicate",
        "2%",
    ])];
    push_both_ways(
        &mut steps,
        "reorder_rc_pingpong_64k",
        "ibv_rc_pingpong",
        &["-s", "65536", "-n", "10", "-c"],
        |_| (Kind::Lossy, 0),
    );
    steps.push(Step::Netem(vec![
        "delay",
        "1ms",
        "reorder",
        "10%",
        "loss",
        "1%",
        "duplicate",
        "1%",
    ]));
    let programs: &[(&str, &str, &[&str])] = &[
        ("loss_send_bw", "ib_send_bw", &["-n", "100"]),
        ("loss_write_bw", "ib_write_bw", &["-n", "100"]),
        ("loss_read_bw", "ib_read_bw", &["-n", "100"]),
        // Every byte and atomic result checked while requests and
        // responses are lost, duplicated and reordered: duplicate READs
        // re-executed, duplicate atomics answered from the replay cache,
        // never executed twice. The 67 ms ACK timeout (14) keeps lost
        // tails short.
        (
            "loss_check_bytes",
            RDMA_CHECK,
            &["-u", "14", "-n", "3", "bytes"],
        ),
    ];
    for &(name, program, args) in programs {
        push_both_ways(&mut steps, name, program, args, |_| (Kind::Lossy, 0));
    }
    steps.push(Step::NetemOff);
    steps
}

/// The test's own C program (`c/rdma_check*.c`, built by
/// `scripts/vm/run.sh`), the same binary on both sides: on the kernel's
/// device with Debian's libibverbs, on migros' with the drop-in one.
pub const RDMA_CHECK: &str = "rdma_check";

/// What `rdma_check` checks, each scenario with the kernel as server then
/// migros as server (the server holds the memory and answers; see the
/// program's header comment):
/// - `bytes`: RDMA WRITE (and with immediate), READ of sizes around the
///   path MTU (READ responses only, first, middle, last), fetch-and-add and
///   compare-and-swap, PSNs across the 24-bit wrap; every byte and every
///   atomic's result checked on both ends. A clean case.
/// - `rnr`: a one-packet SEND before the receive is posted: RNR NAKs until
///   it is (rnr_retry 7), then rnr_retry 0 fails the WR with
///   RNR_RETRY_EXC_ERR. The responder counts the RNR NAKs it sent, the
///   requester those it received (the kernel: `send_rnr_err`,
///   `rcvd_rnr_err`, and `retry_rnr_exceeded_err` for the rnr_retry 0
///   failure); migros counts its resends after each as `retransmits`.
/// - `access`: five remote access errors (bad rkey, MR without REMOTE_WRITE,
///   REMOTE_READ or REMOTE_ATOMIC, a READ past the MR's end): one NAK each
///   (the kernel has no counter of the NAKs it sends or receives).
/// - `invalid`: a WRITE, a READ and an atomic to a QP whose access flags
///   lack the right (invalid request), a SEND longer than the receive
///   buffer (remote operational error, as rxe 6.1 answers it): one NAK
///   each.
/// - `ud`: UD with the right Q_Key, a wrong one and 0x80000000, the GRH
///   area checked, an answer through `ibv_create_ah_from_wc`. The wrong
///   Q_Key's datagram is dropped: by migros counted as `rx_dropped`, by
///   the kernel before it counts it as received (one "lost" to the
///   kernel). 0x80000000 stands for the sending QP's Q_Key: migros sends
///   that (the specification), rxe 6.1 sends 0x80000000 as it is, which
///   migros drops too (`rx_dropped` 2).
pub fn checks() -> Vec<Step> {
    // (scenario, expected with the kernel as server, with migros as
    // server, datagrams the server may drop uncounted)
    const SCENARIOS: [(&str, &[Expected], &[Expected], i64); 4] = [
        (
            "rnr",
            &[
                e("send_rnr_err", 1, 100),
                e("rnr_naks_received", 1, 100),
                e("retransmits", 1, 100),
            ],
            &[
                e("rnr_naks_sent", 1, 100),
                e("rcvd_rnr_err", 1, 100),
                e("retry_rnr_exceeded_err", 1, 1),
            ],
            // With the kernel as server, one of migros' RNR retransmissions
            // may reach it after its program destroyed the QP (seen once
            // in 3 runs): the kernel drops it without counting it.
            1,
        ),
        (
            "access",
            &[e("naks_received", 5, 5)],
            &[e("naks_sent", 5, 5)],
            0,
        ),
        (
            "invalid",
            &[e("naks_received", 4, 4)],
            &[e("naks_sent", 4, 4)],
            0,
        ),
        ("ud", &[], &[e("rx_dropped", 2, 2)], 1),
    ];
    let scenarios = [("bytes", None, None, 0)]
        .into_iter()
        .chain(SCENARIOS.map(|(s, k, m, o)| (s, Some(k), Some(m), o)));
    let mut steps = Vec::new();
    for (scenario, kernel_server, migros_server, overshoot) in scenarios {
        let name = format!("check_{scenario}");
        push_both_ways(&mut steps, &name, RDMA_CHECK, &[scenario], |server| {
            if server == Side::Kernel {
                (kernel_server.map_or(Kind::Clean, Kind::Expect), overshoot)
            } else {
                (migros_server.map_or(Kind::Clean, Kind::Expect), 0)
            }
        });
    }
    steps
}

/// A case with the kernel as server (`NAME.k_m`), then with migros as
/// server (`NAME.m_k`); `judge` gives each its kind and overshoot from its
/// server's side.
fn push_both_ways(
    steps: &mut Vec<Step>,
    name: &str,
    program: &'static str,
    args: &[&'static str],
    judge: impl Fn(Side) -> (Kind, i64),
) {
    for (server, client, dir) in [
        (Side::Kernel, Side::Migros, "k_m"),
        (Side::Migros, Side::Kernel, "m_k"),
    ] {
        let (kind, overshoot) = judge(server);
        steps.push(Step::Run(Case {
            name: format!("{name}.{dir}"),
            server,
            client,
            program,
            args: args.to_vec(),
            kind,
            overshoot,
        }));
    }
}

/// `ib_write_bw -s 65536` and `ib_send_lat -s 64` at their default
/// iteration counts, kernel↔kernel (one device, the kernel's loopback),
/// kernel↔migros and migros↔migros, in one boot so they compare.
pub fn figures() -> Vec<Step> {
    let mut steps = Vec::new();
    for (program, args) in [
        ("ib_write_bw", vec!["-s", "65536"]),
        ("ib_send_lat", vec!["-s", "64"]),
    ] {
        for (server, client, dir) in [
            (Side::Kernel, Side::Kernel, "k_k"),
            (Side::Kernel, Side::Migros, "k_m"),
            (Side::Migros, Side::Migros2, "m_n"),
        ] {
            steps.push(Step::Run(Case {
                name: format!("fig_{}.{dir}", program.trim_start_matches("ib_")),
                server,
                client,
                program,
                args: args.clone(),
                kind: Kind::Figure,
                overshoot: 0,
            }));
        }
    }
    steps
}

/// A migration's pause seen by an unmodified kernel peer: migros device
/// rxe0 pauses the sessions of its program (as a checkpoint's source daemon
/// does, answering requests with the pause NAK) 2 s into an `ib_send_bw`
/// for 2 s, then resumes them (the RESUME handshake), with migros as
/// receiver (the kernel's SENDs meet the pause NAK) and as sender (the
/// kernel gets RESUME).
pub fn pauses() -> Vec<Step> {
    let mut steps = Vec::new();
    for (server, client, dir) in [
        (Side::Migros, Side::Kernel, "m_k"),
        (Side::Kernel, Side::Migros, "k_m"),
    ] {
        steps.push(Step::Pause {
            after: 2,
            seconds: 2,
        });
        steps.push(Step::Run(Case {
            name: format!("pause_send_bw.{dir}"),
            server,
            client,
            program: "ib_send_bw",
            args: vec!["-u", "18", "-n", "1500"],
            kind: Kind::Observe,
            overshoot: 0,
        }));
    }
    steps
}

/// The plan file's text.
pub fn render(steps: &[Step]) -> String {
    let mut s = String::new();
    for step in steps {
        match step {
            Step::Run(c) => {
                let _ = write!(
                    s,
                    "{} {} {} {}",
                    c.name,
                    c.server.code(),
                    c.client.code(),
                    c.program
                );
                for a in &c.args {
                    let _ = write!(s, " {a}");
                }
                s.push('\n');
            }
            Step::Netem(args) => {
                s.push_str("netem");
                for a in args {
                    let _ = write!(s, " {a}");
                }
                s.push('\n');
            }
            Step::NetemOff => s.push_str("netem off\n"),
            Step::Pause { after, seconds } => {
                let _ = writeln!(s, "pause {after} {seconds}");
            }
        }
    }
    s
}

/// The cases of `steps`, in order.
pub fn cases(steps: &[Step]) -> impl Iterator<Item = &Case> {
    steps.iter().filter_map(|s| match s {
        Step::Run(c) => Some(c),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each program of `programs` has a case `NAME.k_m` and `NAME.m_k`.
    fn assert_both_ways(steps: &[Step], programs: &[(&str, &str, &[&str])]) {
        for &(name, _, _) in programs {
            for dir in ["k_m", "m_k"] {
                assert!(
                    cases(steps).any(|c| c.name == format!("{name}.{dir}")),
                    "{name}.{dir}"
                );
            }
        }
    }

    #[test]
    fn every_program_runs_both_ways() {
        assert_both_ways(&matrix(), PROGRAMS);
    }

    #[test]
    fn every_rdma_cm_program_runs_both_ways() {
        let steps = rdma_cm();
        assert_both_ways(&steps, RDMA_CM_PROGRAMS);
        let text = render(&steps);
        assert!(text.contains("\ncm_send_bw.m_k m k ib_send_bw -R -u 18 -n 200\n"));
    }

    #[test]
    fn names_are_unique_and_plan_lines_parse() {
        let mut steps = matrix();
        steps.extend(rdma_cm());
        steps.extend(checks());
        steps.extend(lossy());
        steps.extend(figures());
        steps.extend(pauses());
        let mut names: Vec<_> = cases(&steps).map(|c| c.name.clone()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        let text = render(&steps);
        assert!(text.starts_with("rc_pingpong.k_m k m ibv_rc_pingpong -n 200 -c\n"));
        assert!(text.contains("\nnetem delay 1ms reorder 10% loss 1% duplicate 1%\n"));
        assert!(text.contains("\nnetem delay 1ms reorder 25% duplicate 2%\n"));
        assert!(text.contains("\nnetem off\n"));
        assert!(text.contains("\nfig_write_bw.k_k k k ib_write_bw -s 65536\n"));
        assert!(text.contains("\ncheck_rnr.m_k m k rdma_check rnr\n"));
        let kind = |name: &str| cases(&steps).find(|c| c.name == name).unwrap().kind;
        assert_eq!(kind("check_bytes.k_m"), Kind::Clean);
        assert!(matches!(kind("check_rnr.m_k"),
            Kind::Expect(e) if e.iter().any(|e| e.counter == "retry_rnr_exceeded_err")));
        assert!(text.contains("\npause 2 2\npause_send_bw.m_k m k ib_send_bw -u 18 -n 1500\n"));
        assert!(text.contains("\nloss_check_bytes.k_m k m rdma_check -u 14 -n 3 bytes\n"));
    }
}
