//! Unit tests of the simulated network: links, filters, rules and captures.

use super::*;
use rand::SeedableRng;
use std::net::Ipv4Addr;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

fn net() -> (Network, SmallRng) {
    let mut n = Network::new(LinkConfig::default());
    for i in 1..=3 {
        n.add_host(ip(i));
    }
    (n, SmallRng::seed_from_u64(7))
}

fn dgram(src: u8, dst: u8, opcode: u8, tag: u8) -> Datagram {
    Datagram {
        src: ip(src),
        src_port: 4791,
        dst: ip(dst),
        bytes: vec![opcode, tag, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

fn drain(n: &mut Network) -> Vec<(Instant, Datagram)> {
    let mut out = Vec::new();
    while let Some(d) = n.pop_due(Instant::from_nanos(u64::MAX)) {
        out.push(d);
    }
    out
}

#[test]
fn delivers_in_order_after_latency_and_serialization() {
    let (mut n, mut rng) = net();
    for tag in 0..3 {
        assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, tag)), 1);
    }
    let got = drain(&mut n);
    let tags: Vec<u8> = got.iter().map(|(_, d)| d.bytes[1]).collect();
    assert_eq!(tags, [0, 1, 2]);
    let ser = serialization_delay(12 + FRAME_OVERHEAD, 10_000_000_000);
    assert_eq!(got[0].0, Instant::ZERO + ser + Duration::from_micros(5));
    assert_eq!(got[2].0, Instant::ZERO + ser * 3 + Duration::from_micros(5));
    assert_eq!(n.counters(ip(1)).sent, 3);
    assert_eq!(n.counters(ip(2)).delivered, 3);
}

#[test]
fn capture_records_what_was_sent_and_whether_it_was_dropped() {
    let (mut n, mut rng) = net();
    let id = n.start_capture(Filter::any().opcode(OPCODE_RC_ACK));
    n.add_rule(Rule::drop_next(Filter::any(), 1));
    n.send(Instant::ZERO, &mut rng, dgram(1, 2, OPCODE_RC_ACK, 0));
    n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 1));
    n.send(Instant::ZERO, &mut rng, dgram(2, 1, OPCODE_RC_ACK, 2));
    let seen = n.captured(id);
    assert_eq!(seen.len(), 2);
    assert!(seen[0].dropped);
    assert!(!seen[1].dropped);
    assert_eq!(seen[1].opcode(), Some(OPCODE_RC_ACK));
    assert_eq!(n.stop_capture(id).len(), 2);
    assert!(n.captured(id).is_empty());
}

#[test]
fn pop_due_respects_now() {
    let (mut n, mut rng) = net();
    n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0));
    assert!(n.pop_due(Instant::from_nanos(1000)).is_none());
    let at = n.next_delivery().expect("one in flight");
    assert!(n.pop_due(at).is_some());
    assert_eq!(n.in_flight(), 0);
}

#[test]
fn serialization_of_one_mebibyte_at_10g() {
    let d = serialization_delay(1 << 20, 10_000_000_000);
    assert_eq!(d, Duration::from_nanos(838_861));
}

#[test]
fn unroutable_is_counted_and_dropped() {
    let (mut n, mut rng) = net();
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 9, 4, 0)), 0);
    assert_eq!(n.counters(ip(1)).unroutable, 1);
    assert_eq!(n.in_flight(), 0);
}

#[test]
fn drop_all_and_remove_rule() {
    let (mut n, mut rng) = net();
    let id = n.add_rule(Rule::drop(Filter::any(), 1.0));
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 0);
    assert_eq!(n.counters(ip(1)).dropped, 1);
    assert!(n.remove_rule(id).is_some());
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 1);
}

#[test]
fn drop_probability_is_roughly_respected_and_seeded() {
    let run = |seed| {
        let (mut n, _) = net();
        let mut rng = SmallRng::seed_from_u64(seed);
        n.add_rule(Rule::drop(Filter::any(), 0.05));
        (0..10_000)
            .map(|i| n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, i as u8)))
            .collect::<Vec<_>>()
    };
    let a = run(1);
    let dropped = a.iter().filter(|&&c| c == 0).count();
    assert!((350..650).contains(&dropped), "dropped {dropped}");
    assert_eq!(a, run(1), "same seed, same fate");
    assert_ne!(a, run(2));
}

#[test]
fn opcode_filter_drops_only_resume() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::drop(Filter::any().opcode(OPCODE_RESUME), 1.0));
    assert_eq!(
        n.send(Instant::ZERO, &mut rng, dgram(1, 2, OPCODE_RESUME, 0)),
        0
    );
    assert_eq!(
        n.send(Instant::ZERO, &mut rng, dgram(1, 2, OPCODE_RC_ACK, 0)),
        1
    );
    let mut empty = dgram(1, 2, 0, 0);
    empty.bytes.clear();
    assert_eq!(n.send(Instant::ZERO, &mut rng, empty), 1);
}

#[test]
fn filter_by_src_and_dst() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::drop(Filter::between(ip(1), ip(2)), 1.0));
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 0);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(2, 1, 4, 0)), 1);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 3, 4, 0)), 1);
}

#[test]
fn partition_cuts_both_directions_only_between_its_pair() {
    let (mut n, mut rng) = net();
    let id = n.add_rule(Rule::partition(ip(1), ip(2)));
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 0);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(2, 1, 4, 0)), 0);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 3, 4, 0)), 1);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(3, 2, 4, 0)), 1);
    n.remove_rule(id);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 1);
}

#[test]
fn drop_next_is_exact() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::drop_next(Filter::from(ip(1)), 3));
    let fates: Vec<usize> = (0..6)
        .map(|i| n.send(Instant::ZERO, &mut rng, dgram(1 + (i % 2), 3, 4, i)))
        .collect();
    // Only datagrams from .1 count down the rule.
    assert_eq!(fates, [0, 1, 0, 1, 0, 1]);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 3, 4, 9)), 1);
}

#[test]
fn delay_stays_in_range() {
    let (mut n, mut rng) = net();
    let extra = Duration::from_micros(10)..=Duration::from_micros(20);
    n.add_rule(Rule::new(Filter::any(), Action::Delay { extra }));
    for i in 0..100 {
        let now = Instant::from_nanos(i * 1_000_000);
        n.send(now, &mut rng, dgram(1, 2, 4, 0));
        let (at, _) = n.pop_due(Instant::from_nanos(u64::MAX)).expect("sent");
        let d = at.saturating_duration_since(now);
        assert!(
            d >= Duration::from_micros(15) && d <= Duration::from_micros(26),
            "{d:?}"
        );
    }
}

#[test]
fn reorder_lets_later_datagrams_overtake() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::new(
        Filter::any(),
        Action::Reorder {
            probability: 0.3,
            delay: Duration::from_micros(50),
        },
    ));
    for tag in 0..100 {
        n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, tag));
    }
    let tags: Vec<u8> = drain(&mut n).iter().map(|(_, d)| d.bytes[1]).collect();
    let mut sorted = tags.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<u8>>(), "nothing lost");
    assert_ne!(tags, sorted, "some reordered");
}

#[test]
fn duplicate_delivers_two_identical_copies() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::new(
        Filter::any(),
        Action::Duplicate { probability: 1.0 },
    ));
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 42)), 2);
    let got = drain(&mut n);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, got[1].1);
    assert_eq!(n.counters(ip(1)).duplicated, 1);
    assert_eq!(n.counters(ip(2)).delivered, 2);
}

#[test]
fn corrupt_flips_exactly_one_bit() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::new(
        Filter::any(),
        Action::Corrupt { probability: 1.0 },
    ));
    for tag in 0..50 {
        let orig = dgram(1, 2, 4, tag);
        n.send(Instant::ZERO, &mut rng, orig.clone());
        let (_, got) = n.pop_due(Instant::from_nanos(u64::MAX)).expect("sent");
        let flipped: u32 = orig
            .bytes
            .iter()
            .zip(&got.bytes)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1);
    }
    assert_eq!(n.counters(ip(1)).corrupted, 50);
}

#[test]
fn rules_compose_in_order() {
    let (mut n, mut rng) = net();
    n.add_rule(Rule::new(
        Filter::any(),
        Action::Duplicate { probability: 1.0 },
    ));
    n.add_rule(Rule::drop_next(Filter::any(), 1));
    // The drop wins over the earlier duplicate: nothing is scheduled.
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 0);
    assert_eq!(n.send(Instant::ZERO, &mut rng, dgram(1, 2, 4, 0)), 2);
}

#[test]
fn links_are_per_sender() {
    let (mut n, mut rng) = net();
    let big = |src| Datagram {
        src: ip(src),
        src_port: 4791,
        dst: ip(3),
        bytes: vec![4; 4096],
    };
    n.send(Instant::ZERO, &mut rng, big(1));
    n.send(Instant::ZERO, &mut rng, big(2));
    let got = drain(&mut n);
    assert_eq!(got[0].0, got[1].0, "two senders do not share a link");
}
