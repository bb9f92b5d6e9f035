//! The unmodified Debian 12 `ibv_ud_pingpong`, `ibv_srq_pingpong` and
//! `ibv_uc_pingpong` (ibverbs-utils) on two daemons on loopback addresses,
//! through target/ibverbs (built by scripts/ibverbs.sh). Needs root (the
//! daemons reach the programs' memory) and the Debian package
//! (scripts/setup.sh installs it). Its own addresses and ports, so it runs
//! beside tests/programs.rs.

mod common;

use common::{ready, Net};

const A: (&str, &str) = ("devA", "127.0.0.171");
const B: (&str, &str) = ("devB", "127.0.0.172");
/// The devices' active MTU: UD messages go up to this many bytes.
const MTU: &str = "2048";

#[test]
fn ud_srq_uc_pingpong_run_unmodified() {
    let Some(bin) = ready(
        &["ibv_ud_pingpong", "ibv_srq_pingpong", "ibv_uc_pingpong"],
        Vec::new(),
    ) else {
        return;
    };
    let net = Net::start(&bin, [A, B], &["--mtu", MTU]);
    // (program, size, extra flag). UD messages are at most the path MTU
    // (ibv_ud_pingpong adds 40 bytes of GRH room to its receive buffers);
    // ibv_srq_pingpong uses its default 16 QPs on one SRQ.
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("ibv_ud_pingpong", "512", None),
        ("ibv_ud_pingpong", "1024", None),
        ("ibv_ud_pingpong", "1024", Some("-e")),
        // Larger than the default path MTU: a UD QP may fill the port's MTU.
        ("ibv_ud_pingpong", "2008", None),
        ("ibv_srq_pingpong", "1024", None),
        ("ibv_srq_pingpong", "4096", None),
        ("ibv_srq_pingpong", "4096", Some("-e")),
        ("ibv_uc_pingpong", "1024", None),
        ("ibv_uc_pingpong", "65536", None),
        ("ibv_uc_pingpong", "4096", Some("-e")),
    ];
    for (i, &(prog, size, extra)) in cases.iter().enumerate() {
        let port = (18800 + i).to_string();
        let args = |dev| {
            let mut v = vec![
                prog,
                "-d",
                dev,
                "-g",
                "0",
                "-p",
                port.as_str(),
                "-s",
                size,
                "-n",
                "100",
            ];
            v.extend(extra);
            v
        };
        let mut c = args("devB");
        c.push("127.0.0.1");
        let (so, co) = net.pair(&args("devA"), &c);
        assert!(
            so.contains("100 iters in") && co.contains("100 iters in"),
            "{prog} -s {size} {extra:?}:\n{so}\n{co}"
        );
        eprintln!(
            "{prog} -s {size} {extra:?}: {}",
            co.lines().last().unwrap_or_default()
        );
    }
}
