//! Bandwidth tests: each requester QP keeps `-t` WRs outstanding, every WR
//! signalled; Gbit/s = bytes * 8 / (first post .. last completion).
//!
//! Verification: SEND — the receiver checks each received buffer; WRITE —
//! writes go in double-buffered batches of `-t`, the last of each batch a
//! WRITE with immediate, after which the receiver checks the batch and
//! acknowledges it with a SEND with immediate (a batch's slots are reused
//! only after that); READ — the reader clears its slot, reads one of the
//! target's `t + 1` fixed patterns and checks it; atomics — fetch-and-add 1
//! returns each of 0..n exactly once, and the target's counter ends at n.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use migros_verbs::{SendData, SendFlags, SendWr, WcOpcode, WcStatus, WorkCompletion, WrOpcode};

use super::endpoint::{wr_id, wr_qp, wr_seq, ACK_BIT};
use super::exchange::{Direction, Summary};
use super::report::Peak;
use super::side::{Idle, Side};
use super::verify;
use crate::cli::Test;

#[derive(Debug, Default, Clone)]
struct ReqQp {
    posted: u64,
    completed: u64,
    outstanding: u32,
    /// Writes the receiver has checked (verified WRITE only).
    acked: u64,
    stopped: bool,
    /// Values returned by fetch-and-add (verified atomics).
    returned: Vec<u64>,
}

#[derive(Debug, Default, Clone)]
struct RespQp {
    /// SEND: messages received; verified WRITE: writes checked.
    received: u64,
}

pub fn run(side: &mut Side) -> Result<Summary> {
    let p = side.params.clone();
    let n = side.ep.qps.len();
    let roles = side.roles;
    let mut req = vec![ReqQp::default(); n];
    let mut resp = vec![RespQp::default(); n];
    let mut peak = Peak::new(Duration::from_millis(10));
    let mut wcs: Vec<WorkCompletion> = Vec::with_capacity(64);
    let mut start: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    let mut resp_start: Option<Instant> = None;
    let mut idle = Idle::new();
    let total = p.iters * n as u64;
    let batch = p.tx_depth.max(1) as u64;

    if !roles.self_driven() {
        return passive(side);
    }
    loop {
        let now = Instant::now();
        let mut busy = false;
        if roles.requester && end.is_none() {
            let t0 = *start.get_or_insert_with(|| {
                peak.start(now);
                now
            });
            for (q, r) in req.iter_mut().enumerate() {
                busy |= post(side, r, q, t0, batch)?;
            }
        }
        // Send completions.
        wcs.clear();
        side.ep
            .scq
            .poll(&mut wcs, 64)
            .context("polling the send cq")?;
        let now = Instant::now();
        busy |= !wcs.is_empty();
        for wc in &wcs {
            check_status(wc)?;
            if wc.wr_id & ACK_BIT != 0 {
                continue;
            }
            let q = wr_qp(wc.wr_id);
            let seq = wr_seq(wc.wr_id);
            let r = &mut req[q];
            if seq != r.completed {
                bail!("qp {q}: completion of wr {seq}, expected {}", r.completed);
            }
            r.completed += 1;
            r.outstanding -= 1;
            side.gaps.completion(now);
            peak.add(now, p.size as u64);
            if p.verify {
                check_local(side, r, q, seq);
            }
        }
        // Receive completions.
        if roles.responder_active || (p.test == Test::WriteBw && p.verify) {
            wcs.clear();
            side.ep
                .rcq
                .poll(&mut wcs, 64)
                .context("polling the receive cq")?;
            let now = Instant::now();
            busy |= !wcs.is_empty();
            for wc in &wcs {
                check_status(wc)?;
                let q = wr_qp(wc.wr_id);
                match wc.opcode {
                    WcOpcode::Recv if p.test == Test::WriteBw => {
                        // An acknowledgement of checked writes.
                        let imm = wc.imm_data.context("acknowledgement without immediate")?;
                        req[q].acked = unwrap_seq(req[q].acked, imm) + 1;
                        let wr = side.ep.recv_wr(p.test, q, 0);
                        side.ep.qps[q]
                            .post_recv(&[wr])
                            .context("reposting a receive")?;
                    }
                    WcOpcode::Recv => {
                        resp_start.get_or_insert(now);
                        side.gaps.completion(now);
                        let slot = wr_seq(wc.wr_id) as usize;
                        let seq = resp[q].received;
                        resp[q].received += 1;
                        if p.verify {
                            let r = if wc.byte_len != p.size {
                                Err(format!(
                                    "qp {q} message {seq}: {} bytes, expected {}",
                                    wc.byte_len, p.size
                                ))
                            } else {
                                let l = side.ep.layout.slot;
                                let buf = &side.ep.target[q].as_slice()
                                    [slot * l..slot * l + p.size as usize];
                                verify::check(buf, q as u64, seq)
                                    .map_err(|m| format!("qp {q} message {seq}: {m}"))
                            };
                            side.checked(r);
                        }
                        let wr = side.ep.recv_wr(p.test, q, slot);
                        side.ep.qps[q]
                            .post_recv(&[wr])
                            .context("reposting a receive")?;
                    }
                    WcOpcode::RecvRdmaWithImm => {
                        resp_start.get_or_insert(now);
                        side.gaps.completion(now);
                        let imm = wc
                            .imm_data
                            .context("write with immediate without immediate")?;
                        let last = unwrap_seq(resp[q].received, imm);
                        for seq in resp[q].received..=last {
                            let slot = (seq % (2 * batch)) as usize;
                            let l = side.ep.layout.slot;
                            let buf =
                                &side.ep.target[q].as_slice()[slot * l..slot * l + p.size as usize];
                            let r = verify::check(buf, q as u64, seq)
                                .map_err(|m| format!("qp {q} write {seq}: {m}"));
                            side.checked(r);
                        }
                        resp[q].received = last + 1;
                        let wr = side.ep.recv_wr(p.test, q, 0);
                        side.ep.qps[q]
                            .post_recv(&[wr])
                            .context("reposting a receive")?;
                        let ack = SendWr {
                            wr_id: wr_id(q, last) | ACK_BIT,
                            opcode: WrOpcode::SendWithImm { imm: last as u32 },
                            flags: SendFlags::SIGNALED,
                            data: SendData::Sges(Vec::new()),
                            ud: None,
                        };
                        side.ep.qps[q]
                            .post_send(&[ack])
                            .context("posting an acknowledgement")?;
                    }
                    op => bail!("unexpected receive completion {op:?}"),
                }
            }
        }
        busy |= side.poll_ctrl(now)?;

        // Requester done?
        if roles.requester && end.is_none() && req.iter().all(|r| r.stopped && r.outstanding == 0) {
            end = Some(Instant::now());
            side.finished(req.iter().map(|r| r.completed).collect())?;
        }
        // Migration trigger and progress.
        let fraction = if roles.requester {
            match (p.duration, start) {
                (Some(d), Some(s)) => s.elapsed().as_secs_f64() / d,
                _ => req.iter().map(|r| r.completed).sum::<u64>() as f64 / total.max(1) as f64,
            }
        } else {
            match (p.duration, resp_start) {
                (Some(d), Some(s)) => s.elapsed().as_secs_f64() / d,
                (Some(_), None) => 0.0,
                _ => resp.iter().map(|r| r.received).sum::<u64>() as f64 / total.max(1) as f64,
            }
        };
        side.progress(fraction)?;

        let req_done = !roles.requester || end.is_some();
        let resp_done = !roles.responder_active
            || side
                .peer_ops
                .as_ref()
                .is_some_and(|ops| ops.iter().zip(&resp).all(|(o, r)| r.received >= *o));
        if req_done && resp_done {
            break;
        }
        idle.round(busy, "running the benchmark")?;
    }

    let mut summary = Summary::default();
    if roles.requester {
        let (s, e) = (
            start.unwrap_or_else(Instant::now),
            end.unwrap_or_else(Instant::now),
        );
        let secs = e.duration_since(s).as_secs_f64();
        let ops: u64 = req.iter().map(|r| r.completed).sum();
        let bytes = ops * p.size as u64;
        let avg = if secs > 0.0 {
            bytes as f64 * 8.0 / secs / 1e9
        } else {
            0.0
        };
        summary.requester = Some(Direction {
            ops,
            bytes,
            secs,
            peak_gbps: peak.gbps(avg),
        });
        if p.test == Test::AtomicBw && p.verify {
            for (q, r) in req.iter_mut().enumerate() {
                let res = verify::exactly_once(&mut r.returned).map_err(|e| format!("qp {q}: {e}"));
                side.checked(res);
            }
        }
    }
    if side.peer_roles.requester {
        let ops = side.wait_peer_finished()?;
        check_target(side, &ops);
    }
    Ok(summary)
}

/// A passive target: waits for the requester, migrating when told.
fn passive(side: &mut Side) -> Result<Summary> {
    let ops = side.wait_peer_finished()?;
    check_target(side, &ops);
    Ok(Summary::default())
}

/// Verified atomics: the target's counters hold what the requester did.
fn check_target(side: &mut Side, ops: &[u64]) {
    if side.params.test != Test::AtomicBw || !side.params.verify {
        return;
    }
    for (q, want) in ops.iter().enumerate() {
        let Some(mr) = side.ep.target.get(q) else {
            side.checked(Err(format!(
                "the peer reports qp {q}, which does not exist"
            )));
            continue;
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(&mr.as_slice()[..8]);
        let got = u64::from_le_bytes(b);
        let r = if got == *want {
            Ok(())
        } else {
            Err(format!(
                "qp {q}: counter is {got} after {want} fetch-and-adds"
            ))
        };
        side.checked(r);
    }
}

/// Posts what QP `q` may post now; returns whether it posted anything.
fn post(side: &mut Side, r: &mut ReqQp, q: usize, t0: Instant, batch: u64) -> Result<bool> {
    let p = side.params.clone();
    let write_verify = p.test == Test::WriteBw && p.verify;
    let mut wrs = Vec::new();
    while !r.stopped && r.outstanding < p.tx_depth {
        let seq = r.posted;
        let time_up = p.duration.is_some_and(|d| t0.elapsed().as_secs_f64() >= d);
        if (p.duration.is_none() && seq >= p.iters)
            || (time_up && (!write_verify || seq.is_multiple_of(batch)))
        {
            r.stopped = true;
            break;
        }
        if write_verify && seq >= r.acked + 2 * batch {
            break;
        }
        wrs.push(build(side, q, seq, batch));
        r.posted += 1;
        r.outstanding += 1;
    }
    if wrs.is_empty() {
        return Ok(false);
    }
    side.ep.qps[q].post_send(&wrs).context("posting send wrs")?;
    Ok(true)
}

fn build(side: &mut Side, q: usize, seq: u64, batch: u64) -> SendWr {
    let p = &side.params;
    let l = side.ep.layout;
    let size = p.size as usize;
    let tx_slot = (seq % l.tx_slots as u64) as usize;
    let remote = &side.peer[q];
    let target_slot = (seq % l.target_slots as u64) * l.slot as u64;
    let local = side.ep.tx[q].sge(tx_slot * l.slot, size);
    let opcode = match p.test {
        Test::SendBw => {
            if p.verify {
                verify::fill(
                    &mut side.ep.tx[q].as_mut_slice()[tx_slot * l.slot..][..size],
                    q as u64,
                    seq,
                );
            }
            WrOpcode::Send
        }
        Test::WriteBw => {
            if p.verify {
                verify::fill(
                    &mut side.ep.tx[q].as_mut_slice()[tx_slot * l.slot..][..size],
                    q as u64,
                    seq,
                );
                let last =
                    (seq + 1).is_multiple_of(batch) || (p.duration.is_none() && seq + 1 == p.iters);
                let remote_addr = remote.addr + (seq % (2 * batch)) * l.slot as u64;
                if last {
                    WrOpcode::RdmaWriteWithImm {
                        remote_addr,
                        rkey: remote.rkey,
                        imm: seq as u32,
                    }
                } else {
                    WrOpcode::RdmaWrite {
                        remote_addr,
                        rkey: remote.rkey,
                    }
                }
            } else {
                WrOpcode::RdmaWrite {
                    remote_addr: remote.addr,
                    rkey: remote.rkey,
                }
            }
        }
        Test::ReadBw => {
            if p.verify {
                side.ep.tx[q].as_mut_slice()[tx_slot * l.slot..][..size].fill(0);
            }
            WrOpcode::RdmaRead {
                remote_addr: remote.addr + target_slot,
                rkey: remote.rkey,
            }
        }
        _ => WrOpcode::AtomicFetchAdd {
            remote_addr: remote.addr,
            rkey: remote.rkey,
            add: 1,
        },
    };
    SendWr {
        wr_id: wr_id(q, seq),
        opcode,
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(vec![local]),
        ud: None,
    }
}

/// Checks what a READ or an atomic brought back.
fn check_local(side: &mut Side, r: &mut ReqQp, q: usize, seq: u64) {
    let l = side.ep.layout;
    let size = side.params.size as usize;
    let slot = (seq % l.tx_slots as u64) as usize;
    let buf = &side.ep.tx[q].as_slice()[slot * l.slot..][..size];
    match side.params.test {
        Test::ReadBw => {
            let src = seq % l.target_slots as u64;
            let res =
                verify::check(buf, q as u64, src).map_err(|m| format!("qp {q} read {seq}: {m}"));
            side.checked(res);
        }
        Test::AtomicBw => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[..8]);
            r.returned.push(u64::from_le_bytes(b));
        }
        _ => {}
    }
}

/// The full sequence number of a 32-bit immediate, given one not after it.
fn unwrap_seq(base: u64, imm: u32) -> u64 {
    base + u64::from(imm.wrapping_sub(base as u32))
}

fn check_status(wc: &WorkCompletion) -> Result<()> {
    if wc.status != WcStatus::Success {
        bail!(
            "work completion error: {:?} (opcode {:?}, qp {:#x}, wr {:#x})",
            wc.status,
            wc.opcode,
            wc.qp_num,
            wc.wr_id
        );
    }
    Ok(())
}

/// Fills every target slot of every QP with its fixed pattern (READ sources).
pub fn fill_targets(side: &mut Side) {
    let l = side.ep.layout;
    let size = side.params.size as usize;
    for (q, mr) in side.ep.target.iter_mut().enumerate() {
        for s in 0..l.target_slots {
            verify::fill(
                &mut mr.as_mut_slice()[s * l.slot..][..size],
                q as u64,
                s as u64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates_unwrap() {
        assert_eq!(unwrap_seq(0, 127), 127);
        assert_eq!(unwrap_seq(0x1_0000_0000, 5), 0x1_0000_0005);
        assert_eq!(unwrap_seq(0xffff_fff0, 0x0000_0010), 0x1_0000_0010);
    }
}
