//! [`Sim`]: many devices on one virtual-time network.
//!
//! Time only moves when the simulation steps: each step takes the earliest
//! of "next datagram arrives" and "next device deadline", sets the clock to
//! it and feeds that one input to its device, then drains the device's
//! outputs in the documented order (`poll_transmit` until `None`,
//! `poll_event` until `None`; `poll_timeout` is asked again before the next
//! step). Ties go to datagrams, then to nodes in ascending order. With the
//! same seed and the same calls, every run is identical.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use migros_transport::{
    Device, DeviceConfig, DeviceEvent, Instant, Memory, OwnerId, Qpn, SecretSeed, MAX_QPN,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::memory::SimMemory;
use crate::net::{
    CaptureId, Captured, Datagram, Filter, LinkConfig, NetCounters, Network, Rule, RuleId,
};

/// Index of a node in a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// The first node address; node `i` gets `198.18.0.1 + i` (198.18.0.0/15 is
/// reserved for benchmarking, see the project's machine notes).
pub const FIRST_NODE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The first identifier handed out by [`Sim::alloc_id`] (QPN 0 and 1 are
/// special in InfiniBand; everything starts well above).
pub const FIRST_ID: u32 = 0x100;

/// Most consecutive steps at one instant before `run_until` declares a
/// livelock (a device whose deadline stays in the past).
pub const SAME_INSTANT_LIMIT: u64 = 1_000_000;

/// Settings of a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    pub link: LinkConfig,
    /// Most steps one `run_until` call may take before it panics: a guard
    /// against livelock (a device that keeps arming an expired timer, or a
    /// retransmission loop that never ends).
    pub step_limit: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            link: LinkConfig::default(),
            step_limit: 20_000_000,
        }
    }
}

/// When a run stops: after a span of virtual time from now, or at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    After(Duration),
    At(Instant),
}

impl Deadline {
    fn resolve(self, now: Instant) -> Instant {
        match self {
            Deadline::After(d) => now + d,
            Deadline::At(t) => t,
        }
    }
}

impl From<Duration> for Deadline {
    fn from(d: Duration) -> Deadline {
        Deadline::After(d)
    }
}

impl From<Instant> for Deadline {
    fn from(t: Instant) -> Deadline {
        Deadline::At(t)
    }
}

/// A host that handles datagrams slower than they can arrive (a loaded
/// machine, a debug build): what arrives waits in a receive queue of
/// bounded size (a socket buffer; a datagram that does not fit is dropped)
/// and the device takes one datagram from it every `per_datagram`. Timers
/// still run on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowReceiver {
    /// Time the device spends on each datagram.
    pub per_datagram: Duration,
    /// Bytes the receive queue holds.
    pub queue_bytes: usize,
}

/// The receive queue of a node with a [`SlowReceiver`].
#[derive(Debug, Default)]
struct RxQueue {
    model: Option<SlowReceiver>,
    queue: VecDeque<Datagram>,
    bytes: usize,
    /// When the device is free to take the next datagram.
    busy_until: Instant,
    overflows: u64,
    max_bytes: usize,
}

/// One simulated host: its device and the memory of the owners living on it.
pub struct Node {
    pub device: Device,
    pub memory: SimMemory,
    events: Vec<DeviceEvent>,
    rx: RxQueue,
}

/// A virtual-time network of devices. See the module docs.
pub struct Sim {
    pub(crate) now: Instant,
    pub(crate) rng: SmallRng,
    /// The run's seed (each node's secrets derive from it).
    seed: u64,
    pub(crate) net: Network,
    pub(crate) nodes: Vec<Node>,
    by_addr: BTreeMap<IpAddr, NodeId>,
    pub(crate) owners: BTreeMap<OwnerId, NodeId>,
    next_id: u32,
    step_limit: u64,
    steps: u64,
    buf: Vec<u8>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Datagram,
    Timer(NodeId),
    /// The next datagram of a slow receiver's queue.
    Queued(NodeId),
}

impl Sim {
    /// A network without nodes, with the default link model.
    pub fn new(seed: u64) -> Sim {
        Sim::with_config(seed, SimConfig::default())
    }

    pub fn with_config(seed: u64, config: SimConfig) -> Sim {
        Sim {
            now: Instant::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            seed,
            net: Network::new(config.link),
            nodes: Vec::new(),
            by_addr: BTreeMap::new(),
            owners: BTreeMap::new(),
            next_id: FIRST_ID,
            step_limit: config.step_limit,
            steps: 0,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Adds a node with `DeviceConfig::new` at the next address.
    pub fn add_node(&mut self) -> NodeId {
        let addr = node_addr(self.nodes.len());
        self.add_node_with(DeviceConfig::new(addr))
    }

    /// Adds a node with a custom device configuration.
    ///
    /// # Panics
    /// If another node already has `config.addr`.
    pub fn add_node_with(&mut self, mut config: DeviceConfig) -> NodeId {
        let id = NodeId(self.nodes.len());
        if config.secret_seed == SecretSeed::default() {
            // Each node's keys from the run's seed, without drawing from
            // the run's generator (fault patterns stay as they were).
            let mut keys = SmallRng::seed_from_u64(
                self.seed ^ (id.0 as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            keys.fill(&mut config.secret_seed.0);
        }
        let addr = config.addr;
        assert!(
            !self.by_addr.contains_key(&addr),
            "sim: address {addr} is already used by {}",
            self.by_addr[&addr]
        );
        self.by_addr.insert(addr, id);
        self.net.add_host(addr);
        self.nodes.push(Node {
            device: Device::new(config),
            memory: SimMemory::new(),
            events: Vec::new(),
            rx: RxQueue::default(),
        });
        id
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(Instant::ZERO)
    }

    /// The simulation's random generator (seeded; use it for test data so
    /// that runs stay reproducible).
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len()).map(NodeId)
    }

    pub fn addr(&self, node: NodeId) -> IpAddr {
        self.node(node).device.config().addr
    }

    pub fn node_by_addr(&self, addr: IpAddr) -> Option<NodeId> {
        self.by_addr.get(&addr).copied()
    }

    pub fn node(&self, node: NodeId) -> &Node {
        &self.nodes[node.0]
    }

    pub fn device(&self, node: NodeId) -> &Device {
        &self.node(node).device
    }

    /// The device, for direct verbs calls. Whatever the call produces is
    /// picked up at the next step (or call [`Sim::flush`]); prefer
    /// [`Sim::with_device`], which flushes at once.
    pub fn device_mut(&mut self, node: NodeId) -> &mut Device {
        &mut self.nodes[node.0].device
    }

    pub fn memory(&self, node: NodeId) -> &SimMemory {
        &self.node(node).memory
    }

    pub fn memory_mut(&mut self, node: NodeId) -> &mut SimMemory {
        &mut self.nodes[node.0].memory
    }

    /// Runs `f` on a node's device and memory at the current time, then
    /// drains the device's outputs.
    pub fn with_device<R>(
        &mut self,
        node: NodeId,
        f: impl FnOnce(&mut Device, &mut SimMemory, Instant) -> R,
    ) -> R {
        let now = self.now;
        let n = &mut self.nodes[node.0];
        let r = f(&mut n.device, &mut n.memory, now);
        self.flush(node);
        r
    }

    /// Allocates an identifier never used before in this simulation: QPNs,
    /// keys, PD/CQ/SRQ handles and owners all come from this one counter,
    /// so an object restored on another node can never collide with one
    /// created there. Limit: 2^24 − 256 identifiers per simulation (QPNs
    /// are 24 bits).
    ///
    /// # Panics
    /// When the identifiers are used up.
    pub fn alloc_id(&mut self) -> u32 {
        let id = self.next_id;
        assert!(id <= MAX_QPN, "sim: identifiers used up");
        self.next_id += 1;
        id
    }

    /// A fresh QPN (see [`Sim::alloc_id`]).
    pub fn alloc_qpn(&mut self) -> Qpn {
        self.alloc_id()
    }

    /// A new owner (a simulated process) living on `node`.
    pub fn new_owner(&mut self, node: NodeId) -> OwnerId {
        let owner = OwnerId::from(self.alloc_id());
        self.owners.insert(owner, node);
        owner
    }

    /// Where `owner` lives now (it moves with migrations).
    pub fn node_of(&self, owner: OwnerId) -> Option<NodeId> {
        self.owners.get(&owner).copied()
    }

    /// The owners living on `node`, ascending.
    pub fn owners_on(&self, node: NodeId) -> Vec<OwnerId> {
        self.owners
            .iter()
            .filter(|&(_, &n)| n == node)
            .map(|(&o, _)| o)
            .collect()
    }

    fn owner_node(&self, owner: OwnerId) -> NodeId {
        match self.node_of(owner) {
            Some(n) => n,
            None => panic!("sim: owner {owner} does not exist"),
        }
    }

    /// Allocates `len` zeroed bytes in `owner`'s memory, wherever it lives.
    pub fn alloc(&mut self, owner: OwnerId, len: usize) -> u64 {
        let node = self.owner_node(owner);
        self.nodes[node.0].memory.alloc(owner, len)
    }

    /// Reads `owner`'s memory, wherever it lives.
    ///
    /// # Panics
    /// If the owner does not exist or the range is not allocated.
    pub fn read_mem(&self, owner: OwnerId, addr: u64, len: usize) -> Vec<u8> {
        let node = self.owner_node(owner);
        match self.memory(node).read_vec(owner, addr, len) {
            Ok(v) => v,
            Err(e) => panic!("sim: {e}"),
        }
    }

    /// Writes `owner`'s memory, wherever it lives.
    ///
    /// # Panics
    /// If the owner does not exist or the range is not allocated.
    pub fn write_mem(&mut self, owner: OwnerId, addr: u64, data: &[u8]) {
        let node = self.owner_node(owner);
        if let Err(e) = Memory::write(&mut self.nodes[node.0].memory, owner, addr, data) {
            panic!("sim: {e}");
        }
    }

    /// Installs a fault rule (applied to datagrams sent from now on).
    pub fn add_rule(&mut self, rule: Rule) -> RuleId {
        self.net.add_rule(rule)
    }

    pub fn remove_rule(&mut self, id: RuleId) -> Option<Rule> {
        self.net.remove_rule(id)
    }

    pub fn clear_rules(&mut self) {
        self.net.clear_rules();
    }

    /// Starts recording the datagrams `filter` matches (see
    /// [`Network::start_capture`]).
    pub fn start_capture(&mut self, filter: Filter) -> CaptureId {
        self.net.start_capture(filter)
    }

    /// What a capture recorded so far, oldest first.
    pub fn captured(&self, id: CaptureId) -> &[Captured] {
        self.net.captured(id)
    }

    /// Stops a capture and returns what it recorded.
    pub fn stop_capture(&mut self, id: CaptureId) -> Vec<Captured> {
        self.net.stop_capture(id)
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// What the network did with `node`'s datagrams.
    pub fn net_counters(&self, node: NodeId) -> NetCounters {
        self.net.counters(self.addr(node))
    }

    /// Events `node`'s device produced so far (oldest first).
    pub fn events(&self, node: NodeId) -> &[DeviceEvent] {
        &self.node(node).events
    }

    /// Takes the events collected for `node`.
    pub fn take_events(&mut self, node: NodeId) -> Vec<DeviceEvent> {
        std::mem::take(&mut self.nodes[node.0].events)
    }

    /// Puts a raw datagram on the network as if `src` had sent it (fault
    /// rules apply). For malformed-packet and replay tests.
    pub fn inject(&mut self, src: IpAddr, src_port: u16, dst: IpAddr, bytes: Vec<u8>) -> usize {
        let now = self.now;
        self.net.send(
            now,
            &mut self.rng,
            Datagram {
                src,
                src_port,
                dst,
                bytes,
            },
        )
    }

    /// Drains a node's outputs: every datagram onto the network, every
    /// event into the node's log.
    pub fn flush(&mut self, node: NodeId) {
        let now = self.now;
        let limit = self.step_limit;
        let n = &mut self.nodes[node.0];
        let src = n.device.config().addr;
        let mut sent = 0u64;
        loop {
            self.buf.clear();
            let Some(t) = n.device.poll_transmit(now, &mut n.memory, &mut self.buf) else {
                break;
            };
            self.net.send(
                now,
                &mut self.rng,
                Datagram {
                    src,
                    src_port: t.src_port,
                    dst: t.dst,
                    bytes: self.buf.clone(),
                },
            );
            sent += 1;
            assert!(
                sent <= limit,
                "sim: {node} produced more than {limit} datagrams at {now:?} without stopping"
            );
        }
        while let Some(e) = n.device.poll_event() {
            n.events.push(e);
        }
    }

    /// Drains every node's outputs.
    pub fn flush_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.flush(NodeId(i));
        }
    }

    /// Makes `node` a slow receiver (`None`: datagrams are handled as they
    /// arrive, the default). Datagrams already queued stay queued.
    pub fn set_slow_receiver(&mut self, node: NodeId, model: Option<SlowReceiver>) {
        self.nodes[node.0].rx.model = model;
    }

    /// A slow receiver's datagrams dropped because its queue was full.
    pub fn rx_overflows(&self, node: NodeId) -> u64 {
        self.node(node).rx.overflows
    }

    /// The most bytes a slow receiver's queue held.
    pub fn rx_queue_max_bytes(&self, node: NodeId) -> usize {
        self.node(node).rx.max_bytes
    }

    /// The earliest pending input at or before `limit`.
    fn next_input(&self, limit: Instant) -> Option<(Instant, Input)> {
        let mut best = self.net.next_delivery().map(|t| (t, Input::Datagram));
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.rx.queue.is_empty() {
                let t = n.rx.busy_until;
                if best.map_or(true, |(b, _)| t < b) {
                    best = Some((t, Input::Queued(NodeId(i))));
                }
            }
            if let Some(t) = n.device.poll_timeout() {
                if best.map_or(true, |(b, _)| t < b) {
                    best = Some((t, Input::Timer(NodeId(i))));
                }
            }
        }
        best.filter(|&(t, _)| t <= limit)
    }

    /// Feeds the earliest pending input at or before `limit` to its device.
    /// Returns false (and leaves the clock alone) if there is none.
    pub fn step_until(&mut self, limit: Instant) -> bool {
        self.flush_all();
        let Some((at, input)) = self.next_input(limit) else {
            return false;
        };
        // A deadline already in the past runs now; time never goes back.
        self.now = self.now.max(at);
        self.steps += 1;
        let now = self.now;
        match input {
            Input::Datagram => {
                let Some((_, d)) = self.net.pop_due(now) else {
                    return true;
                };
                // The network only schedules datagrams to known hosts.
                if let Some(node) = self.node_by_addr(d.dst) {
                    let n = &mut self.nodes[node.0];
                    if let Some(model) = n.rx.model {
                        let rx = &mut n.rx;
                        if rx.bytes + d.bytes.len() > model.queue_bytes {
                            rx.overflows += 1;
                        } else {
                            if rx.queue.is_empty() {
                                rx.busy_until = rx.busy_until.max(now);
                            }
                            rx.bytes += d.bytes.len();
                            rx.max_bytes = rx.max_bytes.max(rx.bytes);
                            rx.queue.push_back(d);
                        }
                        return true;
                    }
                    n.device
                        .handle_datagram(now, &mut n.memory, d.src, d.src_port, &d.bytes);
                    self.flush(node);
                }
            }
            Input::Queued(node) => {
                let n = &mut self.nodes[node.0];
                if let Some(d) = n.rx.queue.pop_front() {
                    n.rx.bytes -= d.bytes.len();
                    let per = n.rx.model.map_or(Duration::ZERO, |m| m.per_datagram);
                    n.rx.busy_until = now + per;
                    n.device
                        .handle_datagram(now, &mut n.memory, d.src, d.src_port, &d.bytes);
                }
                self.flush(node);
            }
            Input::Timer(node) => {
                let n = &mut self.nodes[node.0];
                if n.device.poll_timeout().is_some_and(|t| t <= now) {
                    n.device.handle_timeout(now);
                }
                self.flush(node);
            }
        }
        true
    }

    /// Advances virtual time input by input until `cond` holds (checked
    /// before the first step and after every step) or the deadline passes;
    /// returns whether `cond` held. If nothing is pending before the
    /// deadline the clock jumps to it.
    ///
    /// # Panics
    /// After more than the configured step limit in one call (livelock).
    pub fn run_until(
        &mut self,
        deadline: impl Into<Deadline>,
        mut cond: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        let end = deadline.into().resolve(self.now);
        let mut steps = 0u64;
        let mut same_instant = 0u64;
        loop {
            self.flush_all();
            if cond(self) {
                return true;
            }
            let before = self.now;
            if !self.step_until(end) {
                self.now = self.now.max(end);
                self.flush_all();
                return cond(self);
            }
            steps += 1;
            same_instant = if self.now == before {
                same_instant + 1
            } else {
                0
            };
            if same_instant > SAME_INSTANT_LIMIT {
                panic!(
                    "sim: livelock guard: {SAME_INSTANT_LIMIT} steps at {:?} without time \
                     advancing (a timer that stays expired, or a packet storm)",
                    self.now
                );
            }
            if steps > self.step_limit {
                panic!(
                    "sim: livelock guard: {} steps in one run without reaching the deadline \
                     (now {:?}, deadline {:?}, {} datagrams in flight)",
                    self.step_limit,
                    self.now,
                    end,
                    self.net.in_flight()
                );
            }
        }
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// Runs until nothing is in flight on the network or waits in a slow
    /// receiver's queue (devices' timers may
    /// still be armed) or the deadline passes; returns whether it got quiet.
    pub fn run_until_quiet(&mut self, deadline: impl Into<Deadline>) -> bool {
        self.run_until(deadline, |s| {
            s.net.in_flight() == 0 && s.nodes.iter().all(|n| n.rx.queue.is_empty())
        })
    }

    /// Steps taken since the start.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn set_step_limit(&mut self, limit: u64) {
        self.step_limit = limit;
    }
}

/// The address of the `index`-th node: 198.18.0.1, 198.18.0.2, …
pub fn node_addr(index: usize) -> IpAddr {
    let base = u32::from(FIRST_NODE_ADDR);
    let offset = u32::try_from(index).unwrap_or(u32::MAX);
    // 198.18.0.0/15 holds 2^17 addresses.
    assert!(offset < (1 << 17) - 2, "sim: too many nodes");
    IpAddr::V4(Ipv4Addr::from(base + offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses() {
        assert_eq!(node_addr(0), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(node_addr(255), IpAddr::V4(Ipv4Addr::new(198, 18, 1, 0)));
        let mut sim = Sim::new(1);
        let a = sim.add_node();
        let b = sim.add_node();
        assert_eq!(sim.addr(b), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(sim.node_by_addr(sim.addr(a)), Some(a));
    }

    #[test]
    fn ids_are_unique_across_the_sim() {
        let mut sim = Sim::new(1);
        let a = sim.add_node();
        let b = sim.add_node();
        let o1 = sim.new_owner(a);
        let o2 = sim.new_owner(b);
        let q = sim.alloc_qpn();
        let k = sim.alloc_id();
        let mut all = vec![o1 as u32, o2 as u32, q, k];
        all.dedup();
        assert_eq!(all.len(), 4);
        assert!(q >= FIRST_ID);
        assert_eq!(sim.owners_on(a), [o1]);
        assert_eq!(sim.node_of(o2), Some(b));
    }

    #[test]
    fn owner_memory_follows_the_owner() {
        let mut sim = Sim::new(1);
        let a = sim.add_node();
        let o = sim.new_owner(a);
        let addr = sim.alloc(o, 16);
        sim.write_mem(o, addr, b"abc");
        assert_eq!(sim.read_mem(o, addr, 3), b"abc");
        assert!(sim.memory(a).has_owner(o));
    }
}
