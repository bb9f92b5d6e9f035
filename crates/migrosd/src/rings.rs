//! The rings in a client's memory, as the daemon sees them.
//!
//! Work queues (send, receive, SRQ) are read between the daemon's consumer
//! index and the producer index of the last doorbell, with one
//! `process_vm_readv` of at most two iovecs (the wrap); the consumer index
//! goes back into the control block. Completion rings are written in
//! batches: first every CQE without its phase byte, then, with a second
//! write, the phase bytes, so a client never sees half an
//! entry. The client's consumer index is re-read only when the ring looks
//! full.

use migros_proto::msg::ChannelId;
use migros_proto::ring::{self, CQE_PHASE, CQE_SIZE, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{Cqn, MemoryFault, OwnerId, Qpn, Srqn, WorkCompletion};

use crate::procmem::{ProcMem, MAX_IOV};

/// Most entries read from a work queue in one go.
pub const WQ_BATCH: u32 = 64;

/// A work queue: the send or receive queue of a QP, or an SRQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wq {
    Sq(Qpn),
    Rq(Qpn),
    Srq(Srqn),
}

impl Wq {
    /// Bytes of one entry of this queue's ring.
    pub fn entry_size(self) -> usize {
        match self {
            Wq::Sq(_) => SQ_WQE_SIZE,
            Wq::Rq(_) | Wq::Srq(_) => RQ_WQE_SIZE,
        }
    }
}

/// A work queue ring (send, receive or SRQ) and its indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WqRing {
    pub addr: u64,
    pub entries: u32,
    /// Next entry the daemon consumes.
    pub ci: u32,
    /// Producer index of the last doorbell.
    pub pi: u32,
}

impl WqRing {
    pub fn new(addr: u64, entries: u32) -> WqRing {
        WqRing {
            addr,
            entries,
            ci: 0,
            pi: 0,
        }
    }

    /// Entries posted but not yet consumed.
    pub fn pending(&self) -> u32 {
        self.pi.wrapping_sub(self.ci)
    }

    /// Whether a doorbell's producer index is possible for this ring.
    pub fn valid_pi(&self, pi: u32) -> bool {
        pi.wrapping_sub(self.ci) <= self.entries
    }

    /// Reads up to `max` pending entries of `size` bytes into `buf`;
    /// returns how many.
    pub fn read(
        &self,
        mem: &mut ProcMem,
        owner: OwnerId,
        size: usize,
        max: u32,
        buf: &mut Vec<u8>,
    ) -> Result<u32, MemoryFault> {
        let n = self.pending().min(max);
        if n == 0 || self.entries == 0 {
            return Ok(0);
        }
        let slot = self.ci & (self.entries - 1);
        let first = n.min(self.entries - slot);
        let mut pieces = [(0u64, 0usize); 2];
        pieces[0] = (
            self.addr + u64::from(slot) * size as u64,
            first as usize * size,
        );
        let mut count = 1;
        if n > first {
            pieces[1] = (self.addr, (n - first) as usize * size);
            count = 2;
        }
        buf.resize(n as usize * size, 0);
        mem.readv_now(owner, &pieces[..count], buf)?;
        Ok(n)
    }
}

/// A QP's rings.
#[derive(Debug, Clone)]
pub struct QpRings {
    pub qpn: Qpn,
    /// The control block (consumer indices, [`ring::qp_ctrl`]).
    pub ctrl: u64,
    pub sq: WqRing,
    /// `None` when the QP receives from an SRQ.
    pub rq: Option<WqRing>,
    pub send_cq: Cqn,
    pub recv_cq: Cqn,
}

/// An SRQ's ring.
#[derive(Debug, Clone)]
pub struct SrqRing {
    pub srq: Srqn,
    /// The control block (consumer index, [`ring::srq_ctrl`]).
    pub ctrl: u64,
    pub rq: WqRing,
}

/// A CQ's ring. The completions waiting for it stay in the transport's
/// CQ (the only queue of completions) until they fit.
#[derive(Debug, Clone)]
pub struct CqRing {
    pub cq: Cqn,
    pub addr: u64,
    pub entries: u32,
    /// The control block (the client's consumer index, [`ring::cq_ctrl`]).
    pub ctrl: u64,
    /// Next entry the daemon writes.
    pub pi: u32,
    /// The client's consumer index, as last read.
    pub client_ci: u32,
    /// The transport's arming of the CQ was satisfied (or completions
    /// were waiting when it was armed): the channel gets the event once
    /// completions reach the ring.
    pub armed: bool,
    pub channel: Option<ChannelId>,
}

impl QpRings {
    /// The ring of `wq` (this QP's send or receive queue) and where its
    /// consumer index goes in client memory.
    pub fn ring_mut(&mut self, wq: Wq) -> Option<(&mut WqRing, u64)> {
        match wq {
            Wq::Sq(_) => Some((&mut self.sq, self.ctrl + ring::QP_CTRL_SQ_CI)),
            Wq::Rq(_) => {
                let at = self.ctrl + ring::QP_CTRL_RQ_CI;
                self.rq.as_mut().map(|r| (r, at))
            }
            Wq::Srq(_) => None,
        }
    }
}

impl SrqRing {
    /// The ring and where its consumer index goes in client memory.
    pub fn ring_mut(&mut self) -> (&mut WqRing, u64) {
        (&mut self.rq, self.ctrl + ring::SRQ_CTRL_CI)
    }
}

impl CqRing {
    /// A ring of `entries` CQEs at `addr` with its control block at `ctrl`.
    pub fn new(cq: Cqn, addr: u64, entries: u32, ctrl: u64, channel: Option<ChannelId>) -> CqRing {
        CqRing {
            cq,
            addr,
            entries,
            ctrl,
            pi: 0,
            client_ci: 0,
            armed: false,
            channel,
        }
    }

    /// Free entries in the ring, per the cached consumer index.
    fn room(&self) -> u32 {
        let used = self.pi.wrapping_sub(self.client_ci);
        self.entries.saturating_sub(used)
    }

    /// Most completions the transport queues for a ring of `entries`
    /// before it counts an overrun (the CQ's capacity there).
    pub fn queue_limit(entries: u32) -> usize {
        (entries as usize).max(1024) * 2
    }

    /// How many of `waiting` completions fit now, in one write: the free
    /// entries per the cached consumer index, re-read from the client's
    /// control block only when they are too few.
    pub fn room_for(
        &mut self,
        mem: &mut ProcMem,
        owner: OwnerId,
        waiting: usize,
    ) -> Result<usize, MemoryFault> {
        if (self.room() as usize) < waiting {
            let mut ci = [0u8; 4];
            mem.read_now(owner, self.ctrl + ring::CQ_CTRL_CI, &mut ci)?;
            let ci = u32::from_le_bytes(ci);
            // A consumer index ahead of what was written is garbage: keep the old one.
            if self.pi.wrapping_sub(ci) <= self.entries {
                self.client_ci = ci;
            }
        }
        Ok((self.room() as usize).min(waiting).min(MAX_IOV))
    }

    /// Writes `wcs` (no more than [`CqRing::room_for`] allowed) at the
    /// producer index: every entry without its phase byte, then the phase
    /// bytes. `scratch` is reused between calls.
    pub fn write(
        &mut self,
        mem: &mut ProcMem,
        owner: OwnerId,
        wcs: &[WorkCompletion],
        scratch: &mut Vec<u8>,
    ) -> Result<(), MemoryFault> {
        let n = wcs.len();
        if n == 0 {
            return Ok(());
        }
        scratch.clear();
        scratch.resize(n * CQE_SIZE, 0);
        let mut entry = [0u8; CQE_SIZE];
        for (k, wc) in wcs.iter().enumerate() {
            let index = self.pi.wrapping_add(k as u32);
            ring::encode_cqe(wc, ring::phase(index, self.entries), &mut entry);
            scratch[k * CQE_SIZE..(k + 1) * CQE_SIZE].copy_from_slice(&entry);
        }
        let mask = self.entries - 1;
        let slot_addr = |k: usize| {
            let slot = self.pi.wrapping_add(k as u32) & mask;
            self.addr + u64::from(slot) * CQE_SIZE as u64
        };
        let bodies: Vec<(u64, &[u8])> = (0..n)
            .map(|k| {
                (
                    slot_addr(k),
                    &scratch[k * CQE_SIZE..k * CQE_SIZE + CQE_PHASE],
                )
            })
            .collect();
        mem.writev_now(owner, &bodies)?;
        let phases: Vec<(u64, &[u8])> = (0..n)
            .map(|k| {
                let at = k * CQE_SIZE + CQE_PHASE;
                (slot_addr(k) + CQE_PHASE as u64, &scratch[at..at + 1])
            })
            .collect();
        mem.writev_now(owner, &phases)?;
        self.pi = self.pi.wrapping_add(n as u32);
        Ok(())
    }
}

/// Writes a consumer index into a control block.
pub fn write_ci(mem: &mut ProcMem, owner: OwnerId, at: u64, ci: u32) -> Result<(), MemoryFault> {
    mem.writev_now(owner, &[(at, &ci.to_le_bytes())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_transport::{WcOpcode, WcStatus};

    fn wc(id: u64) -> WorkCompletion {
        WorkCompletion::new(id, WcStatus::Success, WcOpcode::Send, 5, 1)
    }

    #[test]
    fn cq_ring_fills_to_the_client_ci_and_sets_phases() {
        let mut mem = ProcMem::new();
        mem.bind_self(1);
        let mut ring_buf = vec![0u8; 4 * CQE_SIZE];
        let mut ctrl = [0u32; 1];
        let mut cq = CqRing::new(
            1,
            ring_buf.as_mut_ptr() as u64,
            4,
            ctrl.as_mut_ptr() as u64,
            None,
        );
        let waiting: Vec<WorkCompletion> = (0..6).map(wc).collect();
        let mut scratch = Vec::new();
        assert_eq!(cq.room_for(&mut mem, 1, waiting.len()).unwrap(), 4);
        cq.write(&mut mem, 1, &waiting[..4], &mut scratch).unwrap();
        assert_eq!(cq.room_for(&mut mem, 1, 2).unwrap(), 0);
        // SAFETY: ring_buf is alive; it was written behind the compiler's back.
        let view = unsafe {
            std::slice::from_raw_parts(std::hint::black_box(ring_buf.as_ptr()), ring_buf.len())
        };
        for k in 0..4 {
            let mut e = [0u8; CQE_SIZE];
            e.copy_from_slice(&view[k * CQE_SIZE..(k + 1) * CQE_SIZE]);
            assert_eq!(e[CQE_PHASE], 1);
            assert_eq!(ring::decode_cqe(&e).unwrap().wr_id, k as u64);
        }
        // The client consumed two entries.
        // SAFETY: ctrl is a live local array the daemon side reads through its address.
        unsafe { std::ptr::write_volatile(ctrl.as_mut_ptr(), 2) };
        assert_eq!(cq.room_for(&mut mem, 1, 2).unwrap(), 2);
        cq.write(&mut mem, 1, &waiting[4..], &mut scratch).unwrap();
        // SAFETY: ring_buf is alive; it was written behind the compiler's back.
        let view = unsafe {
            std::slice::from_raw_parts(std::hint::black_box(ring_buf.as_ptr()), ring_buf.len())
        };
        assert_eq!(view[CQE_PHASE], 2);
        assert_eq!(cq.pi, 6);
    }

    #[test]
    fn work_queue_reads_across_the_wrap() {
        let mut mem = ProcMem::new();
        mem.bind_self(1);
        let data: Vec<u8> = (0..8u8).collect();
        let mut r = WqRing::new(data.as_ptr() as u64, 4);
        r.ci = 3;
        r.pi = 6;
        let mut buf = Vec::new();
        assert_eq!(r.read(&mut mem, 1, 2, 16, &mut buf).unwrap(), 3);
        assert_eq!(buf, vec![6, 7, 0, 1, 2, 3]);
        assert!(r.valid_pi(7) && !r.valid_pi(8));
    }
}
