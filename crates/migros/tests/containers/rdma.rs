//! RDMA containers moved while they run: perftest, ibv_rc_pingpong and
//! `migros bench --verify`, and real RDMA checkpoints that fail and roll back.

use super::*;

/// RDMA runs one at a time: two cores, and a daemon starved of CPU makes
/// the peers' retry counters run out.
pub(super) static RDMA: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Which end moves.
#[derive(Clone, Copy, PartialEq)]
enum Moves {
    Server,
    Client,
}

/// An RDMA run across containers: a server container on node A, a client
/// container on node B running `server` and `client` (the server's
/// overlay address appended to the client's command, or node A's device
/// address with `server_at_node`); once RDMA traffic flows, `moves`
/// migrates along `hops` (node suffixes: `c`, then maybe `a`). Both must
/// exit 0 without completion errors.
struct RdmaRun<'a> {
    prefix: &'a str,
    octet: u8,
    server: &'a [&'a str],
    client: &'a [&'a str],
    moves: Moves,
    hops: &'a [&'a str],
    volume: Option<&'a str>,
    /// The client names the server by node A's device address: an RDMA CM
    /// connection is made between daemons, and a container's own address
    /// has none (the REQ would land in the container's network namespace).
    server_at_node: bool,
}

/// What an [`RdmaRun`] saw.
struct Ran {
    /// The programs' output.
    srv: String,
    cli: String,
    /// The QPs on the moving end's node just before its first migration.
    before: Vec<Value>,
    /// The node of the end that stayed, and the first hop's destination,
    /// sampled while the programs ran.
    partner: Seen,
    dest: Seen,
    /// The destination node's device counters at the end.
    dest_counters: Value,
    /// The first hop's destination node's address.
    dest_addr: String,
}

impl<'a> RdmaRun<'a> {
    /// The same command on both ends; the server moves from A to C.
    fn server_to_c(prefix: &'a str, octet: u8, cmd: &'a [&'a str]) -> RdmaRun<'a> {
        RdmaRun {
            prefix,
            octet,
            server: cmd,
            client: cmd,
            moves: Moves::Server,
            hops: &["c"],
            volume: None,
            server_at_node: false,
        }
    }

    fn run(&self) -> Option<Ran> {
        // The programs the containers run (a path is part of the test).
        let programs: Vec<&str> = [self.server, self.client]
            .into_iter()
            .filter_map(|c| c.first().copied())
            .filter(|p| !p.starts_with('/'))
            .collect();
        let mut lab = Lab::rdma(&programs)?;
        let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.prefix;
        let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
        let addr = |i: u8| format!("198.18.1.{}", self.octet + i);
        for (i, n) in [&a, &b, &c].into_iter().enumerate() {
            lab.clean_node(n);
            lab.nodes.push(n.clone());
            lab.ok(&["node", "add", n, "--addr", &addr(i as u8), "--mtu", "4096"]);
        }
        let srv_ip = format!("198.19.1.{}", self.octet);
        let cli_ip = format!("198.19.1.{}", self.octet + 1);
        let (srv, cli) = (format!("{p}srv"), format!("{p}cli"));
        let volume = self.volume;
        let run = |lab: &mut Lab, node: &str, name: &str, ip: &str, cmd: &[&str]| {
            lab.containers.push(name.to_string());
            let mut args = vec!["run", "--node", node, "--name", name, "--ip", ip];
            if let Some(v) = volume {
                args.extend(["--volume", v]);
            }
            args.push("--");
            args.extend_from_slice(cmd);
            lab.ok(&args);
        };
        run(&mut lab, &a, &srv, &srv_ip, self.server);
        std::thread::sleep(Duration::from_millis(500));
        let mut client = self.client.to_vec();
        let srv_node_addr = addr(0);
        client.push(if self.server_at_node {
            &srv_node_addr
        } else {
            &srv_ip
        });
        run(&mut lab, &b, &cli, &cli_ip, &client);
        // The daemon, not the program's (buffered) output, says when RDMA
        // traffic flows.
        wait_traffic(&a, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(700));
        let (who, from, partner_node) = match self.moves {
            Moves::Server => (&srv, &a, &b),
            Moves::Client => (&cli, &b, &a),
        };
        let partner = NodeWatch::start(partner_node);
        let dest = NodeWatch::start(&c);
        let before = node_qps(from);
        for hop in self.hops {
            let to = format!("{p}{hop}");
            let out = lab.migrate(who, &to);
            assert!(out.contains("QP(s) forwarded"), "{out}");
            let ps = lab.ps(who).expect("listed");
            assert_eq!(ps["node"], to.as_str(), "{ps}");
            std::thread::sleep(Duration::from_millis(300));
        }
        let (cs, ss) = (lab.wait(&cli), lab.wait(&srv));
        let (partner, dest) = (partner.finish(), dest.finish());
        let (cl, sl) = (lab.logs(&cli), lab.logs(&srv));
        assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
        for l in [&cl, &sl] {
            assert!(!l.contains("Completion with error"), "{l}");
            assert!(!l.contains("Couldn't"), "{l}");
        }
        Some(Ran {
            srv: sl,
            cli: cl,
            before,
            partner,
            dest,
            dest_counters: node_stat(&c)["counters"].clone(),
            dest_addr: addr(2),
        })
    }
}

impl Ran {
    /// Both ends' perftest result lines (`size` bytes, `iters` iterations
    /// if given), the partner paused and resumed, the destination serving
    /// the moved QPs.
    fn assert_streamed_through(&self, size: u64, iters: Option<u64>) {
        perftest::assert_bw("server", &self.srv, size, iters);
        perftest::assert_bw("client", &self.cli, size, iters);
        self.assert_partner_paused_and_resumed();
        self.assert_destination_served();
    }

    /// The end that stayed was paused by the migration (its requests got
    /// the pause NAK) and resumed.
    fn assert_partner_paused_and_resumed(&self) {
        assert!(
            self.partner.pauses >= 1 && self.partner.resumes >= 1,
            "the partner's QP saw pauses {} resumes {}",
            self.partner.pauses,
            self.partner.resumes
        );
    }

    /// The end that stayed heard the moved end's RESUME (an end that sent
    /// nothing while the other was away, a receiver or a ping-pong
    /// waiting for its answer, is never paused: nothing of it reached the
    /// tombstone).
    fn assert_partner_resumed(&self) {
        assert!(
            self.partner.resumes >= 1,
            "the partner's QP saw pauses {} resumes {}",
            self.partner.pauses,
            self.partner.resumes
        );
    }

    /// The destination's daemon served the moved QPs (same QPNs), with
    /// traffic, and counted it.
    fn assert_destination_served(&self) {
        assert!(!self.before.is_empty(), "no QP before the migration");
        for q in &self.before {
            let qpn = q["qpn"].as_u64().expect("qpn");
            let there = self.dest.qps.get(&qpn).unwrap_or_else(|| {
                panic!(
                    "qp {qpn:#x} never showed on the destination: {:?}",
                    self.dest.qps
                )
            });
            let c = &there["counters"];
            assert!(
                c["rx_packets"].as_u64().unwrap_or(0) > 0,
                "qp {qpn:#x} received nothing on the destination: {there}"
            );
        }
        for k in ["rx_packets", "tx_packets"] {
            assert!(
                self.dest_counters[k].as_u64().unwrap_or(0) > 0,
                "destination daemon {k}: {}",
                self.dest_counters
            );
        }
    }
}

/// perftest's command line: device, GID index 0, then `extra`.
fn perftest<'a>(prog: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![prog, "-d", "rxe0", "-x", "0"];
    v.extend_from_slice(extra);
    v
}

/// `ib_send_bw -n 100000 -b` with 16 KiB messages, the server migrated
/// while both directions stream.
#[test]
fn rdma_send_bw_bidirectional_server_migrates() {
    let cmd = perftest("ib_send_bw", &["-s", "16384", "-n", "100000", "-b"]);
    let Some(r) = RdmaRun::server_to_c("k6", 61, &cmd).run() else {
        return;
    };
    r.assert_streamed_through(16384, Some(100000));
}

/// perftest's RDMA CM mode (`-R`: both its own exchange and the test's
/// connection are made with librdmacm, no TCP) in the seed experiment's
/// shape: `ib_send_bw -R -b` with 16 KiB messages, the server migrated
/// from A to C while both directions stream. The server's librdmacm
/// connection (its CM ids, listener and connections, its event channel's
/// socket) moves with it; at the end the client's disconnect (DREQ) goes
/// to node A, whose tombstone forwards it to C, and both ends finish with
/// their result lines.
#[test]
fn rdma_cm_send_bw_bidirectional_server_migrates() {
    let cmd = perftest("ib_send_bw", &["-R", "-s", "16384", "-n", "100000", "-b"]);
    let Some(r) = (RdmaRun {
        server_at_node: true,
        ..RdmaRun::server_to_c("k21", 211, &cmd)
    })
    .run() else {
        return;
    };
    r.assert_streamed_through(16384, Some(100000));
}

/// The seed's command, exactly: `ib_send_bw -d rxe0 -n 100000 -b`
/// (64 KiB, 13 GB moved), the server migrated from A to C while both
/// directions stream. Checked as the Docker seed test checks it: both
/// result lines with 100000 iterations, the client's QP paused and
/// resumed, node C's daemon serving the server's QP (its QPN, its
/// traffic) and counting packets. `scripts/test.sh` runs the container
/// tests with release daemons (`MIGROSD=target/release/migrosd`); a debug
/// daemon is ~20 times slower.
#[test]
fn rdma_seed_experiment_exact() {
    const SEED: &[&str] = &["ib_send_bw", "-d", "rxe0", "-n", "100000", "-b"];
    let Some(r) = RdmaRun::server_to_c("k14", 141, SEED).run() else {
        return;
    };
    r.assert_streamed_through(65536, Some(100000));
    assert!(r.srv.contains("Send Bidirectional BW Test"), "{}", r.srv);
}

/// One-way `ib_send_bw`: the server only receives, and perftest leaves its
/// QP in RTR. The server migrates from RTR: it must be in RTR when it
/// moves, be restored in RTR on node C, and its RESUME (sent from RTR)
/// must move the client to node C.
#[test]
fn rdma_send_bw_one_way_server_migrates_from_rtr() {
    let cmd = perftest("ib_send_bw", &["-D", "6"]);
    let Some(r) = RdmaRun::server_to_c("k17", 171, &cmd).run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 65536, None);
    perftest::assert_bw("client", &r.cli, 65536, None);
    assert!(!r.before.is_empty());
    for q in &r.before {
        assert_eq!(q["state"], "Rtr", "the server's QP when it moved: {q}");
    }
    for q in r.dest.qps.values() {
        assert_eq!(
            q["state"], "Rtr",
            "restored in RTR, never moved to RTS: {q}"
        );
    }
    r.assert_destination_served();
    r.assert_partner_paused_and_resumed();
    let client_qp = r.partner.qps.values().last().expect("the client's QP");
    assert_eq!(client_qp["state"], "Rts", "{client_qp}");
    assert_eq!(
        client_qp["dest"][0], r.dest_addr,
        "the RESUME from RTR moved the client to node C: {client_qp}"
    );
}

/// The client moves, and its RDMA process is not the container's init (a
/// shell's child): `migrate` finds it in the container's process tree.
#[test]
fn rdma_send_bw_client_migrates() {
    let cmd = perftest("ib_send_bw", &["-D", "6"]);
    let script = format!("{} \"$0\"; echo client exit $?", cmd.join(" "));
    let client = ["sh", "-c", script.as_str()];
    let Some(r) = (RdmaRun {
        prefix: "k7",
        octet: 71,
        server: &cmd,
        client: &client,
        moves: Moves::Client,
        hops: &["c"],
        volume: None,
        server_at_node: false,
    })
    .run() else {
        return;
    };
    perftest::assert_bw("server", &r.srv, 65536, None);
    perftest::assert_bw("client", &r.cli, 65536, None);
    assert!(r.cli.contains("client exit 0"), "{}", r.cli);
    r.assert_partner_resumed();
    r.assert_destination_served();
}

/// `ibv_rc_pingpong -e`: completion events through a completion channel
/// (a second daemon connection the plugin restores too).
#[test]
fn rdma_rc_pingpong_events_server_migrates() {
    let cmd = [
        "ibv_rc_pingpong",
        "-d",
        "rxe0",
        "-g",
        "0",
        "-n",
        "10000",
        "-e",
    ];
    let Some(r) = RdmaRun::server_to_c("k15", 151, &cmd).run() else {
        return;
    };
    for l in [&r.srv, &r.cli] {
        assert!(l.contains("10000 iters in"), "{l}");
    }
    r.assert_partner_resumed();
    r.assert_destination_served();
}

/// Four QPs, the server migrated there and back (A to C to A: onto the
/// daemon that holds their tombstones).
#[test]
fn rdma_write_bw_four_qps_there_and_back() {
    let cmd = perftest("ib_write_bw", &["-D", "8", "-q", "4"]);
    let Some(r) = (RdmaRun {
        prefix: "k16",
        octet: 161,
        server: &cmd,
        client: &cmd,
        moves: Moves::Server,
        hops: &["c", "a"],
        volume: None,
        server_at_node: false,
    })
    .run() else {
        return;
    };
    perftest::assert_bw("client", &r.cli, 65536, None);
    assert_eq!(r.before.len(), 4, "{:?}", r.before);
    r.assert_partner_paused_and_resumed();
    assert!(r.partner.pauses >= 2, "paused by each of the two moves");
    r.assert_destination_served();
}

#[test]
fn rdma_write_bw_server_migrates() {
    let cmd = perftest("ib_write_bw", &["-D", "6"]);
    let Some(r) = RdmaRun::server_to_c("k8", 81, &cmd).run() else {
        return;
    };
    perftest::assert_bw("client", &r.cli, 65536, None);
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
}

#[test]
fn rdma_read_bw_server_migrates() {
    let cmd = perftest("ib_read_bw", &["-D", "6"]);
    let Some(r) = RdmaRun::server_to_c("k9", 91, &cmd).run() else {
        return;
    };
    perftest::assert_bw("client", &r.cli, 65536, None);
    r.assert_partner_paused_and_resumed();
    r.assert_destination_served();
}

/// `migros bench --verify` (the Rust verbs API, not libibverbs) in
/// containers: every byte written checked across the migration.
#[test]
fn bench_verify_in_containers_server_migrates() {
    // A copy of this build's migros: a rebuild must not delete a binary
    // CRIU has to dump.
    let bin = tempfile::tempdir().expect("temp dir");
    std::fs::copy(MIGROS, bin.path().join("migros")).expect("copy migros");
    let vol = format!("{}:/opt/bin:ro", bin.path().display());
    let bench = [
        "/opt/bin/migros",
        "bench",
        "write-bw",
        "-d",
        "rxe0",
        "--verify",
        "-D",
        "6",
        "-s",
        "16384",
    ];
    let Some(r) = (RdmaRun {
        prefix: "k10",
        octet: 101,
        server: &bench,
        client: &bench,
        moves: Moves::Server,
        hops: &["c"],
        volume: Some(&vol),
        server_at_node: false,
    })
    .run() else {
        return;
    };
    for l in [&r.srv, &r.cli] {
        assert!(l.contains("verified        : every byte"), "{l}");
    }
    // The verifying writer waits for the server's checks of its batches:
    // it may have nothing in flight while the server is away.
    r.assert_partner_resumed();
    r.assert_destination_served();
}

/// Real checkpoints of an RDMA container that fail half-way, by a failure
/// injected into the CRIU plugin (`MIGROS_CRIU_FAIL`, test only: the
/// environment of `migros migrate` reaches CRIU through runc): first in
/// CHECKPOINT_DEVICES (the daemon has paused and checkpointed the QPs),
/// then in DUMP_UNIX_SK (the plugin has claimed the daemon sockets). Each
/// time the container was frozen and its RDMA state taken; each time
/// `migrate` says the checkpoint failed and the container still runs on
/// node A; the client's QP was paused and resumed by each rollback; and
/// the benchmark finishes with its result line on both ends.
#[test]
fn rdma_failed_checkpoints_roll_back_and_the_benchmark_finishes() {
    let cmd = perftest("ib_send_bw", &["-D", "12", "-b"]);
    let Some(mut lab) = Lab::rdma(&["ib_send_bw"]) else {
        return;
    };
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b, c) = ("k18a", "k18b", "k18c");
    for (n, addr) in [
        (a, "198.18.1.181"),
        (b, "198.18.1.182"),
        (c, "198.18.1.183"),
    ] {
        lab.clean_node(n);
        lab.nodes.push(n.to_string());
        lab.ok(&["node", "add", n, "--addr", addr, "--mtu", "4096"]);
    }
    lab.container(a, "k18srv", "198.19.1.181", &cmd);
    std::thread::sleep(Duration::from_millis(500));
    let mut client = cmd.clone();
    client.push("198.19.1.181");
    lab.container(b, "k18cli", "198.19.1.182", &client);
    wait_traffic(a, Duration::from_secs(60));
    let watch = NodeWatch::start(b);
    let qps_on_a = node_qps(a);
    assert_eq!(qps_on_a.len(), 1, "{qps_on_a:?}");
    for hook in ["checkpoint", "dump_unix_sk"] {
        std::thread::sleep(Duration::from_millis(700));
        let child = Command::new(MIGROS)
            .args(["migrate", "k18srv", "--to", c])
            .env("MIGROS_CRIU_FAIL", hook)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migros");
        let out = wait_bounded(child, &["migrate"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{hook}: the checkpoint must fail");
        assert!(err.contains("checkpoint failed"), "{hook}: {err}");
        assert!(err.contains("still running on node k18a"), "{hook}: {err}");
        // CRIU's log (named by migrate) shows the plugin's injected failure.
        let log = err
            .split("CRIU's log: ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{hook}: no CRIU log named: {err}"));
        let log = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{log}: {e}"));
        assert!(
            log.contains(&format!("{hook}: failure injected")),
            "{hook}: the plugin's injected failure is what failed the dump:\n{log}"
        );
        let ps = lab.ps("k18srv").expect("listed");
        assert_eq!(
            (ps["status"].as_str(), ps["node"].as_str()),
            (Some("running"), Some(a)),
            "{ps}"
        );
        // The QP runs on where it was; nothing reached node C.
        let now: Vec<_> = node_qps(a).iter().map(|q| q["qpn"].clone()).collect();
        assert_eq!(now, [qps_on_a[0]["qpn"].clone()], "{hook}");
        assert!(node_qps(c).is_empty(), "{hook}");
    }
    let (cs, ss) = (lab.wait("k18cli"), lab.wait("k18srv"));
    let seen = watch.finish();
    let (cl, sl) = (lab.logs("k18cli"), lab.logs("k18srv"));
    assert_eq!((cs, ss), (0, 0), "client:\n{cl}\nserver:\n{sl}");
    perftest::assert_bw("server", &sl, 65536, None);
    perftest::assert_bw("client", &cl, 65536, None);
    for l in [&cl, &sl] {
        assert!(!l.contains("Completion with error"), "{l}");
    }
    assert!(
        seen.pauses >= 2 && seen.resumes >= 2,
        "each failed checkpoint paused the client's QP and its rollback resumed it: \
         pauses {} resumes {}",
        seen.pauses,
        seen.resumes
    );
}

/// A listening rdma_cm server keeps accepting on its new node: `ucmatose`
/// serving two connections (`-c 2`, ten 100-byte messages each way on
/// each) in a container on node A; a first client (`-c 1`) connects to
/// node A's device address and waits for the server's messages (which
/// ucmatose sends once both connections are up); the server is migrated
/// to node C with its listener and that connection; then a NEW client
/// connects to node C's address and is accepted there by the moved
/// listener. The server then exchanges messages over both connections
/// (the first one migrated: its CM MADs still go to node A, whose
/// tombstone forwards them) and disconnects both; all three end with
/// "data transfers complete" and status 0.
#[test]
fn rdma_cm_listener_accepts_a_new_client_after_the_move() {
    let Some(mut lab) = Lab::rdma(&["ucmatose"]) else {
        return;
    };
    let _one = RDMA.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b, c) = ("k22a", "k22b", "k22c");
    let (addr_a, addr_c) = ("198.18.1.221", "198.18.1.223");
    for (n, addr) in [(a, addr_a), (b, "198.18.1.222"), (c, addr_c)] {
        lab.clean_node(n);
        lab.nodes.push(n.to_string());
        lab.ok(&["node", "add", n, "--addr", addr, "--mtu", "4096"]);
    }
    lab.container(a, "k22srv", "198.19.1.221", &["ucmatose", "-c", "2"]);
    std::thread::sleep(Duration::from_millis(500));
    lab.container(
        b,
        "k22cli1",
        "198.19.1.222",
        &["ucmatose", "-s", addr_a, "-c", "1"],
    );
    // The first connection is up (its QP on node A is connected).
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_qps(a).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no QP on node A:\n{}\n{}",
            lab.logs("k22srv"),
            lab.logs("k22cli1")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));
    let out = lab.migrate("k22srv", c);
    assert_eq!(lab.ps("k22srv").expect("listed")["node"], c);
    assert!(
        out.contains("rdma_cm connection(s) free on k22c"),
        "the check step covered the CM state: {out}"
    );
    // Nothing listens on node A any more; a new client goes to node C.
    let t0 = Instant::now();
    lab.container(
        b,
        "k22cli2",
        "198.19.1.223",
        &["ucmatose", "-s", addr_c, "-c", "1"],
    );
    let c2 = lab.wait("k22cli2");
    let connected = t0.elapsed();
    let (c1, s) = (lab.wait("k22cli1"), lab.wait("k22srv"));
    let logs: Vec<(&str, String)> = ["k22srv", "k22cli1", "k22cli2"]
        .into_iter()
        .map(|n| (n, lab.logs(n)))
        .collect();
    eprintln!("new client connected and done {connected:?} after the migration");
    assert_eq!((s, c1, c2), (0, 0, 0), "{logs:#?}");
    for (n, l) in &logs {
        assert!(
            l.contains("data transfers complete") && l.contains("return status 0"),
            "{n}:\n{l}"
        );
    }
}

/// `rping` (librdmacm: its connection, then per iteration a SEND, an RDMA
/// READ of the client's buffer, a SEND, an RDMA WRITE back and a SEND),
/// 10000 iterations verified (`-V`), the server migrated from A to C in
/// the middle of the run: both end with status 0, no completion error,
/// the client's QP resumed with the server on C, C serving the moved QP.
#[test]
fn rdma_cm_rping_long_run_server_migrates() {
    let server: &[&str] = &["rping", "-s", "-a", "0.0.0.0", "-C", "10000", "-V"];
    let client: &[&str] = &["rping", "-c", "-C", "10000", "-V", "-a"];
    let t0 = Instant::now();
    let Some(r) = (RdmaRun {
        server,
        client,
        server_at_node: true,
        ..RdmaRun::server_to_c("k23", 225, server)
    })
    .run() else {
        return;
    };
    eprintln!("rping: 10000 iterations in {:?}", t0.elapsed());
    r.assert_partner_resumed();
    r.assert_destination_served();
}
