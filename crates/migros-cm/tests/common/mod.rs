//! A virtual-time network of CM agents with seeded faults, and scripted
//! applications on top (in the style of migros-sim: time only moves when
//! the simulation says so, every run with the same seed is identical, and
//! the faults a test asked for are counted so it can assert they happened).
#![allow(dead_code)] // each test file uses a part

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use migros_cm::{Agent, AgentConfig, Instant};
use migros_proto::cm::{AcceptParams, CmEvent, CmQpType, ConnectParams, PortSpace};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What the wire does to each MAD.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability a MAD is lost.
    pub drop: f64,
    /// Probability a MAD arrives twice.
    pub duplicate: f64,
    /// Probability a MAD is held back by up to `jitter` (so later MADs
    /// overtake it).
    pub reorder: f64,
    pub jitter: Duration,
}

/// What the faults did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
}

/// How an application answers its connection manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Accept every request after `delay` (of virtual time).
    Accept { delay: Duration },
    /// Reject every request with private data `[0xab; 4]`.
    Reject,
    /// Do nothing with requests.
    Ignore,
}

pub struct Node {
    pub addr: IpAddr,
    pub agent: Agent,
    /// Every event, with the virtual time it arrived.
    pub events: Vec<(Instant, CmEvent)>,
    pub policy: Policy,
    /// Send the RTU as soon as the REP arrives.
    pub auto_establish: bool,
    /// Disconnect right after ESTABLISHED (both sides' events).
    pub disconnect_on_established: bool,
    /// Answer DISCONNECTED with a disconnect (as rping/ucmatose do).
    pub disconnect_on_disconnected: bool,
    /// Everything the node's address receives is lost.
    pub deaf: bool,
    pending_accepts: Vec<(Instant, u32)>,
}

pub const OWNER: u64 = 77;
pub const QPN_BASE: u32 = 0x100;

pub struct Net {
    pub nodes: Vec<Node>,
    pub now: Instant,
    rng: SmallRng,
    pub faults: Faults,
    pub counts: FaultCounts,
    latency: Duration,
    /// (deliver at, sequence) → (destination node, source address, mad)
    flight: BTreeMap<(Instant, u64), (usize, IpAddr, [u8; 256])>,
    seq: u64,
}

pub fn addr(i: usize) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 7, i as u8 + 1))
}

impl Net {
    pub fn new(n: usize, seed: u64, faults: Faults) -> Net {
        let nodes = (0..n)
            .map(|i| Node {
                addr: addr(i),
                agent: Agent::new(AgentConfig {
                    addr: addr(i),
                    node_guid: 0x0200_5eff_fe00_0000 | i as u64,
                    ca_ack_delay: 15,
                    max_mtu: 5,
                    seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                }),
                events: Vec::new(),
                policy: Policy::Accept {
                    delay: Duration::ZERO,
                },
                auto_establish: true,
                disconnect_on_established: false,
                disconnect_on_disconnected: true,
                deaf: false,
                pending_accepts: Vec::new(),
            })
            .collect();
        Net {
            nodes,
            now: Instant::from_nanos(1_000_000_000),
            rng: SmallRng::seed_from_u64(seed),
            faults,
            counts: FaultCounts::default(),
            latency: Duration::from_micros(50),
            flight: BTreeMap::new(),
            seq: 0,
        }
    }

    fn index(&self, a: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == a)
    }

    /// Binds node `i`'s address and `port` (0: any) in the port space of
    /// `qp_type` (UDP for UD, TCP otherwise); the bind's id.
    fn bind(&mut self, i: usize, port: u16, qp_type: CmQpType) -> u32 {
        let ps = if qp_type == CmQpType::Ud {
            PortSpace::Udp
        } else {
            PortSpace::Tcp
        };
        let a = self.nodes[i].addr;
        let (bind, _) = self.nodes[i]
            .agent
            .bind(OWNER, ps, Some(a), port, false)
            .expect("bind");
        bind
    }

    /// Binds and listens on `port` (TCP port space, RC) at node `i`.
    pub fn listen(&mut self, i: usize, port: u16, qp_type: CmQpType) -> u32 {
        let bind = self.bind(i, port, qp_type);
        self.nodes[i]
            .agent
            .listen(OWNER, bind, qp_type)
            .expect("listen")
    }

    /// Connects node `i` to `j`:`port`; returns the connection id.
    pub fn connect(&mut self, i: usize, j: usize, port: u16, qp_type: CmQpType, pd: &[u8]) -> u32 {
        let bind = self.bind(i, 0, qp_type);
        let a = self.nodes[i].addr;
        let p = ConnectParams {
            bind,
            src: a,
            dst: std::net::SocketAddr::new(self.nodes[j].addr, port),
            qp_type,
            qpn: QPN_BASE + self.seq as u32 % 1000 + 1000 * i as u32,
            responder_resources: 4,
            initiator_depth: 4,
            flow_control: true,
            retry_count: 7,
            rnr_retry_count: 7,
            srq: false,
            path_mtu: 3,
            hop_limit: 64,
            traffic_class: 0,
            packet_life_time: 18,
            private_data: pd.to_vec(),
        };
        self.seq += 1;
        let now = self.now;
        let c = self.nodes[i]
            .agent
            .connect(now, OWNER, &p)
            .expect("connect");
        self.pump();
        c.conn
    }

    /// Moves MADs from every agent into flight, events to the nodes, and
    /// lets the applications react; repeats until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].agent.poll_transmit() {
                    moved = true;
                    self.launch(i, t.dst, t.mad);
                }
                while let Some((_, ev)) = self.nodes[i].agent.poll_event() {
                    moved = true;
                    let now = self.now;
                    self.nodes[i].events.push((now, ev.clone()));
                    self.react(i, ev);
                }
                let now = self.now;
                let due: Vec<u32> = self.nodes[i]
                    .pending_accepts
                    .iter()
                    .filter(|(t, _)| *t <= now)
                    .map(|(_, c)| *c)
                    .collect();
                self.nodes[i].pending_accepts.retain(|(t, _)| *t > now);
                for c in due {
                    moved = true;
                    self.accept(i, c);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn accept(&mut self, i: usize, conn: u32) {
        let now = self.now;
        let qpn = 0x50_0000 + conn % 0x1000;
        let _ = self.nodes[i].agent.accept(
            now,
            OWNER,
            conn,
            &AcceptParams {
                qpn,
                responder_resources: 4,
                initiator_depth: 4,
                flow_control: true,
                rnr_retry_count: 7,
                srq: false,
                qkey: 0x0123_4567,
                private_data: b"accepted".to_vec(),
            },
        );
    }

    fn react(&mut self, i: usize, ev: CmEvent) {
        let now = self.now;
        let node = &mut self.nodes[i];
        match ev {
            CmEvent::ConnectRequest { conn, .. } | CmEvent::SidrRequest { conn, .. } => {
                match node.policy {
                    Policy::Accept { delay } => node.pending_accepts.push((now + delay, conn)),
                    Policy::Reject => {
                        node.agent
                            .reject(now, OWNER, conn, 0, &[0xab; 4])
                            .expect("reject");
                    }
                    Policy::Ignore => {}
                }
            }
            CmEvent::ConnectResponse { conn, .. } if node.auto_establish => {
                node.agent.establish(OWNER, conn).expect("establish");
                if node.disconnect_on_established {
                    node.agent.disconnect(now, OWNER, conn).expect("disconnect");
                }
            }
            CmEvent::Established { conn } if node.disconnect_on_established => {
                node.agent.disconnect(now, OWNER, conn).expect("disconnect");
            }
            CmEvent::Disconnected { conn, .. } if node.disconnect_on_disconnected => {
                node.agent.disconnect(now, OWNER, conn).expect("disconnect");
            }
            _ => {}
        }
    }

    fn launch(&mut self, from: usize, dst: IpAddr, mad: [u8; 256]) {
        self.counts.sent += 1;
        let Some(to) = self.index(dst) else {
            return;
        };
        if self.nodes[to].deaf || self.rng.gen_bool(self.faults.drop) {
            self.counts.dropped += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) {
            self.counts.duplicated += 1;
            2
        } else {
            1
        };
        let src = self.nodes[from].addr;
        for _ in 0..copies {
            let mut at = self.now + self.latency;
            if !self.faults.jitter.is_zero() && self.rng.gen_bool(self.faults.reorder) {
                self.counts.delayed += 1;
                let extra = self.rng.gen_range(0..self.faults.jitter.as_nanos() as u64);
                at += Duration::from_nanos(extra);
            }
            self.seq += 1;
            self.flight.insert((at, self.seq), (to, src, mad));
        }
    }

    /// The next moment something happens.
    fn next_time(&self) -> Option<Instant> {
        let flight = self.flight.keys().next().map(|(t, _)| *t);
        let timers = self
            .nodes
            .iter()
            .filter_map(|n| n.agent.poll_timeout())
            .min();
        let accepts = self
            .nodes
            .iter()
            .flat_map(|n| n.pending_accepts.iter().map(|(t, _)| *t))
            .min();
        [flight, timers, accepts].into_iter().flatten().min()
    }

    /// Runs until nothing is left to happen or `limit` of virtual time
    /// has passed.
    pub fn run_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        self.pump();
        while let Some(t) = self.next_time() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            let now = self.now;
            while let Some((&key, _)) = self.flight.iter().next() {
                if key.0 > now {
                    break;
                }
                let (to, src, mad) = self.flight.remove(&key).expect("present");
                self.nodes[to]
                    .agent
                    .handle_mad(now, src, &mad)
                    .expect("agents send valid MADs");
            }
            for n in &mut self.nodes {
                n.agent.handle_timeout(now);
            }
            self.pump();
        }
        self.now = self.now.max(end.min(self.now + limit));
    }

    /// Events of node `i` that match `f`.
    pub fn count(&self, i: usize, f: impl Fn(&CmEvent) -> bool) -> usize {
        self.nodes[i].events.iter().filter(|(_, e)| f(e)).count()
    }

    /// Node 0 connects to node 1's RC listener on `port`, then `run` of
    /// virtual time: node 1 must report exactly one established connection
    /// (`seed` names the run). Returns the connection ids (active, passive).
    pub fn connect_established(&mut self, port: u16, run: Duration, seed: u64) -> (u32, u32) {
        self.listen(1, port, CmQpType::Rc);
        let a = self.connect(0, 1, port, CmQpType::Rc, &[]);
        self.run_for(run);
        assert_eq!(self.count(1, is_established), 1, "seed {seed}");
        let p = self.nodes[1]
            .events
            .iter()
            .find_map(|(_, e)| match e {
                CmEvent::Established { conn } => Some(*conn),
                _ => None,
            })
            .unwrap();
        (a, p)
    }
}

pub fn is_established(e: &CmEvent) -> bool {
    matches!(e, CmEvent::Established { .. })
}
pub fn is_response(e: &CmEvent) -> bool {
    matches!(e, CmEvent::ConnectResponse { .. })
}
pub fn is_request(e: &CmEvent) -> bool {
    matches!(e, CmEvent::ConnectRequest { .. })
}
pub fn is_disconnected(e: &CmEvent) -> bool {
    matches!(e, CmEvent::Disconnected { .. })
}
pub fn is_timewait_exit(e: &CmEvent) -> bool {
    matches!(e, CmEvent::TimewaitExit { .. })
}
