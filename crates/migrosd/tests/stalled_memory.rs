//! One memory access that never returns must not stop the device (issue
//! 14, item 6). The daemon reaches client memory from its one event-loop
//! thread; a page of a FUSE file whose server never answers would hold
//! that thread, and with it every session, for ever. So memory backed by
//! such a file is refused when it is registered.
//!
//! The test mounts a FUSE filesystem of its own (the raw `/dev/fuse`
//! protocol, served by a thread of this process) whose one file answers
//! lookups, attributes and opens but never a READ. A client maps the file
//! and tries to register it, alone and as the end of a range that starts
//! in ordinary memory: each is refused with an error naming the
//! filesystem, while a bystander pair on the same daemon keeps moving
//! data byte-exact, and no READ ever reached the server from the daemon.
//! A child process touching the mapping does block (a READ arrives and is
//! never answered, and not even SIGKILL ends the child's wait): the hazard
//! is real. At the end the server fails the READs.
//!
//! The daemon pins nothing, though: a client can map the file over memory
//! it already registered (`MAP_FIXED`). Then the daemon's watchdog ends
//! the access that blocks: the second test has a peer WRITE into such
//! memory; within the bound (2 s) the watchdog aborts the FUSE connection,
//! the write fails, the writer gets an error completion and the attacked
//! QP its flushed receive, and the other sessions go on byte-exact.
//! Needs root; skipped otherwise.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::verbs::*;
use common::*;
use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::msg::{Request, Response};
use migros_proto::verbs::*;

const ADDR: &str = "127.0.0.143";
const ADDR_WATCHDOG: &str = "127.0.0.144";
/// The stalling file's size, and the size of each mapping of it.
const FILE_LEN: usize = 1 << 16;
const PAGE: usize = 4096;

// FUSE opcodes (include/uapi/linux/fuse.h) this server answers or counts.
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

/// The node id of the one file (the root is 1).
const FILE_NODE: u64 = 2;
const FILE_NAME: &[u8] = b"stall";

/// A FUSE filesystem whose file never yields its bytes (until the test
/// ends: a READ the kernel sent is waited for even by a killed process).
struct StallingFuse {
    mountpoint: PathBuf,
    reads: Arc<AtomicU64>,
    /// The requests of unanswered READs.
    pending: Arc<Mutex<Vec<u64>>>,
    /// The device, to answer them.
    dev: File,
}

impl StallingFuse {
    fn mount(mountpoint: &Path) -> StallingFuse {
        std::fs::create_dir_all(mountpoint).unwrap();
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("open /dev/fuse");
        let opts = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (src, target, fstype, data) = (
            c("migros-stall"),
            c(mountpoint.to_str().unwrap()),
            c("fuse"),
            c(&opts),
        );
        // SAFETY: valid C strings; mounts a FUSE filesystem served by `dev`.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount fuse: {}", std::io::Error::last_os_error());
        let reads = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(Mutex::new(Vec::new()));
        let (counted, held) = (reads.clone(), pending.clone());
        let answers = dev.try_clone().unwrap();
        std::thread::spawn(move || serve(dev, &counted, &held));
        StallingFuse {
            mountpoint: mountpoint.to_path_buf(),
            reads,
            pending,
            dev: answers,
        }
    }

    /// Fails every READ held so far (EIO).
    fn fail_reads(&mut self) {
        let held = std::mem::take(&mut *self.pending.lock().unwrap());
        for unique in held {
            let _ = self.dev.write_all(&reply(unique, -libc::EIO, &[]));
        }
    }

    fn file(&self) -> PathBuf {
        self.mountpoint
            .join(std::str::from_utf8(FILE_NAME).unwrap())
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl Drop for StallingFuse {
    fn drop(&mut self) {
        // Detached: once the last mapping and file are gone the connection
        // ends, and with it the server thread's read.
        let target = std::ffi::CString::new(self.mountpoint.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Answers the kernel's requests until the connection ends; READs are
/// counted and never answered.
fn serve(mut dev: File, reads: &AtomicU64, pending: &Mutex<Vec<u64>>) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // ENODEV once unmounted.
            Err(_) => return,
        };
        if n < 40 {
            continue;
        }
        let u32_at = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
        let opcode = u32_at(4);
        let unique = u64_at(8);
        let node = u64_at(16);
        let body = &buf[40..n];
        let answer: Option<Result<Vec<u8>, i32>> = match opcode {
            INIT => {
                // fuse_init_out: protocol 7.31, no optional features.
                let mut out = Vec::new();
                for v in [7u32, 31, 1 << 16, 0] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&16u16.to_le_bytes()); // max_background
                out.extend_from_slice(&12u16.to_le_bytes()); // congestion_threshold
                out.extend_from_slice(&(1u32 << 16).to_le_bytes()); // max_write
                out.extend_from_slice(&1u32.to_le_bytes()); // time_gran
                out.resize(64, 0);
                Some(Ok(out))
            }
            LOOKUP => {
                let name = body.split(|b| *b == 0).next().unwrap_or(&[]);
                if node == 1 && name == FILE_NAME {
                    let mut out = Vec::new();
                    for v in [FILE_NODE, 0, 3600, 3600] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                    out.extend_from_slice(&[0u8; 8]); // the two nsec fields
                    out.extend_from_slice(&attr(FILE_NODE));
                    Some(Ok(out))
                } else {
                    Some(Err(libc::ENOENT))
                }
            }
            GETATTR => {
                let mut out = Vec::new();
                out.extend_from_slice(&3600u64.to_le_bytes());
                out.extend_from_slice(&[0u8; 8]); // nsec, dummy
                out.extend_from_slice(&attr(node));
                Some(Ok(out))
            }
            OPEN => {
                // fuse_open_out: fh 1, no flags (page cache, mmap allowed).
                let mut out = 1u64.to_le_bytes().to_vec();
                out.extend_from_slice(&[0u8; 8]);
                Some(Ok(out))
            }
            READ => {
                pending.lock().unwrap().push(unique);
                reads.fetch_add(1, Ordering::SeqCst);
                None
            }
            RELEASE | FLUSH | DESTROY => Some(Ok(Vec::new())),
            FORGET | BATCH_FORGET | INTERRUPT => None,
            _ => Some(Err(libc::ENOSYS)),
        };
        let Some(answer) = answer else {
            continue;
        };
        let out = match answer {
            Ok(p) => reply(unique, 0, &p),
            Err(e) => reply(unique, -e, &[]),
        };
        if dev.write_all(&out).is_err() {
            return;
        }
    }
}

/// A reply: fuse_out_header, then the payload.
fn reply(unique: u64, error: i32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + payload.len());
    out.extend_from_slice(&((16 + payload.len()) as u32).to_le_bytes());
    out.extend_from_slice(&error.to_le_bytes());
    out.extend_from_slice(&unique.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// fuse_attr of the root directory or of the file.
fn attr(node: u64) -> Vec<u8> {
    let (size, mode, nlink) = if node == FILE_NODE {
        (FILE_LEN as u64, libc::S_IFREG | 0o644, 1u32)
    } else {
        (0, libc::S_IFDIR | 0o755, 2u32)
    };
    let mut a = Vec::new();
    for v in [node, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0u32, 0, 0, mode, nlink, 0, 0, 0, PAGE as u32, 0] {
        a.extend_from_slice(&v.to_le_bytes());
    }
    a
}

/// Maps `len` bytes of `file`, private and writable, at `at` (if not null).
fn map_file(file: &File, at: *mut libc::c_void, len: usize) -> u64 {
    let fixed = if at.is_null() { 0 } else { libc::MAP_FIXED };
    // SAFETY: maps a file we hold open; MAP_FIXED only over our own pages.
    let p = unsafe {
        libc::mmap(
            at,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | fixed,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap the fuse file");
    p as u64
}

fn reg(c: &mut Client, pd: Pdn, addr: u64, len: usize) -> Response {
    c.request(&Request::RegMr {
        pd,
        addr,
        length: len as u64,
        iova: addr,
        access: Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ,
    })
}

fn assert_refused(r: &Response) {
    assert!(
        matches!(r, Response::Error { errno, message }
            if *errno == libc::EFAULT && message.contains("fuse") && message.contains("stall")),
        "{r:?}"
    );
}

#[test]
fn memory_of_a_fuse_file_that_never_answers_is_refused() {
    if !fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = start_daemon(dir.path(), "f0", ADDR, &["--mtu", "1024"]);
    let mut by = Bystanders::new(&d, ADDR);
    by.check();
    let mut fuse = StallingFuse::mount(&dir.path().join("mnt"));
    let file = File::open(fuse.file()).expect("open the fuse file");

    let (mut c, _) = d.session();
    let pd = alloc_pd(&mut c);
    // The file alone.
    let whole = map_file(&file, std::ptr::null_mut(), FILE_LEN);
    let started = Instant::now();
    assert_refused(&reg(&mut c, pd, whole, FILE_LEN));
    // Anonymous pages whose last one is the file's.
    let mixed = anonymous_mapping(4 * PAGE);
    // SAFETY: inside the mapping just made.
    let last = unsafe { mixed.cast::<u8>().add(3 * PAGE) }.cast();
    map_file(&file, last, PAGE);
    assert_refused(&reg(&mut c, pd, mixed as u64, 4 * PAGE));
    // The anonymous part alone is ordinary memory.
    assert!(matches!(
        reg(&mut c, pd, mixed as u64, 3 * PAGE),
        Response::Mr { .. }
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusals took {:?}",
        started.elapsed()
    );
    by.check();
    assert_eq!(fuse.reads(), 0, "the daemon read the fuse file");
    // The session goes on.
    let mr = reg_mr(&mut c, pd, PAGE);
    assert_ne!(mr.rkey, 0);

    // What the daemon avoided: touching the mapping blocks.
    // SAFETY: the child only reads one byte of the mapping and exits.
    let child = match unsafe { libc::fork() } {
        0 => unsafe {
            std::ptr::read_volatile(whole as *const u8);
            libc::_exit(0)
        },
        pid => pid,
    };
    wait_until("the toucher's read to reach the fuse server", || {
        fuse.reads() > 0
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut status = 0;
    // SAFETY: our own child, without waiting.
    let waited = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    assert_eq!(waited, 0, "the toucher is still blocked in the fuse read");
    by.check();
    // Not even SIGKILL ends a wait for a READ the server holds: the
    // server fails it (and any the kernel sends again) until the child is
    // gone.
    // SAFETY: our own child.
    unsafe { libc::kill(child, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: our own child, without waiting.
    let waited = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    assert_eq!(waited, 0, "SIGKILL does not end a wait for a held READ");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        fuse.fail_reads();
        // SAFETY: our own child, without waiting.
        if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child {
            break;
        }
        assert!(Instant::now() < end, "the toucher did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: our own mappings, no longer used.
    unsafe {
        libc::munmap(whole as *mut libc::c_void, FILE_LEN);
        libc::munmap(mixed, 4 * PAGE);
    }
    drop(file);
    drop(fuse);
    by.check();
}

fn fuse_ready() -> bool {
    let fuse_dev = if Path::new("/dev/fuse").exists() {
        Ok(())
    } else {
        Err("/dev/fuse (the fuse kernel module: modprobe fuse)".to_string())
    };
    migros_test_support::require([migros_test_support::require::root(), fuse_dev])
}

fn device_counters(d: &Daemon) -> migros_proto::counters::DeviceCounters {
    match d.admin(&AdminRequest::Stats) {
        AdminResponse::Stats { device, .. } => device,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fuse_file_mapped_over_registered_memory_is_aborted_by_the_watchdog() {
    if !fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = start_daemon(dir.path(), "f1", ADDR_WATCHDOG, &["--mtu", "1024"]);
    let mut by = Bystanders::new(&d, ADDR_WATCHDOG);
    by.check();
    let fuse = StallingFuse::mount(&dir.path().join("mnt"));
    let file = File::open(fuse.file()).expect("open the fuse file");

    // b: an MR on anonymous memory, and a receive posted.
    let len = 4 * PAGE;
    let (mut bc, _) = d.session();
    let bpd = alloc_pd(&mut bc);
    let target = anonymous_mapping(len);
    let rkey = match reg(&mut bc, bpd, target as u64, len) {
        Response::Mr { rkey, .. } => rkey,
        other => panic!("{other:?}"),
    };
    let brecv = reg_mr(&mut bc, bpd, PAGE);
    let mut bcq = create_cq(&mut bc, 64);
    let mut bqp = create_qp(&mut bc, bpd, &bcq, 32);
    // a: the peer that writes.
    let (mut ac, _) = d.session();
    let apd = alloc_pd(&mut ac);
    let amr = reg_mr(&mut ac, apd, len);
    let mut acq = create_cq(&mut ac, 64);
    let mut aqp = create_qp(&mut ac, apd, &acq, 32);
    let at = ADDR_WATCHDOG.parse().unwrap();
    connect(&mut ac, aqp.qpn, at, bqp.qpn, Mtu::Mtu1024);
    connect(&mut bc, bqp.qpn, at, aqp.qpn, Mtu::Mtu1024);
    bqp.post_recv(&mut bc, &recv_wr(7, &brecv, 0, PAGE as u32));
    let write = |id: u64| {
        send_wr(
            id,
            &amr,
            0,
            len as u32,
            WrOpcode::RdmaWrite {
                remote_addr: target as u64,
                rkey,
            },
        )
    };
    // The MR works while it is anonymous memory.
    amr.buf.write(0, &[0x5a; 4 * PAGE]);
    aqp.post_send(&mut ac, &write(1));
    let wc = acq.poll_within(TIMEOUT).expect("the first write completes");
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");

    // Now its third page is the file's, which never yields its bytes.
    // SAFETY: inside our own mapping.
    map_file(
        &file,
        unsafe { target.cast::<u8>().add(2 * PAGE) }.cast(),
        PAGE,
    );
    let before = device_counters(&d);
    assert_eq!((before.watchdog_stalls, before.watchdog_aborts), (0, 0));
    let posted = Instant::now();
    aqp.post_send(&mut ac, &write(2));
    let wc = acq
        .poll_within(Duration::from_secs(30))
        .expect("the write into the file completes");
    let took = posted.elapsed();
    assert_eq!(wc.status, WcStatus::RemOpErr, "{wc:?}");
    assert!(
        fuse.reads() > 0,
        "the daemon never waited on the fuse server"
    );
    // The bound is 2 s; what the loop does after it is quick.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "the write failed after {took:?}"
    );
    // The attacked QP failed: its posted receive is flushed.
    let wc = bcq.poll_within(TIMEOUT).expect("b's receive is flushed");
    assert_eq!((wc.wr_id, wc.status), (7, WcStatus::WrFlushErr), "{wc:?}");
    let after = device_counters(&d);
    assert_eq!(
        (after.watchdog_stalls, after.watchdog_aborts),
        (1, 1),
        "{after:?}"
    );
    // The daemon lives, and every other session goes on byte-exact.
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon exited:\n{}",
        d.log()
    );
    by.check();
    let mut fresh = Bystanders::new(&d, ADDR_WATCHDOG);
    fresh.check();
    by.check();
    assert!(
        d.log().contains("its FUSE connection is aborted"),
        "{}",
        d.log()
    );
    assert_eq!(device_counters(&d).watchdog_aborts, 1);
    // SAFETY: our own mapping, no longer used.
    unsafe { libc::munmap(target, len) };
    drop(file);
    drop(fuse);
}
