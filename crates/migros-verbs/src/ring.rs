//! The client's side of the rings: producers for send and receive WQEs,
//! the consumer of CQEs, and their index arithmetic.
//!
//! Indices are free-running `u32`s; a ring has a power-of-two number of
//! entries, so `index % entries` stays consistent across the wrap.

use std::sync::atomic::{fence, Ordering};
use std::sync::Mutex;

use migros_proto::msg::Request;
use migros_proto::ring::{self as layout, CQE_SIZE};
use migros_proto::verbs::WorkCompletion;

use crate::conn::lock;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::shm::ShmBuf;

/// The ring size for a request of `requested` entries: the next power of
/// two, at least 1.
pub(crate) fn ring_entries(requested: u32) -> Result<u32> {
    requested
        .max(1)
        .checked_next_power_of_two()
        .ok_or_else(|| Error::InvalidArgument(format!("{requested} entries are too many")))
}

/// A ring the daemon writes into (a CQ's, an SRQ's): its memory can be
/// kept for the life of the process when the daemon may still use it.
pub(crate) trait DaemonRing {
    /// Keeps the ring's memory for the life of the process.
    fn leak_on_drop(&mut self);
}

/// Ends a resize that asked the daemon to move from `ring` to `new`: on
/// success the daemon writes only `new` from now on; when the request
/// failed without the daemon's answer, which ring it uses is unknown, so
/// both are kept.
pub(crate) fn finish_resize<R: DaemonRing>(
    ring: &mut R,
    mut new: R,
    result: Result<()>,
) -> Result<()> {
    match result {
        Ok(()) => {
            *ring = new;
            Ok(())
        }
        Err(e) => {
            if !matches!(e, Error::Daemon { .. }) {
                new.leak_on_drop();
                ring.leak_on_drop();
            }
            Err(e)
        }
    }
}

/// Asks the daemon to destroy the object `destroy` names; if it did not
/// confirm, it may still write completions or consumer indices into
/// `ring`, which is then kept.
pub(crate) fn destroy_or_keep<R: DaemonRing>(ctx: &Context, destroy: &Request, ring: &Mutex<R>) {
    if ctx.request_ok(destroy).is_err() {
        lock(ring).leak_on_drop();
    }
}

/// Whether a producer at `pi` may write one more entry when the consumer
/// is at `ci`. A consumer index ahead of the producer or more than
/// `entries` behind (a confused daemon) counts as full.
pub(crate) fn has_room(pi: u32, ci: u32, entries: u32) -> bool {
    pi.wrapping_sub(ci) < entries
}

/// The slot of `index`.
pub(crate) fn slot(index: u32, entries: u32) -> usize {
    (index & (entries - 1)) as usize
}

/// Allocates `len` zeroed bytes of shared memory.
pub(crate) fn alloc(len: usize) -> Result<ShmBuf> {
    ShmBuf::zeroed(len)
        .ok_or_else(|| Error::InvalidArgument(format!("cannot allocate {len} bytes")))
}

/// A ring this process fills and the daemon consumes (send or receive WQEs).
pub(crate) struct Producer {
    buf: ShmBuf,
    entries: u32,
    entry_size: usize,
    pi: u32,
}

impl Producer {
    pub(crate) fn new(entries: u32, entry_size: usize) -> Result<Producer> {
        let len = (entries as usize)
            .checked_mul(entry_size)
            .ok_or_else(|| Error::InvalidArgument(format!("{entries} entries are too many")))?;
        Ok(Producer {
            buf: alloc(len)?,
            entries,
            entry_size,
            pi: 0,
        })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.buf.addr()
    }

    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    pub(crate) fn pi(&self) -> u32 {
        self.pi
    }

    /// How many entries fit before the producer reaches the consumer (at
    /// `ci`).
    pub(crate) fn room(&self, ci: u32) -> u32 {
        self.entries.saturating_sub(self.pi.wrapping_sub(ci))
    }

    /// Writes `entry` at the producer index if the consumer (at `ci`) left room.
    pub(crate) fn push(&mut self, ci: u32, entry: &[u8]) -> Result<()> {
        debug_assert_eq!(entry.len(), self.entry_size);
        if !has_room(self.pi, ci, self.entries) {
            return Err(Error::QueueFull);
        }
        let at = slot(self.pi, self.entries) * self.entry_size;
        self.buf.write(at, entry);
        self.pi = self.pi.wrapping_add(1);
        Ok(())
    }

    /// Keeps the ring's memory for the life of the process.
    pub(crate) fn leak_on_drop(&mut self) {
        self.buf.leak_on_drop();
    }

    /// The bytes of slot `slot` (tests).
    #[cfg(test)]
    pub(crate) fn read_slot(&self, slot: usize) -> Vec<u8> {
        (0..self.entry_size)
            .map(|i| {
                self.buf
                    .load_u8(slot * self.entry_size + i, Ordering::Relaxed)
            })
            .collect()
    }
}

/// The completion ring: the daemon produces, this process consumes.
pub(crate) struct CqRing {
    buf: ShmBuf,
    /// Holds the consumer index at `CQ_CTRL_CI`.
    ctrl: ShmBuf,
    entries: u32,
    ci: u32,
}

impl CqRing {
    pub(crate) fn new(entries: u32) -> Result<CqRing> {
        let len = (entries as usize)
            .checked_mul(CQE_SIZE)
            .ok_or_else(|| Error::InvalidArgument(format!("{entries} entries are too many")))?;
        Ok(CqRing {
            buf: alloc(len)?,
            ctrl: alloc(layout::CQ_CTRL_SIZE)?,
            entries,
            ci: 0,
        })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.buf.addr()
    }

    pub(crate) fn ctrl_addr(&self) -> u64 {
        self.ctrl.addr()
    }

    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    /// Whether the entry at the consumer index is valid (takes nothing).
    pub(crate) fn has_completion(&self) -> bool {
        let at = slot(self.ci, self.entries) * CQE_SIZE;
        self.buf.load_u8(at + layout::CQE_PHASE, Ordering::Acquire)
            == layout::phase(self.ci, self.entries)
    }

    /// Moves up to `max` completions into `out`; publishes the consumer index.
    pub(crate) fn poll(&mut self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize> {
        let mut n = 0;
        let mut result = Ok(());
        while n < max {
            let at = slot(self.ci, self.entries) * CQE_SIZE;
            let phase = self.buf.load_u8(at + layout::CQE_PHASE, Ordering::Relaxed);
            if phase != layout::phase(self.ci, self.entries) {
                break;
            }
            // The phase byte is written after the rest of the entry.
            fence(Ordering::Acquire);
            let bytes: [u8; CQE_SIZE] = self.buf.read_volatile(at);
            self.ci = self.ci.wrapping_add(1);
            match layout::decode_cqe(&bytes) {
                Ok(wc) => {
                    out.push(wc);
                    n += 1;
                }
                Err(e) => {
                    result = Err(Error::Protocol(format!("bad completion entry: {e}")));
                    break;
                }
            }
        }
        if n > 0 || result.is_err() {
            // Everything read above happens before the daemon may reuse the slots.
            self.ctrl
                .store_u32(layout::CQ_CTRL_CI as usize, self.ci, Ordering::Release);
        }
        result.map(|()| n)
    }
}

impl DaemonRing for CqRing {
    fn leak_on_drop(&mut self) {
        self.buf.leak_on_drop();
        self.ctrl.leak_on_drop();
    }
}

/// A control block the daemon writes consumer indices into.
pub(crate) struct Ctrl {
    buf: ShmBuf,
}

impl Ctrl {
    pub(crate) fn new(len: usize) -> Result<Ctrl> {
        Ok(Ctrl { buf: alloc(len)? })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.buf.addr()
    }

    /// The daemon's consumer index at `offset`.
    pub(crate) fn ci(&self, offset: u64) -> u32 {
        self.buf.load_u32(offset as usize, Ordering::Acquire)
    }

    pub(crate) fn leak_on_drop(&mut self) {
        self.buf.leak_on_drop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_proto::verbs::{WcOpcode, WcStatus};

    #[test]
    fn entries_round_up_to_powers_of_two() {
        assert_eq!(ring_entries(0).unwrap(), 1);
        assert_eq!(ring_entries(1).unwrap(), 1);
        assert_eq!(ring_entries(3).unwrap(), 4);
        assert_eq!(ring_entries(1024).unwrap(), 1024);
        assert_eq!(ring_entries(1025).unwrap(), 2048);
        assert!(ring_entries(u32::MAX).is_err());
    }

    #[test]
    fn room_and_slots_across_the_wrap() {
        assert!(has_room(0, 0, 4));
        assert!(has_room(3, 0, 4));
        assert!(!has_room(4, 0, 4));
        // Indices wrap around u32.
        let pi = 2u32;
        let ci = u32::MAX - 1; // 4 behind
        assert!(!has_room(pi, ci, 4));
        assert!(has_room(pi, ci.wrapping_add(1), 4));
        // A consumer ahead of the producer is treated as full.
        assert!(!has_room(5, 6, 4));
        assert_eq!(slot(u32::MAX, 4), 3);
        assert_eq!(slot(u32::MAX.wrapping_add(1), 4), 0);
        assert_eq!(slot(9, 8), 1);
    }

    #[test]
    fn producer_refuses_when_full_and_wraps() {
        let mut p = Producer::new(2, 4).unwrap();
        p.push(0, &[1; 4]).unwrap();
        p.push(0, &[2; 4]).unwrap();
        assert!(matches!(p.push(0, &[3; 4]), Err(Error::QueueFull)));
        p.push(1, &[3; 4]).unwrap();
        assert_eq!(p.pi(), 3);
        assert_eq!(p.buf.read_volatile::<8>(0), [3, 3, 3, 3, 2, 2, 2, 2]);
    }

    fn wc(wr_id: u64) -> WorkCompletion {
        WorkCompletion::new(wr_id, WcStatus::Success, WcOpcode::Send, 5, 1)
    }

    /// Writes CQE `index` as the daemon would.
    fn produce(cq: &mut CqRing, index: u32, wr_id: u64) {
        let mut b = [0u8; CQE_SIZE];
        layout::encode_cqe(&wc(wr_id), layout::phase(index, cq.entries), &mut b);
        cq.buf.write(slot(index, cq.entries) * CQE_SIZE, &b);
    }

    #[test]
    fn cq_polls_by_phase_and_publishes_ci() {
        let mut cq = CqRing::new(2).unwrap();
        let mut out = Vec::new();
        assert_eq!(cq.poll(&mut out, 8).unwrap(), 0);
        produce(&mut cq, 0, 10);
        produce(&mut cq, 1, 11);
        assert_eq!(cq.poll(&mut out, 1).unwrap(), 1);
        assert_eq!(cq.ctrl.load_u32(0, Ordering::Acquire), 1);
        assert_eq!(cq.poll(&mut out, 8).unwrap(), 1);
        // Slot 0 still holds the first lap's entry: not valid for index 2.
        assert_eq!(cq.poll(&mut out, 8).unwrap(), 0);
        produce(&mut cq, 2, 12);
        assert_eq!(cq.poll(&mut out, 8).unwrap(), 1);
        assert_eq!(
            out.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        assert_eq!(cq.ctrl.load_u32(0, Ordering::Acquire), 3);
    }

    #[test]
    fn garbage_cqe_is_an_error_and_skipped() {
        let mut cq = CqRing::new(4).unwrap();
        let mut b = [0u8; CQE_SIZE];
        b[28] = 99; // unknown status
        b[layout::CQE_PHASE] = layout::phase(0, 4);
        cq.buf.write(0, &b);
        let mut out = Vec::new();
        assert!(matches!(cq.poll(&mut out, 4), Err(Error::Protocol(_))));
        assert_eq!(cq.ctrl.load_u32(0, Ordering::Acquire), 1);
    }
}
