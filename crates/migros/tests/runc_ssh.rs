//! runc containers on ssh nodes (`migros node add --ssh`), migrated
//! between machines with `migros migrate`:
//!
//! - `migrate_runc_between_ssh_hosts`: three hosts (`migros host`), an ssh
//!   node on each; the seed's `ib_send_bw -b` server as a runc container
//!   on mh-ra, its client on mh-rc. A transfer whose ssh is killed
//!   mid-copy and a destination whose migrosd is down both fail with the
//!   server running on its source; then the server moves mh-ra -> mh-rb
//!   and back mh-rb -> mh-ra, its image streamed host to host; both end
//!   with exit 0 and their result lines.
//!
//! Hosts are 198.18.64.51-53, containers 198.19.64.51-52. Needs what
//! `multihost.rs` needs (root, openssh-server, Docker for the hosts,
//! CRIU, the plugin, perftest, migrosd); otherwise it skips saying why
//! (or fails under MIGROS_TESTS_REQUIRED=1).

mod lab;

use std::time::Instant;

use lab::{exit_code, migros, on, run, run_env, ssh, wait_for, Lab, MIGROS};

const SERVER_IP: &str = "198.19.64.51";
const ITERS: u64 = 500_000;

#[test]
fn migrate_runc_between_ssh_hosts() {
    if !lab::ready(true) {
        return;
    }
    let t0 = Instant::now();
    let mut lab = Lab::hosts(&["mh-ra", "mh-rb", "mh-rc"], 51);
    lab.nodes();
    let (srv, cli) = ("rsrv", "rcli");
    lab.container(srv);
    lab.container(cli);
    let n = ITERS.to_string();
    let bench = ["stdbuf", "-oL", "ib_send_bw", "-d", "rxe0", "-b", "-n", &n];
    let mut args = vec![
        "run", "--node", "mh-ra", "--name", srv, "--ip", SERVER_IP, "--",
    ];
    args.extend(bench);
    eprintln!("{}", migros(&args));
    wait_for(srv, "Waiting for client");
    let mut args = vec!["run", "--node", "mh-rc", "--name", cli, "--"];
    args.extend(bench);
    args.push(SERVER_IP);
    eprintln!("{}", migros(&args));
    wait_for(srv, "remote address");
    // Nothing of it on this machine: runc and its files are the hosts'.
    let here = run("runc", &["--root", "/run/migros/state/runc", "list", "-q"]);
    let here = String::from_utf8_lossy(&here.stdout);
    assert!(!here.contains(srv) && !here.contains(cli), "{here}");
    let there = ssh("mh-ra", "runc --root /run/migros-runc/runc list -q");
    assert!(
        String::from_utf8_lossy(&there.stdout).contains(&format!("{srv}.0")),
        "{there:?}"
    );
    eprintln!("lab and containers ready in {:?}", t0.elapsed());

    // A transfer whose ssh is killed mid-copy: the server is restored on
    // its source from its image there and goes on.
    let t = Instant::now();
    let cut = run_env(
        MIGROS,
        &["migrate", srv, "--to", "mh-rb"],
        &[("MIGROS_FAULT", "transfer")],
    );
    let err = String::from_utf8_lossy(&cut.stderr);
    eprintln!("cut transfer ({:?}): {err}", t.elapsed());
    assert!(!cut.status.success(), "the cut transfer succeeded");
    assert!(err.contains("transfer to node mh-rb failed"), "{err}");
    assert!(err.contains("restored on node mh-ra"), "{err}");
    assert_eq!(on(srv), ("mh-ra".into(), "running".into()));
    // Nothing of it runs on the destination. (The cut copy's far end may
    // still make its directory there: it sleeps before unpacking.)
    let left = ssh(
        "mh-rb",
        "runc --root /run/migros-runc/runc list -q | wc -l; ip netns list | grep -c migros-c- || true",
    );
    let left = String::from_utf8_lossy(&left.stdout);
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "mh-rb kept a runc container or a namespace of the container"
    );

    // A destination whose migrosd is down: refused, nothing frozen.
    let stop = ssh(
        "mh-rb",
        "/var/lib/migros/bin/migros __remote stop --dev rxe0",
    );
    assert!(stop.status.success(), "{stop:?}");
    let down = run(MIGROS, &["migrate", srv, "--to", "mh-rb"]);
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        !down.status.success() && err.contains("not running"),
        "{err}"
    );
    assert_eq!(on(srv), ("mh-ra".into(), "running".into()));
    lab::readd_node("mh-rb", "198.18.64.52");

    // There and back.
    for (to, from) in [("mh-rb", "mh-ra"), ("mh-ra", "mh-rb")] {
        lab::migrate_streamed(srv, from, to);
    }

    let (cs, ss) = (exit_code(cli), exit_code(srv));
    let (cl, sl) = (migros(&["logs", cli]), migros(&["logs", srv]));
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    lab::assert_result("client", &cl, ITERS);
    lab::assert_result("server", &sl, ITERS);
    for l in cl.lines().chain(sl.lines()) {
        if l.trim_start().starts_with("65536") {
            eprintln!("result: {l}");
        }
    }
    drop(lab);
    eprintln!("migrate_runc_between_ssh_hosts took {:?}", t0.elapsed());
}
