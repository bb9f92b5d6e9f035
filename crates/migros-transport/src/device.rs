//! The device: every verbs object of one node and the sans-IO entry points.
//!
//! Inputs: verbs calls, [`Device::handle_datagram`], [`Device::handle_timeout`].
//! Outputs, polled in this order after any input:
//! [`Device::poll_transmit`] until `None`, [`Device::poll_event`] until `None`,
//! then [`Device::poll_timeout`] to arm one timer.
//!
//! Here: the verbs objects and calls. `io`: datagrams in and out, timers,
//! events; `owner`: what one owner holds, for migration; `queues`: CQ and
//! SRQ verbs beyond create and destroy; `windows`: memory window verbs.

mod io;
mod owner;
mod queues;
mod timers;
mod windows;

pub use queues::SrqAttr;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::error::VerbsError;
use crate::memory::{Memory, MemoryFault};
use crate::qp::{Env, Objects, Qp};
use crate::queues::{Cq, Srq};
use crate::time::Instant;
use crate::tombstone::Tombstones;
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
    /// How long a UD redirect learned from a tombstone is used.
    pub ud_redirect_ttl: Duration,
    /// Seed of the connection keys and nonces ([`crate::secret`]): the
    /// daemon draws it from the OS CSPRNG, the simulator from its seed.
    /// [`DeviceConfig::new`] leaves it zero (tests only).
    pub secret_seed: crate::secret::SecretSeed,
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
            ud_redirect_ttl: Duration::from_secs(300),
            secret_seed: crate::secret::SecretSeed::default(),
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
    /// The configured RESUME repeat interval (`config.resume_interval`
    /// grows with the QPs resuming at once, see `resume_owner`).
    resume_interval: Duration,
    objs: Objects,
    qps: BTreeMap<Qpn, Qp>,
    tombstones: Tombstones,
    /// QPs that may have a packet to send, in round-robin order.
    ready: VecDeque<Qpn>,
    scheduled: BTreeSet<Qpn>,
    /// Datagrams produced outside any QP (tombstone answers and forwards).
    control_out: VecDeque<(IpAddr, Vec<u8>)>,
    /// QPs and SRQs whose queues shrank since [`Device::take_freed`].
    freed: Freed,
    /// Every QP's earliest armed timer, ordered.
    timers: timers::TimerIndex,
}

/// Work queues that hold fewer work requests than before: their rings in
/// client memory have room again (see [`Device::take_freed`]).
#[derive(Debug, Default)]
struct Freed {
    qps: BTreeSet<Qpn>,
    srqs: BTreeSet<Srqn>,
}

/// How many WRs a QP's queues hold: send, receive (a receive being filled
/// counts), and its SRQ's.
fn depth(qp: &Qp, objs: &Objects) -> (usize, usize, usize) {
    let filling = usize::from(
        matches!(
            qp.resp.current,
            Some(crate::responder::Inbound::Send { .. })
        ) && qp.init.srq.is_none(),
    );
    let srq = qp
        .init
        .srq
        .and_then(|s| objs.srqs.get(&s))
        .map_or(0, |s| s.queue.len());
    (qp.req.sq.len(), qp.rq.len() + filling, srq)
}

impl Freed {
    /// Notes what shrank between `before` and `after` (see [`depth`]).
    fn note(&mut self, qp: &Qp, before: (usize, usize, usize), after: (usize, usize, usize)) {
        if after.0 < before.0 || after.1 < before.1 {
            self.qps.insert(qp.qpn());
        }
        if let Some(srq) = qp.init.srq.filter(|_| after.2 < before.2) {
            self.srqs.insert(srq);
        }
    }
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
        let objs = Objects {
            secrets: crate::secret::Secrets::new(config.secret_seed),
            ..Objects::default()
        };
        Device {
            resume_interval: config.resume_interval,
            config,
            objs,
            qps: BTreeMap::new(),
            tombstones: Tombstones::default(),
            ready: VecDeque::new(),
            scheduled: BTreeSet::new(),
            control_out: VecDeque::new(),
            freed: Freed::default(),
            timers: timers::TimerIndex::default(),
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
        let before = depth(qp, &self.objs);
        let mut env = Env {
            mem,
            objs: &mut self.objs,
            config: &self.config,
        };
        let r = f(qp, &mut env);
        self.freed.note(qp, before, depth(qp, &self.objs));
        self.timers.set(qpn, qp.deadline());
        self.schedule(qpn);
        Ok(r)
    }

    /// The QPs and SRQs whose queues hold fewer work requests than at the
    /// last call: completed (signalled or not), flushed, or taken by a
    /// responder. A client ring is full while as many WRs as it has
    /// entries are outstanding (as rxe's queues, whose slots free when
    /// the WR completes); this says whose rings have room again.
    pub fn take_freed(&mut self) -> (Vec<Qpn>, Vec<Srqn>) {
        let f = std::mem::take(&mut self.freed);
        (f.qps.into_iter().collect(), f.srqs.into_iter().collect())
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
            || self.objs.mrs.windows().any(|w| w.pd == pd)
            || self.qps.values().any(|q| q.init.pd == pd)
            || self.objs.srqs.values().any(|s| s.pd == pd);
        if used {
            return Err(VerbsError::Busy(format!("pd {pd} still has objects")));
        }
        self.objs.pds.remove(&pd);
        Ok(())
    }

    /// `ibv_reg_mr`: the access rights are checked as the kernel does
    /// (`ib_check_mr_access`, then rxe's supported set): remote write or
    /// atomic without local write is invalid, zero-based, huge-page and
    /// flush rights are not supported here; optional hints are ignored.
    pub fn reg_mr(&mut self, mut mr: MrSpec) -> Result<(), VerbsError> {
        match self.objs.pds.get(&mr.pd) {
            Some(owner) if *owner == mr.owner => {}
            _ => return Err(not_found("pd", mr.pd)),
        }
        mr.access = check_mr_access(mr.access)?;
        if mr.addr.checked_add(mr.length).is_none() || mr.iova.checked_add(mr.length).is_none() {
            return Err(VerbsError::InvalidArgument(
                "memory region wraps the address space".into(),
            ));
        }
        self.objs
            .mrs
            .insert(mr)
            .map_err(|_| exists("memory key", mr.lkey))
    }

    /// `ibv_dereg_mr`; refused while memory windows are bound to the
    /// region (IBA 10.6.7.2.6, rxe: EINVAL).
    pub fn dereg_mr(&mut self, lkey: u32) -> Result<(), VerbsError> {
        if self.objs.mrs.by_lkey(lkey).is_none() {
            return Err(not_found("memory region", lkey));
        }
        let bound = self.objs.mrs.windows_on(lkey);
        if bound > 0 {
            return Err(VerbsError::InvalidArgument(format!(
                "{bound} memory windows are bound to the region"
            )));
        }
        self.objs.mrs.remove(lkey);
        Ok(())
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

    /// Re-arms the SRQ limit event (see [`Device::modify_srq`]).
    pub fn modify_srq_limit(&mut self, srq: Srqn, limit: u32) -> Result<(), VerbsError> {
        self.modify_srq(srq, None, Some(limit))
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
        self.tombstones.remove(init.qpn);
        let ud = init.qp_type == QpType::Ud;
        let mut qp = Qp::new(init);
        qp.resume_key = self.objs.secrets.draw();
        if ud {
            // A UD QP has no path: its messages may fill the port's MTU.
            qp.attr.path_mtu = self.config.max_mtu;
        }
        self.timers.set(qp.qpn(), qp.deadline());
        self.qps.insert(qp.qpn(), qp);
        Ok(())
    }

    /// Destroys a QP; the type 2 memory windows it bound become free.
    pub fn destroy_qp(&mut self, qpn: Qpn) -> Result<(), VerbsError> {
        self.qps.remove(&qpn).ok_or_else(|| not_found("qp", qpn))?;
        self.timers.remove(qpn);
        self.objs.mrs.release_windows_of(qpn);
        Ok(())
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

    // ---- counters and queries ----

    pub fn counters(&self) -> DeviceCounters {
        self.objs.counters
    }

    pub fn qp_counters(&self, qpn: Qpn) -> Option<QpCounters> {
        self.qps.get(&qpn).map(|q| q.counters)
    }

    /// The connection key of QP `qpn` (see [`crate::resume`]). For tests
    /// and fuzz targets that must tell a forged RESUME from a real one;
    /// the daemon never shows it.
    #[doc(hidden)]
    pub fn connection_key(&self, qpn: Qpn) -> Option<u64> {
        self.qps.get(&qpn).map(|q| q.resume_key)
    }

    /// QPNs of every QP on this device.
    pub fn qpns(&self) -> Vec<Qpn> {
        self.qps.keys().copied().collect()
    }
}

/// The kernel's checks of a region's access rights (`ib_check_mr_access`,
/// then rxe's `RXE_ACCESS_SUPPORTED_MR`); returns the rights kept.
pub(crate) fn check_mr_access(access: Access) -> Result<Access, VerbsError> {
    if access.remote_writable() && !access.contains(Access::LOCAL_WRITE) {
        return Err(VerbsError::InvalidArgument(
            "remote write or atomic access needs local write access".into(),
        ));
    }
    let defined = Access((Access::FLUSH_PERSISTENT.0 << 1) - 1);
    if access.0 & !(defined.0 | Access::OPTIONAL_RANGE.0) != 0 {
        return Err(VerbsError::InvalidArgument(format!(
            "unknown access flags {:#x}",
            access.0
        )));
    }
    let unsupported = Access(
        Access::ZERO_BASED.0
            | Access::HUGETLB.0
            | Access::FLUSH_GLOBAL.0
            | Access::FLUSH_PERSISTENT.0,
    );
    if access.intersects(unsupported) {
        return Err(VerbsError::Unsupported(format!(
            "access flags {:#x} are not supported",
            access.0 & unsupported.0
        )));
    }
    Ok(Access(access.0 & !Access::OPTIONAL_RANGE.0))
}

#[cfg(test)]
mod tests;
