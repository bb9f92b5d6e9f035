//! Live migration while traffic runs: one end, both ends at once, a whole
//! node, a rolled-back checkpoint, a lost RESUME. Every message arrives
//! byte-exact, exactly once, in order.

use std::time::Duration;

use migros_sim::net::OPCODE_RESUME;
use migros_sim::support::{assert_buf_eq, assert_no_completion, rc_pair, wr, Endpoint, RcOptions};
use migros_sim::{Filter, NodeId, Rule, Sim};
use migros_transport::{Mtu, WcStatus};

const DEADLINE: Duration = Duration::from_secs(30);
const DOWNTIME: Duration = Duration::from_millis(2);
const MSG: usize = 4096;

struct Stream {
    data: Vec<Vec<u8>>,
}

/// Posts `n` receives on `b` and `n` SENDs of `MSG` bytes on `a`.
fn start_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, n: usize, seed: u64) -> Stream {
    let mut data = Vec::new();
    for i in 0..n {
        b.recv(sim, i as u64, i * MSG, MSG);
        data.push(a.fill_tx(sim, i * MSG, MSG, seed + i as u64));
        a.post_send(sim, wr::send(i as u64, a.tx.sges(i * MSG, MSG)))
            .expect("posted");
    }
    Stream { data }
}

fn finish_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, s: &Stream) {
    let n = s.data.len();
    let r = b.expect_recv(sim, n, DEADLINE);
    let c = a.expect_send(sim, n, DEADLINE);
    for i in 0..n {
        assert_eq!((r[i].wr_id, r[i].status), (i as u64, WcStatus::Success));
        assert_eq!(r[i].byte_len as usize, MSG);
        assert_eq!((c[i].wr_id, c[i].status), (i as u64, WcStatus::Success));
        assert_buf_eq(sim, &b.rx, i * MSG, &s.data[i]);
    }
    assert_no_completion(sim, b.owner, b.recv_cq, Duration::from_millis(20));
    assert_no_completion(sim, a.owner, a.send_cq, Duration::ZERO);
}

fn setup(seed: u64, nodes: usize) -> (Sim, Vec<NodeId>, RcOptions) {
    let mut sim = Sim::new(seed);
    let nodes = (0..nodes).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        mtu: Mtu::Mtu1024,
        buf_len: 64 * MSG,
        ..RcOptions::default()
    };
    (sim, nodes, opts)
}

#[test]
fn migrate_receiver_mid_stream() {
    let (mut sim, n, opts) = setup(0x3000, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 1);
    sim.run_for(Duration::from_micros(40));
    let report = sim
        .migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    assert_eq!(report.qpns, [b.qpn]);
    assert!(report.image_bytes > 0);
    assert_eq!(b.node(&sim), n[2]);
    finish_stream(&mut sim, &a, &b, &s);
    let pauses = sim
        .device(n[0])
        .qp_counters(a.qpn)
        .expect("qp exists")
        .pauses;
    assert!(pauses >= 1, "the sender was paused by the tombstone");
    assert_eq!(b.query(&sim).expect("restored").dest_qp_num, a.qpn);
}

#[test]
fn migrate_sender_mid_stream() {
    let (mut sim, n, opts) = setup(0x3010, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 2);
    sim.run_for(Duration::from_micros(40));
    sim.migrate_owner(a.owner, n[0], n[2], DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    let attr = b.query(&sim).expect("qp exists");
    assert_eq!(
        attr.dest_addr,
        Some(sim.addr(n[2])),
        "RESUME moved the peer"
    );
}

#[test]
fn migrate_both_ends_at_once() {
    let (mut sim, n, opts) = setup(0x3020, 4);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 3);
    sim.run_for(Duration::from_micros(40));
    sim.migrate_two((a.owner, n[0], n[2]), (b.owner, n[1], n[3]), DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
    assert_eq!(a.query(&sim).expect("qp").dest_addr, Some(sim.addr(n[3])));
    assert_eq!(b.query(&sim).expect("qp").dest_addr, Some(sim.addr(n[2])));
}

#[test]
fn migrate_whole_node_with_several_connections() {
    let (mut sim, n, opts) = setup(0x3030, 3);
    let pairs: Vec<_> = (0..4)
        .map(|_| rc_pair(&mut sim, n[0], n[1], &opts))
        .collect();
    let streams: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| start_stream(&mut sim, a, b, 16, 100 * i as u64))
        .collect();
    sim.run_for(Duration::from_micros(40));
    let reports = sim.migrate_node(n[1], n[2], DOWNTIME).expect("migrated");
    assert_eq!(reports.len(), 4);
    assert!(sim.owners_on(n[1]).is_empty());
    for ((a, b), s) in pairs.iter().zip(&streams) {
        finish_stream(&mut sim, a, b, s);
    }
}

#[test]
fn migrate_under_loss() {
    let (mut sim, n, opts) = setup(0x3040, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    sim.add_rule(Rule::drop(Filter::any(), 0.05));
    let s = start_stream(&mut sim, &a, &b, 64, 4);
    sim.run_for(Duration::from_micros(60));
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
}

#[test]
fn migrate_there_and_back() {
    let (mut sim, n, opts) = setup(0x3050, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 64, 5);
    sim.run_for(Duration::from_micros(30));
    let first = sim
        .migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    sim.run_for(Duration::from_micros(30));
    sim.release_tombstones(&first);
    sim.migrate_owner(b.owner, n[2], n[1], DOWNTIME)
        .expect("migrated back");
    finish_stream(&mut sim, &a, &b, &s);
}

#[test]
fn lost_resume_is_repeated() {
    let (mut sim, n, opts) = setup(0x3060, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    sim.add_rule(Rule::drop_next(Filter::any().opcode(OPCODE_RESUME), 2));
    let s = start_stream(&mut sim, &a, &b, 32, 6);
    sim.run_for(Duration::from_micros(40));
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    finish_stream(&mut sim, &a, &b, &s);
}

#[test]
fn reads_and_atomics_survive_migration_of_the_responder() {
    let (mut sim, n, opts) = setup(0x3070, 3);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let src = b.fill_rx(&mut sim, 0, 32 * MSG, 7);
    let counter = b.rx.at(40 * MSG);
    for i in 0..32 {
        let sges = a.tx.sges(i * MSG, MSG);
        a.post_send(
            &mut sim,
            wr::read(2 * i as u64, sges, b.rx.at(i * MSG), b.rx.rkey),
        )
        .expect("posted");
        let result = a.tx.sge(40 * MSG + 8 * i, 8);
        a.post_send(
            &mut sim,
            wr::fetch_add(2 * i as u64 + 1, result, counter, b.rx.rkey, 1),
        )
        .expect("posted");
    }
    sim.run_for(Duration::from_micros(30));
    sim.migrate_owner(b.owner, n[1], n[2], DOWNTIME)
        .expect("migrated");
    let c = a.expect_send(&mut sim, 64, DEADLINE);
    for (i, wc) in c.iter().enumerate() {
        assert_eq!((wc.wr_id, wc.status), (i as u64, WcStatus::Success));
    }
    assert_buf_eq(&sim, &a.tx, 0, &src);
    for i in 0..32u64 {
        let got = sim.read_mem(a.owner, a.tx.at(40 * MSG + 8 * i as usize), 8);
        assert_eq!(got, i.to_le_bytes(), "fetch_add {i} ran exactly once");
    }
    assert_eq!(sim.read_mem(b.owner, counter, 8), 32u64.to_le_bytes());
}

#[test]
fn rolled_back_checkpoint_resumes_on_the_source() {
    let (mut sim, n, opts) = setup(0x3080, 2);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let s = start_stream(&mut sim, &a, &b, 32, 8);
    sim.run_for(Duration::from_micros(40));
    let bytes = sim
        .checkpoint_and_roll_back(b.owner, DOWNTIME)
        .expect("checkpoint");
    assert!(bytes > 0);
    assert_eq!(b.node(&sim), n[1]);
    finish_stream(&mut sim, &a, &b, &s);
}
