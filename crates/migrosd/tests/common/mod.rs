//! Test support: start the built daemon, speak the protocol raw, and
//! allocate rings and buffers in this process (the "client").

#![allow(dead_code)]

pub mod rc;
pub mod socket;
pub mod verbs;

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub use migros_test_support::daemon::Daemon;

/// Whether the test runs: root (the daemon reaches this process's memory
/// with process_vm_readv/writev; port 4791 on loopback addresses). See
/// `migros_test_support::require`.
pub fn can_run() -> bool {
    migros_test_support::require([migros_test_support::require::root()])
}

/// Starts this build's `migrosd` (see `migros_test_support::daemon`).
pub fn start_daemon(dir: &Path, name: &str, addr: &str, extra: &[&str]) -> Daemon {
    Daemon::start(
        Path::new(env!("CARGO_BIN_EXE_migrosd")),
        dir,
        name,
        addr,
        extra,
    )
}

/// The raw daemon protocol on a [`Daemon`].
pub trait Raw {
    fn connect(&self) -> Client;
    /// A client that said hello.
    fn session(&self) -> (Client, u64);
    fn admin(&self, req: &AdminRequest) -> AdminResponse;
}

impl Raw for Daemon {
    fn connect(&self) -> Client {
        Client::connect(&self.socket())
    }

    fn session(&self) -> (Client, u64) {
        let mut c = self.connect();
        match c.request(&Request::Hello {
            version: PROTOCOL_VERSION,
            path: String::new(),
            inode: 0,
        }) {
            Response::Welcome { session, .. } => (c, session),
            other => panic!("hello answered {other:?}"),
        }
    }

    fn admin(&self, req: &AdminRequest) -> AdminResponse {
        let mut s = UnixStream::connect(self.admin_socket()).expect("connect admin");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        frame::write(&mut s, req).unwrap();
        frame::read(&mut s).expect("admin response")
    }
}

/// Polls `f` every millisecond for up to [`TIMEOUT`].
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + TIMEOUT;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for {what}");
}

/// A raw protocol client.
pub struct Client {
    pub stream: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client { stream }
    }

    pub fn send(&mut self, req: &Request) {
        frame::write(&mut self.stream, req).expect("send");
    }

    pub fn recv(&mut self) -> Response {
        frame::read(&mut self.stream).expect("response")
    }

    pub fn request(&mut self, req: &Request) -> Response {
        self.send(req);
        self.recv()
    }

    /// Sends and expects `Ok`.
    pub fn ok(&mut self, req: &Request) {
        let r = self.request(req);
        assert_eq!(r, Response::Ok, "{req:?}");
    }

    /// Whether the daemon closed the connection (bounded wait).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }
}

/// Page-aligned zeroed memory in this process (rings, buffers).
pub struct Pages {
    ptr: *mut u8,
    layout: Layout,
}

impl Pages {
    pub fn new(len: usize) -> Pages {
        let layout = Layout::from_size_align(len.max(1).next_multiple_of(4096), 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Pages { ptr, layout }
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Reads a byte the daemon may write concurrently.
    pub fn get(&self, at: usize) -> u8 {
        assert!(at < self.len());
        // SAFETY: in bounds of a live allocation.
        unsafe { std::ptr::read_volatile(self.ptr.add(at)) }
    }

    pub fn read(&self, at: usize, out: &mut [u8]) {
        assert!(at + out.len() <= self.len());
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.get(at + i);
        }
    }

    pub fn write(&self, at: usize, data: &[u8]) {
        assert!(at + data.len() <= self.len());
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds of a live allocation.
            unsafe { std::ptr::write_volatile(self.ptr.add(at + i), *b) };
        }
    }

    pub fn u32_at(&self, at: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(at, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn set_u32(&self, at: usize, v: u32) {
        self.write(at, &v.to_le_bytes());
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// A fresh private anonymous mapping of `len` bytes, readable and
/// writable, that the caller unmaps (or leaves to the process's exit). It
/// is reached only through raw pointers, never Rust references, so the
/// daemon (and the tests) may write it behind the compiler's back.
pub fn anonymous_mapping(len: usize) -> *mut libc::c_void {
    // SAFETY: asks the kernel for a new mapping; touches nothing existing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap of {len} bytes");
    p
}
