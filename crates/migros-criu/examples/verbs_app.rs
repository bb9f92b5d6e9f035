//! Test program for `tests/e2e.rs`: two processes, `app` and `peer`, on
//! two migros devices, exchanging RDMA traffic in lock step until told to
//! stop; every byte is checked. The `app` is the one CRIU moves; it has no
//! socket but its daemon connections (QP information goes through files).
//!
//! `verbs_app <app|peer> <socket dir> <work dir>`, device `rxe0`.
//! Round i: the app RDMA-WRITEs 4 KiB (pattern A) into the peer's slot
//! i % 8 and SENDs 1 KiB (pattern B) with immediate i; the peer checks
//! both, RDMA-WRITEs 4 KiB (C) into the app's slot and SENDs 1 KiB (D) with
//! immediate i; the app checks both. The app waits for its receives
//! through a completion channel (so a channel connection moves too), the
//! peer polls. Files in the work dir: `<role>.info` (qpn rkey addr ip),
//! `<role>.progress` (rounds done), `stop` (written by the test: the app
//! sends immediate u32::MAX and both exit 0), `<role>.done` (rounds), and
//! on failure `<role>.error` and exit status 1.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use migros_verbs::*;

const SLOT: usize = 4096;
const SLOTS: usize = 8;
const SEND_AREA: usize = SLOT * SLOTS;
const MSG: usize = 1024;
const RECV_AREA: usize = SEND_AREA + SLOT + MSG;
const RECVS: usize = 16;
const MR_LEN: usize = RECV_AREA + RECVS * MSG;
const STOP: u32 = u32::MAX;
/// Longest wait for one completion (a migration pauses for a while).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

struct Side {
    role: String,
    work: PathBuf,
    ctx: Context,
    channel: Option<CompChannel>,
    send_cq: Cq,
    recv_cq: Cq,
    qp: Qp,
    mr: Mr,
    remote_rkey: u32,
    remote_addr: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (role, dir, work) = (
        args[1].clone(),
        PathBuf::from(&args[2]),
        PathBuf::from(&args[3]),
    );
    let result = run(&role, &dir, &work);
    if let Err(e) = result {
        eprintln!("{role}: {e}");
        let _ = std::fs::write(work.join(format!("{role}.error")), &e);
        std::process::exit(1);
    }
}

fn run(role: &str, dir: &Path, work: &Path) -> std::result::Result<(), String> {
    let e = |what: &'static str| move |err: Error| format!("{what}: {err}");
    let ctx = Context::open_in(dir, "rxe0").map_err(e("open rxe0"))?;
    let pd = ctx.alloc_pd().map_err(e("pd"))?;
    let channel = if role == "app" {
        Some(ctx.create_comp_channel().map_err(e("channel"))?)
    } else {
        None
    };
    let send_cq = ctx.create_cq(64, None).map_err(e("cq"))?;
    let recv_cq = ctx.create_cq(64, channel.as_ref()).map_err(e("cq"))?;
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Rc,
            send_cq: &send_cq,
            recv_cq: &recv_cq,
            srq: None,
            cap: QpCap {
                max_send_wr: 16,
                max_recv_wr: RECVS as u32,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            sq_sig_all: false,
        })
        .map_err(e("qp"))?;
    let access = Access(Access::LOCAL_WRITE.0 | Access::REMOTE_WRITE.0 | Access::REMOTE_READ.0);
    let mr = pd.alloc_mr(MR_LEN, access).map_err(e("mr"))?;
    let info = format!("{} {} {} {}", qp.qpn, mr.rkey, mr.addr(), ctx.addr());
    write_atomic(&work.join(format!("{role}.info")), &info);
    let other = if role == "app" { "peer" } else { "app" };
    let theirs = wait_file(&work.join(format!("{other}.info")))?;
    let f: Vec<&str> = theirs.split_whitespace().collect();
    let bad = |_| format!("bad {other}.info {theirs:?}");
    let (rqpn, rkey, raddr, rip): (u32, u32, u64, IpAddr) = (
        f[0].parse().map_err(|_| bad(()))?,
        f[1].parse().map_err(|_| bad(()))?,
        f[2].parse().map_err(|_| bad(()))?,
        f[3].parse().map_err(|_| bad(()))?,
    );
    connect(&qp, rqpn, rip, access)?;
    let mut side = Side {
        role: role.to_owned(),
        work: work.to_owned(),
        ctx,
        channel,
        send_cq,
        recv_cq,
        qp,
        mr,
        remote_rkey: rkey,
        remote_addr: raddr,
    };
    for r in 0..RECVS {
        side.post_recv(r)?;
    }
    if side.channel.is_some() {
        side.recv_cq.req_notify(false).map_err(e("arm"))?;
    }
    let rounds = if role == "app" {
        side.app()?
    } else {
        side.peer()?
    };
    write_atomic(&work.join(format!("{role}.done")), &rounds.to_string());
    println!("{role}: {rounds} rounds on {}", side.ctx.addr());
    Ok(())
}

impl Side {
    fn app(&mut self) -> std::result::Result<u32, String> {
        let mut i = 0u32;
        loop {
            if i.is_multiple_of(25) {
                write_atomic(&self.work.join("app.progress"), &i.to_string());
                if self.work.join("stop").exists() {
                    self.send_round(STOP, b'B')?;
                    return Ok(i);
                }
            }
            self.send_round(i, b'B')?;
            let (imm, slot) = self.recv()?;
            if imm != i {
                return Err(format!("round {i}: got the peer's message {imm}"));
            }
            check(&self.mr.as_slice()[slot..slot + MSG], i, b'D', "message")?;
            let at = (i as usize % SLOTS) * SLOT;
            check(&self.mr.as_slice()[at..at + SLOT], i, b'C', "written slot")?;
            i += 1;
        }
    }

    fn peer(&mut self) -> std::result::Result<u32, String> {
        let mut i = 0u32;
        loop {
            if i.is_multiple_of(25) {
                write_atomic(&self.work.join("peer.progress"), &i.to_string());
            }
            let (imm, slot) = self.recv()?;
            if imm == STOP {
                return Ok(i);
            }
            if imm != i {
                return Err(format!("round {i}: got the app's message {imm}"));
            }
            check(&self.mr.as_slice()[slot..slot + MSG], i, b'B', "message")?;
            let at = (i as usize % SLOTS) * SLOT;
            check(&self.mr.as_slice()[at..at + SLOT], i, b'A', "written slot")?;
            self.send_round(i, b'D')?;
            i += 1;
        }
    }

    /// RDMA WRITE of the round's slot (A from the app, C from the peer),
    /// then SEND with immediate `i` (pattern `msg`); waits for both.
    fn send_round(&mut self, i: u32, msg: u8) -> std::result::Result<(), String> {
        let write = if msg == b'B' { b'A' } else { b'C' };
        let at = (i as usize % SLOTS) * SLOT;
        let buf = self.mr.as_mut_slice();
        fill(&mut buf[SEND_AREA..SEND_AREA + SLOT], i, write);
        fill(&mut buf[SEND_AREA + SLOT..SEND_AREA + SLOT + MSG], i, msg);
        let wrs = [
            SendWr {
                wr_id: 1,
                opcode: WrOpcode::RdmaWrite {
                    remote_addr: self.remote_addr + at as u64,
                    rkey: self.remote_rkey,
                },
                flags: SendFlags::SIGNALED,
                data: SendData::Sges(vec![self.mr.sge(SEND_AREA, SLOT)]),
                ud: None,
            },
            SendWr {
                wr_id: 2,
                opcode: WrOpcode::SendWithImm { imm: i },
                flags: SendFlags::SIGNALED,
                data: SendData::Sges(vec![self.mr.sge(SEND_AREA + SLOT, MSG)]),
                ud: None,
            },
        ];
        self.qp
            .post_send(&wrs)
            .map_err(|e| format!("round {i}: post_send: {e}"))?;
        let mut got = 0;
        let start = Instant::now();
        let mut wcs = Vec::new();
        while got < 2 {
            wcs.clear();
            self.send_cq
                .poll(&mut wcs, 4)
                .map_err(|e| format!("poll: {e}"))?;
            for wc in &wcs {
                if wc.status != WcStatus::Success {
                    return Err(format!("round {i}: send completion {wc:?}"));
                }
                got += 1;
            }
            if start.elapsed() > STEP_TIMEOUT {
                return Err(format!("round {i}: no send completion in {STEP_TIMEOUT:?}"));
            }
            if wcs.is_empty() {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// The next receive: its immediate and where its payload is; the
    /// receive is posted again.
    fn recv(&mut self) -> std::result::Result<(u32, usize), String> {
        let start = Instant::now();
        let mut wcs = Vec::new();
        loop {
            wcs.clear();
            self.recv_cq
                .poll(&mut wcs, 1)
                .map_err(|e| format!("poll: {e}"))?;
            if let Some(wc) = wcs.pop() {
                if wc.status != WcStatus::Success {
                    return Err(format!("receive completion {wc:?}"));
                }
                let r = wc.wr_id as usize;
                let imm = wc.imm_data.ok_or("a message without immediate")?;
                self.post_recv(r)?;
                return Ok((imm, RECV_AREA + r * MSG));
            }
            if start.elapsed() > STEP_TIMEOUT {
                return Err(format!("{}: no message in {STEP_TIMEOUT:?}", self.role));
            }
            match &self.channel {
                // Sleep until the armed CQ raises an event, then re-arm.
                Some(ch) => {
                    if ch
                        .get_event_timeout(Duration::from_millis(200))
                        .map_err(|e| format!("get_event: {e}"))?
                        .is_some()
                    {
                        self.recv_cq
                            .req_notify(false)
                            .map_err(|e| format!("arm: {e}"))?;
                    }
                }
                None => std::thread::yield_now(),
            }
        }
    }

    fn post_recv(&self, r: usize) -> std::result::Result<(), String> {
        self.qp
            .post_recv(&[RecvWr {
                wr_id: r as u64,
                sges: vec![self.mr.sge(RECV_AREA + r * MSG, MSG)],
            }])
            .map_err(|e| format!("post_recv: {e}"))
    }
}

/// RESET → INIT → RTR → RTS with migros-test-support's attributes
/// (PSNs 0x100, path MTU 1024, ACK timeout 14).
fn connect(qp: &Qp, rqpn: u32, rip: IpAddr, access: Access) -> std::result::Result<(), String> {
    let p = migros_test_support::RcParams {
        timeout: 14,
        access,
        ..migros_test_support::RcParams::new(rqpn, rip)
    };
    for (attr, mask) in p.transitions() {
        qp.modify(&attr, mask)
            .map_err(|e| format!("modify to {:?}: {e}", attr.qp_state))?;
    }
    Ok(())
}

/// Round `i`'s bytes of kind `k`.
fn fill(buf: &mut [u8], i: u32, k: u8) {
    for (j, b) in buf.iter_mut().enumerate() {
        *b = (j as u32)
            .wrapping_mul(31)
            .wrapping_add(i.wrapping_mul(7))
            .wrapping_add(k as u32) as u8;
    }
}

fn check(buf: &[u8], i: u32, k: u8, what: &str) -> std::result::Result<(), String> {
    let mut want = vec![0u8; buf.len()];
    fill(&mut want, i, k);
    match buf.iter().zip(&want).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(at) => Err(format!(
            "round {i}: {what} differs at byte {at}: {:#x} instead of {:#x}",
            buf[at], want[at]
        )),
    }
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn wait_file(path: &Path) -> std::result::Result<String, String> {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return Ok(s);
        }
        if start.elapsed() > STEP_TIMEOUT {
            return Err(format!("{} never appeared", path.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
