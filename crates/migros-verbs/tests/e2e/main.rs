//! End to end: real `migrosd` daemons on loopback addresses (127.0.0.x,
//! each test its own), a temporary socket directory per test, and this
//! process as their client. Needs root (the daemons reach this process's
//! memory with process_vm_readv/writev); skipped otherwise.

#[path = "../support/mod.rs"]
mod support;

use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use migros_test_support::role::spawn_role;
use migros_verbs::*;
use support::*;

use migros_test_support::rc::signaled_send as send_wr;

fn u64_at(mr: &Mr, at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&mr.as_slice()[at..at + 8]);
    u64::from_ne_bytes(b)
}

mod extended;
mod migration;
mod rc;
mod ud_srq_channel;

/// UD sides (no SRQ) on daemons a and b, and the destination of b's QP.
fn ud_pair(net: &Net) -> (Side, Side, UdDest) {
    let (a, _) = ud_side(net.open("a"), false);
    let (b, _) = ud_side(net.open("b"), false);
    let dest = UdDest {
        addr: b.ctx.addr(),
        remote_qpn: b.qp.qpn,
        remote_qkey: 0x1111,
    };
    (a, b, dest)
}

/// A side on `ctx` whose RC QP takes its receives from a new SRQ of
/// `srq_wr` entries (returned first: dropped after the QP), with a CQ of
/// `cqe` entries and an MR of `mr_len` bytes.
fn rc_side_on_srq(ctx: Context, cqe: u32, srq_wr: u32, mr_len: usize) -> (Srq, Side) {
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(cqe, None).unwrap();
    let srq = pd.create_srq(srq_wr, 1, 0).unwrap();
    let qp = pd.create_qp(&rc_attr(&cq, Some(&srq), cap(16))).unwrap();
    let mr = pd.alloc_mr(mr_len, ALL_ACCESS).unwrap();
    (srq, Side::new(ctx, pd, cq, qp, mr))
}

/// Posts SEND `seq` of the `len` bytes at `off` in `a`'s MR, after
/// writing `seq` into their first 4 bytes.
fn post_numbered(a: &mut Side, seq: u32, off: usize, len: usize) {
    a.mr.as_mut_slice()[off..off + 4].copy_from_slice(&seq.to_le_bytes());
    a.qp.post_send(&[send_wr(
        u64::from(seq),
        WrOpcode::Send,
        vec![a.mr.sge(off, len)],
    )])
    .unwrap();
}

/// Polls `a`'s CQ once (into `wcs`): each completion must be the next
/// send, `acked`, and successful.
fn poll_acks(a: &Side, wcs: &mut Vec<WorkCompletion>, acked: &mut u32) {
    wcs.clear();
    a.cq.poll(wcs, 32).unwrap();
    for wc in wcs.iter() {
        assert_eq!(
            (wc.status, wc.wr_id),
            (WcStatus::Success, u64::from(*acked)),
            "{wc:?}"
        );
        *acked += 1;
    }
}

fn ud_side(ctx: Context, srq: bool) -> (Side, Option<Srq>) {
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(64, None).unwrap();
    let srq = srq.then(|| pd.create_srq(16, 1, 0).unwrap());
    let qp = pd
        .create_qp(&QpInitAttr {
            qp_type: QpType::Ud,
            send_cq: &cq,
            recv_cq: &cq,
            srq: srq.as_ref(),
            cap: cap(16),
            sq_sig_all: true,
        })
        .unwrap();
    let init = QpAttr {
        qp_state: QpState::Init,
        qkey: 0x1111,
        ..QpAttr::default()
    };
    qp.modify(
        &init,
        AttrMask::STATE | AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
    )
    .unwrap();
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        ..QpAttr::default()
    };
    qp.modify(&rtr, AttrMask::STATE).unwrap();
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: 1,
        ..QpAttr::default()
    };
    qp.modify(&rts, AttrMask::STATE | AttrMask::SQ_PSN).unwrap();
    let mr = pd.alloc_mr(1 << 14, ALL_ACCESS).unwrap();
    (Side::new(ctx, pd, cq, qp, mr), srq)
}

#[test]
fn killed_daemon_flushes_outstanding_work_requests() {
    let Some(mut net) = Net::start_if_can(&[("a", "127.0.0.214"), ("b", "127.0.0.215")]) else {
        return;
    };
    let a = rc_side(net.open("a"), 1 << 12);
    let b = rc_side(net.open("b"), 1 << 12);
    connect_pair(&a, &b);
    let recv = |wr_id| RecvWr {
        wr_id,
        sges: vec![b.mr.sge(0, 64)],
    };
    b.qp.post_recv(&[recv(10), recv(11), recv(12), recv(13)])
        .unwrap();
    a.qp.post_send(&[
        send_wr(1, WrOpcode::Send, vec![a.mr.sge(0, 8)]),
        send_wr(2, WrOpcode::Send, vec![a.mr.sge(0, 8)]),
    ])
    .unwrap();
    wait_n(&a.cq, 2);
    let got: Vec<_> = wait_n(&b.cq, 2).iter().map(|w| w.wr_id).collect();
    assert_eq!(got, [10, 11]);

    net.kill("b");
    let start = Instant::now();
    while !b.ctx.connection_lost() {
        assert!(start.elapsed() < WAIT, "the daemon's death went unnoticed");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut wcs = Vec::new();
    b.cq.poll(&mut wcs, 16).unwrap();
    let got: Vec<_> = wcs.iter().map(|w| (w.wr_id, w.status)).collect();
    assert_eq!(
        got,
        [(12, WcStatus::WrFlushErr), (13, WcStatus::WrFlushErr)]
    );
    assert_eq!(b.cq.poll(&mut wcs, 16).unwrap(), 0);
    assert!(b.qp.post_recv(&[recv(14)]).is_err());
    assert!(b
        .qp
        .post_send(&[send_wr(3, WrOpcode::Send, vec![b.mr.sge(0, 8)])])
        .is_err());
}

const CHILD_ENV: &str = "MIGROS_VERBS_E2E_CHILD_DIR";

/// Not a test on its own: the client process that
/// `killed_client_gives_the_peer_retry_exceeded` starts and kills.
#[test]
fn child_process_role() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let ctx = Context::open_in(std::path::Path::new(&dir), "a").unwrap();
    let side = rc_side(ctx, 1 << 16);
    println!(
        "CHILD {} {} {} {}",
        side.qp.qpn,
        side.ctx.addr(),
        side.mr.addr(),
        side.mr.rkey
    );
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut it = line.split_whitespace();
    let qpn: Qpn = it.next().unwrap().parse().unwrap();
    let addr: IpAddr = it.next().unwrap().parse().unwrap();
    connect_rc(&side.qp, qpn, addr, 12, 7);
    println!("CHILD READY");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn killed_client_gives_the_peer_retry_exceeded() {
    let Some(net) = Net::start_if_can(&[("a", "127.0.0.212"), ("b", "127.0.0.213")]) else {
        return;
    };
    let (mut child, rx) = spawn_role("child_process_role", CHILD_ENV, net.dir.path());
    let child_line = |want: &str| loop {
        let l = rx
            .recv_timeout(WAIT)
            .expect("the child process did not answer");
        if l.starts_with(want) {
            return l;
        }
    };
    let info = child_line("");
    let f: Vec<&str> = info.split_whitespace().collect();
    let (cqpn, caddr, cmr, crkey): (Qpn, IpAddr, u64, u32) = (
        f[0].parse().unwrap(),
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
    );
    let b = rc_side(net.open("b"), 1 << 16);
    // ACK timeout 4.096 µs * 2^10 ≈ 4 ms, 3 retries.
    connect_rc(&b.qp, cqpn, caddr, 10, 3);
    writeln!(
        child.stdin.as_mut().unwrap(),
        "{} {}",
        b.qp.qpn,
        b.ctx.addr()
    )
    .unwrap();
    child_line("READY");

    let write = |wr_id| {
        send_wr(
            wr_id,
            WrOpcode::RdmaWrite {
                remote_addr: cmr,
                rkey: crkey,
            },
            vec![b.mr.sge(0, 1 << 16)],
        )
    };
    b.qp.post_send(&(0..8).map(write).collect::<Vec<_>>())
        .unwrap();
    for wc in wait_n(&b.cq, 8) {
        assert_eq!(wc.status, WcStatus::Success, "{wc:?}");
    }
    // Kill the client mid-transfer and keep writing to it.
    b.qp.post_send(&(8..16).map(write).collect::<Vec<_>>())
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut posted, mut done) = (16u64, 8u64);
    let start = Instant::now();
    let mut wcs = Vec::new();
    let first_error = loop {
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "no error completion after the peer died ({} completions)",
            wcs.len()
        );
        let n = wcs.len();
        b.cq.poll(&mut wcs, 16).unwrap();
        done += (wcs.len() - n) as u64;
        if let Some(wc) = wcs[n..].iter().find(|w| w.status != WcStatus::Success) {
            break wc.clone();
        }
        if posted - done < 8 {
            b.qp.post_send(&[write(posted)]).unwrap();
            posted += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!("error after {:?}: {first_error:?}", start.elapsed());
    // Either the peer's daemon noticed its client gone and dropped the QP
    // (retries, then retry exceeded), or it NAKed a WRITE into the dead
    // client's memory first (remote operational error: never an ACK for
    // data that did not land).
    assert!(
        matches!(
            first_error.status,
            WcStatus::RetryExcErr | WcStatus::RemOpErr
        ),
        "{first_error:?}"
    );
    // Everything after it is flushed; nothing hangs.
    let rest = (posted - done) as usize;
    for wc in wait_n(&b.cq, rest) {
        assert_ne!(wc.status, WcStatus::Success);
    }
}
