//! The device: every verbs object of one node and the sans-IO entry points.
//!
//! Inputs: verbs calls, [`Device::handle_datagram`], [`Device::handle_timeout`].
//! Outputs, polled in this order after any input:
//! [`Device::poll_transmit`] until `None`, [`Device::poll_event`] until `None`,
//! then [`Device::poll_timeout`] to arm one timer.

use std::net::IpAddr;
use std::time::Duration;

use crate::counters::{DeviceCounters, QpCounters};
use crate::error::VerbsError;
use crate::memory::Memory;
use crate::snapshot::OwnerSnapshot;
use crate::time::Instant;
use crate::types::*;

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

/// Where a datagram produced by [`Device::poll_transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dst: IpAddr,
    pub src_port: u16,
}

/// One node's device. See the module docs for the calling contract.
pub struct Device {
    config: DeviceConfig,
}

#[allow(unused_variables)]
impl Device {
    pub fn new(config: DeviceConfig) -> Device {
        Device { config }
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    pub fn alloc_pd(&mut self, owner: OwnerId, pd: Pdn) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn dealloc_pd(&mut self, pd: Pdn) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn reg_mr(&mut self, mr: MrSpec) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn dereg_mr(&mut self, lkey: u32) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn create_cq(&mut self, owner: OwnerId, cq: Cqn, capacity: u32) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn destroy_cq(&mut self, cq: Cqn) -> Result<(), VerbsError> {
        todo!()
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
        todo!()
    }
    pub fn destroy_srq(&mut self, srq: Srqn) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn create_qp(&mut self, init: QpInit) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn destroy_qp(&mut self, qpn: Qpn) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn modify_qp(
        &mut self,
        now: Instant,
        qpn: Qpn,
        attr: &QpAttr,
        mask: AttrMask,
    ) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn query_qp(&self, qpn: Qpn) -> Result<QpAttr, VerbsError> {
        todo!()
    }
    pub fn post_send(&mut self, now: Instant, qpn: Qpn, wr: SendWr) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn post_recv(&mut self, qpn: Qpn, wr: RecvWr) -> Result<(), VerbsError> {
        todo!()
    }
    pub fn post_srq_recv(&mut self, srq: Srqn, wr: RecvWr) -> Result<(), VerbsError> {
        todo!()
    }
    /// Moves up to `max` completions of `cq` into `out`; returns how many.
    pub fn poll_cq(
        &mut self,
        cq: Cqn,
        max: usize,
        out: &mut Vec<WorkCompletion>,
    ) -> Result<usize, VerbsError> {
        todo!()
    }

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
        todo!()
    }
    /// Writes the next datagram (a whole UDP payload, ICRC included) into
    /// `buf` (cleared first) and says where it goes; `None` when idle.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        todo!()
    }
    /// The earliest deadline of any timer, if one is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Runs every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        todo!()
    }

    /// Stops every QP of `owner` (migration step 1): nothing more is sent
    /// or written into its memory; requests get the pause NAK.
    pub fn pause_owner(&mut self, now: Instant, owner: OwnerId) -> Result<(), VerbsError> {
        todo!()
    }
    /// Undoes `pause_owner` on the source after a failed or abandoned dump.
    pub fn unpause_owner(&mut self, now: Instant, owner: OwnerId) -> Result<(), VerbsError> {
        todo!()
    }
    /// Every object of a paused `owner`, as plain data.
    pub fn snapshot_owner(
        &self,
        now: Instant,
        owner: OwnerId,
    ) -> Result<OwnerSnapshot, VerbsError> {
        todo!()
    }
    /// Removes every object of `owner`, leaving a tombstone per QP that
    /// answers requests with the pause NAK. Returns the tombstoned QPNs.
    pub fn evict_owner(&mut self, now: Instant, owner: OwnerId) -> Result<Vec<Qpn>, VerbsError> {
        todo!()
    }
    /// Tells tombstones where their QPs went, so RESUMEs reaching this node
    /// are forwarded there.
    pub fn forward_tombstones(&mut self, qpns: &[Qpn], new_addr: IpAddr) {
        todo!()
    }
    pub fn release_tombstone(&mut self, qpn: Qpn) {
        todo!()
    }
    /// Fails if restoring `snapshot` here would collide with an object.
    pub fn check_restore(&self, snapshot: &OwnerSnapshot) -> Result<(), VerbsError> {
        todo!()
    }
    /// Recreates every object of the snapshot with the same identifiers.
    /// The QPs stay stopped until `resume_owner`.
    pub fn restore(&mut self, now: Instant, snapshot: OwnerSnapshot) -> Result<(), VerbsError> {
        todo!()
    }
    /// Restarts the restored QPs of `owner`: each announces itself with RESUME.
    pub fn resume_owner(&mut self, now: Instant, owner: OwnerId) -> Result<(), VerbsError> {
        todo!()
    }
    /// Flushes and destroys everything of an owner that went away.
    pub fn destroy_owner(&mut self, now: Instant, owner: OwnerId) {
        todo!()
    }

    pub fn counters(&self) -> DeviceCounters {
        todo!()
    }
    pub fn qp_counters(&self, qpn: Qpn) -> Option<QpCounters> {
        todo!()
    }
}
