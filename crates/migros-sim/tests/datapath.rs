//! RC data path between two devices: every operation, every size around
//! the MTU and 1 MiB, every MTU, with and without network faults. Data is
//! checked byte for byte; completions exactly once, in order, with the
//! right status, opcode, length and immediate.

use std::time::Duration;

use migros_sim::net::Action;
use migros_sim::support::{assert_buf_eq, assert_no_completion, rc_pair, wr, Endpoint, RcOptions};
use migros_sim::{Filter, Rule, Sim};
use migros_transport::{Mtu, Qpn, WcOpcode, WcStatus, WorkCompletion};

const MTUS: [Mtu; 5] = [
    Mtu::Mtu256,
    Mtu::Mtu512,
    Mtu::Mtu1024,
    Mtu::Mtu2048,
    Mtu::Mtu4096,
];
const MIB: usize = 1 << 20;
/// Virtual time allowed for one batch, faults included.
const DEADLINE: Duration = Duration::from_secs(30);
/// Quiet time after the last expected completion: nothing more may come.
const QUIET: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Loss,
    Reorder,
    Duplicate,
    Corrupt,
}

fn install(sim: &mut Sim, fault: Fault) {
    let action = match fault {
        Fault::None => return,
        Fault::Loss => Action::Drop { probability: 0.05 },
        Fault::Reorder => Action::Reorder {
            probability: 0.2,
            delay: Duration::from_micros(30),
        },
        Fault::Duplicate => Action::Duplicate { probability: 0.1 },
        Fault::Corrupt => Action::Corrupt { probability: 0.05 },
    };
    sim.add_rule(Rule::new(Filter::any(), action));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Send,
    SendImm,
    Write,
    WriteImm,
    Read,
}

/// Sizes around the MTU, and 1 MiB if `big`.
fn sizes(mtu: Mtu, big: bool) -> Vec<usize> {
    let m = mtu.bytes() as usize;
    let mut v = vec![0, 1, m - 1, m, m + 1];
    if big {
        v.push(MIB);
    }
    v
}

/// A message of the batch: where its data sits in both endpoints' buffers.
struct Msg {
    op: Op,
    len: usize,
    offset: usize,
    data: Vec<u8>,
    imm: u32,
}

/// Messages start 3 bytes past a page boundary: unaligned on purpose.
const SKEW: usize = 3;

fn layout(ops: &[Op], sizes: &[usize]) -> (Vec<(Op, usize, usize)>, usize) {
    let mut out = Vec::new();
    let mut offset = 0;
    for &len in sizes {
        for &op in ops {
            out.push((op, len, offset + SKEW));
            offset += (len + SKEW + 64).div_ceil(4096) * 4096;
        }
    }
    (out, offset)
}

/// Posts every message of `ops × sizes` from `a` to `b` in one batch and
/// checks data and completions.
fn transfer(seed: u64, mtu: Mtu, fault: Fault, ops: &[Op], sizes: &[usize]) -> FaultTally {
    let (plan, buf_len) = layout(ops, sizes);
    let mut sim = Sim::new(seed);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    let opts = RcOptions {
        mtu,
        buf_len,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n0, n1, &opts);
    install(&mut sim, fault);

    let mut msgs = Vec::new();
    for (i, &(op, len, offset)) in plan.iter().enumerate() {
        let seed = seed ^ ((i as u64) << 32);
        let imm = 0xabc0_0000 | i as u32;
        let data = match op {
            // READ: the data sits at the responder and lands in tx.
            Op::Read => b.fill_rx(&mut sim, offset, len, seed),
            _ => a.fill_tx(&mut sim, offset, len, seed),
        };
        let msg = Msg {
            op,
            len,
            offset,
            data,
            imm,
        };
        post(&mut sim, &a, &b, i as u64, &msg);
        msgs.push(msg);
    }

    let sends = a.expect_send(&mut sim, msgs.len(), DEADLINE);
    let receivers: Vec<(usize, &Msg)> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.op, Op::Send | Op::SendImm | Op::WriteImm))
        .collect();
    let recvs = b.expect_recv(&mut sim, receivers.len(), DEADLINE);

    for (i, (wc, m)) in sends.iter().zip(&msgs).enumerate() {
        assert_completed(wc, m, i as u64, a.qpn, "send completions in posting order");
        let opcode = match m.op {
            Op::Send | Op::SendImm => WcOpcode::Send,
            Op::Write | Op::WriteImm => WcOpcode::RdmaWrite,
            Op::Read => WcOpcode::RdmaRead,
        };
        assert_eq!(wc.opcode, opcode);
    }
    for (wc, &(i, m)) in recvs.iter().zip(&receivers) {
        assert_completed(
            wc,
            m,
            1000 + i as u64,
            b.qpn,
            "receive completions in order",
        );
        assert_eq!(wc.byte_len as usize, m.len, "{:?}", m.op);
        match m.op {
            Op::Send => {
                assert_eq!(wc.opcode, WcOpcode::Recv);
                assert_eq!(wc.imm_data, None);
            }
            Op::SendImm => {
                assert_eq!(wc.opcode, WcOpcode::Recv);
                assert_eq!(wc.imm_data, Some(m.imm));
            }
            _ => {
                assert_eq!(wc.opcode, WcOpcode::RecvRdmaWithImm);
                assert_eq!(wc.imm_data, Some(m.imm));
            }
        }
    }
    for m in &msgs {
        match m.op {
            Op::Read => assert_buf_eq(&sim, &a.tx, m.offset, &m.data),
            _ => assert_buf_eq(&sim, &b.rx, m.offset, &m.data),
        }
    }
    assert_no_completion(&mut sim, a.owner, a.send_cq, QUIET);
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::ZERO);
    FaultTally::of(&sim)
}

/// What the network did and how the devices reacted, summed over runs.
#[derive(Debug, Default, Clone, Copy)]
struct FaultTally {
    dropped: u64,
    delayed: u64,
    duplicated: u64,
    corrupted: u64,
    retransmits: u64,
    rejected: u64,
}

impl FaultTally {
    fn of(sim: &Sim) -> FaultTally {
        let net = sim.network().total_counters();
        let mut t = FaultTally {
            dropped: net.dropped,
            delayed: net.delayed,
            duplicated: net.duplicated,
            corrupted: net.corrupted,
            ..FaultTally::default()
        };
        for n in sim.node_ids() {
            let c = sim.device(n).counters();
            t.retransmits += c.retransmits;
            t.rejected += c.rx_icrc_errors + c.rx_malformed;
        }
        t
    }

    fn add(&mut self, o: FaultTally) {
        self.dropped += o.dropped;
        self.delayed += o.delayed;
        self.duplicated += o.duplicated;
        self.corrupted += o.corrupted;
        self.retransmits += o.retransmits;
        self.rejected += o.rejected;
    }

    /// The fault really hit the traffic and the devices recovered from it
    /// (a test that passes because nothing was dropped proves nothing).
    fn assert_exercised(&self, fault: Fault) {
        match fault {
            Fault::None => assert_eq!(self.retransmits, 0, "retransmissions without faults"),
            Fault::Loss => {
                assert!(self.dropped > 0, "nothing dropped: {self:?}");
                assert!(self.retransmits > 0, "nothing retransmitted: {self:?}");
            }
            Fault::Reorder => assert!(self.delayed > 0, "nothing reordered: {self:?}"),
            Fault::Duplicate => assert!(self.duplicated > 0, "nothing duplicated: {self:?}"),
            Fault::Corrupt => {
                assert!(self.corrupted > 0, "nothing corrupted: {self:?}");
                assert!(self.rejected > 0, "corrupted packets accepted: {self:?}");
            }
        }
    }
}

/// Asserts that `wc`, the completion of `m`, has `wr_id` (`order` says
/// which order that checks), succeeded and is on QP `qpn`.
fn assert_completed(wc: &WorkCompletion, m: &Msg, wr_id: u64, qpn: Qpn, order: &str) {
    assert_eq!(wc.wr_id, wr_id, "{order}");
    assert_eq!(
        wc.status,
        WcStatus::Success,
        "{:?} of {} bytes",
        m.op,
        m.len
    );
    assert_eq!(wc.qp_num, qpn);
}

fn post(sim: &mut Sim, a: &Endpoint, b: &Endpoint, i: u64, m: &Msg) {
    let sges = a.tx.sges(m.offset, m.len);
    let (raddr, rkey) = (b.rx.at(m.offset), b.rx.rkey);
    let wr = match m.op {
        Op::Send => {
            // Room to spare: byte_len must still be the message's length.
            b.recv(sim, 1000 + i, m.offset, m.len + 16);
            wr::send(i, sges)
        }
        Op::SendImm => {
            b.recv(sim, 1000 + i, m.offset, m.len + 16);
            wr::send_imm(i, sges, m.imm)
        }
        Op::Write => wr::write(i, sges, raddr, rkey),
        Op::WriteImm => {
            // WRITE with immediate consumes a receive without data.
            b.recv(sim, 1000 + i, 0, 0);
            wr::write_imm(i, sges, raddr, rkey, m.imm)
        }
        Op::Read => wr::read(i, sges, raddr, rkey),
    };
    if let Err(e) = a.post_send(sim, wr) {
        panic!("post_send {:?} of {} bytes: {e}", m.op, m.len);
    }
}

/// Every size × every MTU without faults; with a fault, every MTU for the
/// sizes around it and 1 MiB on MTU 1024 and 4096.
fn grid(seed: u64, fault: Fault, ops: &[Op]) {
    let mut tally = FaultTally::default();
    for (k, mtu) in MTUS.into_iter().enumerate() {
        let big = fault == Fault::None || matches!(mtu, Mtu::Mtu1024 | Mtu::Mtu4096);
        tally.add(transfer(seed + k as u64, mtu, fault, ops, &sizes(mtu, big)));
    }
    tally.assert_exercised(fault);
}

const SENDS: &[Op] = &[Op::Send, Op::SendImm];
const WRITES: &[Op] = &[Op::Write, Op::WriteImm];
const READS: &[Op] = &[Op::Read];

/// One test per `name: fault` pair, each `$run(seed, Fault::fault)`: the
/// seed is `$base` plus 0x10 per fault in `Fault`'s order (`None` 0, `Loss`
/// 0x10, … `Corrupt` 0x40).
macro_rules! per_fault {
    ($run:expr, $base:expr; $($name:ident: $fault:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                ($run)($base + 0x10 * Fault::$fault as u64, Fault::$fault);
            }
        )+
    };
}

per_fault!(|s, f| grid(s, f, SENDS), 0x100; send_no_faults: None, send_loss_5pct: Loss,
    send_reorder: Reorder, send_duplicate: Duplicate, send_corrupt: Corrupt);
per_fault!(|s, f| grid(s, f, WRITES), 0x200; write_no_faults: None, write_loss_5pct: Loss,
    write_reorder: Reorder, write_duplicate: Duplicate, write_corrupt: Corrupt);
per_fault!(|s, f| grid(s, f, READS), 0x300; read_no_faults: None, read_loss_5pct: Loss,
    read_reorder: Reorder, read_duplicate: Duplicate, read_corrupt: Corrupt);

/// Every operation interleaved in one batch, under loss: ordering holds
/// across operation types (READ responses and ACKs share one PSN space).
#[test]
fn mixed_operations_loss_5pct() {
    let ops = [Op::Send, Op::Write, Op::Read, Op::WriteImm, Op::SendImm];
    let mut tally = FaultTally::default();
    for mtu in [Mtu::Mtu256, Mtu::Mtu4096] {
        tally.add(transfer(0x400, mtu, Fault::Loss, &ops, &sizes(mtu, false)));
    }
    tally.assert_exercised(Fault::Loss);
}

/// PSNs start just below 2^24 and wrap in the middle of a 1 MiB message.
#[test]
fn psn_wraps_around_mid_message() {
    let mut sim = Sim::new(0x500);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    let opts = RcOptions {
        mtu: Mtu::Mtu256,
        buf_len: MIB,
        psn: Some(0x00ff_ff00),
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n0, n1, &opts);
    sim.add_rule(Rule::drop(Filter::any(), 0.02));
    let data = a.fill_tx(&mut sim, 0, MIB, 9);
    b.recv(&mut sim, 7, 0, MIB);
    a.post_send(&mut sim, wr::send(1, a.tx.sges(0, MIB)))
        .expect("posted");
    let wc = b.expect_recv(&mut sim, 1, DEADLINE);
    assert_eq!(
        (wc[0].wr_id, wc[0].status, wc[0].byte_len),
        (7, WcStatus::Success, MIB as u32)
    );
    let wc = a.expect_send(&mut sim, 1, DEADLINE);
    assert_eq!((wc[0].wr_id, wc[0].status), (1, WcStatus::Success));
    assert_buf_eq(&sim, &b.rx, 0, &data);
    FaultTally::of(&sim).assert_exercised(Fault::Loss);
}

#[derive(Debug, Clone, Copy)]
enum Atomic {
    FetchAdd(u64),
    CmpSwap { compare: u64, swap: u64 },
}

/// A chain of atomics on one remote word: each must run exactly once
/// (duplicates and retransmissions are answered from the responder's saved
/// results) and return the value before it, in order.
fn atomics(seed: u64, fault: Fault) {
    let chain = [
        Atomic::FetchAdd(1),
        Atomic::CmpSwap {
            compare: 101,
            swap: 500,
        },
        Atomic::CmpSwap {
            compare: 101,
            swap: 7,
        },
        Atomic::FetchAdd(u64::MAX),
        Atomic::FetchAdd(1 << 63),
        Atomic::CmpSwap {
            compare: (1 << 63) + 499,
            swap: 0x0123_4567_89ab_cdef,
        },
        Atomic::FetchAdd(0x10),
    ];
    let mut tally = FaultTally::default();
    for mtu in [Mtu::Mtu256, Mtu::Mtu4096] {
        let mut sim = Sim::new(seed);
        let (n0, n1) = (sim.add_node(), sim.add_node());
        let opts = RcOptions {
            mtu,
            ..RcOptions::default()
        };
        let (a, b) = rc_pair(&mut sim, n0, n1, &opts);
        install(&mut sim, fault);
        let target = b.rx.at(64);
        sim.write_mem(b.owner, target, &100u64.to_le_bytes());

        // Ten rounds of the chain, all posted at once.
        let mut value = 100u64;
        let mut expected = Vec::new();
        let mut id = 0u64;
        for _ in 0..10 {
            for &op in &chain {
                let result = a.tx.sge(8 * id as usize, 8);
                let wr = match op {
                    Atomic::FetchAdd(add) => {
                        expected.push(value);
                        value = value.wrapping_add(add);
                        wr::fetch_add(id, result, target, b.rx.rkey, add)
                    }
                    Atomic::CmpSwap { compare, swap } => {
                        expected.push(value);
                        if value == compare {
                            value = swap;
                        }
                        wr::cmp_swap(id, result, target, b.rx.rkey, compare, swap)
                    }
                };
                a.post_send(&mut sim, wr).expect("posted");
                id += 1;
            }
        }
        let wcs = a.expect_send(&mut sim, id as usize, DEADLINE);
        for (i, wc) in wcs.iter().enumerate() {
            assert_eq!(wc.wr_id, i as u64);
            assert_eq!(wc.status, WcStatus::Success);
            let opcode = match chain[i % chain.len()] {
                Atomic::FetchAdd(_) => WcOpcode::FetchAdd,
                Atomic::CmpSwap { .. } => WcOpcode::CompSwap,
            };
            assert_eq!(wc.opcode, opcode);
            let got = sim.read_mem(a.owner, a.tx.at(8 * i), 8);
            assert_eq!(
                got,
                expected[i].to_le_bytes(),
                "original value of atomic {i}"
            );
        }
        assert_eq!(sim.read_mem(b.owner, target, 8), value.to_le_bytes());
        // The words around the target are untouched.
        assert_eq!(sim.read_mem(b.owner, b.rx.at(56), 8), [0; 8]);
        assert_eq!(sim.read_mem(b.owner, b.rx.at(72), 8), [0; 8]);
        assert_no_completion(&mut sim, a.owner, a.send_cq, QUIET);
        tally.add(FaultTally::of(&sim));
    }
    tally.assert_exercised(fault);
}

per_fault!(atomics, 0x600; atomics_no_faults: None, atomics_loss_5pct: Loss,
    atomics_reorder: Reorder, atomics_duplicate: Duplicate, atomics_corrupt: Corrupt);

/// Many small sends back to back with receives posted ahead: the pipeline
/// keeps in order under loss and reordering together.
#[test]
fn many_small_sends_loss_and_reorder() {
    let mut sim = Sim::new(0x700);
    let (n0, n1) = (sim.add_node(), sim.add_node());
    let opts = RcOptions {
        buf_len: 128 * 1024,
        ..RcOptions::default()
    };
    let (a, b) = rc_pair(&mut sim, n0, n1, &opts);
    install(&mut sim, Fault::Loss);
    install(&mut sim, Fault::Reorder);
    let n = 200usize;
    let mut data = Vec::new();
    for i in 0..n {
        let len = 1 + (i * 37) % 300;
        b.recv(&mut sim, i as u64, i * 512, 512);
        data.push(a.fill_tx(&mut sim, i * 512, len, i as u64));
        a.post_send(&mut sim, wr::send(i as u64, a.tx.sges(i * 512, len)))
            .expect("posted");
    }
    let recvs = b.expect_recv(&mut sim, n, DEADLINE);
    let sends = a.expect_send(&mut sim, n, DEADLINE);
    for (i, (r, s)) in recvs.iter().zip(&sends).enumerate() {
        assert_eq!((r.wr_id, s.wr_id), (i as u64, i as u64));
        assert_eq!((r.status, s.status), (WcStatus::Success, WcStatus::Success));
        assert_eq!(r.byte_len as usize, data[i].len());
        assert_buf_eq(&sim, &b.rx, i * 512, &data[i]);
    }
    assert_no_completion(&mut sim, b.owner, b.recv_cq, QUIET);
    let tally = FaultTally::of(&sim);
    tally.assert_exercised(Fault::Loss);
    tally.assert_exercised(Fault::Reorder);
}
