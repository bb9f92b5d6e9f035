//! Hostile local clients: a session may reach only the memory its own
//! process had when it connected, with its own rights (issue 14, item 1).
//!
//! An unprivileged attacker (uid `nobody`, a child running this binary in
//! attacker mode) registers memory at a fixed address with remote rights
//! and connects an RC QP to a helper QP of this process. Then it either
//! execs a setuid-root program (a setuid copy of this binary in victim
//! mode, which maps a secret at that same address), keeping its daemon
//! socket open, or forks a child that keeps the socket and exits, its pid
//! then taken by a root victim. The helper's RDMA READ of the attacker's
//! memory must fail and never return the secret, the attacker's session
//! must end, and a bystander pair on the same daemon keeps moving data
//! byte-exact. Needs root (uid changes, setuid files, `ns_last_pid`);
//! skipped otherwise.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::verbs::*;
use common::*;
use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::msg::{Request, Response};
use migros_proto::verbs::*;

/// Where the attacker's memory region and the victim's secret live.
const FIXED: u64 = 0x5a5a_0000_0000;
const LEN: usize = 1 << 16;
const SECRET: &[u8] = b"ROOT-ONLY SECRET";
const NOBODY: u32 = 65534;
const ADDR: &str = "127.0.0.141";
/// The tests that start a daemon at [`ADDR`] take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn map_fixed(fill: &[u8]) {
    // SAFETY: a fresh anonymous mapping at an address nothing else uses
    // (MAP_FIXED_NOREPLACE fails rather than replace a mapping).
    let p = unsafe {
        libc::mmap(
            FIXED as *mut libc::c_void,
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(p as u64, FIXED, "mmap at {FIXED:#x}");
    for (i, b) in fill.iter().cycle().take(LEN).enumerate() {
        // SAFETY: inside the mapping just made.
        unsafe { std::ptr::write_volatile((FIXED as *mut u8).add(i), *b) };
    }
}

fn line(r: &mut impl BufRead, prefix: &str) -> String {
    let mut l = String::new();
    loop {
        l.clear();
        assert!(
            r.read_line(&mut l).unwrap() > 0,
            "eof waiting for {prefix:?}"
        );
        // libtest's "test x ... " may start the child's first line.
        if let Some(at) = l.find(prefix) {
            return l[at + prefix.len()..].trim().to_string();
        }
    }
}

/// The attacker, run as `nobody` by the tests below.
#[test]
fn attacker_child() {
    let Ok(sock) = std::env::var("MIGROSD_ATTACKER") else {
        return;
    };
    map_fixed(b"attacker's own bytes. ");
    let mut c = Client::connect(std::path::Path::new(&sock));
    c.stream.set_read_timeout(None).unwrap();
    assert!(matches!(
        c.request(&Request::Hello {
            version: migros_proto::msg::PROTOCOL_VERSION,
            path: String::new(),
            inode: 0,
        }),
        Response::Welcome { .. }
    ));
    let pd = alloc_pd(&mut c);
    let rkey = match c.request(&Request::RegMr {
        pd,
        addr: FIXED,
        length: LEN as u64,
        iova: FIXED,
        access: Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
    }) {
        Response::Mr { rkey, .. } => rkey,
        other => panic!("reg mr: {other:?}"),
    };
    let cq = create_cq(&mut c, 16);
    let qp = create_qp(&mut c, pd, &cq, 16);
    println!("ATTACKER qpn {} rkey {rkey}", qp.qpn);
    let mut stdin = BufReader::new(std::io::stdin());
    let peer: Qpn = line(&mut stdin, "peer").parse().unwrap();
    connect_fast(&mut c, qp.qpn, ADDR.parse().unwrap(), peer);
    println!("ATTACKER connected");
    let cmd = line(&mut stdin, "do");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&c.stream);
    // SAFETY: clears FD_CLOEXEC on our own socket.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if let Some(path) = cmd.strip_prefix("exec ") {
        let e = Command::new(path)
            .args(["--exact", "victim_child", "--nocapture", "--test-threads=1"])
            .env_remove("MIGROSD_ATTACKER")
            .env("MIGROSD_VICTIM", "1")
            .exec();
        panic!("exec {path}: {e}");
    }
    assert_eq!(cmd, "fork-exit");
    // SAFETY: the child only sleeps and exits.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: plain sleep, then exit without running destructors.
            unsafe {
                libc::sleep(60);
                libc::_exit(0)
            }
        }
        child => {
            println!("ATTACKER forked {child}");
            std::process::exit(0);
        }
    }
}

/// The signaller: as `nobody`, asks the kernel again and again whether it
/// may signal any thread of the daemon (`tgkill` with signal 0, which
/// checks the permission and delivers nothing) until its stdin closes;
/// prints how often it was allowed.
#[test]
fn signaller_child() {
    let Ok(pid) = std::env::var("MIGROSD_SIGNAL") else {
        return;
    };
    let pid: i32 = pid.parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    println!("SIGNALLER ready");
    let (mut allowed, mut refused) = (0u64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            break;
        };
        let tids: Vec<i32> = tasks
            .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        for _ in 0..1000 {
            for tid in &tids {
                // SAFETY: signal 0 only checks the permission.
                if unsafe { libc::syscall(libc::SYS_tgkill, pid, *tid, 0) } == 0 {
                    allowed += 1;
                } else {
                    refused += 1;
                }
            }
        }
    }
    println!("SIGNALLER allowed {allowed} refused {refused}");
}

/// The victim: a root process with a secret where the attacker's region
/// was. Runs until its stdin closes.
#[test]
fn victim_child() {
    if std::env::var_os("MIGROSD_VICTIM").is_none() {
        return;
    }
    map_fixed(SECRET);
    // SAFETY: geteuid cannot fail.
    println!("VICTIM pid {} euid {}", std::process::id(), unsafe {
        libc::geteuid()
    });
    // Each line asks for the first bytes where the secret is; EOF ends.
    let mut s = String::new();
    while std::io::stdin().read_line(&mut s).is_ok_and(|n| n > 0) {
        let mut now = vec![0u8; SECRET.len()];
        for (i, b) in now.iter_mut().enumerate() {
            // SAFETY: inside the mapping made above.
            *b = unsafe { std::ptr::read_volatile((FIXED as *const u8).add(i)) };
        }
        println!("VICTIM memory {}", String::from_utf8_lossy(&now));
        s.clear();
    }
}

/// RESET → RTS with a short ACK timeout and two retries, so that a READ
/// nobody answers fails within a second.
fn connect_fast(c: &mut Client, qpn: Qpn, dest: IpAddr, dest_qpn: Qpn) {
    let p = migros_test_support::RcParams {
        mtu: Mtu::Mtu1024,
        sq_psn: 100,
        rq_psn: 100,
        timeout: 12,
        retry_cnt: 2,
        ..migros_test_support::RcParams::new(dest_qpn, dest)
    };
    for (attr, mask) in p.transitions() {
        c.ok(&Request::ModifyQp { qpn, attr, mask });
    }
}

struct Attacker {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    qpn: Qpn,
    rkey: u32,
}

/// This test binary as `nobody`, running only its test `child` (one of
/// the `*_child` modes, chosen by the environment variable `var`), with
/// its stdin and stdout piped.
fn spawn_as_nobody(child: &str, var: &str, value: impl AsRef<std::ffi::OsStr>) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(var, value)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn spawn_attacker(d: &Daemon) -> Attacker {
    let mut child = spawn_as_nobody("attacker_child", "MIGROSD_ATTACKER", d.socket());
    let stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let l = line(&mut out, "ATTACKER qpn");
    let (qpn, rkey) = l.split_once(" rkey ").unwrap();
    Attacker {
        qpn: qpn.parse().unwrap(),
        rkey: rkey.parse().unwrap(),
        child,
        stdin,
        out,
    }
}

/// The helper's QP, connected to the attacker's.
struct Helper {
    c: Client,
    mr: Mr,
    cq: Cq,
    qp: Qp,
}

impl Helper {
    fn new(d: &Daemon) -> Helper {
        let (mut c, _) = d.session();
        let pd = alloc_pd(&mut c);
        let mr = reg_mr(&mut c, pd, LEN);
        let cq = create_cq(&mut c, 16);
        let qp = create_qp(&mut c, pd, &cq, 16);
        Helper { c, mr, cq, qp }
    }

    /// RDMA WRITE of 64 bytes of `fill` at the attacker's FIXED: the
    /// completion.
    fn write_attacker(&mut self, rkey: u32, fill: u8) -> WorkCompletion {
        self.write_attacker_len(rkey, fill, 64)
    }

    /// RDMA WRITE of `len` bytes of `fill` at the attacker's FIXED: the
    /// completion.
    fn write_attacker_len(&mut self, rkey: u32, fill: u8, len: usize) -> WorkCompletion {
        self.mr.buf.write(0, &vec![fill; len]);
        let wr = send_wr(
            8,
            &self.mr,
            0,
            len as u32,
            WrOpcode::RdmaWrite {
                remote_addr: FIXED,
                rkey,
            },
        );
        self.qp.post_send(&mut self.c, &wr);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(wc) = self.cq.poll() {
                return wc;
            }
            assert!(Instant::now() < end, "no completion for the write");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// RDMA WRITE of the whole region (`LEN` bytes of `fill`) at the
    /// attacker's FIXED: the completion.
    fn write_region(&mut self, rkey: u32, fill: u8) -> WorkCompletion {
        self.write_attacker_len(rkey, fill, LEN)
    }

    /// RDMA READ of 64 bytes at the attacker's FIXED: the completion and
    /// what arrived.
    fn read_attacker(&mut self, rkey: u32) -> (WorkCompletion, Vec<u8>) {
        self.read_attacker_len(rkey, 64)
    }

    /// RDMA READ of `len` bytes at the attacker's FIXED (above 8 KiB, the
    /// daemon reads them with `process_vm_readv` and checks for an exec
    /// before it sends them).
    fn read_attacker_len(&mut self, rkey: u32, len: usize) -> (WorkCompletion, Vec<u8>) {
        self.mr.buf.write(0, &vec![0u8; len]);
        let wr = send_wr(
            7,
            &self.mr,
            0,
            len as u32,
            WrOpcode::RdmaRead {
                remote_addr: FIXED,
                rkey,
            },
        );
        self.qp.post_send(&mut self.c, &wr);
        let end = Instant::now() + Duration::from_secs(20);
        let wc = loop {
            if let Some(wc) = self.cq.poll() {
                break wc;
            }
            assert!(Instant::now() < end, "no completion for the read");
            std::thread::sleep(Duration::from_millis(1));
        };
        let mut got = vec![0u8; len];
        self.mr.buf.read(0, &mut got);
        (wc, got)
    }
}

fn sessions(d: &Daemon) -> Vec<u32> {
    match d.admin(&AdminRequest::Status) {
        AdminResponse::Status(s) => s.sessions.iter().map(|s| s.pid).collect(),
        other => panic!("{other:?}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Sets up daemon, bystanders, helper and attacker, connected; returns
/// them after a READ that works (the attacker's own memory).
fn set_up(dir: &std::path::Path) -> (Daemon, Bystanders, Helper, Attacker) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = start_daemon(dir, "h0", ADDR, &["--mtu", "1024"]);
    let mut by = Bystanders::new(&d, ADDR);
    by.check();
    let mut helper = Helper::new(&d);
    let mut att = spawn_attacker(&d);
    connect_fast(&mut helper.c, helper.qp.qpn, ADDR.parse().unwrap(), att.qpn);
    writeln!(att.stdin, "peer {}", helper.qp.qpn).unwrap();
    line(&mut att.out, "ATTACKER connected");
    let (wc, got) = helper.read_attacker(att.rkey);
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    assert!(got.starts_with(b"attacker's own bytes."), "{got:?}");
    // A WRITE lands too (made with the attacker's own rights).
    let wc = helper.write_attacker(att.rkey, b'W');
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    let (wc, got) = helper.read_attacker(att.rkey);
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    assert_eq!(got, [b'W'; 64]);
    (d, by, helper, att)
}

#[test]
fn exec_into_a_setuid_program_ends_the_session() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A setuid-root copy of this binary: the victim.
    let victim = dir.path().join("victim");
    std::fs::copy(std::env::current_exe().unwrap(), &victim).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let (d, mut by, mut helper, mut att) = set_up(dir.path());
    let attacker_pid = att.child.id();
    writeln!(att.stdin, "do exec {}", victim.display()).unwrap();
    let v = line(&mut att.out, "VICTIM pid");
    assert_eq!(
        v,
        format!("{attacker_pid} euid 0"),
        "the setuid program runs"
    );

    // A READ of the whole region first: the daemon reads it with
    // process_vm_readv by pid, now the root program's, and must drop
    // what it read before anything of it leaves.
    let (wc, got) = helper.read_attacker_len(att.rkey, LEN);
    assert!(!contains(&got, SECRET), "the helper read the root process");
    assert_ne!(wc.status, WcStatus::Success, "{wc:?}");
    // A WRITE, maybe before anything ends the session: it must not land
    // in the root process (the daemon writes with the attacker's rights).
    let wc = helper.write_attacker(att.rkey, b'X');
    writeln!(att.stdin, "memory?").unwrap();
    let now = line(&mut att.out, "VICTIM memory");
    assert_eq!(
        now.as_bytes(),
        SECRET,
        "the helper wrote into the root process"
    );
    assert_ne!(wc.status, WcStatus::Success, "{wc:?}");
    let (wc, got) = helper.read_attacker(att.rkey);
    assert!(!contains(&got, SECRET), "the helper read the root process");
    assert_ne!(wc.status, WcStatus::Success, "{wc:?}");
    wait_until("the attacker's session to end", || {
        !sessions(&d).contains(&attacker_pid)
    });
    by.check();
    drop(att.stdin);
    let _ = att.child.wait();
    by.check();
}

#[test]
fn a_forked_child_keeps_no_access_once_the_client_exits() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (d, mut by, mut helper, mut att) = set_up(dir.path());
    let attacker_pid = att.child.id() as i32;
    writeln!(att.stdin, "do fork-exit").unwrap();
    let forked: i32 = line(&mut att.out, "ATTACKER forked").parse().unwrap();
    att.child.wait().unwrap();
    // The forked child still holds the session's socket; the pid goes to
    // a root process with a secret where the region was.
    let mut victim = None;
    for _ in 0..50 {
        std::fs::write(
            "/proc/sys/kernel/ns_last_pid",
            (attacker_pid - 1).to_string(),
        )
        .unwrap();
        let mut v = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "victim_child", "--nocapture", "--test-threads=1"])
            .env("MIGROSD_VICTIM", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        if v.id() as i32 == attacker_pid {
            let mut out = BufReader::new(v.stdout.take().unwrap());
            line(&mut out, "VICTIM pid");
            victim = Some(v);
            break;
        }
        let _ = v.kill();
        let _ = v.wait();
    }
    let mut victim = victim.expect("the attacker's pid was not reused in 50 tries");

    let (wc, got) = helper.read_attacker(att.rkey);
    assert!(
        !contains(&got, SECRET),
        "the helper read the pid's new owner"
    );
    assert_ne!(wc.status, WcStatus::Success, "{wc:?}");
    assert!(!sessions(&d).contains(&(attacker_pid as u32)));
    by.check();
    let _ = victim.kill();
    let _ = victim.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(forked),
        nix::sys::signal::Signal::SIGKILL,
    );
    by.check();
}

#[test]
fn a_memory_region_with_a_hole_is_refused() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "h1", "127.0.0.142", &[]);
    let (mut c, _) = d.session();
    let pd = alloc_pd(&mut c);
    // Our own mapping (not the allocator's: a hole left by a failing
    // assertion must not be handed out again).
    // SAFETY: a fresh anonymous mapping.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    } as u64;
    let mid = base + 4096;
    // SAFETY: unmaps the middle page of that mapping.
    unsafe { libc::munmap(mid as *mut libc::c_void, 4096) };
    let r = c.request(&Request::RegMr {
        pd,
        addr: base,
        length: 3 * 4096,
        iova: base,
        access: Access::LOCAL_WRITE,
    });
    assert!(
        matches!(&r, Response::Error { errno, message } if *errno == libc::EFAULT && message.contains("not mapped")),
        "{r:?}"
    );
    // A read-only page cannot take writes.
    // SAFETY: maps the hole back, read-only.
    let p = unsafe {
        libc::mmap(
            mid as *mut libc::c_void,
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    assert_eq!(p as u64, mid);
    let r = c.request(&Request::RegMr {
        pd,
        addr: base,
        length: 3 * 4096,
        iova: base,
        access: Access::REMOTE_WRITE | Access::LOCAL_WRITE,
    });
    assert!(
        matches!(&r, Response::Error { errno, message } if *errno == libc::EFAULT && message.contains("writable")),
        "{r:?}"
    );
    // Read-only access is fine.
    assert!(matches!(
        c.request(&Request::RegMr {
            pd,
            addr: base,
            length: 3 * 4096,
            iova: base,
            access: Access::REMOTE_READ,
        }),
        Response::Mr { .. }
    ));
    // SAFETY: our own mapping, registered but no longer used.
    unsafe { libc::munmap(base as *mut libc::c_void, 3 * 4096) };
}

/// While the daemon writes into an unprivileged client's memory, that
/// client's uid must never be allowed to signal the daemon (a SIGKILL
/// would end every session of the device): the daemon does not take the
/// client's uid to write.
#[test]
fn a_client_cannot_signal_the_daemon_while_it_writes_into_its_memory() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (d, mut by, mut helper, att) = set_up(dir.path());
    let mut sig = spawn_as_nobody(
        "signaller_child",
        "MIGROSD_SIGNAL",
        d.child.id().to_string(),
    );
    let sig_in = sig.stdin.take().unwrap();
    let mut sig_out = BufReader::new(sig.stdout.take().unwrap());
    line(&mut sig_out, "SIGNALLER ready");
    // Whole-region WRITEs into the attacker's memory for two seconds.
    let end = Instant::now() + Duration::from_secs(2);
    let mut writes = 0u32;
    while Instant::now() < end {
        let wc = helper.write_region(att.rkey, b'0' + (writes % 10) as u8);
        assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
        writes += 1;
    }
    drop(sig_in);
    let counts = line(&mut sig_out, "SIGNALLER allowed");
    let _ = sig.wait();
    let (allowed, refused) = counts.split_once(" refused ").unwrap();
    assert!(
        refused.parse::<u64>().unwrap() > 0,
        "the signaller ran: {counts}"
    );
    assert_eq!(
        allowed, "0",
        "nobody may signal the daemon during {writes} writes: {counts}"
    );
    let (wc, got) = helper.read_attacker_len(att.rkey, LEN);
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    assert_eq!(got, vec![b'0' + ((writes - 1) % 10) as u8; LEN]);
    by.check();
}
