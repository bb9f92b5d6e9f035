//! The device: every verbs object of one node and the sans-IO entry points.
//!
//! Inputs: verbs calls, [`Device::handle_datagram`], [`Device::handle_timeout`].
//! Outputs, polled in this order after any input:
//! [`Device::poll_transmit`] until `None`, [`Device::poll_event`] until `None`,
//! then [`Device::poll_timeout`] to arm one timer.

mod owner;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use migros_wire::{IpContext, OpKind, Packet};

use crate::error::VerbsError;
use crate::memory::{Memory, MemoryFault};
use crate::qp::{Env, Objects, Qp};
use crate::queues::{Cq, Srq};
use crate::time::Instant;
use crate::tombstone::Tombstone;
use crate::transition;
use migros_proto::counters::{DeviceCounters, QpCounters};
use migros_proto::verbs::*;

/// Static configuration of a device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The device's address (its RoCE v2 GID) and source of every packet.
    pub addr: IpAddr,
    /// UDP source port of every packet (ICRC covers it).
    pub udp_src_port: u16,
    /// Largest path MTU the device accepts.
    pub max_mtu: Mtu,
    /// How long a QP may stay Paused (or Resuming) before it fails.
    pub pause_timeout: Duration,
    /// How often a restored QP repeats RESUME until its partner answers.
    pub resume_interval: Duration,
}

impl DeviceConfig {
    /// A configuration with the usual defaults for `addr`.
    pub fn new(addr: IpAddr) -> DeviceConfig {
        DeviceConfig {
            addr,
            udp_src_port: migros_wire::ROCE_V2_PORT,
            max_mtu: Mtu::Mtu4096,
            pause_timeout: Duration::from_secs(30),
            resume_interval: Duration::from_millis(10),
        }
    }
}

/// The queue of a QP a work request was posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkQueue {
    Send,
    Recv,
}

/// Where a datagram produced by [`Device::poll_transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dst: IpAddr,
    pub src_port: u16,
}

/// One node's device. See the module docs for the calling contract.
pub struct Device {
    config: DeviceConfig,
    objs: Objects,
    qps: BTreeMap<Qpn, Qp>,
    tombstones: BTreeMap<Qpn, Tombstone>,
    /// QPs that may have a packet to send, in round-robin order.
    ready: VecDeque<Qpn>,
    scheduled: BTreeSet<Qpn>,
    /// Datagrams produced outside any QP (tombstone answers and forwards).
    control_out: VecDeque<(IpAddr, Vec<u8>)>,
}

/// Memory for engine steps that never touch it (timeouts).
pub(crate) struct NoMemory;

impl Memory for NoMemory {
    fn read(&mut self, owner: OwnerId, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        Err(MemoryFault {
            owner,
            addr,
            len: buf.len(),
        })
    }
    fn write(&mut self, owner: OwnerId, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        Err(MemoryFault {
            owner,
            addr,
            len: data.len(),
        })
    }
}

fn not_found(kind: &'static str, id: impl Into<u64>) -> VerbsError {
    VerbsError::NotFound {
        kind,
        id: id.into(),
    }
}

fn exists(kind: &'static str, id: impl Into<u64>) -> VerbsError {
    VerbsError::AlreadyExists {
        kind,
        id: id.into(),
    }
}

impl Device {
    pub fn new(config: DeviceConfig) -> Device {
        Device {
            config,
            objs: Objects::default(),
            qps: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            ready: VecDeque::new(),
            scheduled: BTreeSet::new(),
            control_out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    fn schedule(&mut self, qpn: Qpn) {
        if self.scheduled.insert(qpn) {
            self.ready.push_back(qpn);
        }
    }

    /// Runs `f` on QP `qpn` with the engine environment.
    fn with_qp<R>(
        &mut self,
        qpn: Qpn,
        mem: &mut dyn Memory,
        f: impl FnOnce(&mut Qp, &mut Env) -> R,
    ) -> Result<R, VerbsError> {
        let qp = self.qps.get_mut(&qpn).ok_or_else(|| not_found("qp", qpn))?;
        let mut env = Env {
            mem,
            objs: &mut self.objs,
            config: &self.config,
        };
        let r = f(qp, &mut env);
        self.schedule(qpn);
        Ok(r)
    }

    // ---- verbs objects ----

    pub fn alloc_pd(&mut self, owner: OwnerId, pd: Pdn) -> Result<(), VerbsError> {
        if self.objs.pds.contains_key(&pd) {
            return Err(exists("pd", pd));
        }
        self.objs.pds.insert(pd, owner);
        Ok(())
    }

    pub fn dealloc_pd(&mut self, pd: Pdn) -> Result<(), VerbsError> {
        if !self.objs.pds.contains_key(&pd) {
            return Err(not_found("pd", pd));
        }
        let used = self.objs.mrs.iter().any(|m| m.pd == pd)
            || self.qps.values().any(|q| q.init.pd == pd)
            || self.objs.srqs.values().any(|s| s.pd == pd);
        if used {
            return Err(VerbsError::Busy(format!("pd {pd} still has objects")));
        }
        self.objs.pds.remove(&pd);
        Ok(())
    }

    pub fn reg_mr(&mut self, mr: MrSpec) -> Result<(), VerbsError> {
        match self.objs.pds.get(&mr.pd) {
            Some(owner) if *owner == mr.owner => {}
            _ => return Err(not_found("pd", mr.pd)),
        }
        if mr.addr.checked_add(mr.length).is_none() {
            return Err(VerbsError::InvalidArgument(
                "memory region wraps the address space".into(),
            ));
        }
        self.objs
            .mrs
            .insert(mr)
            .map_err(|_| exists("memory key", mr.lkey))
    }

    pub fn dereg_mr(&mut self, lkey: u32) -> Result<(), VerbsError> {
        self.objs
            .mrs
            .remove(lkey)
            .map(|_| ())
            .ok_or_else(|| not_found("memory region", lkey))
    }

    pub fn create_cq(&mut self, owner: OwnerId, cq: Cqn, capacity: u32) -> Result<(), VerbsError> {
        if self.objs.cqs.contains_key(&cq) {
            return Err(exists("cq", cq));
        }
        if capacity == 0 {
            return Err(VerbsError::InvalidArgument(
                "a cq needs room for one completion".into(),
            ));
        }
        self.objs.cqs.insert(cq, Cq::new(owner, capacity));
        Ok(())
    }

    pub fn destroy_cq(&mut self, cq: Cqn) -> Result<(), VerbsError> {
        if self
            .qps
            .values()
            .any(|q| q.init.send_cq == cq || q.init.recv_cq == cq)
        {
            return Err(VerbsError::Busy(format!("cq {cq} is used by a qp")));
        }
        self.objs
            .cqs
            .remove(&cq)
            .map(|_| ())
            .ok_or_else(|| not_found("cq", cq))
    }

    /// Creates an SRQ holding up to `max_wr` receives; `limit` arms the
    /// limit event (0: disarmed).
    pub fn create_srq(
        &mut self,
        owner: OwnerId,
        srq: Srqn,
        pd: Pdn,
        max_wr: u32,
        limit: u32,
    ) -> Result<(), VerbsError> {
        if self.objs.srqs.contains_key(&srq) {
            return Err(exists("srq", srq));
        }
        if self.objs.pds.get(&pd) != Some(&owner) {
            return Err(not_found("pd", pd));
        }
        self.objs.srqs.insert(
            srq,
            Srq {
                owner,
                pd,
                max_wr,
                limit,
                queue: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// Re-arms the SRQ limit event.
    pub fn modify_srq_limit(&mut self, srq: Srqn, limit: u32) -> Result<(), VerbsError> {
        let s = self
            .objs
            .srqs
            .get_mut(&srq)
            .ok_or_else(|| not_found("srq", srq))?;
        s.limit = limit;
        Ok(())
    }

    pub fn destroy_srq(&mut self, srq: Srqn) -> Result<(), VerbsError> {
        if self.qps.values().any(|q| q.init.srq == Some(srq)) {
            return Err(VerbsError::Busy(format!("srq {srq} is used by a qp")));
        }
        self.objs
            .srqs
            .remove(&srq)
            .map(|_| ())
            .ok_or_else(|| not_found("srq", srq))
    }

    pub fn create_qp(&mut self, init: QpInit) -> Result<(), VerbsError> {
        if init.qpn > MAX_QPN || init.qpn < 2 {
            return Err(VerbsError::InvalidArgument(format!(
                "qpn {} is not a valid qp number",
                init.qpn
            )));
        }
        if self.qps.contains_key(&init.qpn) {
            return Err(exists("qp", init.qpn));
        }
        if self.objs.pds.get(&init.pd) != Some(&init.owner) {
            return Err(not_found("pd", init.pd));
        }
        for cq in [init.send_cq, init.recv_cq] {
            if !self.objs.cqs.contains_key(&cq) {
                return Err(not_found("cq", cq));
            }
        }
        if let Some(srq) = init.srq {
            if !self.objs.srqs.contains_key(&srq) {
                return Err(not_found("srq", srq));
            }
        }
        if init.cap.max_send_wr == 0 && init.cap.max_recv_wr == 0 && init.srq.is_none() {
            return Err(VerbsError::InvalidArgument(
                "a qp needs a send or a receive queue".into(),
            ));
        }
        self.tombstones.remove(&init.qpn);
        let ud = init.qp_type == QpType::Ud;
        let mut qp = Qp::new(init);
        if ud {
            // A UD QP has no path: its messages may fill the port's MTU.
            qp.attr.path_mtu = self.config.max_mtu;
        }
        self.qps.insert(qp.qpn(), qp);
        Ok(())
    }

    pub fn destroy_qp(&mut self, qpn: Qpn) -> Result<(), VerbsError> {
        self.qps
            .remove(&qpn)
            .map(|_| ())
            .ok_or_else(|| not_found("qp", qpn))
    }

    pub fn modify_qp(
        &mut self,
        now: Instant,
        qpn: Qpn,
        attr: &QpAttr,
        mask: AttrMask,
    ) -> Result<(), VerbsError> {
        let max_mtu = self.config.max_mtu;
        let qp = self.qps.get(&qpn).ok_or_else(|| not_found("qp", qpn))?;
        let cur = qp.state();
        if mask.contains(AttrMask::CUR_STATE) && attr.cur_qp_state != cur {
            return Err(VerbsError::InvalidArgument(format!(
                "cur_qp_state {:?} does not match the qp's state {cur:?}",
                attr.cur_qp_state
            )));
        }
        let to = if mask.contains(AttrMask::STATE) {
            attr.qp_state
        } else {
            cur
        };
        transition::check(qp.qp_type(), cur, to, mask).map_err(VerbsError::InvalidArgument)?;
        if mask.contains(AttrMask::PATH_MTU) && attr.path_mtu > max_mtu {
            return Err(VerbsError::InvalidArgument(format!(
                "path mtu {:?} exceeds the device's {max_mtu:?}",
                attr.path_mtu
            )));
        }
        if mask.contains(AttrMask::AV) && attr.dest_addr.is_none() {
            return Err(VerbsError::InvalidArgument(
                "the address vector has no destination".into(),
            ));
        }
        if (mask.contains(AttrMask::RETRY_CNT) && attr.retry_cnt > 7)
            || (mask.contains(AttrMask::RNR_RETRY) && attr.rnr_retry > 7)
            || (mask.contains(AttrMask::TIMEOUT) && attr.timeout > 31)
            || (mask.contains(AttrMask::MIN_RNR_TIMER) && attr.min_rnr_timer > 31)
        {
            return Err(VerbsError::InvalidArgument(
                "retry counts take 0..=7, timers 0..=31".into(),
            ));
        }
        if mask.contains(AttrMask::DEST_QPN) && attr.dest_qp_num > MAX_QPN {
            return Err(VerbsError::InvalidArgument(
                "dest qpn exceeds 24 bits".into(),
            ));
        }
        let mut nomem = NoMemory;
        self.with_qp(qpn, &mut nomem, |qp, env| {
            qp.apply_attr(now, attr, mask, to, env);
        })
    }

    pub fn query_qp(&self, qpn: Qpn) -> Result<QpAttr, VerbsError> {
        let qp = self.qps.get(&qpn).ok_or_else(|| not_found("qp", qpn))?;
        let mut attr = qp.attr.clone();
        attr.cur_qp_state = attr.qp_state;
        attr.rq_psn = qp.resp.epsn.value();
        attr.sq_psn = qp.req.next_psn.value();
        Ok(attr)
    }

    pub fn post_send(&mut self, qpn: Qpn, wr: SendWr) -> Result<(), VerbsError> {
        let mut nomem = NoMemory;
        self.with_qp(qpn, &mut nomem, |qp, env| qp.post_send(wr, env))?
    }

    pub fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> Result<(), VerbsError> {
        let qp = self.qps.get_mut(&qpn).ok_or_else(|| not_found("qp", qpn))?;
        if qp.init.srq.is_some() {
            return Err(VerbsError::InvalidArgument(
                "the qp receives from its srq".into(),
            ));
        }
        if wr.sges.len() > qp.init.cap.max_recv_sge.max(1) as usize {
            return Err(VerbsError::InvalidArgument("too many sges".into()));
        }
        match qp.state() {
            QpState::Reset => {
                return Err(VerbsError::WrongState {
                    qpn,
                    state: QpState::Reset,
                })
            }
            QpState::Err => {
                let wc = qp.recv_wc(wr.wr_id, WcStatus::WrFlushErr, WcOpcode::Recv, 0);
                let cq = qp.init.recv_cq;
                self.objs.complete(cq, wc);
                return Ok(());
            }
            _ => {}
        }
        if qp.rq.len() >= qp.init.cap.max_recv_wr as usize {
            return Err(VerbsError::QueueFull);
        }
        qp.rq.push_back(wr);
        Ok(())
    }

    pub fn post_srq_recv(&mut self, srq: Srqn, wr: RecvWr) -> Result<(), VerbsError> {
        let s = self
            .objs
            .srqs
            .get_mut(&srq)
            .ok_or_else(|| not_found("srq", srq))?;
        if s.queue.len() >= s.max_wr as usize {
            return Err(VerbsError::QueueFull);
        }
        s.queue.push_back(wr);
        Ok(())
    }

    /// A work request its poster could not hand over (it did not decode,
    /// or `post_send`/`post_recv` refused it): the QP moves to ERR,
    /// flushing what it holds in order, then the WR completes with
    /// `LocQpOpErr` on the CQ of its `queue`.
    pub fn fail_wr(
        &mut self,
        now: Instant,
        qpn: Qpn,
        queue: WorkQueue,
        wr_id: u64,
        opcode: WcOpcode,
    ) -> Result<(), VerbsError> {
        let qp = self.qps.get(&qpn).ok_or_else(|| not_found("qp", qpn))?;
        let cq = match queue {
            WorkQueue::Send => qp.init.send_cq,
            WorkQueue::Recv => qp.init.recv_cq,
        };
        let attr = QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        };
        // Every state may move to ERR.
        let _ = self.modify_qp(now, qpn, &attr, AttrMask::STATE);
        let wc = WorkCompletion::new(wr_id, WcStatus::LocQpOpErr, opcode, qpn, 0);
        self.objs.complete(cq, wc);
        Ok(())
    }

    /// Completions waiting in `cq` (0 for a CQ that does not exist).
    pub fn completions_waiting(&self, cq: Cqn) -> usize {
        self.objs.cqs.get(&cq).map_or(0, |q| q.entries.len())
    }

    /// Moves up to `max` completions of `cq` into `out`; returns how many.
    pub fn poll_cq(
        &mut self,
        cq: Cqn,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> Result<usize, VerbsError> {
        let q = self
            .objs
            .cqs
            .get_mut(&cq)
            .ok_or_else(|| not_found("cq", cq))?;
        let n = max.min(q.entries.len());
        out.extend(q.entries.drain(..n));
        Ok(n)
    }

    // ---- I/O ----

    /// A UDP datagram arrived on port 4791 from `src`:`src_port`.
    /// Anything malformed or with a bad ICRC is counted and dropped.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        src: IpAddr,
        src_port: u16,
        datagram: &[u8],
    ) {
        let c = &mut self.objs.counters;
        c.rx_packets += 1;
        c.rx_bytes += datagram.len() as u64;
        let ctx = IpContext::new(src, self.config.addr, src_port, migros_wire::ROCE_V2_PORT);
        // A UDP socket hides the IPv4 identification the ICRC covers: the
        // check recovers it (peers such as the kernel's rxe send nonzero ones).
        if migros_wire::verify_received(&ctx, datagram).is_none() {
            c.rx_icrc_errors += 1;
            return;
        }
        let Ok(pkt) = Packet::parse(datagram) else {
            c.rx_malformed += 1;
            return;
        };
        let qpn = pkt.headers.bth.dest_qpn;
        let is_resume = pkt.info().kind == OpKind::Resume;
        match self.qps.get(&qpn).map(|q| q.qp_type()) {
            Some(QpType::Ud) if is_resume => {
                // A UD QP we talked to moved: send there from now on.
                if let Some((location, sender)) = crate::resume::parse_resume_payload(pkt.payload) {
                    self.objs.ud_redirects.insert(sender, location);
                }
            }
            Some(_) => {
                // The closure's result is (); the QP exists, so this is Ok.
                let _ = self.with_qp(qpn, mem, |qp, env| qp.handle_packet(now, &pkt, src, env));
            }
            None => match self.tombstones.get(&qpn) {
                Some(t) => {
                    self.objs.counters.rx_tombstone += 1;
                    if let Some(out) = t.answer(&self.config, &pkt, datagram, src) {
                        self.control_out.push_back(out);
                    }
                }
                None => self.objs.counters.rx_unknown_qp += 1,
            },
        }
    }

    /// Writes the next datagram (a whole UDP payload, ICRC included) into
    /// `buf` (cleared first) and says where it goes; `None` when idle.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let src_port = self.config.udp_src_port;
        let out = if let Some((dst, bytes)) = self.control_out.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            Some(dst)
        } else {
            self.next_qp_packet(now, mem, buf)
        };
        let dst = out?;
        self.objs.counters.tx_packets += 1;
        self.objs.counters.tx_bytes += buf.len() as u64;
        Some(Transmit { dst, src_port })
    }

    fn next_qp_packet(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        buf: &mut Vec<u8>,
    ) -> Option<IpAddr> {
        while let Some(qpn) = self.ready.pop_front() {
            self.scheduled.remove(&qpn);
            let Some(qp) = self.qps.get_mut(&qpn) else {
                continue;
            };
            let mut env = Env {
                mem: &mut *mem,
                objs: &mut self.objs,
                config: &self.config,
            };
            let Some(dst) = qp.poll_packet(now, &mut env, buf) else {
                continue;
            };
            if qp.has_output(now) {
                self.schedule(qpn);
            }
            return Some(dst);
        }
        None
    }

    /// The earliest deadline of any timer, if one is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.qps.values().filter_map(|q| q.deadline()).min()
    }

    /// Runs every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<Qpn> = self
            .qps
            .iter()
            .filter(|(_, q)| q.deadline().is_some_and(|d| d <= now))
            .map(|(n, _)| *n)
            .collect();
        let mut nomem = NoMemory;
        for qpn in due {
            let _ = self.with_qp(qpn, &mut nomem, |qp, env| qp.on_timeout(now, env));
        }
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.objs.events.pop_front()
    }

    pub fn counters(&self) -> DeviceCounters {
        self.objs.counters
    }

    pub fn qp_counters(&self, qpn: Qpn) -> Option<QpCounters> {
        self.qps.get(&qpn).map(|q| q.counters)
    }

    /// QPNs of every QP on this device.
    pub fn qpns(&self) -> Vec<Qpn> {
        self.qps.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: OwnerId = 1;
    const CQ: Cqn = 3;
    const QPN: Qpn = 0x42;

    /// A device with one RC QP in INIT holding one queued receive.
    fn device_with_queued_work() -> Device {
        let mut d = Device::new(DeviceConfig::new("127.0.0.1".parse().unwrap()));
        d.alloc_pd(OWNER, 1).unwrap();
        d.create_cq(OWNER, CQ, 8).unwrap();
        let cap = QpCap {
            max_send_wr: 4,
            max_recv_wr: 4,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
        };
        d.create_qp(QpInit {
            owner: OWNER,
            qpn: QPN,
            qp_type: QpType::Rc,
            pd: 1,
            send_cq: CQ,
            recv_cq: CQ,
            srq: None,
            cap,
            sq_sig_all: false,
        })
        .unwrap();
        let init = QpAttr {
            qp_state: QpState::Init,
            ..QpAttr::default()
        };
        let mask = AttrMask::STATE | AttrMask::ACCESS_FLAGS | AttrMask::PKEY_INDEX | AttrMask::PORT;
        d.modify_qp(Instant::ZERO, QPN, &init, mask).unwrap();
        let recv = RecvWr {
            wr_id: 2,
            sges: vec![],
        };
        d.post_recv(QPN, recv).unwrap();
        d
    }

    /// A WR its poster could not hand over fails the QP: what was queued
    /// is flushed first, in order, then the WR completes with LocQpOpErr.
    #[test]
    fn a_failed_wr_completes_after_the_flush_of_what_came_before() {
        let mut d = device_with_queued_work();
        assert_eq!(d.completions_waiting(CQ), 0);
        d.fail_wr(Instant::ZERO, QPN, WorkQueue::Send, 9, WcOpcode::RdmaWrite)
            .unwrap();
        assert_eq!(d.query_qp(QPN).unwrap().qp_state, QpState::Err);
        assert_eq!(d.completions_waiting(CQ), 2);
        let mut wcs = Vec::new();
        assert_eq!(d.poll_cq(CQ, 1, &mut wcs).unwrap(), 1);
        assert_eq!(d.completions_waiting(CQ), 1);
        d.poll_cq(CQ, usize::MAX, &mut wcs).unwrap();
        let got: Vec<(u64, WcStatus)> = wcs.iter().map(|w| (w.wr_id, w.status)).collect();
        assert_eq!(got, [(2, WcStatus::WrFlushErr), (9, WcStatus::LocQpOpErr)]);
        assert_eq!(wcs[1].opcode, WcOpcode::RdmaWrite);
        assert!(d
            .fail_wr(Instant::ZERO, 7, WorkQueue::Recv, 1, WcOpcode::Recv)
            .is_err());
    }

    /// The CQ is the only queue of completions: past its capacity they are
    /// counted as lost, not queued elsewhere.
    #[test]
    fn a_full_cq_counts_its_overruns() {
        let mut d = device_with_queued_work();
        d.objs.cqs.get_mut(&CQ).unwrap().capacity = 1;
        d.fail_wr(Instant::ZERO, QPN, WorkQueue::Recv, 9, WcOpcode::Recv)
            .unwrap();
        assert_eq!(d.completions_waiting(CQ), 1);
        assert_eq!(d.objs.cqs[&CQ].overflows, 1);
    }
}
