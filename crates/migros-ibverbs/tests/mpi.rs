//! Debian's Open MPI (4.1, `pml ucx`) on two migros devices: two ranks in
//! separate processes, each on its own device, run a ping-pong (replies
//! checked) and allreduces (the sum checked), compiled here with mpicc
//! (tests/c/mpi_pingpong.c); then the same over UCX's tcp on lo in the
//! same run, and the figures side by side. Needs root and openmpi-bin,
//! libopenmpi-dev, libucx0 (scripts/setup.sh).

mod common;

use common::{check, ready, root_dir, Net};
use migros_test_support::mpi::UCX_ONLY;
use migros_test_support::require::file;

const A: (&str, &str) = ("mpiA", "127.0.0.177");
const B: (&str, &str) = ("mpiB", "127.0.0.178");

#[test]
fn mpi_pingpong_and_allreduce_over_ucx() {
    let Some(bin) = ready(
        &["mpicc", "mpirun"],
        vec![file(
            "/usr/lib/x86_64-linux-gnu/ucx/libuct_ib.so.0",
            "libucx0: scripts/setup.sh installs it",
        )],
    ) else {
        return;
    };
    let net = Net::start(&bin, [A, B], &[]);
    let prog = net.dir.path().join("mpi_pingpong");
    let src = root_dir().join("crates/migros-ibverbs/tests/c/mpi_pingpong.c");
    let out = std::process::Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&prog)
        .arg(&src)
        .output()
        .expect("run mpicc");
    check(&["mpicc"], &out);
    let prog = prog.to_string_lossy().into_owned();
    let mut report = String::new();
    // (name, UCX_TLS, device of rank 0, of rank 1, extra MCA settings):
    // Open MPI's pml ucx takes only the transports and devices it knows
    // as fast (rc_verbs, ud_verbs, mlx5) unless told otherwise.
    let runs = [
        (
            "migros rc_verbs",
            "rc_verbs,ud_verbs:aux",
            format!("{}:1", A.0),
            format!("{}:1", B.0),
            vec![],
        ),
        (
            "tcp (lo)",
            "tcp",
            "lo".to_string(),
            "lo".to_string(),
            vec![
                "--mca",
                "pml_ucx_tls",
                "any",
                "--mca",
                "pml_ucx_devices",
                "any",
            ],
        ),
    ];
    for (name, tls, dev0, dev1, extra) in runs {
        let tls_env = format!("UCX_TLS={tls}");
        let d0 = format!("UCX_NET_DEVICES={dev0}");
        let d1 = format!("UCX_NET_DEVICES={dev1}");
        let mut args = vec!["mpirun", "--allow-run-as-root", "--oversubscribe"];
        args.extend(UCX_ONLY);
        args.extend(extra.iter().copied());
        args.extend([
            "-x",
            "LD_LIBRARY_PATH",
            "-x",
            "MIGROS_SOCKET_DIR",
            "-x",
            &tls_env,
            "-x",
            "UCX_LOG_LEVEL=error",
            "-np",
            "1",
            "-x",
            &d0,
            &prog,
            ":",
            "-np",
            "1",
            "-x",
            &d1,
            &prog,
        ]);
        let out = net.run(&args);
        let pp: Vec<&str> = out.lines().filter(|l| l.starts_with("pingpong")).collect();
        assert_eq!(pp.len(), 2, "{name}: two ping-pong lines in\n{out}");
        for l in &pp {
            assert!(l.ends_with("bad=0"), "{name}: wrong replies: {l}");
        }
        assert!(
            out.contains("allreduce sum=3 expected=3"),
            "{name}: allreduce\n{out}"
        );
        for l in pp {
            report.push_str(&format!("{name:<16} {l}\n"));
        }
    }
    eprintln!(
        "Open MPI ping-pong, ranks on {} and {}:\n{report}",
        A.0, B.0
    );
}
