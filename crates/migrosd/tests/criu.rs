//! The CRIU migration contract without CRIU: a client process (this test
//! binary again, in the `criu_child_role` role, using migros-verbs) streams
//! SENDs to a peer QP on daemon C. The test freezes it, checkpoints it on
//! daemon A with the admin requests the plugin sends, and restores it on
//! daemon B the way the plugin's RESTORE_UNIX_SK does: inside the process
//! (a hook thread of the child stands in for CRIU's restorer), a new
//! connection per socket with RestoreSession / RestoreChannel, `dup2`'d over
//! the old descriptor. Memory stays where it is (same process), which is
//! what CRIU's restore gives.
//!
//! The freeze is ptrace (the leader seized, the traffic thread interrupted:
//! CRIU's own freeze), or SIGSTOP for the rollback tests. Root only (the
//! daemons reach the processes' memory); skipped otherwise.
//! Addresses 127.0.0.191..199.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::rc::{connect_rc, ALL_ACCESS};
use common::{can_run, start_daemon, Daemon, Raw, TIMEOUT};
use migros_proto::admin::{AdminRequest, AdminResponse, SessionIds, SessionImage};
use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};
use migros_verbs::*;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

const CHILD_ENV: &str = "MIGROSD_CRIU_CHILD_DIR";
const MSG: usize = 64;
const SLOTS: u32 = 16;
const TOTAL: u32 = 1500;
/// SENDs the peer streams back (paced by what it received).
const PEER_TOTAL: u32 = 500;
const PEER_WINDOW: u32 = 4;
/// Receive slots on either side.
const RECV_SLOTS: u64 = 32;
/// Tags the child's receive WR ids.
const RECV_TAG: u64 = 1 << 32;
const WAIT: Duration = Duration::from_secs(30);

/// Byte `k` of message `seq`: every byte checked, none the same twice in a row.
fn pattern(seq: u32, k: usize) -> u8 {
    (seq.wrapping_mul(131).wrapping_add(k as u32 * 7) ^ (seq >> 8)) as u8
}

/// Byte `k` of the peer's message `seq`.
fn peer_pattern(seq: u32, k: usize) -> u8 {
    pattern(seq ^ 0x5a5a, k) ^ 0xa5
}

fn rc_qp(pd: &Pd, cq: &Cq) -> Qp {
    pd.create_qp(&QpInitAttr {
        qp_type: QpType::Rc,
        send_cq: cq,
        recv_cq: cq,
        srq: None,
        cap: QpCap {
            max_send_wr: 64,
            max_recv_wr: 64,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        },
        sq_sig_all: false,
    })
    .expect("qp")
}

fn send_wr(wr_id: u64, sge: Sge) -> SendWr {
    SendWr {
        wr_id,
        opcode: WrOpcode::Send,
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(vec![sge]),
        ud: None,
    }
}

// ---- the client process ----

/// Not a test on its own: the client process the tests below start.
#[test]
fn criu_child_role() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ctx = Context::open_in(Path::new(&dir), "a").expect("open a");
    let ch = ctx.create_comp_channel().expect("channel");
    let pd = ctx.alloc_pd().expect("pd");
    let cq = ctx.create_cq(256, Some(&ch)).expect("cq");
    let qp = rc_qp(&pd, &cq);
    let mut mr = pd.alloc_mr(SLOTS as usize * MSG, ALL_ACCESS).expect("mr");
    let inbox = pd
        .alloc_mr(RECV_SLOTS as usize * MSG, ALL_ACCESS)
        .expect("mr");
    let post_recv = |slot: u64| {
        qp.post_recv(&[RecvWr {
            wr_id: RECV_TAG | slot,
            sges: vec![inbox.sge(slot as usize * MSG, MSG)],
        }])
        .expect("post recv")
    };
    println!(
        "CHILD {} {} {}",
        qp.qpn,
        ctx.addr(),
        nix::unistd::gettid().as_raw()
    );
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut it = line.split_whitespace();
    let rqpn: Qpn = it.next().unwrap().parse().unwrap();
    let raddr: IpAddr = it.next().unwrap().parse().unwrap();
    connect_rc(&qp, rqpn, raddr, 12);
    for slot in 0..RECV_SLOTS {
        post_recv(slot);
    }
    // The plugin's stand-in: restores the sockets when told to.
    std::thread::spawn(|| {
        for line in std::io::stdin().lock().lines().map_while(|l| l.ok()) {
            if let Some(rest) = line.strip_prefix("RESTORE ") {
                let (sock, images) = rest.split_once(' ').unwrap();
                let images: Vec<SessionImage> = serde_json::from_str(images).unwrap();
                restore_sockets(Path::new(sock), &images);
                println!("CHILD RESTORED");
                std::io::stdout().flush().unwrap();
            }
        }
    });
    println!("CHILD READY");
    std::io::stdout().flush().unwrap();

    // Numbered SENDs, 16 in flight, each completion checked in order; the
    // peer's SENDs checked byte by byte. No printing in here: the thread
    // may be frozen holding stdout's lock.
    let (mut next, mut acked, mut got) = (0u32, 0u32, 0u32);
    let mut wcs = Vec::new();
    let start = Instant::now();
    while acked < TOTAL || got < PEER_TOTAL {
        assert!(start.elapsed() < WAIT * 2, "stalled at {acked}");
        while next < TOTAL && next - acked < SLOTS {
            let off = (next % SLOTS) as usize * MSG;
            for (k, b) in mr.as_mut_slice()[off..off + MSG].iter_mut().enumerate() {
                *b = pattern(next, k);
            }
            qp.post_send(&[send_wr(u64::from(next), mr.sge(off, MSG))])
                .expect("post");
            next += 1;
        }
        wcs.clear();
        cq.poll(&mut wcs, 32).expect("poll");
        for wc in &wcs {
            if wc.opcode == WcOpcode::Recv {
                assert_eq!(wc.status, WcStatus::Success);
                let slot = wc.wr_id & !RECV_TAG;
                let off = slot as usize * MSG;
                let want: Vec<u8> = (0..MSG).map(|k| peer_pattern(got, k)).collect();
                assert_eq!(
                    &inbox.as_slice()[off..off + MSG],
                    &want[..],
                    "peer message {got}"
                );
                got += 1;
                post_recv(slot);
                continue;
            }
            assert_eq!((wc.status, wc.wr_id), (WcStatus::Success, u64::from(acked)));
            acked += 1;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    // The completion channel works where the process is now.
    cq.req_notify(false).expect("arm");
    for (k, b) in mr.as_mut_slice()[..MSG].iter_mut().enumerate() {
        *b = pattern(TOTAL, k);
    }
    qp.post_send(&[send_wr(u64::from(TOTAL), mr.sge(0, MSG))])
        .expect("post");
    assert_eq!(ch.get_event_timeout(WAIT).expect("event"), Some(cq.handle));
    wcs.clear();
    cq.poll(&mut wcs, 4).expect("poll");
    assert_eq!(wcs.len(), 1);
    assert_eq!(wcs[0].status, WcStatus::Success);
    println!("CHILD DONE {} {} {}", acked, got, ctx.session());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// What the plugin's DUMP_UNIX_SK + RESTORE_UNIX_SK do for the sockets of
/// `images`, done inside this process: channels first (they park until
/// their session is restored), then the session.
fn restore_sockets(sock: &Path, images: &[SessionImage]) {
    for img in images {
        for ch in img.channels.iter().filter(|c| c.inode != 0) {
            replace_socket(sock, ch.inode, &ch.outbox, |inode, replay| {
                Request::RestoreChannel {
                    version: PROTOCOL_VERSION,
                    session: img.session,
                    channel: ch.channel,
                    inode,
                    replay,
                }
            });
        }
        replace_socket(sock, img.inode, &img.outbox, |inode, replay| {
            Request::RestoreSession {
                version: PROTOCOL_VERSION,
                session: img.session,
                path: sock.to_string_lossy().into_owned(),
                inode,
                image: img.objects.clone(),
                replay,
            }
        });
    }
}

fn replace_socket(
    sock: &Path,
    inode: u64,
    outbox: &[u8],
    req: impl FnOnce(u64, Vec<u8>) -> Request,
) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::unix::fs::MetadataExt;
    let old = fd_of_inode(inode).expect("no descriptor for a checkpointed socket");
    // What the process had not read yet, then what the daemon still held.
    let mut replay = vec![0u8; 1 << 20];
    let n = recv(
        old,
        &mut replay,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .unwrap_or(0);
    replay.truncate(n);
    replay.extend_from_slice(outbox);
    let mut new = UnixStream::connect(sock).expect("connect to the destination");
    let new_inode = std::fs::File::from(OwnedFd::from(new.try_clone().unwrap()))
        .metadata()
        .unwrap()
        .ino();
    frame::write(&mut new, &req(new_inode, replay)).unwrap();
    match frame::read::<Response>(&mut new).unwrap() {
        Response::Welcome { .. } | Response::Ok => {}
        other => panic!("restore answered {other:?}"),
    }
    // SAFETY: `old` is an open descriptor of this process (found in /proc/self/fd).
    let old_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(old) };
    let flags = fcntl(old_fd, FcntlArg::F_GETFL).unwrap();
    fcntl(&new, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags))).unwrap();
    // SAFETY: as above; dup2 replaces it atomically, the number stays.
    let mut target = unsafe { OwnedFd::from_raw_fd(old) };
    nix::unistd::dup2(&new, &mut target).unwrap();
    std::mem::forget(target);
    drop(new);
}

/// The descriptor of this process whose socket has inode `inode`.
fn fd_of_inode(inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

// ---- the test side ----

/// Fields drop in order: the peer's objects before the daemons, the
/// socket directory last.
struct Setup {
    peer_qp: Qp,
    peer_mr: Mr,
    peer_cq: Cq,
    peer_ctx: Context,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pid: u32,
    tid: i32,
    child_qpn: Qpn,
    received: u32,
    peer_sent: u32,
    peer_acked: u32,
    a: Daemon,
    b: Option<Daemon>,
    _c: Daemon,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Daemons a, (b,) c at `base`, `base+1`, ..., the
/// child on a connected to a peer QP on c, the stream started.
fn setup(base: u8, with_b: bool) -> Setup {
    setup_with(base, with_b, &[])
}

/// `setup`, with extra arguments for the peer's daemon (c).
fn setup_with(base: u8, with_b: bool, peer_args: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr = |k: u8| format!("127.0.0.{}", base + k);
    let a = start_daemon(dir, "a", &addr(0), &[]);
    let b = with_b.then(|| start_daemon(dir, "b", &addr(1), &[]));
    let c = start_daemon(dir, "c", &addr(if with_b { 2 } else { 1 }), peer_args);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "criu_child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(at) = l.find("CHILD ") {
                if tx.send(l[at + 6..].to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let info = lines.recv_timeout(WAIT).expect("the child did not start");
    let f: Vec<&str> = info.split_whitespace().collect();
    let (child_qpn, child_addr, tid): (Qpn, IpAddr, i32) = (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
    );
    let pid = child.id();
    let peer_ctx = Context::open_in(dir, "c").expect("open c");
    let pd = peer_ctx.alloc_pd().unwrap();
    let peer_cq = peer_ctx.create_cq(256, None).unwrap();
    let peer_qp = rc_qp(&pd, &peer_cq);
    // Receive slots, then the send window.
    let peer_mr = pd
        .alloc_mr(
            (RECV_SLOTS + u64::from(PEER_WINDOW)) as usize * MSG,
            ALL_ACCESS,
        )
        .unwrap();
    connect_rc(&peer_qp, child_qpn, child_addr, 12);
    for slot in 0..RECV_SLOTS {
        peer_qp
            .post_recv(&[RecvWr {
                wr_id: slot,
                sges: vec![peer_mr.sge(slot as usize * MSG, MSG)],
            }])
            .unwrap();
    }
    writeln!(stdin, "{} {}", peer_qp.qpn, peer_ctx.addr()).unwrap();
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "READY");
    Setup {
        _dir: tmp,
        a,
        b,
        _c: c,
        child,
        stdin,
        lines,
        pid,
        tid,
        child_qpn,
        peer_ctx,
        peer_cq,
        peer_qp,
        peer_mr,
        received: 0,
        peer_sent: 0,
        peer_acked: 0,
    }
}

impl Setup {
    /// Receives (and checks byte by byte) until `upto` messages arrived,
    /// sending the peer's stream along (paced by what arrived).
    fn receive(&mut self, upto: u32) {
        let start = Instant::now();
        while self.received < upto {
            assert!(
                start.elapsed() < WAIT,
                "stalled at {} of {upto}",
                self.received
            );
            let limit = (self.received / 3 + PEER_WINDOW).min(PEER_TOTAL);
            if self.poll_peer(limit) == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Posts the peer's SENDs up to number `limit` (window permitting) and
    /// handles its completions; returns how many there were.
    fn poll_peer(&mut self, limit: u32) -> usize {
        while self.peer_sent < limit && self.peer_sent - self.peer_acked < PEER_WINDOW {
            let seq = self.peer_sent;
            let off = (RECV_SLOTS as usize + (seq % PEER_WINDOW) as usize) * MSG;
            for (k, b) in self.peer_mr.as_mut_slice()[off..off + MSG]
                .iter_mut()
                .enumerate()
            {
                *b = peer_pattern(seq, k);
            }
            self.peer_qp
                .post_send(&[send_wr(u64::from(seq), self.peer_mr.sge(off, MSG))])
                .unwrap();
            self.peer_sent += 1;
        }
        let mut wcs = Vec::new();
        self.peer_cq.poll(&mut wcs, 32).unwrap();
        for wc in &wcs {
            if wc.opcode != WcOpcode::Recv {
                assert_eq!(
                    (wc.status, wc.wr_id),
                    (WcStatus::Success, u64::from(self.peer_acked)),
                    "{wc:?}"
                );
                self.peer_acked += 1;
                continue;
            }
            assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
            let off = wc.wr_id as usize * MSG;
            let got = &self.peer_mr.as_slice()[off..off + MSG];
            let want: Vec<u8> = (0..MSG).map(|k| pattern(self.received, k)).collect();
            assert_eq!(got, &want[..], "message {}", self.received);
            self.received += 1;
            self.peer_qp
                .post_recv(&[RecvWr {
                    wr_id: wc.wr_id,
                    sges: vec![self.peer_mr.sge(off, MSG)],
                }])
                .unwrap();
        }
        wcs.len()
    }

    /// Nothing arrives for `d` (the child's QP is stopped), and nothing
    /// the peer sends meanwhile completes (it gets the pause NAK).
    fn nothing_arrives(&mut self, d: Duration) {
        // What was on the wire before the pause lands first.
        let settle = Instant::now() + Duration::from_millis(30);
        while Instant::now() < settle {
            self.poll_peer(self.peer_sent);
            std::thread::sleep(Duration::from_millis(1));
        }
        let (before, acked) = (self.received, self.peer_acked);
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.poll_peer(PEER_TOTAL);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(self.received, before, "arrived while paused");
        assert_eq!(self.peer_acked, acked, "acknowledged while paused");
        assert!(self.peer_sent > self.peer_acked);
    }

    fn line(&self, want: &str) -> String {
        loop {
            let l = self
                .lines
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("the child did not say {want}"));
            if l.starts_with(want) {
                return l;
            }
        }
    }

    fn pause_and_checkpoint(&mut self) -> Vec<SessionImage> {
        let pid = self.pid;
        assert_eq!(
            self.a.admin(&AdminRequest::Pause { pid }),
            AdminResponse::Paused { sessions: 1 }
        );
        let images = match self.a.admin(&AdminRequest::Checkpoint { pid }) {
            AdminResponse::Checkpointed(i) => i,
            other => panic!("checkpoint answered {other:?}"),
        };
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].qpns, vec![self.child_qpn]);
        assert_eq!(images[0].device, "a");
        assert_ne!(images[0].inode, 0);
        assert_eq!(images[0].channels.len(), 1);
        assert_ne!(images[0].channels[0].inode, 0);
        images
    }

    /// The peer's QP only paused: still in RTS, no error completion (every
    /// one was checked), it got the pause NAK and heard the RESUME.
    fn peer_only_paused(&self) {
        assert_eq!(self.peer_qp.query().unwrap().qp_state, QpState::Rts);
        let (_, qps) = self.peer_ctx.stats().unwrap();
        let (_, counters) = qps.iter().find(|(q, _)| *q == self.peer_qp.qpn).unwrap();
        assert!(counters.pauses >= 1, "{counters:?}");
        assert!(counters.resumes >= 1, "{counters:?}");
    }

    /// Both streams complete, checked on both sides.
    fn finish(&mut self) {
        self.receive(TOTAL + 1);
        let start = Instant::now();
        while self.peer_acked < PEER_TOTAL {
            assert!(
                start.elapsed() < WAIT,
                "peer stalled at {}",
                self.peer_acked
            );
            if self.poll_peer(PEER_TOTAL) == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let done = self.line("DONE");
        assert!(
            done.starts_with(&format!("DONE {TOTAL} {PEER_TOTAL} ")),
            "{done}"
        );
    }
}

fn status(d: &Daemon) -> migros_proto::admin::DaemonStatus {
    match d.admin(&AdminRequest::Status) {
        AdminResponse::Status(s) => s,
        other => panic!("status answered {other:?}"),
    }
}

/// The plugin's whole sequence, with the process moving from a to b while
/// it streams to c.
#[test]
fn process_moves_between_daemons_as_criu_moves_it() {
    if !can_run() {
        return;
    }
    let mut s = setup(191, true);
    s.receive(300);
    // CRIU's freeze: the leader seized (traced counts as frozen), the
    // traffic thread interrupted.
    let (leader, traffic) = (Pid::from_raw(s.pid as i32), Pid::from_raw(s.tid));
    ptrace::seize(leader, ptrace::Options::empty()).expect("seize the leader");
    if traffic != leader {
        ptrace::seize(traffic, ptrace::Options::empty()).expect("seize the thread");
    }
    ptrace::interrupt(traffic).expect("interrupt");
    waitpid(traffic, Some(WaitPidFlag::__WALL)).expect("the thread stops");

    let images = s.pause_and_checkpoint();
    let session = images[0].session;
    s.nothing_arrives(Duration::from_millis(100));
    // The watchdog sees a traced process: no rollback.
    assert!(status(&s.a).sessions.iter().any(|x| x.session == session));

    let b = s.b.take().unwrap();
    writeln!(
        s.stdin,
        "RESTORE {} {}",
        b.socket().display(),
        serde_json::to_string(&images).unwrap()
    )
    .unwrap();
    s.line("RESTORED");
    // Restored, not resumed: the QP is stopped, nothing moves.
    s.nothing_arrives(Duration::from_millis(50));
    assert_eq!(
        b.admin(&AdminRequest::Resume { pid: s.pid }),
        AdminResponse::Resumed { sessions: 1 }
    );
    assert_eq!(
        s.a.admin(&AdminRequest::ForwardTombstones {
            qpns: images[0].qpns.clone(),
            to: b.addr.parse().unwrap(),
        }),
        AdminResponse::Ok
    );
    ptrace::detach(traffic, None).expect("detach the thread");
    if traffic != leader {
        // PTRACE_DETACH wants a stopped tracee.
        ptrace::interrupt(leader).expect("interrupt the leader");
        waitpid(leader, Some(WaitPidFlag::__WALL)).expect("the leader stops");
        ptrace::detach(leader, None).expect("detach the leader");
    }
    s.finish();
    s.peer_only_paused();

    let on_b = status(&b);
    assert_eq!(on_b.sessions.len(), 1);
    assert_eq!(on_b.sessions[0].session, session);
    assert_eq!(on_b.sessions[0].pid, s.pid);
    assert_eq!(on_b.sessions[0].channels, 1);
    let on_a = status(&s.a);
    assert!(on_a.sessions.is_empty(), "{:?}", on_a.sessions);
    assert_eq!(on_a.tombstones, vec![s.child_qpn]);
    assert_eq!(
        s.a.admin(&AdminRequest::ReleaseTombstones {
            qpns: vec![s.child_qpn]
        }),
        AdminResponse::Ok
    );
    assert!(status(&s.a).tombstones.is_empty());
    drop(b);
}

/// The dump failed and the process runs again (SIGCONT) with its
/// connection open: the daemon rolls back by itself.
#[test]
fn a_checkpointed_process_that_runs_again_is_rolled_back() {
    if !can_run() {
        return;
    }
    let mut s = setup(194, false);
    s.receive(300);
    kill(Pid::from_raw(s.pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(s.pid);
    s.pause_and_checkpoint();
    // Stopped ('T') counts as frozen: nothing moves, no rollback.
    s.nothing_arrives(Duration::from_millis(150));
    kill(Pid::from_raw(s.pid as i32), Signal::SIGCONT).unwrap();
    s.finish();
    s.peer_only_paused();
    assert!(status(&s.a).tombstones.is_empty());
}

/// The plugin's exit hook after a failed dump: Resume{pid} on the source.
#[test]
fn resume_rolls_a_checkpoint_back() {
    if !can_run() {
        return;
    }
    let mut s = setup(196, false);
    s.receive(300);
    kill(Pid::from_raw(s.pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(s.pid);
    s.pause_and_checkpoint();
    s.nothing_arrives(Duration::from_millis(50));
    assert_eq!(
        s.a.admin(&AdminRequest::Resume { pid: s.pid }),
        AdminResponse::Resumed { sessions: 1 }
    );
    // The QP runs again although the process is still stopped; it reads
    // the receives the peer posted... and the process continues later.
    assert_eq!(
        s.a.admin(&AdminRequest::Resume { pid: s.pid }),
        AdminResponse::Resumed { sessions: 0 }
    );
    kill(Pid::from_raw(s.pid as i32), Signal::SIGCONT).unwrap();
    s.finish();
    s.peer_only_paused();
}

/// The dump succeeded and the process was killed, but it is never
/// restored: the peer, paused by the tombstone, ends in an error once its
/// pause timeout (here 800 ms) has passed, not earlier and not never.
#[test]
fn a_peer_whose_partner_never_returns_errors_after_the_pause_timeout() {
    if !can_run() {
        return;
    }
    let mut s = setup_with(176, false, &["--pause-timeout-ms", "800"]);
    s.receive(300);
    kill(Pid::from_raw(s.pid as i32), Signal::SIGSTOP).unwrap();
    wait_stopped(s.pid);
    let paused_at = Instant::now();
    s.pause_and_checkpoint();
    s.nothing_arrives(Duration::from_millis(100));
    // CRIU kills the dumped process; nobody restores it.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    common::wait_until("a tombstone on a", || {
        status(&s.a).tombstones == vec![s.child_qpn]
    });
    let mut wcs = Vec::new();
    let failed = loop {
        assert!(
            paused_at.elapsed() < Duration::from_secs(20),
            "the peer never gave up"
        );
        wcs.clear();
        s.peer_cq.poll(&mut wcs, 32).unwrap();
        if let Some(wc) = wcs.iter().find(|w| w.status != WcStatus::Success) {
            break (wc.status, paused_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(failed.0, WcStatus::RetryExcErr, "{wcs:?}");
    assert!(failed.1 >= Duration::from_millis(800), "{:?}", failed.1);
    assert_eq!(s.peer_qp.query().unwrap().qp_state, QpState::Err);
}

fn wait_stopped(pid: u32) {
    common::wait_until("the child stops", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
        })
    });
}

// ---- requests on their own (this process is the client) ----

#[test]
fn check_identifiers_refuses_a_collision() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = start_daemon(tmp.path(), "a", "127.0.0.198", &[]);
    let (mut c, session) = a.session();
    let pd = match c.request(&Request::AllocPd) {
        Response::Pd { pd } => pd,
        other => panic!("{other:?}"),
    };
    let me = std::process::id();
    let ids = match a.admin(&AdminRequest::Identifiers { pid: me }) {
        AdminResponse::Identifiers(ids) => ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(ids.len(), 1);
    assert_eq!((ids[0].session, ids[0].pds.clone()), (session, vec![pd]));
    match a.admin(&AdminRequest::CheckIdentifiers(ids.clone())) {
        AdminResponse::Error { errno, message } => {
            assert_eq!(errno, libc::EEXIST);
            assert!(
                message.contains("session") && message.contains("exists"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    let other = SessionIds {
        session: session ^ 1,
        owner: ids[0].owner ^ 1,
        pds: vec![pd],
        ..SessionIds::default()
    };
    assert_eq!(
        a.admin(&AdminRequest::CheckIdentifiers(vec![other])),
        AdminResponse::Error {
            errno: libc::EEXIST,
            message: format!("pd {pd:#x} exists on this device"),
        }
    );
    let free = SessionIds {
        session: session ^ 1,
        owner: ids[0].owner ^ 1,
        pds: vec![pd ^ 1],
        qpns: vec![0x12],
        ..SessionIds::default()
    };
    assert_eq!(
        a.admin(&AdminRequest::CheckIdentifiers(vec![free])),
        AdminResponse::Ok
    );
    // Nobody: empty answers.
    assert_eq!(
        a.admin(&AdminRequest::Identifiers { pid: 1 }),
        AdminResponse::Identifiers(vec![])
    );
    checkpoint_drains_requests_and_holds_answers(&a, c, session);
}

/// Paused, the answers to this process's requests are held; Checkpoint
/// handles what it sent and returns the held answers as the outbox. This
/// process is running, so the watchdog then rolls back by itself and the
/// answers arrive.
fn checkpoint_drains_requests_and_holds_answers(a: &Daemon, mut c: common::Client, session: u64) {
    let me = std::process::id();
    assert_eq!(
        a.admin(&AdminRequest::Pause { pid: me }),
        AdminResponse::Paused { sessions: 1 }
    );
    c.send(&Request::AllocPd);
    c.send(&Request::QueryDevice);
    // Paused (no watchdog yet): nothing is written to the socket.
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(std::io::Read::read(&mut c.stream, &mut byte).is_err());
    let images = match a.admin(&AdminRequest::Checkpoint { pid: me }) {
        AdminResponse::Checkpointed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].session, session);
    assert!(images[0].qpns.is_empty());
    let mut outbox = &images[0].outbox[..];
    let pd = match frame::read::<Response>(&mut outbox).unwrap() {
        Response::Pd { pd } => pd,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        frame::read::<Response>(&mut outbox).unwrap(),
        Response::Device(_)
    ));
    assert!(outbox.is_empty());
    // Rolled back by the watchdog: the held answers arrive, in order.
    c.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(c.recv(), Response::Pd { pd });
    assert!(matches!(c.recv(), Response::Device(_)));
    assert_eq!(
        a.admin(&AdminRequest::Resume { pid: me }),
        AdminResponse::Resumed { sessions: 0 }
    );
    assert_eq!(c.request(&Request::DeallocPd { pd }), Response::Ok);
}

/// A dump and a restore on the same daemon (the process's connection
/// closes in between), with a request cut in two by the freeze: its start
/// travels in the image, its end comes on the new connection.
fn restore_on_the_same_daemon_with_a_request_cut_short(a: &Daemon) {
    use std::io::Write as _;
    let me = std::process::id();
    let (mut c, session) = a.session();
    let pd = match c.request(&Request::AllocPd) {
        Response::Pd { pd } => pd,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        a.admin(&AdminRequest::Pause { pid: me }),
        AdminResponse::Paused { sessions: 1 }
    );
    let mut query = Vec::new();
    frame::encode(&Request::QueryDevice, &mut query).unwrap();
    c.stream.write_all(&query[..3]).unwrap();
    let images = match a.admin(&AdminRequest::Checkpoint { pid: me }) {
        AdminResponse::Checkpointed(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!(images.len(), 1);
    let objects: serde_json::Value = serde_json::from_slice(&images[0].objects).unwrap();
    assert_eq!(objects["inbox"], serde_json::json!(query[..3]));
    drop(c);
    common::wait_until("the old session ends", || status(a).sessions.is_empty());
    let mut n = a.connect();
    match n.request(&Request::RestoreSession {
        version: PROTOCOL_VERSION,
        session,
        path: a.socket().to_string_lossy().into_owned(),
        inode: 1,
        image: images[0].objects.clone(),
        replay: Vec::new(),
    }) {
        Response::Welcome { session: s, .. } => assert_eq!(s, session),
        other => panic!("{other:?}"),
    }
    n.stream.write_all(&query[3..]).unwrap();
    assert!(matches!(n.recv(), Response::Device(_)));
    assert_eq!(
        a.admin(&AdminRequest::Resume { pid: me }),
        AdminResponse::Resumed { sessions: 1 }
    );
    // The same pd, in the same session.
    assert_eq!(n.request(&Request::DeallocPd { pd }), Response::Ok);
    drop(n);
    common::wait_until("the restored session ends", || {
        status(a).sessions.is_empty()
    });
}

#[test]
fn bad_restores_create_nothing_and_bad_admin_input_never_panics() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = start_daemon(tmp.path(), "a", "127.0.0.199", &[]);
    restore_on_the_same_daemon_with_a_request_cut_short(&a);
    let restore = |version, session, image: &[u8]| Request::RestoreSession {
        version,
        session,
        path: a.socket().to_string_lossy().into_owned(),
        inode: 1,
        image: image.to_vec(),
        replay: b"never written".to_vec(),
    };
    let mut c = a.connect();
    match c.request(&restore(PROTOCOL_VERSION, 77, b"not an image")) {
        Response::Error { errno, message } => {
            assert_eq!(errno, libc::EINVAL);
            assert!(message.starts_with("bad image"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.is_closed());
    let mut c = a.connect();
    match c.request(&restore(999, 77, b"{}")) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTONOSUPPORT),
        other => panic!("{other:?}"),
    }
    // A session id in use.
    let (_keep, session) = a.session();
    let mut c = a.connect();
    match c.request(&restore(PROTOCOL_VERSION, session, b"{}")) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EEXIST),
        other => panic!("{other:?}"),
    }
    let st = status(&a);
    assert_eq!(st.sessions.len(), 1, "{:?}", st.sessions);
    // A channel of a session that never comes is answered, then dropped
    // after a minute (not waited for here); a wrong version is refused.
    let mut c = a.connect();
    match c.request(&Request::RestoreChannel {
        version: 0,
        session: 5,
        channel: 6,
        inode: 7,
        replay: vec![],
    }) {
        Response::Error { errno, .. } => assert_eq!(errno, libc::EPROTONOSUPPORT),
        other => panic!("{other:?}"),
    }
    let mut c = a.connect();
    assert_eq!(
        c.request(&Request::RestoreChannel {
            version: PROTOCOL_VERSION,
            session: 5,
            channel: 6,
            inode: 7,
            replay: vec![],
        }),
        Response::Ok
    );
    admin_requests_from_bad_input_never_panic(&a);
}

/// Admin requests with pids, QPNs and frames that make no sense get an
/// answer (logged), never a crash.
fn admin_requests_from_bad_input_never_panic(a: &Daemon) {
    let me = std::process::id();
    for req in [
        AdminRequest::Pause { pid: 0 },
        AdminRequest::Pause { pid: u32::MAX },
        AdminRequest::Checkpoint { pid: 0 },
        AdminRequest::Checkpoint { pid: u32::MAX },
        AdminRequest::Resume { pid: 0 },
        AdminRequest::Resume { pid: 1 },
        AdminRequest::Identifiers { pid: u32::MAX },
        AdminRequest::CheckIdentifiers(vec![SessionIds::default(); 3]),
        AdminRequest::ForwardTombstones {
            qpns: vec![0, 1, u32::MAX],
            to: "127.0.0.1".parse().unwrap(),
        },
        AdminRequest::ReleaseTombstones {
            qpns: vec![0, u32::MAX],
        },
        // This process: no QP, an empty checkpoint, rolled back.
        AdminRequest::Pause { pid: me },
        AdminRequest::Pause { pid: me },
        AdminRequest::Checkpoint { pid: me },
        AdminRequest::Checkpoint { pid: me },
        AdminRequest::Resume { pid: me },
    ] {
        let resp = a.admin(&req);
        eprintln!("{req:?} -> {resp:?}");
    }
    // Garbage frames: an error, then the connection closes.
    for bytes in [
        &[3u8, 0, 0, 0, 0xff, 0xff, 0xff][..],
        &[1, 0, 0, 0, 200],
        &[6, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ] {
        let mut s = UnixStream::connect(a.admin_socket()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(bytes).unwrap();
        let r: AdminResponse = frame::read(&mut s).expect("an answer");
        eprintln!("{bytes:?} -> {r:?}");
    }
    // Still serving, the session still there.
    let st = status(a);
    assert_eq!(st.sessions.len(), 1);
}
