//! Property: a random mix of operations on one RC connection, over a
//! network with random faults, with the requester, the responder or both
//! migrated at random moments, ends exactly as a simple reference model
//! says: every receive buffer, READ destination and atomic result holds
//! the bytes the model computes, the atomic target went through the
//! model's value sequence, and both completion queues hold the model's
//! completions, each once, in order.
//!
//! The model is sequential: the responder executes requests in PSN order,
//! so the atomic target evolves as in a loop over the operations. Every
//! operation has its own memory (READ sources are never written), so no
//! result depends on when a retried READ is re-executed.

use std::time::Duration;

use migros_sim::support::{
    assert_buf_eq, poll_all, rc_pair, wait_completions, wr, Endpoint, RcOptions,
};
use migros_sim::{Action, Filter, NodeId, Rule, Sim};
use migros_transport::{Mtu, SendWr, WcOpcode, WcStatus};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// Nodes of each simulation: the two ends start on 0 and 1; migrations
/// go to a node where neither end lives.
const NODES: usize = 5;
/// Virtual time allowed for everything to complete.
const DEADLINE: Duration = Duration::from_secs(60);
/// Largest message.
const MAX_LEN: usize = 3 * 4096 + 100;
/// Each buffer holds every operation's region (at most `MAX_OPS` of them).
const MAX_OPS: usize = 24;
const BUF_LEN: usize = MAX_OPS * (MAX_LEN + 64) + 4096;
/// Offset of the atomic target in the responder's `rx`.
const ATOMIC_OFF: usize = BUF_LEN - 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    SendImm,
    Write,
    WriteImm,
    Read,
    FetchAdd,
    CmpSwap,
}

/// One work request of the mix.
#[derive(Debug, Clone)]
struct Op {
    kind: Kind,
    /// Data length (atomics: unused).
    len: usize,
    /// Immediate data, addend, or swap value.
    arg: u64,
    /// CMP_SWAP: whether the compare matches.
    hit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Requester,
    Responder,
    Both,
}

#[derive(Debug, Clone)]
struct Migration {
    /// Virtual time after the previous event (post or migration).
    after: Duration,
    who: Who,
    downtime: Duration,
    /// Picks the target node among the free ones.
    target: usize,
}

#[derive(Debug, Clone)]
struct Faults {
    loss: f64,
    reorder: f64,
    duplicate: f64,
    corrupt: f64,
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    mtu: Mtu,
    ops: Vec<Op>,
    faults: Faults,
    migrations: Vec<Migration>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Send),
        Just(Kind::SendImm),
        Just(Kind::Write),
        Just(Kind::WriteImm),
        Just(Kind::Read),
        Just(Kind::FetchAdd),
        Just(Kind::CmpSwap),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Lengths: zero, small, around an MTU, a few MTUs.
    let len = prop_oneof![
        1 => Just(0usize),
        3 => 1usize..300,
        3 => 200usize..5000,
        2 => 5000usize..=MAX_LEN,
    ];
    (kind(), len, any::<u64>(), any::<bool>()).prop_map(|(kind, len, arg, hit)| Op {
        kind,
        len,
        arg,
        hit,
    })
}

fn probability() -> impl Strategy<Value = f64> {
    prop_oneof![2 => Just(0.0), 1 => 0.0..0.05f64]
}

fn migration() -> impl Strategy<Value = Migration> {
    let who = prop_oneof![
        2 => Just(Who::Requester),
        2 => Just(Who::Responder),
        1 => Just(Who::Both),
    ];
    // Traffic takes tens of microseconds: 80 % of the migrations come
    // within 50 µs of the previous event, the rest up to 390 µs.
    let after = (0u64..100).prop_map(|x| {
        if x < 80 {
            x * 50 / 80
        } else {
            50 + (x - 80) * 17
        }
    });
    (after, who, 50u64..3000, any::<usize>()).prop_map(|(after, who, down, target)| Migration {
        after: Duration::from_micros(after),
        who,
        downtime: Duration::from_micros(down),
        target,
    })
}

fn case() -> impl Strategy<Value = Case> {
    let mtu = prop_oneof![
        Just(Mtu::Mtu256),
        Just(Mtu::Mtu512),
        Just(Mtu::Mtu1024),
        Just(Mtu::Mtu2048),
        Just(Mtu::Mtu4096),
    ];
    let faults = (probability(), probability(), probability(), probability()).prop_map(
        |(loss, reorder, duplicate, corrupt)| Faults {
            loss,
            reorder,
            duplicate,
            corrupt,
        },
    );
    let migrations = prop_oneof![
        1 => Just(Vec::new()),
        2 => proptest::collection::vec(migration(), 1..=2),
    ];
    (
        any::<u64>(),
        mtu,
        proptest::collection::vec(op(), 1..=MAX_OPS),
        faults,
        migrations,
    )
        .prop_map(|(seed, mtu, ops, faults, migrations)| Case {
            seed,
            mtu,
            ops,
            faults,
            migrations,
        })
}

/// Where an operation's bytes live: `local` in the requester's `tx`
/// (source of SEND/WRITE, destination of READ and atomic results),
/// `remote` in the responder's `rx` (receive buffer, WRITE target, READ
/// source).
struct Placement {
    local: usize,
    remote: usize,
}

/// What the model expects of one operation.
struct Expect {
    /// Bytes that must end up at `remote` (SEND, WRITE) or `local` (READ).
    data: Vec<u8>,
    /// Atomics: the value returned.
    atomic_result: Option<u64>,
}

/// Installs the case's fault rules.
fn install_faults(sim: &mut Sim, f: &Faults) {
    if f.loss > 0.0 {
        sim.add_rule(Rule::drop(Filter::any(), f.loss));
    }
    if f.reorder > 0.0 {
        let action = Action::Reorder {
            probability: f.reorder,
            delay: Duration::from_micros(20),
        };
        sim.add_rule(Rule::new(Filter::any(), action));
    }
    if f.duplicate > 0.0 {
        let action = Action::Duplicate {
            probability: f.duplicate,
        };
        sim.add_rule(Rule::new(Filter::any(), action));
    }
    if f.corrupt > 0.0 {
        let action = Action::Corrupt {
            probability: f.corrupt,
        };
        sim.add_rule(Rule::new(Filter::any(), action));
    }
}

/// Moves the ends as `m` says, to nodes where neither lives.
fn migrate(sim: &mut Sim, a: &Endpoint, b: &Endpoint, m: &Migration) {
    let (na, nb) = (a.node(sim), b.node(sim));
    let free: Vec<NodeId> = sim.node_ids().filter(|&x| x != na && x != nb).collect();
    let t1 = free[m.target % free.len()];
    let t2 = free[(m.target + 1) % free.len()];
    let r = match m.who {
        Who::Requester => sim.migrate_owner(a.owner, na, t1, m.downtime).map(|_| ()),
        Who::Responder => sim.migrate_owner(b.owner, nb, t1, m.downtime).map(|_| ()),
        Who::Both => sim
            .migrate_two((a.owner, na, t1), (b.owner, nb, t2), m.downtime)
            .map(|_| ()),
    };
    if let Err(e) = r {
        panic!("migration {m:?} failed: {e}");
    }
}

/// What one case did besides matching the model.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    /// Migrations that came while work was outstanding.
    mid_traffic: usize,
    /// What the network did to the case's datagrams.
    net: migros_sim::net::NetCounters,
    /// Requests both devices sent again.
    retransmits: u64,
}

/// Runs one case and checks it against the model; panics on a mismatch.
fn run_case(c: &Case) -> Outcome {
    let mut sim = Sim::new(c.seed);
    let n: Vec<NodeId> = (0..NODES).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        mtu: c.mtu,
        timeout: 8,
        buf_len: BUF_LEN,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);

    // Lay out memory and compute the model.
    let init = c.seed.rotate_left(17) | 1;
    sim.write_mem(b.owner, b.rx.at(ATOMIC_OFF), &init.to_le_bytes());
    let mut value = init;
    let mut next = 0usize;
    let mut places = Vec::new();
    let mut expects = Vec::new();
    let mut wrs = Vec::new();
    let mut recvs = Vec::new(); // (op index, opcode, byte_len, imm)
    for (i, op) in c.ops.iter().enumerate() {
        let p = Placement {
            local: next,
            remote: next,
        };
        next += op.len.max(8) + 64;
        let id = i as u64;
        let imm = op.arg as u32;
        let (w, e): (SendWr, Expect) = match op.kind {
            Kind::Send | Kind::SendImm | Kind::Write | Kind::WriteImm => {
                let data = a.fill_tx(&mut sim, p.local, op.len, c.seed ^ id);
                let sges = a.tx.sges(p.local, op.len);
                let (remote, rkey) = (b.rx.at(p.remote), b.rx.rkey);
                let w = match op.kind {
                    Kind::Send => wr::send(id, sges),
                    Kind::SendImm => wr::send_imm(id, sges, imm),
                    Kind::Write => wr::write(id, sges, remote, rkey),
                    _ => wr::write_imm(id, sges, remote, rkey, imm),
                };
                match op.kind {
                    Kind::Send => recvs.push((i, WcOpcode::Recv, op.len, None)),
                    Kind::SendImm => recvs.push((i, WcOpcode::Recv, op.len, Some(imm))),
                    Kind::WriteImm => recvs.push((i, WcOpcode::RecvRdmaWithImm, op.len, Some(imm))),
                    _ => {}
                }
                (
                    w,
                    Expect {
                        data,
                        atomic_result: None,
                    },
                )
            }
            Kind::Read => {
                let data = b.fill_rx(&mut sim, p.remote, op.len, !c.seed ^ id);
                let w = wr::read(id, a.tx.sges(p.local, op.len), b.rx.at(p.remote), b.rx.rkey);
                (
                    w,
                    Expect {
                        data,
                        atomic_result: None,
                    },
                )
            }
            Kind::FetchAdd | Kind::CmpSwap => {
                let before = value;
                let result = a.tx.sge(p.local, 8);
                let target = b.rx.at(ATOMIC_OFF);
                let w = if op.kind == Kind::FetchAdd {
                    value = value.wrapping_add(op.arg);
                    wr::fetch_add(id, result, target, b.rx.rkey, op.arg)
                } else {
                    let compare = if op.hit { value } else { value ^ 1 };
                    if op.hit {
                        value = op.arg;
                    }
                    wr::cmp_swap(id, result, target, b.rx.rkey, compare, op.arg)
                };
                (
                    w,
                    Expect {
                        data: Vec::new(),
                        atomic_result: Some(before),
                    },
                )
            }
        };
        places.push(p);
        expects.push(e);
        wrs.push(w);
    }
    assert!(next <= ATOMIC_OFF, "layout fits");
    // Receives for the operations that consume one, in order; each has
    // room for exactly its message (WRITE_IMM's receive takes no data).
    for &(i, opcode, _, _) in &recvs {
        let len = if opcode == WcOpcode::Recv {
            c.ops[i].len
        } else {
            0
        };
        b.recv(&mut sim, i as u64, places[i].remote, len);
    }

    install_faults(&mut sim, &c.faults);
    for w in wrs {
        a.post_send(&mut sim, w).expect("posted");
    }
    let mut sends = Vec::new();
    let mut mid_traffic = 0;
    for m in &c.migrations {
        sim.run_for(m.after);
        sends.extend(poll_all(&mut sim, a.owner, a.send_cq));
        mid_traffic += usize::from(sends.len() < c.ops.len());
        migrate(&mut sim, &a, &b, m);
    }

    // Completions: every send WR once, in order; every receive once, in order.
    let want = c.ops.len().saturating_sub(sends.len());
    sends.extend(wait_completions(
        &mut sim, a.owner, a.send_cq, want, DEADLINE,
    ));
    assert_eq!(
        sends.len(),
        c.ops.len(),
        "send completions by the deadline: {sends:#?}"
    );
    for (i, (wc, op)) in sends.iter().zip(&c.ops).enumerate() {
        let opcode = match op.kind {
            Kind::Send | Kind::SendImm => WcOpcode::Send,
            Kind::Write | Kind::WriteImm => WcOpcode::RdmaWrite,
            Kind::Read => WcOpcode::RdmaRead,
            Kind::FetchAdd => WcOpcode::FetchAdd,
            Kind::CmpSwap => WcOpcode::CompSwap,
        };
        assert_eq!(
            (wc.wr_id, wc.status, wc.opcode),
            (i as u64, WcStatus::Success, opcode),
            "send completion {i}"
        );
        if op.kind == Kind::Read {
            assert_eq!(wc.byte_len as usize, op.len, "READ {i} byte_len");
        }
    }
    let recv_wcs = wait_completions(&mut sim, b.owner, b.recv_cq, recvs.len(), DEADLINE);
    assert_eq!(recv_wcs.len(), recvs.len(), "receive completions");
    for (wc, &(i, opcode, len, imm)) in recv_wcs.iter().zip(&recvs) {
        assert_eq!(
            (
                wc.wr_id,
                wc.status,
                wc.opcode,
                wc.byte_len as usize,
                wc.imm_data
            ),
            (i as u64, WcStatus::Success, opcode, len, imm),
            "receive completion of op {i}"
        );
        assert_eq!(wc.qp_num, b.qpn);
    }

    // Memory: every byte the model says.
    for (i, (op, (p, e))) in c.ops.iter().zip(places.iter().zip(&expects)).enumerate() {
        match op.kind {
            Kind::Send | Kind::SendImm | Kind::Write | Kind::WriteImm => {
                assert_buf_eq(&sim, &b.rx, p.remote, &e.data)
            }
            Kind::Read => {
                assert_buf_eq(&sim, &a.tx, p.local, &e.data);
                // The source is untouched.
                assert_buf_eq(&sim, &b.rx, p.remote, &e.data);
            }
            Kind::FetchAdd | Kind::CmpSwap => {
                let want = e.atomic_result.map(u64::to_le_bytes);
                let got = sim.read_mem(a.owner, a.tx.at(p.local), 8);
                assert_eq!(Some(&got[..]), want.as_ref().map(|w| &w[..]), "atomic {i}");
            }
        }
    }
    assert_eq!(
        sim.read_mem(b.owner, b.rx.at(ATOMIC_OFF), 8),
        value.to_le_bytes(),
        "atomic target: each atomic executed once, in order"
    );
    // Nothing more arrives.
    sim.run_for(Duration::from_millis(50));
    assert!(poll_all(&mut sim, a.owner, a.send_cq).is_empty());
    assert!(poll_all(&mut sim, b.owner, b.recv_cq).is_empty());
    Outcome {
        mid_traffic,
        net: sim.network().total_counters(),
        retransmits: sim
            .node_ids()
            .map(|n| sim.device(n).counters().retransmits)
            .sum(),
    }
}

/// Cases run by the property (deterministic: fixed seed, no persistence).
const CASES: u32 = 512;

/// The property's runner configuration: its cases, its fixed seed.
fn config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(0x6d69_6772_6f73),
        failure_persistence: None,
        max_shrink_iters: 512,
        ..proptest::test_runner::Config::default()
    }
}

#[test]
fn random_ops_faults_and_migrations_match_the_model() {
    use proptest::test_runner::TestRunner;
    use std::cell::Cell;
    let mut runner = TestRunner::new(config());
    let total = Cell::new(Outcome::default());
    let result = runner.run(&case(), |c| {
        let o = run_case(&c);
        let mut t = total.get();
        t.mid_traffic += o.mid_traffic;
        t.net.dropped += o.net.dropped;
        t.net.delayed += o.net.delayed;
        t.net.duplicated += o.net.duplicated;
        t.net.corrupted += o.net.corrupted;
        t.retransmits += o.retransmits;
        total.set(t);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = total.get();
    // Most migrations must hit work in flight, or the property is vacuous.
    assert!(
        t.mid_traffic >= CASES as usize / 3,
        "only {} migrations came during traffic",
        t.mid_traffic
    );
    // Every kind of fault the cases ask for happened to their traffic, and
    // losses were recovered by resending.
    let n = t.net;
    assert!(
        n.dropped > 0 && n.delayed > 0 && n.duplicated > 0 && n.corrupted > 0,
        "faults the network applied over the run: {n:?}"
    );
    assert!(t.retransmits > 0, "nothing was resent: {t:?}");
}

/// The generator covers what the property claims (guards against a
/// strategy that silently stops producing migrations or faults), for the
/// very cases the property runs: the same runner, configuration and seed,
/// with a check that passes (so nothing shrinks) and only records each case.
#[test]
fn generator_covers_every_dimension() {
    use proptest::test_runner::TestRunner;
    use std::cell::RefCell;
    let cases = RefCell::new(Vec::new());
    let mut runner = TestRunner::new(config());
    runner
        .run(&case(), |c| {
            cases.borrow_mut().push(c);
            Ok(())
        })
        .expect("recording cases never fails");
    let cases = cases.into_inner();
    assert_eq!(
        cases.len(),
        CASES as usize,
        "the property's number of cases"
    );
    let mut kinds = std::collections::BTreeSet::new();
    let (mut both, mut two, mut none) = (0, 0, 0);
    let (mut lossy, mut reordering, mut duplicating, mut corrupting) = (0, 0, 0, 0);
    for c in &cases {
        kinds.extend(c.ops.iter().map(|o| format!("{:?}", o.kind)));
        both += usize::from(c.migrations.iter().any(|m| m.who == Who::Both));
        two += usize::from(c.migrations.len() == 2);
        none += usize::from(c.migrations.is_empty());
        lossy += usize::from(c.faults.loss > 0.0);
        reordering += usize::from(c.faults.reorder > 0.0);
        duplicating += usize::from(c.faults.duplicate > 0.0);
        corrupting += usize::from(c.faults.corrupt > 0.0);
    }
    assert_eq!(kinds.len(), 7, "{kinds:?}");
    assert!(
        both > 0 && two > 0 && none > 0,
        "migrations: {both} of both ends, {two} double, {none} none"
    );
    assert!(
        lossy > 0 && reordering > 0 && duplicating > 0 && corrupting > 0,
        "faults: {lossy} lossy, {reordering} reordering, {duplicating} duplicating, {corrupting} corrupting"
    );
}
