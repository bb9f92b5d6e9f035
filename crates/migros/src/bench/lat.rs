//! Latency tests, ping-pong as perftest's: send-lat (SEND/RECV both ways),
//! write-lat (each end WRITEs into the other's buffer and polls memory for
//! the last byte changing), read-lat (one-sided READ round trips). One QP.
//! send-lat and write-lat report half the round trip, read-lat all of it.

use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use migros_verbs::{SendData, SendFlags, SendWr, WcOpcode, WcStatus, WorkCompletion, WrOpcode};

use super::endpoint::wr_id;
use super::exchange::Summary;
use super::report::lat_stats;
use super::side::{Idle, Side};
use super::verify;
use crate::cli::Test;

struct Lat {
    wcs: Vec<WorkCompletion>,
    outstanding: u32,
    read_done: bool,
}

pub fn run(side: &mut Side, server: bool) -> Result<Summary> {
    anyhow::ensure!(side.ep.qps.len() == 1, "latency tests use one qp");
    if !side.roles.self_driven() {
        side.wait_peer_finished()?;
        return Ok(Summary::default());
    }
    let p = side.params.clone();
    let mut st = Lat {
        wcs: Vec::with_capacity(16),
        outstanding: 0,
        read_done: false,
    };
    let mut samples = Vec::new();
    let t0 = Instant::now();
    let mut k = 0u64;
    loop {
        if !server {
            let stop = match p.duration {
                Some(d) => t0.elapsed().as_secs_f64() >= d,
                None => k >= p.iters,
            };
            if stop {
                break;
            }
            let ts = Instant::now();
            send(side, &mut st, k)?;
            if !arrive(side, &mut st, k)? {
                bail!("the peer stopped early");
            }
            let rtt = ts.elapsed().as_secs_f64() * 1e6;
            samples.push(if p.test == Test::ReadLat {
                rtt
            } else {
                rtt / 2.0
            });
        } else {
            if p.duration.is_none() && k >= p.iters {
                break;
            }
            if !arrive(side, &mut st, k)? {
                break;
            }
            send(side, &mut st, k)?;
        }
        k += 1;
        let fraction = match p.duration {
            Some(d) => t0.elapsed().as_secs_f64() / d,
            None => k as f64 / p.iters.max(1) as f64,
        };
        side.progress(fraction)?;
    }
    if !server {
        side.finished(vec![k])?;
    }
    // Let the last WRs complete.
    let mut idle = Idle::new();
    while st.outstanding > 0 {
        let busy = drain(side, &mut st)?;
        idle.round(busy, "waiting for the last completions")?;
    }
    Ok(Summary {
        lat: (!server).then(|| lat_stats(&samples)),
        ..Default::default()
    })
}

/// Posts message `k` (SEND, WRITE or READ).
fn send(side: &mut Side, st: &mut Lat, k: u64) -> Result<()> {
    let mut idle = Idle::new();
    while st.outstanding >= side.ep.layout.sq_depth - 1 {
        let busy = drain(side, st)?;
        idle.round(busy, "waiting for a send queue slot")?;
    }
    let p = &side.params;
    let l = side.ep.layout;
    let size = p.size as usize;
    let slot = (k % l.tx_slots as u64) as usize;
    let remote = &side.peer[0];
    let buf = &mut side.ep.tx[0].as_mut_slice()[slot * l.slot..][..size];
    let opcode = match p.test {
        Test::SendLat => {
            if p.verify {
                verify::fill(buf, 0, k);
            }
            WrOpcode::Send
        }
        Test::WriteLat => {
            verify::fill_marked(buf, 0, k);
            WrOpcode::RdmaWrite {
                remote_addr: remote.addr,
                rkey: remote.rkey,
            }
        }
        _ => {
            if p.verify {
                buf.fill(0);
            }
            st.read_done = false;
            WrOpcode::RdmaRead {
                remote_addr: remote.addr,
                rkey: remote.rkey,
            }
        }
    };
    let wr = SendWr {
        wr_id: wr_id(0, k),
        opcode,
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(vec![side.ep.tx[0].sge(slot * l.slot, size)]),
        ud: None,
    };
    side.ep.qps[0].post_send(&[wr]).context("posting")?;
    st.outstanding += 1;
    Ok(())
}

/// Waits for the peer's message `k` (or this end's READ `k`) and checks it;
/// `false` when the peer finished before sending it.
fn arrive(side: &mut Side, st: &mut Lat, k: u64) -> Result<bool> {
    let p = side.params.clone();
    let l = side.ep.layout;
    let size = p.size as usize;
    let mut idle = Idle::new();
    loop {
        let mut busy = drain(side, st)?;
        match p.test {
            Test::SendLat => {
                st.wcs.clear();
                side.ep
                    .rcq
                    .poll(&mut st.wcs, 1)
                    .context("polling the receive cq")?;
                if let Some(wc) = st.wcs.pop() {
                    status(&wc)?;
                    if wc.opcode != WcOpcode::Recv {
                        bail!("unexpected completion {:?}", wc.opcode);
                    }
                    side.gaps.completion(Instant::now());
                    let slot = (wc.wr_id & 0xffff_ffff_ffff) as usize;
                    if p.verify {
                        let buf = &side.ep.target[0].as_slice()[slot * l.slot..][..size];
                        let r = verify::check(buf, 0, k).map_err(|m| format!("message {k}: {m}"));
                        side.checked(r);
                    }
                    let wr = side.ep.recv_wr(p.test, 0, slot);
                    side.ep.qps[0]
                        .post_recv(&[wr])
                        .context("reposting a receive")?;
                    return Ok(true);
                }
            }
            Test::WriteLat => {
                let mr = &side.ep.target[0];
                // SAFETY: the index is inside the MR, which lives as long as
                // `side`; the device writes it concurrently, hence volatile.
                let last = unsafe { std::ptr::read_volatile(mr.as_slice().as_ptr().add(size - 1)) };
                if last == verify::marker(k) {
                    side.gaps.completion(Instant::now());
                    if p.verify {
                        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                        let buf = &side.ep.target[0].as_slice()[..size];
                        let r =
                            verify::check_marked(buf, 0, k).map_err(|m| format!("write {k}: {m}"));
                        side.checked(r);
                    }
                    return Ok(true);
                }
            }
            _ => {
                if st.read_done {
                    side.gaps.completion(Instant::now());
                    if p.verify {
                        let slot = (k % l.tx_slots as u64) as usize;
                        let buf = &side.ep.tx[0].as_slice()[slot * l.slot..][..size];
                        let r = verify::check(buf, 0, 0).map_err(|m| format!("read {k}: {m}"));
                        side.checked(r);
                    }
                    return Ok(true);
                }
            }
        }
        busy |= side.poll_ctrl(Instant::now())?;
        if side
            .peer_ops
            .as_ref()
            .is_some_and(|o| o.first().is_some_and(|n| k >= *n))
        {
            return Ok(false);
        }
        idle.round(busy, "waiting for the peer")?;
    }
}

/// Takes send completions; returns whether there were any.
fn drain(side: &mut Side, st: &mut Lat) -> Result<bool> {
    st.wcs.clear();
    side.ep
        .scq
        .poll(&mut st.wcs, 16)
        .context("polling the send cq")?;
    let any = !st.wcs.is_empty();
    for wc in st.wcs.drain(..) {
        status(&wc)?;
        st.outstanding -= 1;
        if wc.opcode == WcOpcode::RdmaRead {
            st.read_done = true;
        }
    }
    Ok(any)
}

fn status(wc: &WorkCompletion) -> Result<()> {
    if wc.status != WcStatus::Success {
        bail!(
            "work completion error: {:?} (opcode {:?}, qp {:#x})",
            wc.status,
            wc.opcode,
            wc.qp_num
        );
    }
    Ok(())
}
