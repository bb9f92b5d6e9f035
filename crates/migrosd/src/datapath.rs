//! The data path between the rings in client memory and the transport.
//!
//! - **Work queues:** a doorbell marks its queue pending; [`DataPath::pump`]
//!   reads the new entries (one `process_vm_readv` per batch), decodes them
//!   and posts them to the device. A queue the transport has no room for is
//!   blocked until datagrams or timers may have freed some. The consumer
//!   index of a queue is written back by [`DataPath::write_cis`] once its
//!   entries' work requests left the transport (completed, flushed, or
//!   taken from an SRQ), so a ring bounds what is outstanding.
//! - **Completions:** the transport's CQ is the only queue of completions
//!   (one limit, one overrun counter, both the transport's); a CQ with
//!   completions is dirty until [`DataPath::write_completions`] has moved
//!   them into the client's ring, as many as fit, bodies first and phase
//!   bytes last.
//!
//! What needs the daemon's connections comes back as [`Notice`]s: a QP
//! failed, a session broke its ring contract, an armed CQ got completions.
//! Nothing is written into the memory of a session that is held for a
//! checkpoint; its CQs and indices are marked again when it runs
//! ([`DataPath::refresh`]).

use std::collections::BTreeSet;

use migros_proto::msg::ChannelId;
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{
    Cqn, Device, Instant, Qpn, VerbsError, WcOpcode, WorkCompletion, WorkQueue,
};

use crate::procmem::ProcMem;
use crate::registry::{Hold, Id, Objects, Registry, SessionId};
use crate::rings::{write_ci, Wq, WQ_BATCH};

/// What the data path works on, borrowed from the daemon for one call.
pub struct Parts<'a> {
    pub reg: &'a mut Registry,
    pub device: &'a mut Device,
    pub mem: &'a mut ProcMem,
    pub now: Instant,
}

/// Something the daemon must act on for the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// QP `qpn` of `session` failed a work request (it is in ERR now).
    QpFatal { session: SessionId, qpn: Qpn },
    /// A ring of `session` could not be read: the client broke the ring
    /// contract and is disconnected.
    BrokenRing { session: SessionId },
    /// CQ `cq` of `session` failed: its ring could not be written.
    CqError { session: SessionId, cq: Cqn },
    /// Armed CQ `cq` got completions: tell `channel` of `session`.
    CqEvent {
        session: SessionId,
        channel: ChannelId,
        cq: Cqn,
    },
}

/// The work the data path has to do, and its scratch buffers.
#[derive(Debug, Default)]
pub struct DataPath {
    /// Work queues with entries to read.
    pending: BTreeSet<Wq>,
    /// Work queues the transport had no room for: read again after
    /// datagrams or timers may have freed some.
    blocked: BTreeSet<Wq>,
    /// Datagrams arrived or timers ran since the blocked queues were tried.
    progress: bool,
    /// Work queues whose consumer index must be written back.
    ci_dirty: BTreeSet<Wq>,
    /// CQs whose transport queue may hold completions not in the ring yet.
    dirty_cqs: BTreeSet<Cqn>,
    /// CQs whose ring could not be written: in error, their completions
    /// are dropped.
    failed_cqs: BTreeSet<Cqn>,
    notices: Vec<Notice>,
    wq_buf: Vec<u8>,
    cqe_buf: Vec<u8>,
    wc_buf: Vec<WorkCompletion>,
}

impl DataPath {
    pub fn new() -> DataPath {
        DataPath::default()
    }

    // ---- what is to be done ----

    /// A doorbell (or a request) says `wq` may have entries to read.
    pub fn wake(&mut self, wq: Wq) {
        self.pending.insert(wq);
    }

    /// Every work queue of `objects` may have entries to read.
    pub fn wake_all(&mut self, objects: &Objects) {
        let wqs = objects
            .qps()
            .flat_map(|q| [Wq::Sq(q.qpn), Wq::Rq(q.qpn)])
            .chain(objects.srqs().map(|s| Wq::Srq(s.srq)));
        self.pending.extend(wqs);
    }

    /// The device may take more now (a request changed a QP): the blocked
    /// queues are read again.
    pub fn unblock(&mut self) {
        let blocked = std::mem::take(&mut self.blocked);
        self.pending.extend(blocked);
    }

    /// Datagrams arrived or timers ran: room may have been freed.
    pub fn note_progress(&mut self) {
        self.progress = true;
    }

    /// Unblocks the blocked queues if there was progress since last time.
    pub fn unblock_after_progress(&mut self) {
        if std::mem::take(&mut self.progress) {
            self.unblock();
        }
    }

    /// The transport has completions for `cq`.
    pub fn completed(&mut self, cq: Cqn) {
        self.dirty_cqs.insert(cq);
    }

    /// A held session runs again: every completion and consumer index of
    /// `objects` held back is written.
    pub fn refresh(&mut self, objects: &Objects) {
        self.dirty_cqs.extend(objects.cqs().map(|c| c.cq));
        self.ci_dirty.extend(objects.work_queues());
    }

    /// Drops what was to be done for `objects` (taken out of a session).
    pub fn forget(&mut self, objects: &Objects) {
        for q in objects.qps() {
            self.forget_qp(q.qpn);
        }
        for s in objects.srqs() {
            self.forget_wq(Wq::Srq(s.srq));
        }
        for c in objects.cqs() {
            self.forget_cq(c.cq);
        }
    }

    /// Drops what was to be done for QP `qpn` (destroyed).
    pub fn forget_qp(&mut self, qpn: Qpn) {
        self.forget_wq(Wq::Sq(qpn));
        self.forget_wq(Wq::Rq(qpn));
    }

    /// Drops what was to be done for work queue `wq` (destroyed).
    pub fn forget_wq(&mut self, wq: Wq) {
        self.pending.remove(&wq);
        self.blocked.remove(&wq);
        self.ci_dirty.remove(&wq);
    }

    /// Drops the completions to write for CQ `cq` (destroyed).
    pub fn forget_cq(&mut self, cq: Cqn) {
        self.dirty_cqs.remove(&cq);
        self.failed_cqs.remove(&cq);
    }

    /// Whether work queues wait to be read.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether something waits for room (a full ring or transport queue):
    /// worth a look again soon.
    pub fn is_waiting(&self) -> bool {
        !self.dirty_cqs.is_empty() || !self.blocked.is_empty()
    }

    /// What the daemon must act on since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    // ---- work queues ----

    /// Reads and posts what doorbells announced (of session `only`, or all).
    pub fn pump(&mut self, p: &mut Parts, only: Option<SessionId>) {
        if self.pending.is_empty() {
            return;
        }
        let wqs: Vec<Wq> = self.pending.iter().copied().collect();
        let mut buf = std::mem::take(&mut self.wq_buf);
        for wq in wqs {
            let Some((holder, ..)) = p.reg.work_queue_mut(wq) else {
                self.pending.remove(&wq);
                continue;
            };
            if only.is_some_and(|o| o != holder.session) {
                continue;
            }
            // A queue of a session disconnected earlier in this call.
            if !self.pending.remove(&wq) {
                continue;
            }
            if !self.pump_one(p, wq, &mut buf) {
                self.blocked.insert(wq);
            }
        }
        self.wq_buf = buf;
    }

    /// Posts the pending entries of one work queue; returns whether it is
    /// drained (false: the transport's queue is full, try again later).
    fn pump_one(&mut self, p: &mut Parts, wq: Wq, buf: &mut Vec<u8>) -> bool {
        let size = wq.entry_size();
        loop {
            let Some((holder, ring, _)) = p.reg.work_queue_mut(wq) else {
                return true;
            };
            let ring = *ring;
            let n = match ring.read(p.mem, holder.owner, size, WQ_BATCH, buf) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(?wq, error = %e, "cannot read a work queue ring: disconnecting the client");
                    self.broken_ring(p.reg, holder.session);
                    return true;
                }
            };
            if n == 0 {
                return true;
            }
            let mut consumed = 0;
            let mut full = false;
            for entry in buf[..n as usize * size].chunks_exact(size) {
                if !self.post_entry(p, holder.session, wq, entry) {
                    full = true;
                    break;
                }
                consumed += 1;
            }
            if consumed > 0 {
                if let Some((_, r, _)) = p.reg.work_queue_mut(wq) {
                    r.ci = r.ci.wrapping_add(consumed);
                }
                self.ci_dirty.insert(wq);
            }
            if full {
                return false;
            }
        }
    }

    /// Posts one ring entry; false when the transport's queue is full.
    fn post_entry(&mut self, p: &mut Parts, sid: SessionId, wq: Wq, entry: &[u8]) -> bool {
        let (qpn, queue, wr_id, opcode, result) = match wq {
            Wq::Sq(qpn) => {
                let mut e = [0u8; SQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let wr_id = ring::send_wr_id(&e);
                match ring::decode_send(&e) {
                    Ok(wr) => {
                        let opcode = wr.opcode.wc_opcode();
                        let r = match p.device.post_send(qpn, wr) {
                            Err(VerbsError::QueueFull) => return false,
                            r => r.map_err(|e| e.to_string()),
                        };
                        (qpn, WorkQueue::Send, wr_id, opcode, r)
                    }
                    Err(e) => (
                        qpn,
                        WorkQueue::Send,
                        wr_id,
                        WcOpcode::Send,
                        Err(e.to_string()),
                    ),
                }
            }
            Wq::Rq(qpn) => {
                let mut e = [0u8; RQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let wr_id = ring::recv_wr_id(&e);
                let r = match ring::decode_recv(&e).map(|wr| p.device.post_recv(qpn, wr)) {
                    Ok(Err(VerbsError::QueueFull)) => return false,
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (qpn, WorkQueue::Recv, wr_id, WcOpcode::Recv, r)
            }
            Wq::Srq(srq) => {
                let mut e = [0u8; RQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let Ok(wr) = ring::decode_recv(&e) else {
                    tracing::debug!(srq, "undecodable srq entry skipped");
                    return true;
                };
                return !matches!(p.device.post_srq_recv(srq, wr), Err(VerbsError::QueueFull));
            }
        };
        if let Err(why) = result {
            // As a provider does with a bad WQE: the QP fails, this WR
            // completes with LocQpOpErr after everything before it.
            tracing::info!(qpn, wr_id, why, "work request refused: qp moves to error");
            if p.device.fail_wr(p.now, qpn, queue, wr_id, opcode).is_ok() {
                self.notices.push(Notice::QpFatal { session: sid, qpn });
            }
        }
        true
    }

    /// Session `sid` broke the ring contract: nothing more is read for it,
    /// and the daemon disconnects it.
    fn broken_ring(&mut self, reg: &Registry, sid: SessionId) {
        let others = |w: &Wq| {
            let id = match w {
                Wq::Sq(q) | Wq::Rq(q) => Id::Qp(*q),
                Wq::Srq(s) => Id::Srq(*s),
            };
            reg.holder_of(id).is_some_and(|h| h != sid)
        };
        self.pending.retain(others);
        self.blocked.retain(others);
        self.notices.push(Notice::BrokenRing { session: sid });
    }

    // ---- writing into client memory ----

    /// Writes consumer indices back into control blocks. A ring slot is
    /// free once the transport no longer holds its work request (it
    /// completed, was flushed, or a responder took the SRQ receive), as
    /// rxe frees queue slots: the index published is the daemon's read
    /// index less what the transport still holds, so a client cannot have
    /// more work requests outstanding than its ring has entries. The
    /// device says which queues shrank ([`Device::take_freed`]).
    pub fn write_cis(&mut self, reg: &mut Registry, mem: &mut ProcMem, device: &mut Device) {
        let (qps, srqs) = device.take_freed();
        let freed = qps
            .into_iter()
            .flat_map(|q| [Wq::Sq(q), Wq::Rq(q)])
            .chain(srqs.into_iter().map(Wq::Srq));
        self.ci_dirty.extend(freed);
        for wq in std::mem::take(&mut self.ci_dirty) {
            let Some((holder, ring, at)) = reg.work_queue_mut(wq) else {
                continue;
            };
            // A held session gets every index marked again when it resumes.
            if holder.hold != Hold::Running {
                continue;
            }
            let held = match wq {
                Wq::Sq(q) => device.qp_outstanding(q).map_or(0, |(sq, _)| sq),
                Wq::Rq(q) => device.qp_outstanding(q).map_or(0, |(_, rq)| rq),
                Wq::Srq(s) => device.srq_outstanding(s).unwrap_or(0),
            };
            // Wrapping: after an SRQ resize the receives the transport
            // holds came from the old ring, and take room in the new one.
            let ci = ring.ci.wrapping_sub(held as u32);
            if let Err(e) = write_ci(mem, holder.owner, at, ci) {
                tracing::debug!(error = %e, "cannot write a consumer index");
            }
        }
    }

    /// Moves completions from the transport into client rings; returns
    /// whether any was written.
    pub fn write_completions(&mut self, p: &mut Parts) -> bool {
        if self.dirty_cqs.is_empty() {
            return false;
        }
        // Data the completions announce is in place before them.
        p.mem.flush();
        let mut wrote = false;
        let dirty: Vec<Cqn> = self.dirty_cqs.iter().copied().collect();
        for cq in dirty {
            let Some((holder, ring)) = p.reg.cq_mut(cq) else {
                self.dirty_cqs.remove(&cq);
                continue;
            };
            // A held session gets every CQ marked again when it resumes.
            if holder.hold != Hold::Running {
                self.dirty_cqs.remove(&cq);
                continue;
            }
            if self.failed_cqs.contains(&cq) {
                self.drop_completions(p.device, cq);
                self.dirty_cqs.remove(&cq);
                continue;
            }
            let mut n = 0;
            let failed = loop {
                let waiting = p.device.completions_waiting(cq);
                let k = match ring.room_for(p.mem, holder.owner, waiting) {
                    Ok(0) => break None,
                    Ok(k) => k,
                    Err(e) => break Some(("cannot read the consumer index of a cq ring", e)),
                };
                self.wc_buf.clear();
                let _ = p.device.poll_cq(cq, k, &mut self.wc_buf);
                if let Err(e) = ring.write(p.mem, holder.owner, &self.wc_buf, &mut self.cqe_buf) {
                    break Some(("cannot write completions into the client's ring", e));
                }
                n += k;
            };
            if let Some((what, e)) = failed {
                tracing::info!(cq, error = %e, "{what}: cq in error");
                Self::fail_cq(
                    &mut self.failed_cqs,
                    &mut self.notices,
                    &mut self.wc_buf,
                    p.device,
                    p.now,
                    holder.session,
                    cq,
                );
            }
            if n > 0 && ring.armed {
                ring.armed = false;
                if let Some(channel) = ring.channel {
                    self.notices.push(Notice::CqEvent {
                        session: holder.session,
                        channel,
                        cq,
                    });
                }
            }
            if p.device.completions_waiting(cq) == 0 {
                self.dirty_cqs.remove(&cq);
            }
            wrote |= n > 0;
        }
        wrote
    }

    /// CQ `cq`'s ring cannot be written: the CQ is in error (its QPs too),
    /// what waits for it is dropped, and the session is told.
    fn fail_cq(
        failed: &mut BTreeSet<Cqn>,
        notices: &mut Vec<Notice>,
        wc_buf: &mut Vec<WorkCompletion>,
        device: &mut Device,
        now: Instant,
        session: SessionId,
        cq: Cqn,
    ) {
        if failed.insert(cq) {
            device.cq_error(now, cq);
            notices.push(Notice::CqError { session, cq });
        }
        wc_buf.clear();
        let _ = device.poll_cq(cq, usize::MAX, wc_buf);
    }

    /// Drops the completions waiting for a ring that cannot be written.
    fn drop_completions(&mut self, device: &mut Device, cq: Cqn) {
        self.wc_buf.clear();
        let _ = device.poll_cq(cq, usize::MAX, &mut self.wc_buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Session;
    use crate::rings::{CqRing, QpRings, WqRing};
    use migros_proto::ring::{CQE_PHASE, CQE_SIZE};
    use migros_test_support::rc::{cap, rc_qp_init};
    use migros_transport::{AttrMask, DeviceConfig, QpAttr, QpState, RecvWr, WcStatus};

    const SID: SessionId = 7;
    const OWNER: u64 = 70;
    const QPN: Qpn = 0x42;
    const CQ: Cqn = 3;

    /// Client memory in this very process: a receive ring, a CQ ring and
    /// their control blocks.
    struct Client {
        rq: Vec<u8>,
        cq: Vec<u8>,
        ctrl: Vec<u32>,
    }

    impl Client {
        /// Rings of four entries.
        fn new() -> Client {
            Client {
                rq: vec![0; 4 * RQ_WQE_SIZE],
                cq: vec![0; 4 * CQE_SIZE],
                ctrl: vec![0; 4],
            }
        }
    }

    /// The daemon's side of `client` once the first two entries of its
    /// receive ring are announced (producer index 2) and the data path
    /// has pumped them.
    fn pump_two_receives(client: &mut Client) -> (Registry, Device, ProcMem, DataPath) {
        let (mut reg, mut device, mut mem) = setup(client);
        reg.work_queue_mut(Wq::Rq(QPN)).unwrap().1.pi = 2;
        let mut data = DataPath::new();
        data.wake(Wq::Rq(QPN));
        data.pump(&mut parts(&mut reg, &mut device, &mut mem), None);
        (reg, device, mem, data)
    }

    fn parts<'a>(reg: &'a mut Registry, device: &'a mut Device, mem: &'a mut ProcMem) -> Parts<'a> {
        Parts {
            reg,
            device,
            mem,
            now: Instant::ZERO,
        }
    }

    fn setup(client: &mut Client) -> (Registry, Device, ProcMem) {
        let mut mem = ProcMem::new();
        mem.bind_self(OWNER);
        let mut device = Device::new(DeviceConfig::new("127.0.0.1".parse().unwrap()));
        device.alloc_pd(OWNER, 1).unwrap();
        device.create_cq(OWNER, CQ, 8).unwrap();
        device
            .create_qp(rc_qp_init(OWNER, QPN, 1, CQ, cap(0, 4)))
            .unwrap();
        let to_init = QpAttr {
            qp_state: QpState::Init,
            ..QpAttr::default()
        };
        let mask = AttrMask::STATE | AttrMask::ACCESS_FLAGS | AttrMask::PKEY_INDEX | AttrMask::PORT;
        device
            .modify_qp(Instant::ZERO, QPN, &to_init, mask)
            .unwrap();
        let mut reg = Registry::new();
        assert!(reg.open(Session::new(SID, OWNER, 1, 0, Hold::Running)));
        let ctrl = client.ctrl.as_mut_ptr() as u64;
        reg.add_cq(
            SID,
            CqRing::new(CQ, client.cq.as_mut_ptr() as u64, 4, ctrl, None),
        );
        reg.add_qp(
            SID,
            QpRings {
                qpn: QPN,
                ctrl: ctrl + 8,
                sq: WqRing::new(0, 0),
                rq: Some(WqRing::new(client.rq.as_mut_ptr() as u64, 4)),
                send_cq: CQ,
                recv_cq: CQ,
            },
        );
        (reg, device, mem)
    }

    /// A receive ring holding a good entry then one the daemon cannot
    /// decode: the first is posted (then flushed), the second fails the QP
    /// and completes with LocQpOpErr; both completions reach the client's
    /// CQ ring, and the consumer index of the receive queue moves past both.
    #[test]
    fn an_undecodable_entry_fails_its_qp_and_completes_in_the_ring() {
        let mut client = Client::new();
        let good = RecvWr {
            wr_id: 5,
            sges: vec![],
        };
        let mut e = [0u8; RQ_WQE_SIZE];
        ring::encode_recv(&good, &mut e).unwrap();
        client.rq[..RQ_WQE_SIZE].copy_from_slice(&e);
        let bad = RecvWr {
            wr_id: 6,
            sges: vec![],
        };
        ring::encode_recv(&bad, &mut e).unwrap();
        e[ring::recv_wqe::NUM_SGE.start] = 99;
        client.rq[RQ_WQE_SIZE..2 * RQ_WQE_SIZE].copy_from_slice(&e);
        let (mut reg, mut device, mut mem, mut data) = pump_two_receives(&mut client);
        let mut p = parts(&mut reg, &mut device, &mut mem);
        assert!(!data.has_pending());
        assert_eq!(
            data.take_notices(),
            [Notice::QpFatal {
                session: SID,
                qpn: QPN
            }]
        );
        while let Some(ev) = p.device.poll_event() {
            if let migros_transport::DeviceEvent::Completion { cq } = ev {
                data.completed(cq);
            }
        }
        assert!(data.write_completions(&mut p));
        assert!(!data.is_waiting());
        data.write_cis(p.reg, p.mem, p.device);
        p.mem.flush();

        // SAFETY: the buffers are alive; the daemon side wrote them through
        // their addresses, behind the compiler's back.
        let (cq, ctrl) = unsafe {
            let cq = std::slice::from_raw_parts(
                std::hint::black_box(client.cq.as_ptr()),
                client.cq.len(),
            );
            let ctrl = std::ptr::read_volatile(client.ctrl.as_ptr().add(3));
            (cq, ctrl)
        };
        let wcs: Vec<(u64, WcStatus)> = cq
            .chunks_exact(CQE_SIZE)
            .take_while(|e| e[CQE_PHASE] == 1)
            .map(|e| {
                let wc = ring::decode_cqe(e.try_into().unwrap()).unwrap();
                (wc.wr_id, wc.status)
            })
            .collect();
        assert_eq!(wcs, [(5, WcStatus::WrFlushErr), (6, WcStatus::LocQpOpErr)]);
        assert_eq!(ctrl, 2, "the receive queue's consumer index");
    }

    /// A receive read from the ring keeps its slot until the transport no
    /// longer holds it (here: flushed when the QP fails), as rxe frees a
    /// queue slot on completion: the client cannot have more receives
    /// outstanding than its ring holds.
    #[test]
    fn a_ring_slot_is_freed_when_its_work_request_leaves_the_transport() {
        let mut client = Client::new();
        let mut e = [0u8; RQ_WQE_SIZE];
        for k in 0..2 {
            let wr = RecvWr {
                wr_id: k,
                sges: vec![],
            };
            ring::encode_recv(&wr, &mut e).unwrap();
            let at = k as usize * RQ_WQE_SIZE;
            client.rq[at..at + RQ_WQE_SIZE].copy_from_slice(&e);
        }
        let (mut reg, mut device, mut mem, mut data) = pump_two_receives(&mut client);
        let p = parts(&mut reg, &mut device, &mut mem);
        let rq_ci = |client: &Client| {
            // SAFETY: the buffer is alive; the daemon side wrote it
            // through its address, behind the compiler's back.
            unsafe { std::ptr::read_volatile(client.ctrl.as_ptr().add(3)) }
        };
        data.write_cis(p.reg, p.mem, p.device);
        p.mem.flush();
        assert_eq!(
            p.reg.work_queue_mut(Wq::Rq(QPN)).unwrap().1.ci,
            2,
            "both read"
        );
        assert_eq!(rq_ci(&client), 0, "both still held by the transport");

        let err = QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        };
        p.device
            .modify_qp(Instant::ZERO, QPN, &err, AttrMask::STATE)
            .unwrap();
        data.write_cis(p.reg, p.mem, p.device);
        p.mem.flush();
        assert_eq!(rq_ci(&client), 2, "both flushed: their slots are free");
    }
}
