//! One end's verbs objects: a context, two CQs, the QPs, and per QP a
//! local buffer (what it sends, where READs and atomics land) and a target
//! buffer (receive buffers, the peer's WRITE target and READ source, the
//! atomic counter); and bringing the QPs to RTS against the peer's.

use anyhow::{Context as _, Result};
use migros_verbs::{
    Access, AttrMask, Context, Cq, Mr, Mtu, Pd, Qp, QpAttr, QpCap, QpInitAttr, QpState, QpType,
    RecvWr,
};

use super::exchange::{Params, QpInfo};
use crate::cli::Test;

/// Slot sizes and counts of the buffers and queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per slot (the message size, at least 8 for atomics).
    pub slot: usize,
    /// Local buffer slots (one per outstanding WR when verifying).
    pub tx_slots: usize,
    /// Target buffer slots.
    pub target_slots: usize,
    /// Receives kept posted per QP (0: none needed).
    pub rx_depth: u32,
    /// Send queue entries per QP (`-t` plus room for acknowledgements).
    pub sq_depth: u32,
}

impl Layout {
    pub fn new(p: &Params) -> Layout {
        let t = p.tx_depth.max(1) as usize;
        let v = p.verify;
        let (target_slots, rx_depth) = match p.test {
            Test::SendBw => {
                let d = (2 * t).max(16);
                (if v { d } else { 1 }, d as u32)
            }
            Test::SendLat => (if v { t } else { 1 }, t as u32),
            // Double-buffered batches of `t` writes, each batch checked and
            // acknowledged (WRITE with immediate, SEND with immediate back).
            Test::WriteBw if v => (2 * t, 16),
            Test::ReadBw if v => (t + 1, 0),
            _ => (1, 0),
        };
        Layout {
            slot: (p.size as usize).max(8),
            tx_slots: if v { t } else { 1 },
            target_slots,
            rx_depth,
            sq_depth: p.tx_depth.max(1) + 8,
        }
    }

    /// Whether receive WRs carry a buffer (SEND tests) or none (immediates only).
    pub fn recv_has_buffer(test: Test) -> bool {
        matches!(test, Test::SendBw | Test::SendLat)
    }
}

/// Fields in drop order: QPs before the buffers and CQs they use.
pub struct Endpoint {
    pub qps: Vec<Qp>,
    pub tx: Vec<Mr>,
    pub target: Vec<Mr>,
    pub scq: Cq,
    pub rcq: Cq,
    pub psns: Vec<u32>,
    pub layout: Layout,
    _pd: Pd,
    pub ctx: Context,
}

const ACCESS: Access = Access(
    Access::LOCAL_WRITE.0
        | Access::REMOTE_WRITE.0
        | Access::REMOTE_READ.0
        | Access::REMOTE_ATOMIC.0,
);

/// READs and atomics in flight per QP, as perftest's default.
const RD_ATOMIC: u32 = 16;

impl Endpoint {
    pub fn open(device: &str, p: &Params) -> Result<Endpoint> {
        let layout = Layout::new(p);
        let ctx = Context::open(device).with_context(|| format!("opening device {device}"))?;
        let pd = ctx.alloc_pd().context("allocating a pd")?;
        let n = p.qps.max(1);
        let scq = ctx
            .create_cq(layout.sq_depth * n, None)
            .context("creating the send cq")?;
        let rcq = ctx
            .create_cq(layout.rx_depth.max(1) * n, None)
            .context("creating the receive cq")?;
        let mut qps = Vec::new();
        let mut tx = Vec::new();
        let mut target = Vec::new();
        let mut psns = Vec::new();
        for i in 0..n {
            let qp = pd
                .create_qp(&QpInitAttr {
                    qp_type: QpType::Rc,
                    send_cq: &scq,
                    recv_cq: &rcq,
                    srq: None,
                    cap: QpCap {
                        max_send_wr: layout.sq_depth,
                        max_recv_wr: layout.rx_depth.max(1),
                        max_send_sge: 1,
                        max_recv_sge: 1,
                        max_inline_data: 0,
                    },
                    sq_sig_all: false,
                })
                .with_context(|| format!("creating qp {i}"))?;
            qps.push(qp);
            tx.push(
                pd.alloc_mr(layout.slot * layout.tx_slots, ACCESS)
                    .context("registering the local buffer")?,
            );
            target.push(
                pd.alloc_mr(layout.slot * layout.target_slots, ACCESS)
                    .context("registering the target buffer")?,
            );
            psns.push(random_psn(i));
        }
        Ok(Endpoint {
            qps,
            tx,
            target,
            scq,
            rcq,
            psns,
            layout,
            _pd: pd,
            ctx,
        })
    }

    /// The device's MTU in bytes.
    pub fn device_mtu(&self) -> u32 {
        self.ctx.device().mtu.bytes()
    }

    /// What the peer needs to reach each QP.
    pub fn infos(&self) -> Vec<QpInfo> {
        let gid = self.ctx.addr();
        self.qps
            .iter()
            .zip(&self.target)
            .zip(&self.psns)
            .map(|((qp, mr), psn)| QpInfo {
                qpn: qp.qpn,
                psn: *psn,
                rkey: mr.rkey,
                addr: mr.addr(),
                len: mr.len() as u64,
                gid,
            })
            .collect()
    }

    /// Brings every QP to RTS, connected to the peer's QP of the same index.
    pub fn connect(&self, peer: &[QpInfo], mtu: u32) -> Result<()> {
        anyhow::ensure!(
            peer.len() == self.qps.len(),
            "the peer has {} qps, this end {}",
            peer.len(),
            self.qps.len()
        );
        let mtu = Mtu::fitting(mtu).context("mtu below 256")?;
        let rd = RD_ATOMIC.min(self.ctx.device().max_qp_rd_atom.max(1)) as u8;
        for ((qp, remote), psn) in self.qps.iter().zip(peer).zip(&self.psns) {
            let mut a = QpAttr {
                qp_state: QpState::Init,
                pkey_index: 0,
                port_num: 1,
                qp_access_flags: ACCESS,
                ..QpAttr::default()
            };
            qp.modify(&a, AttrMask::RC_INIT).context("qp to init")?;
            a.qp_state = QpState::Rtr;
            a.path_mtu = mtu;
            a.dest_qp_num = remote.qpn;
            a.rq_psn = remote.psn;
            a.dest_addr = Some(remote.gid);
            a.max_dest_rd_atomic = rd;
            a.min_rnr_timer = 1; // 0.01 ms
            qp.modify(&a, AttrMask::RC_RTR).context("qp to rtr")?;
            a.qp_state = QpState::Rts;
            a.sq_psn = *psn;
            a.timeout = 14; // 67 ms, perftest's default
            a.retry_cnt = 7;
            a.rnr_retry = 7; // infinite
            a.max_rd_atomic = rd;
            qp.modify(&a, AttrMask::RC_RTS).context("qp to rts")?;
        }
        Ok(())
    }

    /// The receive WR for target slot `slot` of QP `qp` (with its buffer
    /// for SEND tests, empty for immediates).
    pub fn recv_wr(&self, test: Test, qp: usize, slot: usize) -> RecvWr {
        let sges = if Layout::recv_has_buffer(test) {
            vec![self.target[qp].sge(slot * self.layout.slot, self.layout.slot)]
        } else {
            Vec::new()
        };
        RecvWr {
            wr_id: wr_id(qp, slot as u64),
            sges,
        }
    }

    /// Posts the initial receives of every QP.
    pub fn post_initial_recvs(&self, test: Test) -> Result<()> {
        let d = self.layout.rx_depth as usize;
        for qp in 0..self.qps.len() {
            let wrs: Vec<RecvWr> = (0..d)
                .map(|k| self.recv_wr(test, qp, k % self.layout.target_slots))
                .collect();
            if !wrs.is_empty() {
                self.qps[qp].post_recv(&wrs).context("posting receives")?;
            }
        }
        Ok(())
    }

    /// This end's QP counters, summed over its QPs.
    pub fn counters(&self) -> Result<migros_verbs::QpCounters> {
        let (_, qps) = self.ctx.stats().context("reading counters")?;
        let mut sum = migros_verbs::QpCounters::default();
        for (_, c) in &qps {
            sum.retransmits += c.retransmits;
            sum.duplicates += c.duplicates;
            sum.out_of_sequence += c.out_of_sequence;
        }
        Ok(sum)
    }
}

/// Work request ids: bit 63 marks acknowledgements, bits 48..63 the QP index.
pub const ACK_BIT: u64 = 1 << 63;

pub fn wr_id(qp: usize, seq: u64) -> u64 {
    ((qp as u64) << 48) | (seq & 0xffff_ffff_ffff)
}

pub fn wr_qp(id: u64) -> usize {
    ((id & !ACK_BIT) >> 48) as usize
}

pub fn wr_seq(id: u64) -> u64 {
    id & 0xffff_ffff_ffff
}

fn random_psn(i: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(i);
    h.write_u32(std::process::id());
    (h.finish() & 0x00ff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(test: Test, verify: bool) -> Params {
        Params {
            test,
            size: 65536,
            iters: 10,
            duration: None,
            qps: 1,
            bidir: false,
            tx_depth: 128,
            verify,
        }
    }

    #[test]
    fn layouts() {
        let l = Layout::new(&params(Test::SendBw, true));
        assert_eq!(
            (l.slot, l.tx_slots, l.target_slots, l.rx_depth),
            (65536, 128, 256, 256)
        );
        let l = Layout::new(&params(Test::SendBw, false));
        assert_eq!((l.tx_slots, l.target_slots, l.rx_depth), (1, 1, 256));
        let l = Layout::new(&params(Test::WriteBw, true));
        assert_eq!((l.tx_slots, l.target_slots, l.rx_depth), (128, 256, 16));
        let l = Layout::new(&params(Test::ReadBw, true));
        assert_eq!((l.tx_slots, l.target_slots, l.rx_depth), (128, 129, 0));
        let mut p = params(Test::AtomicBw, true);
        p.size = 8;
        let l = Layout::new(&p);
        assert_eq!((l.slot, l.target_slots), (8, 1));
        assert_eq!(l.sq_depth, 136);
    }

    #[test]
    fn wr_ids() {
        let id = wr_id(5, 123_456_789);
        assert_eq!((wr_qp(id), wr_seq(id)), (5, 123_456_789));
        let ack = id | ACK_BIT;
        assert_eq!((wr_qp(ack), wr_seq(ack)), (5, 123_456_789));
        assert!(random_psn(0) <= 0x00ff_ffff);
    }
}
