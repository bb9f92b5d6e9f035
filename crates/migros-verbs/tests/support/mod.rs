//! Test support: daemons on loopback addresses in a temporary socket
//! directory, and helpers to connect QPs and wait for completions.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use migros_verbs::*;

/// How long any wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// The migrosd binary, built if needed; `None` (with a message) when it
/// cannot be had.
pub fn daemon_bin() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().ok()?;
        let profile_dir = exe.parent()?.parent()?.to_owned();
        let bin = profile_dir.join("migrosd");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "migrosd", "--manifest-path"])
            .arg(&manifest);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            _ if bin.is_file() => eprintln!("warning: could not rebuild migrosd, using {bin:?}"),
            _ => {
                eprintln!("skipped: migrosd does not build");
                return None;
            }
        }
        bin.is_file().then_some(bin)
    })
    .as_deref()
}

/// Whether the test can run: root (the daemon reaches this process's
/// memory with process_vm_readv/writev) and a daemon binary.
pub fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    daemon_bin().is_some()
}

/// Daemons sharing one temporary socket directory; killed on drop.
pub struct Net {
    pub dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Net {
    /// Starts one daemon per `(name, addr)` (addresses 127.0.0.x); `None`
    /// (the test skips) if the daemon binary exits successfully without
    /// serving, which only the unimplemented placeholder does.
    pub fn start(devs: &[(&str, &str)]) -> Option<Net> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut net = Net {
            dir,
            children: Vec::new(),
        };
        for (name, addr) in devs {
            if !net.add(name, addr) {
                eprintln!("skipped: migrosd exits without serving (not implemented yet)");
                return None;
            }
        }
        Some(net)
    }

    /// Starts a daemon and waits for its socket; false if it exited with success.
    pub fn add(&mut self, name: &str, addr: &str) -> bool {
        let bin = daemon_bin().expect("checked by can_run");
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new(bin)
            .args(["--name", name, "--addr", addr, "--socket-dir"])
            .arg(self.dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn migrosd");
        self.children.push((name.to_owned(), child));
        let sock = migros_proto::paths::device_socket(self.dir.path(), name);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some((_, c)) = self.children.last_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    if status.success() {
                        return false;
                    }
                    panic!("migrosd {name} exited ({status}): {}", self.log(name));
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "migrosd {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    pub fn open(&self, name: &str) -> Context {
        Context::open_in(self.dir.path(), name).expect("open device")
    }

    /// Kills daemon `name` (SIGKILL) and reaps it.
    pub fn kill(&mut self, name: &str) {
        for (n, c) in &mut self.children {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                eprintln!("--- {name}.log ---\n{}", self.log(name));
            }
        }
    }
}

/// One side of a connection: its context, PD, CQ, QP and an MR.
pub struct Side {
    pub ctx: Context,
    pub pd: Pd,
    pub cq: Cq,
    pub qp: Qp,
    pub mr: Mr,
}

pub const ALL_ACCESS: Access = Access(
    Access::LOCAL_WRITE.0
        | Access::REMOTE_WRITE.0
        | Access::REMOTE_READ.0
        | Access::REMOTE_ATOMIC.0,
);

pub fn cap(wr: u32) -> QpCap {
    QpCap {
        max_send_wr: wr,
        max_recv_wr: wr,
        max_send_sge: 2,
        max_recv_sge: 2,
        max_inline_data: 64,
    }
}

/// A side with an RC QP (not connected yet) and an MR of `mr_len` bytes.
pub fn rc_side(ctx: Context, mr_len: usize) -> Side {
    rc_side_with(ctx, mr_len, None)
}

/// Like [`rc_side`], the CQ reporting to `channel`.
pub fn rc_side_with(ctx: Context, mr_len: usize, channel: Option<&CompChannel>) -> Side {
    let pd = ctx.alloc_pd().expect("pd");
    let cq = ctx.create_cq(256, channel).expect("cq");
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: &cq,
            recv_cq: &cq,
            srq: None,
            cap: cap(64),
            sq_sig_all: false,
        })
        .expect("qp");
    let mr = pd.alloc_mr(mr_len, ALL_ACCESS).expect("mr");
    Side {
        ctx,
        pd,
        cq,
        qp,
        mr,
    }
}

/// Moves an RC QP to RTS towards `(remote_qpn, remote_addr)`.
pub fn connect_rc(qp: &Qp, remote_qpn: Qpn, remote_addr: IpAddr, timeout: u8, retry_cnt: u8) {
    let init = QpAttr {
        qp_state: QpState::Init,
        pkey_index: 0,
        port_num: 1,
        qp_access_flags: ALL_ACCESS,
        ..QpAttr::default()
    };
    qp.modify(
        &init,
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::ACCESS_FLAGS,
    )
    .expect("init");
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: remote_qpn,
        dest_addr: Some(remote_addr),
        rq_psn: 0x100,
        max_dest_rd_atomic: 4,
        min_rnr_timer: 1,
        ..QpAttr::default()
    };
    qp.modify(
        &rtr,
        AttrMask::STATE
            | AttrMask::AV
            | AttrMask::PATH_MTU
            | AttrMask::DEST_QPN
            | AttrMask::RQ_PSN
            | AttrMask::MAX_DEST_RD_ATOMIC
            | AttrMask::MIN_RNR_TIMER,
    )
    .expect("rtr");
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: 0x100,
        timeout,
        retry_cnt,
        rnr_retry: 7,
        max_rd_atomic: 4,
        ..QpAttr::default()
    };
    qp.modify(
        &rts,
        AttrMask::STATE
            | AttrMask::SQ_PSN
            | AttrMask::TIMEOUT
            | AttrMask::RETRY_CNT
            | AttrMask::RNR_RETRY
            | AttrMask::MAX_QP_RD_ATOMIC,
    )
    .expect("rts");
}

/// Connects two RC sides to each other.
pub fn connect_pair(a: &Side, b: &Side) {
    connect_rc(&a.qp, b.qp.qpn, b.ctx.addr(), 12, 7);
    connect_rc(&b.qp, a.qp.qpn, a.ctx.addr(), 12, 7);
}

/// Polls `cq` until `n` completions arrived (panics after [`WAIT`]).
pub fn wait_n(cq: &Cq, n: usize) -> Vec<WorkCompletion> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n {
        let want = n - out.len();
        if cq.poll(&mut out, want).expect("poll") == 0 {
            assert!(
                start.elapsed() < WAIT,
                "timed out with {}/{n} completions: {out:?}",
                out.len()
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    out
}

/// Waits for one successful completion.
pub fn wait_ok(cq: &Cq) -> WorkCompletion {
    let wc = wait_n(cq, 1).remove(0);
    assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    wc
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
