//! The simulated live-migration demo (`./scripts/demo.sh` until the daemon
//! exists): node A streams verified SENDs to node B over a lossy virtual
//! network; halfway through, B's process (its QP, CQs, MRs and memory)
//! migrates to node C. A keeps its connection, sees a pause, and every
//! message arrives once, in order, byte-exact.

use std::time::Duration;

use migros_sim::support::{pattern, rc_pair, wr, RcOptions};
use migros_sim::{Filter, Rule, Sim};
use migros_transport::{MigrationState, Mtu, WcStatus};

const MESSAGES: usize = 1000;
const MSG: usize = 16 * 1024;
const WINDOW: usize = 64;
const BUCKET: Duration = Duration::from_millis(1);

fn main() {
    let mut sim = Sim::new(2021);
    let (a_node, b_node, c_node) = (sim.add_node(), sim.add_node(), sim.add_node());
    let opts = RcOptions {
        mtu: Mtu::Mtu4096,
        buf_len: WINDOW * MSG,
        timeout: 12,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, a_node, b_node, &opts);
    sim.add_rule(Rule::drop(Filter::any(), 0.002));
    println!(
        "migros simulated demo: {MESSAGES} SENDs of {} KiB from A ({}) to B ({}), 0.2 % loss",
        MSG / 1024,
        sim.addr(a_node),
        sim.addr(b_node)
    );
    println!(
        "B's process migrates to C ({}) after half of them\n",
        sim.addr(c_node)
    );

    let mut posted = 0usize;
    let mut received = 0usize;
    let mut completed = 0usize;
    let mut migrated = false;
    let mut completion_times = Vec::new();
    let mut migration_at = None;
    while completed < MESSAGES {
        // Keep WINDOW messages in flight, each with its receive posted.
        while posted < MESSAGES && posted - completed < WINDOW {
            let slot = (posted % WINDOW) * MSG;
            b.recv(&mut sim, posted as u64, slot, MSG);
            let data = pattern(posted as u64, MSG);
            sim.write_mem(a.owner, a.tx.at(slot), &data);
            a.post_send(&mut sim, wr::send(posted as u64, a.tx.sges(slot, MSG)))
                .expect("post send");
            posted += 1;
        }
        sim.run_for(Duration::from_micros(20));
        for wc in b.poll_recv(&mut sim) {
            assert_eq!(
                (wc.wr_id, wc.status),
                (received as u64, WcStatus::Success),
                "receives in order"
            );
            let slot = (received % WINDOW) * MSG;
            let got = sim.read_mem(b.owner, b.rx.at(slot), MSG);
            assert_eq!(
                got,
                pattern(received as u64, MSG),
                "message {received} byte-exact"
            );
            received += 1;
        }
        for wc in a.poll_send(&mut sim) {
            assert_eq!(
                (wc.wr_id, wc.status),
                (completed as u64, WcStatus::Success),
                "sends in order"
            );
            completion_times.push(sim.elapsed());
            completed += 1;
        }
        if !migrated && completed >= MESSAGES / 2 {
            migrated = true;
            migration_at = Some(sim.elapsed());
            println!(
                "t={:>8.3} ms  freeze B, checkpoint, transfer (2 ms), restore on C, RESUME",
                ms(sim.elapsed())
            );
            let report = sim
                .migrate_owner(b.owner, b_node, c_node, Duration::from_millis(2))
                .expect("migration");
            println!(
                "t={:>8.3} ms  restored on C: {} QP(s), checkpoint image {} bytes",
                ms(sim.elapsed()),
                report.qpns.len(),
                report.image_bytes
            );
            let qpn = a.qpn;
            sim.run_until(Duration::from_millis(100), |s| {
                s.device(a_node)
                    .query_qp(qpn)
                    .map(|q| q.migration == MigrationState::Running)
                    .unwrap_or(false)
            });
        }
    }
    while received < MESSAGES {
        sim.run_for(Duration::from_micros(100));
        for wc in b.poll_recv(&mut sim) {
            assert_eq!((wc.wr_id, wc.status), (received as u64, WcStatus::Success));
            received += 1;
        }
    }

    println!(
        "\nA's completions per {} ms (each # is 8 messages):",
        BUCKET.as_millis()
    );
    let end = *completion_times.last().expect("completions");
    let buckets = (end.as_nanos() / BUCKET.as_nanos()) as usize + 1;
    let mut counts = vec![0usize; buckets];
    for t in &completion_times {
        counts[(t.as_nanos() / BUCKET.as_nanos()) as usize] += 1;
    }
    let mig_bucket = migration_at.map(|t| (t.as_nanos() / BUCKET.as_nanos()) as usize);
    for (i, n) in counts.iter().enumerate() {
        let mark = if Some(i) == mig_bucket {
            "  <- migration starts"
        } else {
            ""
        };
        println!(
            "{:>8.3} ms |{}{}",
            ms(BUCKET * i as u32),
            "#".repeat(n.div_ceil(8)),
            mark
        );
    }
    let pause = completion_times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let gbps = (MESSAGES * MSG * 8) as f64 / end.as_secs_f64() / 1e9;
    let c = sim.device(a_node).qp_counters(a.qpn).expect("a's qp");
    println!("\nall {MESSAGES} messages arrived once, in order, byte-exact");
    println!("longest pause A saw: {:.3} ms (virtual time)", ms(pause));
    println!("throughput: {gbps:.2} Gbit/s (virtual 10 Gbit/s links)");
    println!(
        "A's QP: {} packets sent, {} retransmitted, {} pauses, {} resumes",
        c.tx_packets, c.retransmits, c.pauses, c.resumes
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
