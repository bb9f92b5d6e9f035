//! Open MPI (Debian's 4.1, `pml ucx` over `rc_verbs`) with its two ranks in
//! two containers on two nodes: a ping-pong and allreduces
//! (migros-ibverbs' tests/c/mpi_pingpong.c), then an iterative job
//! (mpi_iter.c: an allreduce per iteration, every result and a running
//! checksum checked) whose rank 1 is live-migrated to a third node while
//! it runs.
//!
//! How the job is launched, as a user could without changing Open MPI:
//! - `mpirun` runs in node A's network namespace (`nsenter --net`), as on
//!   a cluster's login node: every node routes to every container's
//!   address, the host does not (its replies to 198.19.x would leave by
//!   its default route), and Open MPI's daemons (`orted`) connect back to
//!   mpirun over TCP;
//! - its remote shell (`plm_rsh_agent`) is a script that, for a "host"
//!   named by a container address, runs `migros run` in the host's network
//!   namespace with that address, the job's directory mounted at the same
//!   path (orted checks that the agent it was given exists) and orted as
//!   the container's process, kept in the foreground (the agent drops
//!   `--daemonize`: a daemonized orted would leave the container empty).
//!   So orted and its rank are one container, checkpointed together;
//!   `routed=direct` and `plm_rsh_no_tree_spawn` keep each orted talking
//!   to mpirun only (no orted-to-orted connection to move);
//! - UCX lists a device only if `/dev/infiniband/<dev_name>` is a character
//!   device; `migros run` gives the container its node's
//!   `/dev/infiniband/uverbs-rxe0` (and the `infiniband` sysfs class that
//!   tells UCX the GIDs are RoCE v2), nothing to do here;
//! - `btl self` (no shared memory or TCP byte transfer layers) and
//!   `UCX_TLS=rc_verbs,ud_verbs:aux`: the ranks talk over the migros device
//!   only.
//!
//! During the migration the orted's TCP connection to mpirun is moved by
//! CRIU (the runc engine checkpoints and restores with
//! `--tcp-established`) and the ranks' RC QPs by the migros plugin; UCX
//! needs no timeout settings for a pause of a few seconds: the rank that
//! stays sees its requests paused by the tombstone, not lost.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::rdma::RDMA;
use super::*;
use migros_test_support::mpi::UCX_ONLY;

const NODES: [(&str, &str); 3] = [
    ("mpia", "198.18.1.231"),
    ("mpib", "198.18.1.232"),
    ("mpic", "198.18.1.233"),
];
/// The containers' addresses, the "hosts" mpirun is given.
const HOSTS: [&str; 2] = ["198.19.1.231", "198.19.1.232"];

/// The first command of every rank's container: the orted command line
/// the agent was given, in the foreground.
const START: &str = r#"#!/bin/sh
exec sh -c "$(printf '%s' "$1" | sed 's/ --daemonize / /')"
"#;

/// mpirun's remote shell: `agent.sh HOST COMMAND…` starts container
/// `<job><i>` for the i-th host, on the i-th node.
fn agent(dir: &Path) -> String {
    format!(
        r#"#!/bin/sh
host=$1; shift
case $host in
{h0}) node={n0} i=0 ;;
{h1}) node={n1} i=1 ;;
*) echo "agent.sh: unknown host $host" >&2; exit 1 ;;
esac
exec nsenter --net="$MPI_HOST_NETNS" {migros} run --node $node --name "$MPI_JOB$i" --ip $host \
  --volume {dir}:{dir} -- {dir}/start.sh "$*"
"#,
        h0 = HOSTS[0],
        h1 = HOSTS[1],
        n0 = NODES[0].0,
        n1 = NODES[1].0,
        migros = MIGROS,
        dir = dir.display(),
    )
}

fn checks() -> Vec<Check> {
    let mut checks = Lab::rdma_checks();
    if checks.iter().all(Result::is_ok) {
        for p in ["mpirun", "mpicc", "orted"] {
            checks.push(program(p, "openmpi-bin, libopenmpi-dev: scripts/setup.sh"));
        }
        checks.push(program("nsenter", "util-linux"));
        checks.push(file(
            "/usr/lib/x86_64-linux-gnu/ucx/libuct_ib.so.0",
            "libucx0: scripts/setup.sh installs it",
        ));
    }
    checks
}

/// One MPI job: mpirun started in node A's namespace, its output in
/// `<dir>/<job>.out`.
struct Job {
    name: &'static str,
    child: Child,
    out: std::path::PathBuf,
}

impl Job {
    fn start(lab: &mut Lab, dir: &Path, name: &'static str, prog: &[&str]) -> Job {
        for i in 0..2 {
            let c = format!("{name}{i}");
            let _ = lab.run(&["rm", "-f", &c]);
            lab.containers.push(c);
        }
        let out = dir.join(format!("{name}.out"));
        let log = fs::File::create(&out).expect("job output");
        let node_ns = format!("--net=/run/netns/migros-{}", NODES[0].0);
        let hosts = HOSTS.join(",");
        let mut args = vec![
            node_ns.as_str(),
            "mpirun",
            "--allow-run-as-root",
            "--host",
            &hosts,
            "-np",
            "2",
            "--mca",
            "plm_rsh_no_tree_spawn",
            "1",
            "--mca",
            "routed",
            "direct",
            "--mca",
            "oob_tcp_if_include",
            "198.18.0.0/15",
        ];
        args.extend(UCX_ONLY);
        args.extend([
            "-x",
            "UCX_TLS=rc_verbs,ud_verbs:aux",
            "-x",
            "UCX_NET_DEVICES=rxe0:1",
            "-x",
            "UCX_LOG_LEVEL=error",
        ]);
        args.extend_from_slice(prog);
        let child = Command::new("nsenter")
            .args(&args)
            .env(
                "MPI_HOST_NETNS",
                format!("/proc/{}/ns/net", std::process::id()),
            )
            .env("MPI_JOB", name)
            .env("OMPI_MCA_plm_rsh_agent", dir.join("agent.sh"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn nsenter mpirun");
        Job { name, child, out }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the output has a line starting with `prefix`.
    fn wait_line(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.output().lines().any(|l| l.starts_with(prefix)) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("{}: mpirun ended ({st}):\n{}", self.name, self.output());
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {prefix:?} line:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// mpirun's exit, which must be 0; its output.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        let st = loop {
            if let Some(st) = self.child.try_wait().expect("wait mpirun") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{}: mpirun still running:\n{}", self.name, self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = self.output();
        assert!(st.success(), "{}: mpirun {st}:\n{out}", self.name);
        out
    }
}

/// `key=value` of the first line starting with `prefix`.
fn field<'a>(out: &'a str, prefix: &str, key: &str) -> &'a str {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in\n{out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn num(out: &str, prefix: &str, key: &str) -> f64 {
    let v = field(out, prefix, key);
    v.parse()
        .unwrap_or_else(|e| panic!("{prefix} {key}={v}: {e}"))
}

#[test]
fn mpi_ranks_in_containers_and_a_migrated_rank() {
    if !require(checks()) {
        return;
    }
    let mut lab = Lab::empty();
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    for (n, addr) in NODES {
        lab.clean_node(n);
        lab.nodes.push(n.to_string());
        lab.ok(&["node", "add", n, "--addr", addr, "--mtu", "4096"]);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let exec = fs::Permissions::from_mode(0o755);
    for (f, text) in [("start.sh", START.to_string()), ("agent.sh", agent(dir))] {
        fs::write(dir.join(f), text).expect("write script");
        fs::set_permissions(dir.join(f), exec.clone()).expect("chmod");
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (prog, src) in [
        (
            "mpi_pingpong",
            here.join("../migros-ibverbs/tests/c/mpi_pingpong.c"),
        ),
        ("mpi_iter", here.join("tests/containers/mpi_iter.c")),
    ] {
        let out = Command::new("mpicc")
            .args(["-O2", "-o"])
            .arg(dir.join(prog))
            .arg(&src)
            .output()
            .expect("run mpicc");
        common::success_stdout("mpicc", &[prog], &out);
    }
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();

    // The ping-pong and allreduces, ranks on nodes A and B.
    let pp = path("mpi_pingpong");
    let out = Job::start(&mut lab, dir, "mpipp", &[&pp]).finish();
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("pingpong")).collect();
    assert_eq!(lines.len(), 2, "two ping-pong lines in\n{out}");
    for l in &lines {
        assert!(l.ends_with("bad=0"), "wrong replies: {l}");
    }
    assert!(out.contains("allreduce sum=3 expected=3"), "{out}");
    eprintln!(
        "Open MPI in containers on mpia and mpib:\n{}",
        lines.join("\n")
    );
    for c in ["mpipp0", "mpipp1"] {
        lab.ok(&["rm", "-f", c]);
    }

    // The iterative job: rank 1 moves from B to C after 100 iterations;
    // rank 0 stops 2 s after the migration (the stop file), or at 20000.
    let (it, stop) = (path("mpi_iter"), path("stop"));
    let mut job = Job::start(&mut lab, dir, "mpiit", &[&it, &stop, "20000"]);
    job.wait_line("iter 100 ");
    let t0 = std::time::SystemTime::now();
    let timeline = lab.migrate("mpiit1", NODES[2].0);
    let t1 = std::time::SystemTime::now();
    assert!(timeline.contains("QP(s) forwarded"), "{timeline}");
    let ps = lab.ps("mpiit1").expect("listed");
    assert_eq!(ps["node"], NODES[2].0, "{ps}");
    std::thread::sleep(Duration::from_secs(2));
    fs::write(&stop, "").expect("stop file");
    let out = job.finish();
    let done = "done ";
    assert_eq!(num(&out, done, "bad"), 0.0, "{out}");
    assert_eq!(
        field(&out, done, "checksum"),
        field(&out, done, "expected"),
        "{out}"
    );
    let iters = num(&out, done, "iterations");
    let stat = "iteration ";
    let max_iter = num(&out, stat, "max_iter");
    assert!(
        max_iter > 100.0 && iters > max_iter + 1.0,
        "the longest iteration ({max_iter}) is not after the migration began, \
         or the job ended with it ({iters} iterations):\n{out}"
    );
    // The longest iteration began before the migration ended and ended
    // after the migration began (clocks: the same host).
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
    };
    let (at, max_s) = (num(&out, stat, "max_at"), num(&out, stat, "max_us") / 1e6);
    assert!(
        at < secs(t1) && at + max_s > secs(t0),
        "the longest iteration [{at}, +{max_s}] is outside the migration [{}, {}]",
        secs(t0),
        secs(t1)
    );
    let summary: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(done) || l.starts_with(stat))
        .collect();
    eprintln!(
        "Open MPI job, rank 1 migrated mpib -> mpic at iteration ~100 \
         (migration from {:.3} to {:.3}):\n{}",
        secs(t0),
        secs(t1),
        summary.join("\n")
    );
}
