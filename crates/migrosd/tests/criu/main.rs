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

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdin};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::rc::{connect_rc, ALL_ACCESS};
use common::socket::{fd_of_inode, unread_then_outbox};
use common::{can_run, start_daemon, Daemon, Raw, TIMEOUT};
use migros_proto::admin::{AdminRequest, AdminResponse, SessionIds, SessionImage};
use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};
use migros_test_support::rc::signaled_send;
use migros_test_support::role::spawn_role;
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
    signaled_send(wr_id, WrOpcode::Send, vec![sge])
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
    use std::os::unix::fs::MetadataExt;
    let old = fd_of_inode(inode).expect("no descriptor for a checkpointed socket");
    let replay = unread_then_outbox(old, outbox);
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
    let (mut child, lines) = spawn_role("criu_child_role", CHILD_ENV, dir);
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
mod migration;
mod requests;
