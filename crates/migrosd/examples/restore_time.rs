//! How long the daemons take to move a process with N connected RC QPs the
//! way CRIU moves it, and mostly how long its restore takes.
//!
//! ```text
//! sudo cargo run --release -p migrosd --example restore_time -- 1 100 1000
//! ```
//!
//! Three daemons run in this process (threads; addresses 127.0.0.231..233,
//! a temporary socket directory): source A, destination B, and C with the
//! peers. This process is the application: one session on A with one PD,
//! CQ and MR and N RC QPs, each connected to its own QP on C, and one
//! SEND per QP from A to C as a warm-up. Then, as the
//! plugin does it, admin `Pause` and `Checkpoint` on A; the session socket
//! is closed (the process "dies": A turns the QPs into tombstones); a new
//! connection to B sends `RestoreSession` with the image and is `dup2`'d
//! over the old descriptor (what RESTORE_UNIX_SK gives the restored
//! process); one SEND per QP is posted (held: the QPs are stopped); admin
//! `Resume` on B. Memory stays where it is, as after CRIU's restore.
//! From the pause until A holds the tombstones a child process traces
//! this one (`PTRACE_SEIZE`, see [`Seized`]), as CRIU's dump does, so that
//! A's watchdog does not take it for a process running again.
//!
//! Columns (milliseconds, the median of `--runs` runs, 3 by default):
//! - `pause`, `checkpoint`: the admin requests on A, sent to answer;
//! - `restore`: RestoreSession sent to its Welcome read: the image decoded
//!   and every object recreated on B (QPs stopped);
//! - `resume`: admin Resume sent to its answer: every QP sent its RESUME;
//! - `back`: admin Resume sent until every QP's SEND completed on B and
//!   arrived on C: every peer acknowledged the RESUME and traffic flows;
//! - `B/qp`: this process's resident memory grown by setting up the QPs
//!   (A's and C's daemon state and both applications' rings and handles),
//!   divided by the 2N QPs, in the first run: an upper bound on what one
//!   QP costs a daemon.
//!
//! Needs root (the daemons reach this process's memory with
//! process_vm_readv/writev; the child traces it).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use migros_proto::admin::{AdminRequest, AdminResponse, SessionImage};
use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};
use migros_verbs::*;

#[path = "../tests/common/rc.rs"]
mod rc;
use rc::{connect_rc, ALL_ACCESS};
#[path = "../tests/common/socket.rs"]
mod socket;
use socket::{fd_of_inode, unread_then_outbox};

const A: (&str, &str) = ("a", "127.0.0.231");
const B: (&str, &str) = ("b", "127.0.0.232");
const C: (&str, &str) = ("c", "127.0.0.233");
/// Bytes of one message (and of one receive slot).
const MSG: usize = 64;
/// Any wait.
const WAIT: Duration = Duration::from_secs(60);

fn main() {
    let mut runs = 3;
    let mut counts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--runs takes a number");
            }
            "-h" | "--help" => {
                println!("usage: restore_time [--runs R] [QPS...]   (default: 1 100 1000)");
                return;
            }
            n => counts.push(n.parse::<usize>().expect("a number of QPs")),
        }
    }
    if counts.is_empty() {
        counts = vec![1, 100, 1000];
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("restore_time needs root: the daemons reach this process's memory");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let _ = DIR.set(dir.path().to_path_buf());
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    for (name, addr) in [A, B, C] {
        start_daemon(dir.path(), name, addr);
    }
    println!(
        "{:>6} {:>10} {:>8} {:>11} {:>9} {:>8} {:>8} {:>6}",
        "qps", "image", "pause", "checkpoint", "restore", "resume", "back", "B/qp"
    );
    for n in counts {
        let mut rows: Vec<Row> = (0..runs.max(1)).map(|_| migrate(dir.path(), n)).collect();
        let image = rows[0].image;
        let rss_per_qp = rows[0].rss_per_qp;
        let med = |f: fn(&Row) -> Duration, rows: &mut Vec<Row>| {
            rows.sort_by_key(f);
            ms(f(&rows[rows.len() / 2]))
        };
        println!(
            "{n:>6} {:>9}B {:>8} {:>11} {:>9} {:>8} {:>8} {:>6}",
            image,
            med(|r| r.pause, &mut rows),
            med(|r| r.checkpoint, &mut rows),
            med(|r| r.restore, &mut rows),
            med(|r| r.resume, &mut rows),
            med(|r| r.back, &mut rows),
            rss_per_qp,
        );
    }
    for (name, _) in [A, B, C] {
        let _ = admin(dir.path(), name, &AdminRequest::Shutdown);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// One migration's figures.
struct Row {
    image: usize,
    rss_per_qp: u64,
    pause: Duration,
    checkpoint: Duration,
    restore: Duration,
    resume: Duration,
    back: Duration,
}

fn start_daemon(dir: &Path, name: &'static str, addr: &str) {
    let cfg = migrosd::Config::new(name, addr.parse().expect("address"), dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("migrosd-{name}"))
        .spawn(move || match migrosd::Daemon::new(cfg) {
            Ok(mut d) => {
                let _ = tx.send(Ok(()));
                if let Err(e) = d.run() {
                    eprintln!("daemon {name}: {e}");
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
            }
        })
        .expect("a daemon thread");
    if let Err(e) = rx.recv().expect("the daemon thread") {
        eprintln!("daemon {name} did not start: {e}");
        std::process::exit(1);
    }
}

fn admin(dir: &Path, name: &str, req: &AdminRequest) -> AdminResponse {
    let mut s =
        UnixStream::connect(migros_proto::paths::admin_socket(dir, name)).expect("connect admin");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    frame::write(&mut s, req).expect("admin request");
    frame::read(&mut s).expect("admin response")
}

/// A session with N RC QPs on one CQ, and an MR with a slot per QP for
/// sending and one for receiving.
struct Side {
    qps: Vec<Qp>,
    cq: Cq,
    mr: Mr,
    _pd: Pd,
    ctx: Context,
}

impl Side {
    fn new(dir: &Path, dev: &str, n: usize) -> Side {
        let ctx = Context::open_in(dir, dev).expect("open a device");
        let pd = ctx.alloc_pd().expect("pd");
        let cq = ctx.create_cq((4 * n + 16) as u32, None).expect("cq");
        let qps = (0..n)
            .map(|_| {
                pd.create_qp(&QpInitAttr {
                    qp_type: QpType::Rc,
                    send_cq: &cq,
                    recv_cq: &cq,
                    srq: None,
                    cap: QpCap {
                        max_send_wr: 4,
                        max_recv_wr: 4,
                        max_send_sge: 1,
                        max_recv_sge: 1,
                        max_inline_data: 0,
                    },
                    sq_sig_all: false,
                })
                .expect("qp")
            })
            .collect();
        let mr = pd.alloc_mr(2 * n * MSG, ALL_ACCESS).expect("mr");
        Side {
            qps,
            cq,
            mr,
            _pd: pd,
            ctx,
        }
    }

    fn connect(&self, remote: &Side) {
        let addr = remote.ctx.addr();
        for (qp, r) in self.qps.iter().zip(&remote.qps) {
            connect_rc(qp, r.qpn, addr, 17);
        }
    }

    fn post_recvs(&self, per_qp: usize) {
        let n = self.qps.len();
        for (q, qp) in self.qps.iter().enumerate() {
            let wrs: Vec<RecvWr> = (0..per_qp)
                .map(|_| RecvWr {
                    wr_id: q as u64,
                    sges: vec![self.mr.sge((n + q) * MSG, MSG)],
                })
                .collect();
            qp.post_recv(&wrs).expect("post_recv");
        }
    }

    fn send_one_each(&mut self, round: u8) {
        for q in 0..self.qps.len() {
            self.mr.as_mut_slice()[q * MSG..(q + 1) * MSG].fill(round);
            let wr = SendWr {
                wr_id: q as u64,
                opcode: WrOpcode::Send,
                flags: SendFlags::SIGNALED,
                data: SendData::Sges(vec![self.mr.sge(q * MSG, MSG)]),
                ud: None,
            };
            self.qps[q].post_send(&[wr]).expect("post_send");
        }
    }

    /// Waits for `n` successful completions.
    fn wait(&self, n: usize, what: &str) {
        let deadline = Instant::now() + WAIT;
        let mut wcs = Vec::new();
        let mut got = 0;
        while got < n {
            wcs.clear();
            self.cq.poll(&mut wcs, 256).expect("poll");
            for wc in &wcs {
                if wc.status != WcStatus::Success {
                    diagnose(what, got, n, wc);
                }
            }
            got += wcs.len();
            if wcs.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {got} of {n} completions"
                );
                std::thread::yield_now();
            }
        }
    }
}

/// A failed completion: what each daemon counted, then the panic.
fn diagnose(what: &str, got: usize, n: usize, wc: &WorkCompletion) -> ! {
    if let Some(dir) = DIR.get() {
        for (name, _) in [A, B, C] {
            if let AdminResponse::Stats { device, qps } = admin(dir, name, &AdminRequest::Stats) {
                let sum = |f: fn(&migros_proto::counters::QpCounters) -> u64| -> u64 {
                    qps.iter().map(|q| f(&q.counters)).sum()
                };
                let timeouts = sum(|c| c.timeouts);
                let retransmits = sum(|c| c.retransmits);
                let pauses = sum(|c| c.pauses);
                let resumes = sum(|c| c.resumes);
                let mut states = std::collections::BTreeMap::new();
                for q in &qps {
                    *states.entry(format!("{:?}", q.state)).or_insert(0) += 1;
                }
                if let AdminResponse::Status(st) = admin(dir, name, &AdminRequest::Status) {
                    eprintln!(
                        "{name}: {} sessions, {} tombstones",
                        st.sessions.len(),
                        st.tombstones.len()
                    );
                }
                eprintln!(
                    "{name}: {device:?} timeouts={timeouts} retransmits={retransmits} \
                     pauses={pauses} resumes={resumes} states={states:?}"
                );
            }
        }
    }
    if let Some(t) = RESUMED.get() {
        eprintln!("{:?} after the resume", t.elapsed());
    }
    panic!("{what}: {wc:?} after {got} of {n} completions");
}

static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
static RESUMED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Sets up N QP pairs between A and C, moves the A side to B, and times it.
fn migrate(dir: &Path, n: usize) -> Row {
    let pid = std::process::id();
    let rss = rss_bytes();
    let mut app = Side::new(dir, A.0, n);
    let peers = Side::new(dir, C.0, n);
    app.connect(&peers);
    peers.connect(&app);
    let rss_per_qp = rss_bytes().saturating_sub(rss) / (2 * n as u64).max(1);
    peers.post_recvs(2);
    app.send_one_each(1);
    app.wait(n, "warm-up sends");
    peers.wait(n, "warm-up receives");

    // From the pause until A has turned the QPs into tombstones, this
    // process looks to A's watchdog as CRIU's dump leaves a process.
    let seized = Seized::new();
    let t = Instant::now();
    match admin(dir, A.0, &AdminRequest::Pause { pid }) {
        AdminResponse::Paused { sessions: 1 } => {}
        other => panic!("pause answered {other:?}"),
    }
    let pause = t.elapsed();
    let t = Instant::now();
    let image = match admin(dir, A.0, &AdminRequest::Checkpoint { pid }) {
        AdminResponse::Checkpointed(mut images) if images.len() == 1 => images.remove(0),
        other => panic!("checkpoint answered {other:?}"),
    };
    let checkpoint = t.elapsed();

    let restore = restore_session(dir, &image);
    wait_tombstones(dir, &image.qpns);
    drop(seized);

    // Posted while the QPs are stopped: they go out after the RESUME.
    app.send_one_each(2);
    let t = Instant::now();
    let _ = RESUMED.set(t);
    match admin(dir, B.0, &AdminRequest::Resume { pid }) {
        AdminResponse::Resumed { sessions: 1 } => {}
        other => panic!("resume answered {other:?}"),
    }
    let resume = t.elapsed();
    app.wait(n, "sends after the resume");
    peers.wait(n, "receives after the resume");
    let back = t.elapsed();
    match admin(dir, B.0, &AdminRequest::Status) {
        AdminResponse::Status(st) => assert!(
            st.sessions.iter().any(|s| s.session == image.session),
            "the session is on B"
        ),
        other => panic!("status answered {other:?}"),
    }
    drop(app);
    drop(peers);
    // The tombstones on A are of no more use.
    let _ = admin(
        dir,
        A.0,
        &AdminRequest::ReleaseTombstones { qpns: image.qpns },
    );
    Row {
        image: image.objects.len(),
        rss_per_qp,
        pause,
        checkpoint,
        restore,
        resume,
        back,
    }
}

/// What CRIU does to the session socket of `image` between the dump and
/// the restore: the old connection closes (the source sees the process
/// gone), RESTORE_UNIX_SK opens one to B with RestoreSession, and it takes
/// the old descriptor's number. Returns the RestoreSession round trip.
fn restore_session(dir: &Path, image: &SessionImage) -> Duration {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::unix::fs::MetadataExt;
    let old = fd_of_inode(image.inode).expect("the session's descriptor");
    let replay = unread_then_outbox(old, &image.outbox);
    // SAFETY: `old` is an open descriptor of this process (from /proc/self/fd);
    // it is only borrowed here.
    let old_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(old) };
    let flags = fcntl(old_fd, FcntlArg::F_GETFL).expect("flags");
    // The process is gone from A: its descriptor now points elsewhere.
    let null = std::fs::File::open("/dev/null").expect("/dev/null");
    // SAFETY: as above; dup2 replaces it in place, the number stays ours.
    let mut target = unsafe { OwnedFd::from_raw_fd(old) };
    nix::unistd::dup2(&null, &mut target).expect("dup2");

    let path = migros_proto::paths::device_socket(dir, B.0);
    let mut new = UnixStream::connect(&path).expect("connect to B");
    let inode = new.try_clone().and_then(|s| {
        std::fs::File::from(OwnedFd::from(s))
            .metadata()
            .map(|m| m.ino())
    });
    let req = Request::RestoreSession {
        version: PROTOCOL_VERSION,
        session: image.session,
        path: path.to_string_lossy().into_owned(),
        inode: inode.expect("the new socket's inode"),
        image: image.objects.clone(),
        replay,
    };
    let t = Instant::now();
    frame::write(&mut new, &req).expect("RestoreSession");
    match frame::read::<Response>(&mut new).expect("the answer to RestoreSession") {
        Response::Welcome { session, .. } if session == image.session => {}
        other => panic!("RestoreSession answered {other:?}"),
    }
    let took = t.elapsed();
    fcntl(&new, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags))).expect("flags");
    nix::unistd::dup2(&new, &mut target).expect("dup2");
    std::mem::forget(target);
    assert_ne!(new.as_raw_fd(), old);
    took
}

/// This process traced (`PTRACE_SEIZE`, which stops nothing) by a child,
/// as CRIU's dump leaves a process: the daemons' watchdog sees it frozen.
/// Untraced, this process, which keeps running (it is the one that sends
/// the admin requests), is seen running with its session open twice in a
/// row (40 ms) whenever the checkpoint and the close of its session take
/// that long (10,000 QPs do), and A rolls the checkpoint back: A's QPs
/// then end with the session, without tombstones, so no peer can check
/// B's RESUMEs, and every QP on B fails at its pause timeout (30 s) with
/// `RetryExcErr`. The child exits (the trace ends) when dropped.
struct Seized {
    child: libc::pid_t,
    release: Option<OwnedFd>,
}

impl Seized {
    fn new() -> Seized {
        let parent = nix::unistd::getpid().as_raw();
        let (ready_r, ready_w) = nix::unistd::pipe().expect("a pipe");
        let (hold_r, hold_w) = nix::unistd::pipe().expect("a pipe");
        // SAFETY: the child of this multithreaded process calls only
        // async-signal-safe functions (dup2, close_range, ptrace, write,
        // read, _exit) on descriptors it owns.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above. Stdin and stdout become the two pipes;
            // every other descriptor (daemon and session sockets) is
            // closed, so that it keeps none of them open.
            unsafe {
                libc::dup2(hold_r.as_raw_fd(), 0);
                libc::dup2(ready_w.as_raw_fd(), 1);
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                let ok = u8::from(libc::ptrace(libc::PTRACE_SEIZE, parent, 0, 0) == 0);
                libc::write(1, (&ok as *const u8).cast(), 1);
                let mut b = 0u8;
                libc::read(0, (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
        drop(ready_w);
        drop(hold_r);
        let mut ok = [0u8];
        let mut r = std::fs::File::from(ready_r);
        std::io::Read::read_exact(&mut r, &mut ok).expect("the tracer's answer");
        assert_eq!(ok[0], 1, "PTRACE_SEIZE of this process failed");
        Seized {
            child,
            release: Some(hold_w),
        }
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        self.release.take();
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.child), None);
    }
}

/// Waits until A holds a tombstone for each of `qpns`: the source saw the
/// process go (CRIU restores after the source process is gone).
fn wait_tombstones(dir: &Path, qpns: &[Qpn]) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let AdminResponse::Status(st) = admin(dir, A.0, &AdminRequest::Status) {
            let have: std::collections::HashSet<Qpn> = st.tombstones.into_iter().collect();
            if qpns.iter().all(|q| have.contains(q)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "A never left tombstones");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// This process's resident memory (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
