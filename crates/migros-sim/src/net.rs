//! The simulated wire: datagrams in flight, link timing and fault rules.
//!
//! [`Network`] knows addresses, not devices: [`Network::send`] applies the
//! link model and every installed [`Rule`] to one datagram and schedules the
//! copies that survive; [`Network::pop_due`] hands them back in delivery
//! order (deliver time, then send sequence number), which makes every run
//! with the same seed identical. [`crate::Sim`] wires it to devices; tests of
//! the rules themselves use it alone with raw bytes.
//!
//! Rules are applied when a datagram is sent, in the order they were added
//! (as turmoil's `Rule`s are). A rule whose [`Filter`] does not match leaves
//! the datagram alone; a dropping rule ends the evaluation.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use migros_transport::Instant;
use rand::rngs::SmallRng;
use rand::Rng;

/// Bytes of Ethernet, IPv4, UDP and FCS framing counted per datagram by the
/// serialization delay.
pub const FRAME_OVERHEAD: usize = 14 + 20 + 8 + 4;

/// The BTH opcode of the RESUME message (MigrOS extension).
pub const OPCODE_RESUME: u8 = 0x19;
/// The BTH opcode of RC ACKNOWLEDGE (also carries the pause NAK).
pub const OPCODE_RC_ACK: u8 = 0x11;

/// Link model of every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way propagation latency added to every datagram.
    pub latency: Duration,
    /// Bits per second of each sender's link; consecutive datagrams of one
    /// sender are serialised one after the other.
    pub bits_per_sec: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_micros(5),
            bits_per_sec: 10_000_000_000,
        }
    }
}

/// Identifies an installed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(u64);

/// A predicate on the BTH opcode (byte 0 of the datagram).
pub type OpcodePredicate = Box<dyn Fn(u8) -> bool>;

/// Which datagrams a rule applies to. Every part left `None` matches all.
#[derive(Default)]
pub struct Filter {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// Called with byte 0 of the datagram (the BTH opcode); an empty
    /// datagram never matches a filter that has one.
    pub opcode: Option<OpcodePredicate>,
}

impl Filter {
    /// Matches every datagram.
    pub fn any() -> Filter {
        Filter::default()
    }

    /// Matches datagrams sent by `src`.
    pub fn from(src: IpAddr) -> Filter {
        Filter {
            src: Some(src),
            ..Filter::default()
        }
    }

    /// Matches datagrams sent to `dst`.
    pub fn to(dst: IpAddr) -> Filter {
        Filter {
            dst: Some(dst),
            ..Filter::default()
        }
    }

    /// Matches datagrams from `src` to `dst`.
    pub fn between(src: IpAddr, dst: IpAddr) -> Filter {
        Filter {
            src: Some(src),
            dst: Some(dst),
            opcode: None,
        }
    }

    /// Restricts the filter to one BTH opcode.
    pub fn opcode(self, opcode: u8) -> Filter {
        self.opcode_matching(move |op| op == opcode)
    }

    /// Restricts the filter to opcodes for which `pred` holds.
    pub fn opcode_matching(mut self, pred: impl Fn(u8) -> bool + 'static) -> Filter {
        self.opcode = Some(Box::new(pred));
        self
    }

    /// Whether a datagram from `src` to `dst` with these bytes matches.
    pub fn matches(&self, src: IpAddr, dst: IpAddr, bytes: &[u8]) -> bool {
        self.src.map_or(true, |s| s == src)
            && self.dst.map_or(true, |d| d == dst)
            && match &self.opcode {
                None => true,
                Some(pred) => bytes.first().is_some_and(|&op| pred(op)),
            }
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("opcode", &self.opcode.as_ref().map(|_| "<predicate>"))
            .finish()
    }
}

/// What a rule does to a datagram its filter matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drops with this probability (0.0..=1.0).
    Drop { probability: f64 },
    /// Adds a delay drawn uniformly from the range.
    Delay { extra: RangeInclusive<Duration> },
    /// With this probability, holds the datagram back by `delay`, so that
    /// later ones overtake it.
    Reorder { probability: f64, delay: Duration },
    /// With this probability, delivers a second copy (up to one latency
    /// later).
    Duplicate { probability: f64 },
    /// With this probability, flips one random bit (the receiving device
    /// must reject the datagram by its ICRC or parse checks).
    Corrupt { probability: f64 },
    /// Drops everything between `a` and `b`, both directions. The rule's
    /// filter is not consulted.
    Partition { a: IpAddr, b: IpAddr },
    /// Drops the next `n` matching datagrams, then passes everything.
    DropNext { n: u64 },
}

/// A fault rule: a filter and an action.
#[derive(Debug)]
pub struct Rule {
    pub filter: Filter,
    pub action: Action,
}

impl Rule {
    pub fn new(filter: Filter, action: Action) -> Rule {
        Rule { filter, action }
    }

    /// Drops every matching datagram with probability `p`.
    pub fn drop(filter: Filter, probability: f64) -> Rule {
        Rule::new(filter, Action::Drop { probability })
    }

    /// Cuts `a` off from `b` in both directions.
    pub fn partition(a: IpAddr, b: IpAddr) -> Rule {
        Rule::new(Filter::any(), Action::Partition { a, b })
    }

    /// Drops the next `n` matching datagrams.
    pub fn drop_next(filter: Filter, n: u64) -> Rule {
        Rule::new(filter, Action::DropNext { n })
    }
}

/// What the network did with datagrams, per node address. `sent`,
/// `dropped`, `duplicated`, `corrupted`, `delayed` and `unroutable` are
/// counted at the sender, `delivered` at the receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub sent: u64,
    pub sent_bytes: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub corrupted: u64,
    /// Held back by a Delay or Reorder rule.
    pub delayed: u64,
    /// Sent to an address with no node.
    pub unroutable: u64,
}

/// Identifies an installed capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaptureId(u64);

/// A datagram a capture saw, as its sender put it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// When it was sent.
    pub at: Instant,
    pub datagram: Datagram,
    /// Whether a rule dropped it (or its address had no host).
    pub dropped: bool,
}

impl Captured {
    /// The BTH opcode (byte 0), if the datagram has one.
    pub fn opcode(&self) -> Option<u8> {
        self.datagram.bytes.first().copied()
    }

    /// The AETH syndrome of an RC ACKNOWLEDGE (BTH is 12 bytes; the AETH
    /// syndrome is its first byte), if the datagram is one.
    pub fn ack_syndrome(&self) -> Option<u8> {
        match self.opcode() {
            Some(OPCODE_RC_ACK) => self.datagram.bytes.get(12).copied(),
            _ => None,
        }
    }
}

struct Capture {
    filter: Filter,
    seen: Vec<Captured>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("filter", &self.filter)
            .field("seen", &self.seen.len())
            .finish()
    }
}

/// A datagram on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub bytes: Vec<u8>,
}

/// Datagrams in flight between simulated hosts.
#[derive(Debug)]
pub struct Network {
    link: LinkConfig,
    hosts: BTreeMap<IpAddr, HostState>,
    in_flight: BTreeMap<(Instant, u64), Datagram>,
    next_seq: u64,
    rules: BTreeMap<RuleId, Rule>,
    next_rule: u64,
    captures: BTreeMap<CaptureId, Capture>,
    /// Counters of senders without a host entry.
    unknown_senders: NetCounters,
}

#[derive(Debug, Default)]
struct HostState {
    link_free_at: Instant,
    counters: NetCounters,
}

/// The combined effect of every rule on one datagram.
#[derive(Debug, Default)]
struct Verdict {
    drop: bool,
    extra: Duration,
    duplicate: bool,
    corrupt: bool,
}

impl Network {
    pub fn new(link: LinkConfig) -> Network {
        Network {
            link,
            hosts: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_seq: 0,
            rules: BTreeMap::new(),
            next_rule: 0,
            captures: BTreeMap::new(),
            unknown_senders: NetCounters::default(),
        }
    }

    pub fn link(&self) -> LinkConfig {
        self.link
    }

    /// Makes `addr` reachable.
    pub fn add_host(&mut self, addr: IpAddr) {
        self.hosts.entry(addr).or_default();
    }

    pub fn has_host(&self, addr: IpAddr) -> bool {
        self.hosts.contains_key(&addr)
    }

    /// Installs a rule; it applies to datagrams sent from now on.
    pub fn add_rule(&mut self, rule: Rule) -> RuleId {
        let id = RuleId(self.next_rule);
        self.next_rule += 1;
        self.rules.insert(id, rule);
        id
    }

    /// Removes a rule; returns it if it was installed. Datagrams already in
    /// flight keep the fate the rule gave them.
    pub fn remove_rule(&mut self, id: RuleId) -> Option<Rule> {
        self.rules.remove(&id)
    }

    /// Removes every rule.
    pub fn clear_rules(&mut self) {
        self.rules.clear();
    }

    /// Starts recording every datagram that `filter` matches, as sent
    /// (before any rule acts on it), with whether it was dropped.
    pub fn start_capture(&mut self, filter: Filter) -> CaptureId {
        let id = CaptureId(self.next_rule);
        self.next_rule += 1;
        self.captures.insert(
            id,
            Capture {
                filter,
                seen: Vec::new(),
            },
        );
        id
    }

    /// What a capture recorded so far, oldest first (empty for an unknown id).
    pub fn captured(&self, id: CaptureId) -> &[Captured] {
        self.captures.get(&id).map_or(&[], |c| &c.seen)
    }

    /// Stops a capture and returns what it recorded.
    pub fn stop_capture(&mut self, id: CaptureId) -> Vec<Captured> {
        self.captures.remove(&id).map_or_else(Vec::new, |c| c.seen)
    }

    /// Puts a datagram on `src`'s link at `now`. Returns how many copies
    /// were scheduled (0: dropped or unroutable, 2: duplicated).
    pub fn send(&mut self, now: Instant, rng: &mut SmallRng, dgram: Datagram) -> usize {
        if self.captures.is_empty() {
            return self.send_inner(now, rng, dgram);
        }
        let copy = dgram.clone();
        let copies = self.send_inner(now, rng, dgram);
        for c in self.captures.values_mut() {
            if c.filter.matches(copy.src, copy.dst, &copy.bytes) {
                c.seen.push(Captured {
                    at: now,
                    datagram: copy.clone(),
                    dropped: copies == 0,
                });
            }
        }
        copies
    }

    fn send_inner(&mut self, now: Instant, rng: &mut SmallRng, dgram: Datagram) -> usize {
        let routable = self.hosts.contains_key(&dgram.dst);
        let wire_bytes = dgram.bytes.len() + FRAME_OVERHEAD;
        let serialization = serialization_delay(wire_bytes, self.link.bits_per_sec);
        let latency = self.link.latency;
        let sender = match self.hosts.get_mut(&dgram.src) {
            Some(h) => h,
            None => {
                self.unknown_senders.sent += 1;
                if !routable {
                    self.unknown_senders.unroutable += 1;
                }
                return if routable {
                    self.schedule(now + latency, dgram)
                } else {
                    0
                };
            }
        };
        sender.counters.sent += 1;
        sender.counters.sent_bytes += dgram.bytes.len() as u64;
        let start = sender.link_free_at.max(now);
        let on_wire = start + serialization;
        sender.link_free_at = on_wire;
        if !routable {
            sender.counters.unroutable += 1;
            return 0;
        }

        let verdict = evaluate(&mut self.rules, rng, &dgram);
        let counters = &mut sender.counters;
        if verdict.drop {
            counters.dropped += 1;
            return 0;
        }
        if verdict.extra > Duration::ZERO {
            counters.delayed += 1;
        }
        let at = on_wire + latency + verdict.extra;
        let mut copies = 0;
        if verdict.duplicate {
            counters.duplicated += 1;
            let jitter_ns = rng.gen_range(0..=duration_nanos(latency));
            copies += self.schedule(at + Duration::from_nanos(jitter_ns), dgram.clone());
        }
        let mut dgram = dgram;
        if verdict.corrupt && !dgram.bytes.is_empty() {
            let bit = rng.gen_range(0..dgram.bytes.len() * 8);
            dgram.bytes[bit / 8] ^= 1 << (bit % 8);
            if let Some(h) = self.hosts.get_mut(&dgram.src) {
                h.counters.corrupted += 1;
            }
        }
        copies + self.schedule(at, dgram)
    }

    fn schedule(&mut self, at: Instant, dgram: Datagram) -> usize {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert((at, seq), dgram);
        1
    }

    /// When the next datagram arrives, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|&(at, _)| at)
    }

    /// Removes the next datagram if it arrives at or before `now`, and
    /// returns it with its arrival time.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Datagram)> {
        let (&(at, seq), _) = self.in_flight.iter().next()?;
        if at > now {
            return None;
        }
        let dgram = self.in_flight.remove(&(at, seq))?;
        if let Some(h) = self.hosts.get_mut(&dgram.dst) {
            h.counters.delivered += 1;
        }
        Some((at, dgram))
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight.values().map(|d| d.bytes.len()).sum()
    }

    /// The counters of `addr` (zero if it is not a host).
    pub fn counters(&self, addr: IpAddr) -> NetCounters {
        self.hosts
            .get(&addr)
            .map(|h| h.counters)
            .unwrap_or_default()
    }

    /// The sum of every host's counters (and of unknown senders').
    pub fn total_counters(&self) -> NetCounters {
        let mut t = self.unknown_senders;
        for h in self.hosts.values() {
            let c = h.counters;
            t.sent += c.sent;
            t.sent_bytes += c.sent_bytes;
            t.delivered += c.delivered;
            t.dropped += c.dropped;
            t.duplicated += c.duplicated;
            t.corrupted += c.corrupted;
            t.delayed += c.delayed;
            t.unroutable += c.unroutable;
        }
        t
    }
}

fn evaluate(rules: &mut BTreeMap<RuleId, Rule>, rng: &mut SmallRng, d: &Datagram) -> Verdict {
    let mut v = Verdict::default();
    for rule in rules.values_mut() {
        if let Action::Partition { a, b } = rule.action {
            if (d.src == a && d.dst == b) || (d.src == b && d.dst == a) {
                v.drop = true;
                return v;
            }
            continue;
        }
        if !rule.filter.matches(d.src, d.dst, &d.bytes) {
            continue;
        }
        match &mut rule.action {
            Action::Drop { probability } => {
                if chance(rng, *probability) {
                    v.drop = true;
                    return v;
                }
            }
            Action::Delay { extra } => {
                let lo = duration_nanos(*extra.start());
                let hi = duration_nanos(*extra.end()).max(lo);
                v.extra += Duration::from_nanos(rng.gen_range(lo..=hi));
            }
            Action::Reorder { probability, delay } => {
                if chance(rng, *probability) {
                    v.extra += *delay;
                }
            }
            Action::Duplicate { probability } => {
                if chance(rng, *probability) {
                    v.duplicate = true;
                }
            }
            Action::Corrupt { probability } => {
                if chance(rng, *probability) {
                    v.corrupt = true;
                }
            }
            Action::DropNext { n } => {
                if *n > 0 {
                    *n -= 1;
                    v.drop = true;
                    return v;
                }
            }
            Action::Partition { .. } => {}
        }
    }
    v
}

fn chance(rng: &mut SmallRng, probability: f64) -> bool {
    // gen_bool panics outside 0..=1; clamp (NaN counts as never).
    let p = if probability.is_nan() {
        0.0
    } else {
        probability.clamp(0.0, 1.0)
    };
    rng.gen_bool(p)
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Time to put `bytes` on a link of `bits_per_sec` (at least 1 ns).
pub fn serialization_delay(bytes: usize, bits_per_sec: u64) -> Duration {
    if bits_per_sec == 0 {
        return Duration::ZERO;
    }
    let nanos = (bytes as u128 * 8 * 1_000_000_000).div_ceil(u128::from(bits_per_sec));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
}

#[cfg(test)]
mod tests;
