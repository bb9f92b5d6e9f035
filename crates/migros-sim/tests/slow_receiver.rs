//! A receiver slower than its sender (a debug daemon, a loaded machine):
//! perftest's `ib_send_bw -b` shape (64 KiB SENDs, 128 outstanding, both
//! directions, ACK timeout 14 = 67 ms, retry_cnt 7) between two hosts that
//! handle one datagram every `per_datagram`. The transfer must complete
//! without RetryExcErr, and what gets resent must stay a small fraction of
//! what is sent: a timeout resends the oldest packet, not a whole window.

use std::time::Duration;

use migros_sim::support::{default_cap, poll_all, rc_pair, wr, Endpoint, RcOptions};
use migros_sim::{Filter, Rule, Sim, SlowReceiver};
use migros_transport::{Mtu, QpCap, WcStatus};

const MSG: usize = 64 * 1024;
const DEPTH: usize = 128;

struct Side {
    ep: Endpoint,
    posted: usize,
    sent: usize,
    received: usize,
}

impl Side {
    fn new(ep: Endpoint) -> Side {
        Side {
            ep,
            posted: 0,
            sent: 0,
            received: 0,
        }
    }

    /// Keeps `DEPTH` sends outstanding until `total` were posted.
    fn post(&mut self, sim: &mut Sim, total: usize) {
        while self.posted < total && self.posted - self.sent < DEPTH {
            let wr = wr::send(self.posted as u64, self.ep.tx.sges(0, MSG));
            self.ep.post_send(sim, wr).expect("post_send");
            self.posted += 1;
        }
    }

    /// Takes completions, reposts receives; panics on an error completion.
    fn poll(&mut self, sim: &mut Sim) {
        for wc in poll_all(sim, self.ep.owner, self.ep.send_cq) {
            assert_eq!(
                wc.status,
                WcStatus::Success,
                "send {wc:?} at {:?}",
                sim.now()
            );
            self.sent += 1;
        }
        for wc in poll_all(sim, self.ep.owner, self.ep.recv_cq) {
            assert_eq!(
                wc.status,
                WcStatus::Success,
                "recv {wc:?} at {:?}",
                sim.now()
            );
            assert_eq!(wc.byte_len as usize, MSG);
            self.received += 1;
            self.ep.recv(sim, wc.wr_id, 0, MSG);
        }
    }
}

fn options() -> RcOptions {
    RcOptions {
        mtu: Mtu::Mtu4096,
        timeout: 14,
        retry_cnt: 7,
        rnr_retry: 7,
        buf_len: MSG,
        sq_sig_all: true,
        cap: QpCap {
            max_send_wr: DEPTH as u32,
            max_recv_wr: 512,
            ..default_cap()
        },
        ..RcOptions::default()
    }
}

struct Outcome {
    elapsed: Duration,
    data_packets: u64,
    retransmits: u64,
    timeouts: u64,
    overflows: u64,
}

/// `total` 64 KiB SENDs each way between two slow receivers; `loss` of
/// the datagrams dropped on the wire.
fn run(seed: u64, slow: SlowReceiver, total: usize, loss: f64) -> Outcome {
    let mut sim = Sim::new(seed);
    let a = sim.add_node();
    let b = sim.add_node();
    sim.set_slow_receiver(a, Some(slow));
    sim.set_slow_receiver(b, Some(slow));
    if loss > 0.0 {
        sim.add_rule(Rule::drop(Filter::any(), loss));
    }
    let opts = options();
    let (ea, eb) = rc_pair(&mut sim, a, b, &opts);
    let mut sides = [Side::new(ea), Side::new(eb)];
    for s in &mut sides {
        for i in 0..512 {
            s.ep.recv(&mut sim, i, 0, MSG);
        }
    }
    let deadline = sim.now() + Duration::from_secs(120);
    loop {
        for s in &mut sides {
            s.poll(&mut sim);
            s.post(&mut sim, total);
        }
        if sides.iter().all(|s| s.sent == total && s.received == total) {
            break;
        }
        assert!(
            sim.now() < deadline,
            "no end by {:?}: sent {}/{} received {}/{}",
            sim.now(),
            sides[0].sent,
            sides[1].sent,
            sides[0].received,
            sides[1].received
        );
        sim.run_for(Duration::from_micros(500));
    }
    let mut out = Outcome {
        elapsed: sim.elapsed(),
        data_packets: (2 * total * MSG.div_ceil(4096)) as u64,
        retransmits: 0,
        timeouts: 0,
        overflows: sim.rx_overflows(a) + sim.rx_overflows(b),
    };
    for (node, s) in [(a, &sides[0]), (b, &sides[1])] {
        let c = sim.device(node).qp_counters(s.ep.qpn).expect("qp counters");
        out.retransmits += c.retransmits;
        out.timeouts += c.timeouts;
    }
    out
}

/// 10 datagrams per ms (40 MB/s at MTU 4096) each way, a socket-sized
/// queue: nothing is lost, the receiver is only slow.
#[test]
fn slow_receivers_complete_without_spurious_resends() {
    let slow = SlowReceiver {
        per_datagram: Duration::from_micros(100),
        queue_bytes: 8 << 20,
    };
    let o = run(1, slow, 300, 0.0);
    eprintln!(
        "slow: {:?}, {} data packets, {} retransmits, {} timeouts, {} overflows",
        o.elapsed, o.data_packets, o.retransmits, o.timeouts, o.overflows
    );
    assert_eq!(o.timeouts, 0, "ACKs were only late, never missing");
    assert_eq!(o.retransmits, 0);
}

/// The same receivers with a queue smaller than a window (it overflows)
/// and loss on the wire: packets are lost and resent, but a loss shrinks
/// the window instead of resending it whole again and again (before the
/// congestion window, go-back-N resent each data packet 26 times here).
#[test]
fn slow_receivers_with_overflow_and_loss_complete() {
    let slow = SlowReceiver {
        per_datagram: Duration::from_micros(100),
        queue_bytes: 256 << 10,
    };
    for (seed, loss) in [(1, 0.0), (2, 0.001), (3, 0.01)] {
        let o = run(seed, slow, 150, loss);
        eprintln!(
            "seed {seed} loss {loss}: {:?}, {} data packets, {} retransmits, {} timeouts, {} overflows",
            o.elapsed, o.data_packets, o.retransmits, o.timeouts, o.overflows
        );
        assert!(
            o.retransmits * 2 < o.data_packets,
            "seed {seed}: {} retransmits for {} data packets",
            o.retransmits,
            o.data_packets
        );
    }
}
