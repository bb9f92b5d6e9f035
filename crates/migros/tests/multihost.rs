//! Hosts that share nothing but the network (`migros host`), and `migros`
//! across them: ssh nodes (`migros node add --ssh`), Docker containers on
//! the seed's swarm overlay migrated between machines with `migros
//! migrate`, and failures that leave the container running on the source.
//!
//! - `hosts_share_nothing`: what one host writes in its own directories
//!   (`/run`, `/var/lib/docker`, `/etc/docker`, `/var/lib/migros`, ssh keys,
//!   `/tmp`…) is not visible in another host nor on this machine; every
//!   host has its own dockerd, hostname and address, and reaches the
//!   others only over the network (ssh);
//! - `migrate_docker_between_ssh_hosts`: three hosts in a swarm, the seed's
//!   `ib_send_bw -b` server and client as migros Docker containers on the
//!   overlay; a destination migrosd killed comes back (supervised); a
//!   transfer whose ssh is killed mid-copy and a destination
//!   whose migrosd is down both fail with the server still running on its
//!   source; then the server moves a -> c and back c -> a, the client
//!   b -> c; both end with exit 0 and their result lines, the client's QP
//!   saw the pauses.
//!
//! Hosts are 198.18.64.31-32 and .41-43, containers 198.19.64.4x. They
//! need root, openssh-server, Docker and (for the second) CRIU, the
//! plugin, perftest and migrosd; otherwise they skip saying why (or fail
//! under MIGROS_TESTS_REQUIRED=1).

mod lab;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::{exit_code, migros, ok, on, run, run_env, ssh, wait_for, Lab, MIGROS};

/// One test at a time: hosts and their dockerds are heavy on two cores.
static ONE: Mutex<()> = Mutex::new(());

#[test]
fn hosts_share_nothing() {
    if !lab::ready(false) {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::hosts(&["mh-iso-a", "mh-iso-b"], 31);
    let (a, b) = ("mh-iso-a", "mh-iso-b");
    let dirs = [
        "/run",
        "/var/lib/docker",
        "/var/lib/containerd",
        "/etc/docker",
        "/var/lib/migros",
        "/etc/ssh",
        "/root/.ssh",
        "/tmp",
        "/var/tmp",
        "/usr/lib/criu",
    ];
    let marker = format!("migros-isolation-{}", std::process::id());
    for d in dirs {
        ok(
            MIGROS,
            &["host", "exec", a, "--", "touch", &format!("{d}/{marker}")],
        );
    }
    // A Docker volume too: a's dockerd keeps it under its /var/lib/docker.
    ok(
        MIGROS,
        &[
            "host", "exec", a, "--", "docker", "volume", "create", &marker,
        ],
    );
    for d in dirs {
        let p = format!("{d}/{marker}");
        let seen_in_b = run(MIGROS, &["host", "exec", b, "--", "test", "-e", &p]);
        assert!(
            !seen_in_b.status.success(),
            "{p} of host {a} is visible in host {b}"
        );
        assert!(
            !std::path::Path::new(&p).exists(),
            "{p} of host {a} is visible on this machine"
        );
        let seen_in_a = run(MIGROS, &["host", "exec", a, "--", "test", "-e", &p]);
        assert!(seen_in_a.status.success(), "{p} is not even in host {a}");
    }
    // The hosts' own directories on this machine are hidden in every host.
    let listing = ok(
        MIGROS,
        &["host", "exec", b, "--", "ls", "-A", "/var/lib/migros-hosts"],
    );
    assert_eq!(listing.trim(), "", "host {b} sees the hosts' directories");
    let vols = |h: &str| {
        ok(
            MIGROS,
            &["host", "exec", h, "--", "docker", "volume", "ls", "-q"],
        )
    };
    assert!(vols(a).contains(&marker), "host {a} lost its volume");
    assert!(
        !vols(b).contains(&marker),
        "host {b}'s dockerd knows {a}'s volume"
    );
    let id = |h: &str| {
        ok(
            MIGROS,
            &[
                "host",
                "exec",
                h,
                "--",
                "docker",
                "info",
                "--format",
                "{{.ID}} {{.Name}}",
            ],
        )
    };
    let (ia, ib) = (id(a), id(b));
    assert_ne!(ia, ib, "one dockerd for both hosts");
    assert!(
        ia.trim().ends_with(a) && ib.trim().ends_with(b),
        "{ia} {ib}"
    );
    let machine = ok("docker", &["info", "--format", "{{.ID}}"]);
    assert!(
        !ia.contains(machine.trim()),
        "host {a} uses this machine's dockerd"
    );
    // Only the network joins them: b reaches a by ssh (its own key, a's
    // host key known), and finds there what a wrote.
    let via_ssh = ok(
        MIGROS,
        &["host", "exec", b, "--", "ssh", a, "hostname; ls /run"],
    );
    assert!(
        via_ssh.starts_with(a) && via_ssh.contains(&marker),
        "{via_ssh}"
    );
    let addrs = ok(MIGROS, &["host", "exec", b, "--", "ip", "-4", "-o", "addr"]);
    assert!(
        addrs.contains("198.18.64.32/24") && !addrs.contains("198.18.64.31"),
        "{addrs}"
    );
    drop(lab);
    assert!(
        !std::path::Path::new("/var/lib/migros-hosts/mh-iso-a").exists(),
        "host a's files stayed"
    );
}

const SERVER_IP: &str = "198.19.64.41";
const CLIENT_IP: &str = "198.19.64.42";
const ITERS: u64 = 500_000;

#[test]
fn migrate_docker_between_ssh_hosts() {
    if !lab::ready(true) {
        return;
    }
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let mut lab = Lab::hosts(&["mh-a", "mh-b", "mh-c"], 41);
    lab.nodes();
    let formed = migros(&["host", "swarm", "mh-a", "mh-b", "mh-c"]);
    eprintln!("{formed}");
    assert!(
        formed.contains("Leader") && formed.matches("Ready").count() == 3,
        "{formed}"
    );
    let (srv, cli) = ("mhsrv", "mhcli");
    lab.container(srv);
    lab.container(cli);
    let bad = run(MIGROS, &["node", "add", "mh-x", "--ssh=-oProxyCommand=x"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("is not [user@]host[:port]"),
        "{err}"
    );
    let n = ITERS.to_string();
    let bench = ["stdbuf", "-oL", "ib_send_bw", "-d", "rxe0", "-b", "-n", &n];
    let start = |node: &str, name: &str, ip: &str, server: Option<&str>| {
        let mut args = vec![
            "run",
            "--engine",
            "docker",
            "--image",
            "migros-perftest",
            "--network",
            "rdma-net",
            "--node",
            node,
            "--name",
            name,
            "--ip",
            ip,
            "--",
        ];
        args.extend(bench);
        args.extend(server);
        migros(&args);
    };
    start("mh-a", srv, SERVER_IP, None);
    wait_for(srv, "Waiting for client");
    start("mh-b", cli, CLIENT_IP, Some(SERVER_IP));
    let watch = QpWatch::start("mh-b");
    wait_for(srv, "remote address");
    eprintln!("lab and containers ready in {:?}", t0.elapsed());

    // A transfer whose ssh is killed mid-copy: the server is started
    // again on its source from the checkpoint and goes on.
    let t = Instant::now();
    let cut = run_env(
        MIGROS,
        &["migrate", srv, "--to", "mh-c"],
        &[("MIGROS_FAULT", "transfer")],
    );
    let err = String::from_utf8_lossy(&cut.stderr);
    eprintln!("cut transfer ({:?}): {err}", t.elapsed());
    assert!(!cut.status.success(), "the cut transfer succeeded");
    assert!(err.contains("transfer to node mh-c failed"), "{err}");
    assert!(err.contains("restored on node mh-a"), "{err}");
    assert_eq!(on(srv), ("mh-a".into(), "running".into()));
    let leftovers = ssh("mh-c", "docker ps -aq | wc -l");
    assert_eq!(
        String::from_utf8_lossy(&leftovers.stdout).trim(),
        "0",
        "mh-c kept a container"
    );

    // mh-c's migrosd is supervised there: killed, it comes back.
    let status = || {
        let o = ssh(
            "mh-c",
            "/var/lib/migros/bin/migros __remote status --dev rxe0",
        );
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let before = status().expect("mh-c's migrosd answers");
    let killed = ssh("mh-c", &format!("kill -9 {before}"));
    assert!(killed.status.success(), "kill -9 {before} on mh-c");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match status() {
            Some(pid) if pid != before => break,
            _ => assert!(
                Instant::now() < deadline,
                "mh-c's migrosd did not come back"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // A destination whose migrosd is down: refused, nothing frozen.
    ok(
        "ssh",
        &[
            "-F",
            lab::SSH_CONFIG,
            "mh-c",
            "/var/lib/migros/bin/migros __remote stop --dev rxe0",
        ],
    );
    let down = run(MIGROS, &["migrate", srv, "--to", "mh-c"]);
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        !down.status.success() && err.contains("not running"),
        "{err}"
    );
    assert_eq!(on(srv), ("mh-a".into(), "running".into()));
    let list = migros(&["node", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("mh-c") && l.contains("down")),
        "{list}"
    );
    // Back up: the node again (its record goes, the machine stays).
    lab::readd_node("mh-c", "198.18.64.43");

    // There and back, and the other end too.
    for (name, to, from) in [
        (srv, "mh-c", "mh-a"),
        (srv, "mh-a", "mh-c"),
        (cli, "mh-c", "mh-b"),
    ] {
        lab::migrate_streamed(name, from, to);
    }

    let (cs, ss) = (exit_code(cli), exit_code(srv));
    let (pauses, resumes) = watch.finish();
    let (cl, sl) = (migros(&["logs", cli]), migros(&["logs", srv]));
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    lab::assert_result("client", &cl, ITERS);
    lab::assert_result("server", &sl, ITERS);
    assert!(
        pauses >= 2 && resumes >= 2,
        "the client's QP saw pauses {pauses} resumes {resumes}"
    );
    eprintln!("migrate_docker_between_ssh_hosts took {:?}", t0.elapsed());
}

/// The largest pause and resume counters seen on a node's QPs (its
/// daemon's, read over ssh every 200 ms).
struct QpWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl QpWatch {
    fn start(host: &'static str) -> QpWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0, 0)));
        let (s, m) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let out = ssh(host, "/var/lib/migros/bin/migros stat --json");
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                    for q in v[0]["qps"].as_array().into_iter().flatten() {
                        let c = &q["counters"];
                        let mut g = m.lock().unwrap();
                        g.0 = g.0.max(c["pauses"].as_u64().unwrap_or(0));
                        g.1 = g.1.max(c["resumes"].as_u64().unwrap_or(0));
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        QpWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.seen.lock().unwrap()
    }
}
