//! The seed's Docker Swarm flow on three hosts (`migros demo --swarm`):
//! swarm init/join, the attachable overlay `rdma-net`, the seed's image
//! sent over ssh, the seed's scripts (checkpoint over ssh, create,
//! inspect, scp, rm, start --checkpoint on the destination).
//!
//! - `seed_swarm_server_migrates`: the server moves; both ends exit 0 with
//!   their result lines, the client's QP was paused and resumed, the
//!   destination host's migrosd now serves the server;
//! - `seed_swarm_client_migrates`: the same with the client moved (the
//!   server's QP sees the pause).
//!
//! Each makes and removes hosts swarm-a/b/c (198.18.64.21-23). They need
//! what `lab::missing` lists; otherwise they skip saying why (or fail
//! under MIGROS_TESTS_REQUIRED=1).

mod lab;

use std::sync::Mutex;
use std::time::Instant;

use lab::{run, MIGROS};

static ONE: Mutex<()> = Mutex::new(());
const ITERS: u64 = 50_000;

fn seed(moving: &str) {
    if !lab::ready(true) {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let t = Instant::now();
    let plot = std::env::temp_dir().join(format!("migros-swarm-{moving}.svg"));
    let out = run(
        MIGROS,
        &[
            "demo",
            "--swarm",
            "--move",
            moving,
            "-n",
            &ITERS.to_string(),
            "--out",
            plot.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!(
        "{stdout}\n{stderr}\n(demo --swarm --move {moving}: {:?})",
        t.elapsed()
    );
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    // docker node ls: a leader and three ready nodes.
    assert!(stdout.contains("Leader"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{stdout}"
    );
    assert!(
        stdout.contains("docker save | ssh HOST docker load to 3 hosts"),
        "{stdout}"
    );
    // The seed's commands ran, in its order.
    let order = [
        "docker checkpoint create",
        "docker create --name",
        "docker inspect",
        "scp -r",
        "docker rm",
        "docker start --checkpoint ckpt1",
    ];
    let mut at = 0;
    for cmd in order {
        let found = stdout[at..]
            .find(cmd)
            .unwrap_or_else(|| panic!("{cmd:?} missing or out of order:\n{stdout}"));
        at += found;
    }
    assert!(stdout.contains("downtime"), "{stdout}");
    for name in ["cont-moving", "cont-static"] {
        assert!(stdout.contains(&format!("{name}: exit 0")), "{stdout}");
    }
    let results = stdout
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5 && f[0] == "65536" && f[1] == ITERS.to_string()
        })
        .count();
    assert_eq!(results, 2, "both result lines:\n{stdout}");
    let fixed = if moving == "server" {
        "cont-static"
    } else {
        "cont-moving"
    };
    let pause_line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("pause the {fixed} QP saw")))
        .unwrap_or_else(|| panic!("the {fixed} QP was not paused:\n{stdout}"));
    let ms: f64 = pause_line
        .split_whitespace()
        .rev()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(ms > 0.0, "{pause_line}");
    let served: u64 = stdout
        .lines()
        .find(|l| l.starts_with("node swarm-c's migrosd"))
        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .unwrap_or(0);
    assert!(
        served > 0,
        "the destination's migrosd served nothing:\n{stdout}"
    );
    assert!(plot.is_file(), "no plot");
    let _ = std::fs::remove_file(&plot);
    // Everything it made is gone.
    let hosts = lab::ok(MIGROS, &["host", "list"]);
    assert!(!hosts.contains("swarm-"), "{hosts}");
}

#[test]
fn seed_swarm_server_migrates() {
    seed("server");
}

#[test]
fn seed_swarm_client_migrates() {
    seed("client");
}
