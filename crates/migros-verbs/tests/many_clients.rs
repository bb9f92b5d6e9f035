//! End to end: one daemon serves 100 client sessions of 10 RC QPs each.
//!
//! Daemon A (under test) and daemon B run on their own loopback addresses
//! with a temporary socket directory. Ten client processes (this test
//! binary re-executed in [`child_role`]) each open ten contexts on A, each
//! context with one PD, CQ and MR and ten RC QPs: 100 sessions, 1000 QPs.
//! This process connects a peer QP on B to each of them (B's side is one
//! context per A session, driven by one thread per client process). Every
//! QP pair carries a few SENDs in each direction; receivers check every
//! byte, and every QP's send and receive completions arrive in posting
//! order. While all sessions are open, the admin socket shows them (and
//! the 1000 QPs in RTS with traffic); then the clients destroy their
//! objects and exit, the admin socket shows the sessions gone, and a fresh
//! context on A still works.
//!
//! Needs root (the daemons reach the clients' memory with
//! process_vm_readv/writev); skipped otherwise. Every wait has a deadline,
//! and a watchdog kills the daemons and clients (which fails every
//! blocking request) if the test overruns [`BUDGET`].

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use migros_proto::admin::{AdminRequest, AdminResponse, DaemonStatus, QpStats};
use migros_proto::frame;
use migros_verbs::*;
use support::*;

/// Client processes.
const CLIENTS: usize = 10;
/// Sessions (contexts) per client process.
const SESSIONS: usize = 10;
/// RC QPs per session.
const QPS: usize = 10;
/// SENDs per QP in each direction.
const MSGS: usize = 4;
/// Bytes of one receive buffer; messages are 64..SLOT bytes (1 or 2 packets).
const SLOT: usize = 2048;
const A: (&str, &str) = ("a", "127.0.0.241");
const B: (&str, &str) = ("b", "127.0.0.242");
/// The whole test, watchdog included.
const BUDGET: Duration = Duration::from_secs(55);
/// Any one phase (client setup, traffic, teardown).
const PHASE: Duration = Duration::from_secs(30);
/// Local ACK timeout of every QP: 4.096 us * 2^17 = 537 ms (7 retries:
/// about 4 s without progress before a QP fails). The test is about
/// scale, not timing: 8000 messages burst through two daemons, which on a
/// small loaded machine (2 cores, other tests running, unoptimised
/// daemons) can take longer than 100 ms to acknowledge a packet. With the
/// usual 16.7 ms (12) the retransmissions feed on themselves and QPs ran
/// out of retries (RetryExcErr) under load, before and after the CRIU
/// changes alike. Loopback loses nothing, so the long timeout costs no time.
const ACK_TIMEOUT: u8 = 17;
/// Retransmissions before a QP fails.
const RETRY_CNT: u8 = 7;

const CHILD_DIR_ENV: &str = "MIGROS_VERBS_MANY_CLIENTS_DIR";
const CHILD_INDEX_ENV: &str = "MIGROS_VERBS_MANY_CLIENTS_INDEX";

/// Which side sends a message (the content differs per direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    AToB,
    BToA,
}

/// Message `m` of QP pair `pair` in direction `dir`: a header naming it,
/// then bytes that depend on all three and on the position.
fn message(pair: u32, dir: Dir, m: usize) -> Vec<u8> {
    let d = dir as usize;
    let len = 64 + (pair as usize * 7 + m * 331 + d * 97) % (SLOT - 64);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&pair.to_le_bytes());
    v.extend_from_slice(&(m as u16).to_le_bytes());
    v.extend_from_slice(&(d as u16).to_le_bytes());
    v.extend((8..len).map(|i| ((i * 131 + pair as usize * 7 + m * 13 + d * 101) % 251) as u8));
    v
}

fn wr_id(q: usize, m: usize) -> u64 {
    ((q as u64) << 32) | m as u64
}

/// One session's worth of QPs (either side), with what arrived so far.
struct Group {
    // Field order is drop order: QPs, then the CQ, MR and PD, then the session.
    qps: Vec<Qp>,
    cq: Cq,
    mr: Mr,
    _pd: Pd,
    ctx: Context,
    /// The QP pair number of each QP (both ends of a pair share it).
    pairs: Vec<u32>,
    sends: Dir,
    acked: Vec<usize>,
    received: Vec<usize>,
}

impl Group {
    fn new(ctx: Context, pairs: Vec<u32>, sends: Dir) -> Group {
        let n = pairs.len();
        let pd = ctx.alloc_pd().expect("pd");
        let cq = ctx.create_cq((2 * n * MSGS) as u32, None).expect("cq");
        let qps = (0..n)
            .map(|_| {
                pd.create_qp(&rc_attr(&cq, None, cap(MSGS as u32)))
                    .expect("qp")
            })
            .collect();
        let mr = pd.alloc_mr(2 * n * MSGS * SLOT, ALL_ACCESS).expect("mr");
        Group {
            qps,
            cq,
            mr,
            _pd: pd,
            ctx,
            pairs,
            sends,
            acked: vec![0; n],
            received: vec![0; n],
        }
    }

    fn recv_off(&self, q: usize, m: usize) -> usize {
        (q * MSGS + m) * SLOT
    }

    fn send_off(&self, q: usize, m: usize) -> usize {
        (self.qps.len() * MSGS + q * MSGS + m) * SLOT
    }

    fn receives(&self) -> Dir {
        match self.sends {
            Dir::AToB => Dir::BToA,
            Dir::BToA => Dir::AToB,
        }
    }

    fn qpns(&self) -> Vec<Qpn> {
        self.qps.iter().map(|q| q.qpn).collect()
    }

    /// Connects QP `q` to `remote[q]` on `addr`.
    fn connect(&self, remote: &[Qpn], addr: IpAddr) {
        assert_eq!(remote.len(), self.qps.len());
        for (qp, &r) in self.qps.iter().zip(remote) {
            connect_rc(qp, r, addr, ACK_TIMEOUT, RETRY_CNT);
        }
    }

    /// Posts a receive buffer for every message each QP will get.
    fn post_recvs(&self) {
        for (q, qp) in self.qps.iter().enumerate() {
            let wrs: Vec<RecvWr> = (0..MSGS)
                .map(|m| RecvWr {
                    wr_id: wr_id(q, m),
                    sges: vec![self.mr.sge(self.recv_off(q, m), SLOT)],
                })
                .collect();
            qp.post_recv(&wrs).expect("post_recv");
        }
    }

    /// Posts every message of every QP (one doorbell per QP).
    fn send_all(&mut self) {
        for q in 0..self.qps.len() {
            let wrs: Vec<SendWr> = (0..MSGS)
                .map(|m| {
                    let msg = message(self.pairs[q], self.sends, m);
                    let off = self.send_off(q, m);
                    self.mr.as_mut_slice()[off..off + msg.len()].copy_from_slice(&msg);
                    SendWr {
                        wr_id: wr_id(q, m),
                        opcode: WrOpcode::Send,
                        flags: SendFlags::SIGNALED,
                        data: SendData::Sges(vec![self.mr.sge(off, msg.len())]),
                        ud: None,
                    }
                })
                .collect();
            self.qps[q].post_send(&wrs).expect("post_send");
        }
    }

    fn done(&self) -> bool {
        self.acked.iter().all(|&n| n == MSGS) && self.received.iter().all(|&n| n == MSGS)
    }

    /// Takes the completions that arrived and checks them; how many.
    fn poll(&mut self, wcs: &mut Vec<WorkCompletion>) -> usize {
        wcs.clear();
        self.cq.poll(wcs, 64).expect("poll");
        for wc in wcs.iter() {
            assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
            let (q, m) = ((wc.wr_id >> 32) as usize, (wc.wr_id & 0xffff_ffff) as usize);
            assert!(q < self.qps.len() && m < MSGS, "unknown wr_id: {wc:?}");
            let pair = self.pairs[q];
            match wc.opcode {
                WcOpcode::Send => {
                    assert_eq!(m, self.acked[q], "send completion out of order: {wc:?}");
                    self.acked[q] += 1;
                }
                WcOpcode::Recv => {
                    assert_eq!(m, self.received[q], "receive out of order: {wc:?}");
                    assert_eq!(wc.qp_num, self.qps[q].qpn, "{wc:?}");
                    let want = message(pair, self.receives(), m);
                    assert_eq!(wc.byte_len as usize, want.len(), "{wc:?}");
                    let off = self.recv_off(q, m);
                    let slot = &self.mr.as_slice()[off..off + SLOT];
                    assert!(
                        slot[..want.len()] == want[..],
                        "pair {pair} message {m}: wrong bytes"
                    );
                    assert!(
                        slot[want.len()..].iter().all(|&b| b == 0),
                        "pair {pair} message {m}: bytes written past the message"
                    );
                    self.received[q] += 1;
                }
                other => panic!("unexpected completion {other:?}: {wc:?}"),
            }
        }
        wcs.len()
    }

    fn progress(&self) -> String {
        format!(
            "session {}: acked {:?}, received {:?}",
            self.ctx.session(),
            self.acked,
            self.received
        )
    }
}

/// Polls `groups` until every message is acked and received.
fn wait_done(groups: &mut [Group], deadline: Instant) {
    let mut wcs = Vec::new();
    while !groups.iter().all(Group::done) {
        let got: usize = groups.iter_mut().map(|g| g.poll(&mut wcs)).sum();
        if got == 0 {
            assert!(
                Instant::now() < deadline,
                "traffic timed out: {}",
                groups
                    .iter()
                    .filter(|g| !g.done())
                    .map(Group::progress)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn pair_id(client: usize, session: usize, q: usize) -> u32 {
    ((client * SESSIONS + session) * QPS + q) as u32
}

fn line_fields<T: std::str::FromStr>(s: &str) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    s.split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect()
}

/// Not a test on its own: a client process of
/// `hundred_sessions_of_ten_qps_on_one_daemon`. Opens its sessions on A,
/// prints their QPNs, reads B's, exchanges the messages, and tears
/// everything down when told to.
#[test]
fn child_role() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let client: usize = std::env::var(CHILD_INDEX_ENV)
        .expect("index")
        .parse()
        .expect("index");
    let deadline = Instant::now() + PHASE;
    let mut groups: Vec<Group> = (0..SESSIONS)
        .map(|s| {
            let ctx = Context::open_in(Path::new(&dir), A.0).expect("open a");
            let pairs = (0..QPS).map(|q| pair_id(client, s, q)).collect();
            Group::new(ctx, pairs, Dir::AToB)
        })
        .collect();
    let qpns: Vec<String> = groups
        .iter()
        .flat_map(Group::qpns)
        .map(|q| q.to_string())
        .collect();
    let sessions: Vec<String> = groups.iter().map(|g| g.ctx.session().to_string()).collect();
    println!("CHILD QPS {}", qpns.join(" "));
    println!("CHILD SESSIONS {}", sessions.join(" "));
    std::io::stdout().flush().expect("stdout");

    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    stdin.read_line(&mut line).expect("peer line");
    let mut it = line.split_whitespace();
    let addr: IpAddr = it.next().expect("peer address").parse().expect("address");
    let remote: Vec<Qpn> = line_fields(&it.collect::<Vec<_>>().join(" "));
    assert_eq!(remote.len(), SESSIONS * QPS);
    for (g, r) in groups.iter().zip(remote.chunks(QPS)) {
        g.connect(r, addr);
        g.post_recvs();
    }
    println!("CHILD READY");
    std::io::stdout().flush().expect("stdout");
    for g in &mut groups {
        g.send_all();
    }
    wait_done(&mut groups, deadline);
    println!("CHILD DONE");
    std::io::stdout().flush().expect("stdout");

    line.clear();
    stdin.read_line(&mut line).expect("bye");
    assert_eq!(line.trim(), "BYE");
    // Destroys every QP, CQ, MR and PD, then closes each session.
    drop(groups);
    println!("CHILD CLOSED");
    std::io::stdout().flush().expect("stdout");
}

/// A client process and the B side of its sessions.
struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    groups: Vec<Group>,
    sessions: Vec<u64>,
}

impl Client {
    /// The next line the child printed after "CHILD ", which must start
    /// with `want`; its rest.
    fn line(&self, want: &str, deadline: Instant) -> String {
        let wait = deadline.saturating_duration_since(Instant::now());
        let l = self
            .lines
            .recv_timeout(wait)
            .unwrap_or_else(|e| panic!("client {} did not say {want}: {e}", self.child.id()));
        l.strip_prefix(want)
            .unwrap_or_else(|| panic!("client {} said {l:?}, not {want}", self.child.id()))
            .trim()
            .to_owned()
    }
}

/// Kills the client processes still running (a failed test leaves none behind).
struct Clients(Vec<Client>);

impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

fn spawn_client(dir: &Path, index: usize) -> Client {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_INDEX_ENV, index.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn a client");
    // The harness may print "test ... " before the child's own output on
    // the same line; lines are read on a thread so no wait is unbounded.
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(at) = l.find("CHILD ") {
                if tx.send(l[at + 6..].to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    let stdin = child.stdin.take().expect("piped");
    Client {
        child,
        stdin,
        lines,
        groups: Vec::new(),
        sessions: Vec::new(),
    }
}

/// Sets up B's side of `client`'s sessions and runs the traffic.
fn drive(net_dir: &Path, index: usize, client: &mut Client, deadline: Instant) {
    let qpns: Vec<Qpn> = line_fields(&client.line("QPS", deadline));
    assert_eq!(qpns.len(), SESSIONS * QPS);
    client.sessions = line_fields(&client.line("SESSIONS", deadline));
    let a_addr: IpAddr = A.1.parse().expect("address");
    let mut b_qpns = Vec::new();
    for (s, remote) in qpns.chunks(QPS).enumerate() {
        let ctx = Context::open_in(net_dir, B.0).expect("open b");
        let pairs = (0..QPS).map(|q| pair_id(index, s, q)).collect();
        let g = Group::new(ctx, pairs, Dir::BToA);
        g.connect(remote, a_addr);
        g.post_recvs();
        b_qpns.extend(g.qpns());
        client.groups.push(g);
    }
    let b_addr = client.groups[0].ctx.addr();
    let list: Vec<String> = b_qpns.iter().map(|q| q.to_string()).collect();
    writeln!(client.stdin, "{b_addr} {}", list.join(" ")).expect("write to client");
    client.stdin.flush().expect("write to client");
    client.line("READY", deadline);
    for g in &mut client.groups {
        g.send_all();
    }
    wait_done(&mut client.groups, deadline);
    client.line("DONE", deadline);
}

fn admin(dir: &Path, name: &str, req: &AdminRequest) -> AdminResponse {
    let mut s =
        UnixStream::connect(migros_proto::paths::admin_socket(dir, name)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    frame::write(&mut s, req).expect("admin request");
    frame::read(&mut s).expect("admin response")
}

fn status(dir: &Path, name: &str) -> DaemonStatus {
    match admin(dir, name, &AdminRequest::Status) {
        AdminResponse::Status(s) => s,
        other => panic!("status answered {other:?}"),
    }
}

fn qp_stats(dir: &Path, name: &str) -> Vec<QpStats> {
    match admin(dir, name, &AdminRequest::Stats) {
        AdminResponse::Stats { qps, .. } => qps,
        other => panic!("stats answered {other:?}"),
    }
}

/// Waits until the daemon's status satisfies `f`.
fn wait_status(dir: &Path, name: &str, what: &str, f: impl Fn(&DaemonStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status(dir, name);
        if f(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting for {what}: {:?}",
            st.sessions
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills `pids` (the daemons and clients this test started) unless the
/// test ends within [`BUDGET`]: every blocking request then fails.
fn watchdog(pids: Vec<u32>) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(BUDGET) {
            eprintln!("watchdog: the test overran {BUDGET:?}, killing {pids:?}");
            for pid in pids {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    });
    tx
}

#[test]
fn hundred_sessions_of_ten_qps_on_one_daemon() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() || !can_run() {
        return;
    }
    let net = Net::start(&[A, B]);
    let start = Instant::now();
    let dir = net.dir.path();
    let a_pid = status(dir, A.0).pid;
    let b_pid = status(dir, B.0).pid;

    let mut clients = Clients((0..CLIENTS).map(|i| spawn_client(dir, i)).collect());
    let mut pids = vec![a_pid, b_pid];
    pids.extend(clients.0.iter().map(|c| c.child.id()));
    let _watchdog = watchdog(pids);

    // Setup and traffic: one thread per client process.
    let deadline = Instant::now() + PHASE;
    std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .0
            .iter_mut()
            .enumerate()
            .map(|(i, c)| s.spawn(move || drive(dir, i, c, deadline)))
            .collect();
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    let traffic = start.elapsed();

    // All 100 sessions are open on A, each with its ten QPs.
    let st = status(dir, A.0);
    assert_eq!(st.sessions.len(), CLIENTS * SESSIONS, "{:?}", st.sessions);
    let by_id: BTreeMap<u64, _> = st.sessions.iter().map(|s| (s.session, s)).collect();
    for c in &clients.0 {
        assert_eq!(c.sessions.len(), SESSIONS);
        for id in &c.sessions {
            let info = by_id.get(id).unwrap_or_else(|| panic!("no session {id}"));
            assert_eq!(info.pid, c.child.id(), "{info:?}");
            assert_eq!(
                (info.qps, info.cqs, info.mrs),
                (QPS as u32, 1, 1),
                "{info:?}"
            );
            assert!(!info.checkpointed, "{info:?}");
        }
    }
    let qps = qp_stats(dir, A.0);
    assert_eq!(qps.len(), CLIENTS * SESSIONS * QPS);
    let (mut retransmits, mut timeouts) = (0, 0);
    for q in &qps {
        assert_eq!(q.state, QpState::Rts, "{q:?}");
        assert_eq!(q.dest.map(|d| d.0), Some(B.1.parse().unwrap()), "{q:?}");
        assert!(q.counters.tx_packets >= MSGS as u64, "{q:?}");
        assert!(q.counters.rx_packets >= MSGS as u64, "{q:?}");
        retransmits += q.counters.retransmits;
        timeouts += q.counters.timeouts;
    }

    // Teardown: the clients destroy everything and exit, then B's side goes.
    let deadline = Instant::now() + PHASE;
    for c in &mut clients.0 {
        writeln!(c.stdin, "BYE").expect("write to client");
        c.stdin.flush().expect("write to client");
    }
    for c in &mut clients.0 {
        c.line("CLOSED", deadline);
        loop {
            if let Some(status) = c.child.try_wait().expect("wait") {
                assert!(status.success(), "client {} exited {status}", c.child.id());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "client {} did not exit",
                c.child.id()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for c in &mut clients.0 {
        c.groups.clear();
    }
    wait_status(dir, A.0, "no sessions", |s| s.sessions.is_empty());
    wait_status(dir, B.0, "no sessions", |s| s.sessions.is_empty());
    assert!(qp_stats(dir, A.0).is_empty());
    let teardown = start.elapsed() - traffic;

    // The daemon still serves a new client.
    let deadline = Instant::now() + PHASE;
    let pairs: Vec<u32> = (0..QPS as u32).map(|q| 100_000 + q).collect();
    let mut fresh = vec![
        Group::new(net.open(A.0), pairs.clone(), Dir::AToB),
        Group::new(net.open(B.0), pairs, Dir::BToA),
    ];
    fresh[0].connect(&fresh[1].qpns(), fresh[1].ctx.addr());
    fresh[1].connect(&fresh[0].qpns(), fresh[0].ctx.addr());
    for g in &mut fresh {
        g.post_recvs();
    }
    for g in &mut fresh {
        g.send_all();
    }
    wait_done(&mut fresh, deadline);
    let st = status(dir, A.0);
    assert_eq!(st.sessions.len(), 1, "{:?}", st.sessions);
    assert_eq!(st.sessions[0].session, fresh[0].ctx.session());
    assert_eq!(st.sessions[0].pid, std::process::id());
    drop(fresh);
    wait_status(dir, A.0, "no sessions", |s| s.sessions.is_empty());
    assert_eq!(
        status(dir, A.0).pid,
        a_pid,
        "the daemon is the same process"
    );

    eprintln!(
        "{} sessions x {QPS} QPs, {MSGS} SENDs each way per QP: setup and traffic {traffic:?}, \
         teardown {teardown:?}, total {:?}; on A: {timeouts} ACK timeouts, {retransmits} retransmits",
        CLIENTS * SESSIONS,
        start.elapsed()
    );
}
