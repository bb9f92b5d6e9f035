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
    /// has already finished (a clean case's "lost" may go up to this).
    pub overshoot: i64,
}

/// A line of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Run(Case),
    /// `tc qdisc replace … netem ARGS` on both ends of the veth.
    Netem(Vec<&'static str>),
    NetemOff,
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
        for (server, client, dir) in [
            (Side::Kernel, Side::Migros, "k_m"),
            (Side::Migros, Side::Kernel, "m_k"),
        ] {
            steps.push(Step::Run(Case {
                name: format!("{name}.{dir}"),
                server,
                client,
                program,
                args: args.to_vec(),
                kind: Kind::Clean,
                overshoot: if program == "ibv_srq_pingpong" {
                    SRQ_PINGPONG_OVERSHOOT
                } else {
                    0
                },
            }));
        }
    }
    steps
}

/// Programs that connect through the RDMA CM (librdmacm on both sides: the
/// kernel's `rdma_ucm` and the IB CM on QP1 against migros' drop-in
/// library and its daemon's CM), each side as server and as client:
/// rdmacm-utils' rping (every ping verified), ucmatose (4 connections),
/// udaddy (UD, SIDR) and perftest's `-R`. (`ib_write_bw -R` and
/// `ib_read_lat -R` connect exactly as `ib_send_bw -R` does; they run
/// between migros devices in migros-rdmacm's tests, not here, where each
/// case costs seconds of the VM's budget.)
const RDMA_CM_PROGRAMS: &[(&str, &str, &[&str])] = &[
    ("cm_rping", "rping", &["-C", "100", "-v"]),
    ("cm_ucmatose", "ucmatose", &["-c", "4"]),
    ("cm_udaddy", "udaddy", &[]),
    ("cm_send_bw", "ib_send_bw", &["-R", "-u", "18", "-n", "200"]),
];

/// The RDMA CM programs, kernel as server then migros as server, on a
/// clean link.
pub fn rdma_cm() -> Vec<Step> {
    let mut steps = Vec::new();
    for &(name, program, args) in RDMA_CM_PROGRAMS {
        for (server, client, dir) in [
            (Side::Kernel, Side::Migros, "k_m"),
            (Side::Migros, Side::Kernel, "m_k"),
        ] {
            steps.push(Step::Run(Case {
                name: format!("{name}.{dir}"),
                server,
                client,
                program,
                args: args.to_vec(),
                kind: Kind::Clean,
                overshoot: 0,
            }));
        }
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
    ];
    for &(name, program, args) in programs {
        push_both_ways(&mut steps, name, program, args);
    }
    steps.push(Step::NetemOff);
    steps
}

/// A lossy case with the kernel as server, then with migros as server.
fn push_both_ways(steps: &mut Vec<Step>, name: &str, program: &'static str, args: &[&'static str]) {
    for (server, client, dir) in [
        (Side::Kernel, Side::Migros, "k_m"),
        (Side::Migros, Side::Kernel, "m_k"),
    ] {
        steps.push(Step::Run(Case {
            name: format!("{name}.{dir}"),
            server,
            client,
            program,
            args: args.to_vec(),
            kind: Kind::Lossy,
            overshoot: 0,
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

    #[test]
    fn every_program_runs_both_ways() {
        let steps = matrix();
        for &(name, _, _) in PROGRAMS {
            for dir in ["k_m", "m_k"] {
                assert!(
                    cases(&steps).any(|c| c.name == format!("{name}.{dir}")),
                    "{name}.{dir}"
                );
            }
        }
    }

    #[test]
    fn every_rdma_cm_program_runs_both_ways() {
        let steps = rdma_cm();
        for &(name, _, _) in RDMA_CM_PROGRAMS {
            for dir in ["k_m", "m_k"] {
                assert!(
                    cases(&steps).any(|c| c.name == format!("{name}.{dir}")),
                    "{name}.{dir}"
                );
            }
        }
        let text = render(&steps);
        assert!(text.contains("\ncm_send_bw.m_k m k ib_send_bw -R -u 18 -n 200\n"));
    }

    #[test]
    fn names_are_unique_and_plan_lines_parse() {
        let mut steps = matrix();
        steps.extend(rdma_cm());
        steps.extend(lossy());
        steps.extend(figures());
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
    }
}
