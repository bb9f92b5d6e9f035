//! Live migration while traffic runs. The "must show" list of the
//! migration protocol comes first, one test per item (`a_` … `k_`), then
//! further scenarios: a whole node, loss, there and back, a rolled-back
//! checkpoint, UC. Everywhere: data byte-exact, every completion exactly
//! once and in order.

use std::net::IpAddr;
use std::time::Duration;

use migros_sim::net::{OPCODE_RC_ACK, OPCODE_RESUME};
use migros_sim::sim::node_addr;
use migros_sim::support::{
    assert_buf_eq, assert_no_completion, poll_all, post_send_stream, rc_pair, rc_pair_on_srq,
    rc_pair_receiver_rtr, srq_host, uc_pair, ud_pair, wait_completions, wr, Endpoint, RcOptions,
    GRH_LEN,
};
use migros_sim::{Action, Filter, NodeId, Rule, Sim};
use migros_transport::{
    DeviceConfig, DeviceEvent, Instant, MigrationState, Mtu, QpCounters, QpState, WcOpcode,
    WcStatus, WorkCompletion, TOMBSTONE_TTL,
};
use migros_wire::{Opcode, PAUSE_NAK_SYNDROME};

const DEADLINE: Duration = Duration::from_secs(30);
const DOWNTIME: Duration = Duration::from_millis(2);
const MSG: usize = 4096;
const MIB: usize = 1 << 20;

struct Stream {
    data: Vec<Vec<u8>>,
}

/// Posts `n` receives on `b` and `n` SENDs of `MSG` bytes on `a`.
fn start_stream(sim: &mut Sim, a: &Endpoint, b: &Endpoint, n: usize, seed: u64) -> Stream {
    Stream {
        data: post_send_stream(sim, a, b, n, MSG, seed),
    }
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

/// An RC pair between the first two nodes of `setup(seed, nodes)`.
fn rc_setup(seed: u64, nodes: usize) -> (Sim, Vec<NodeId>, Endpoint, Endpoint) {
    let (mut sim, n, opts) = setup(seed, nodes);
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    (sim, n, a, b)
}

/// `start_stream` of `n` SENDs, then `micros` µs of virtual time: the
/// stream must be under way (each SEND is 4 packets).
fn stream_under_way(
    sim: &mut Sim,
    a: &Endpoint,
    b: &Endpoint,
    n: usize,
    seed: u64,
    micros: u64,
) -> Stream {
    let s = start_stream(sim, a, b, n, seed);
    sim.run_for(Duration::from_micros(micros));
    assert_mid_stream(sim, b, n as u64 * 4);
    s
}

fn counters(sim: &Sim, ep: &Endpoint) -> QpCounters {
    sim.device(ep.node(sim))
        .qp_counters(ep.qpn)
        .expect("qp exists")
}

fn mig_state(sim: &Sim, ep: &Endpoint) -> MigrationState {
    ep.query(sim).expect("qp exists").migration
}

/// Asserts the stream is under way: the receiver got some of its packets
/// (`total` of them make up the stream), not all.
fn assert_mid_stream(sim: &Sim, receiver: &Endpoint, total: u64) {
    let rx = counters(sim, receiver).rx_packets;
    assert!(
        rx > 0 && rx < total,
        "migration should hit the stream mid-way: {rx} of {total} packets received"
    );
}

/// The destination QPN in a captured datagram's BTH.
fn dest_qpn(c: &migros_sim::net::Captured) -> Option<u32> {
    let b = c.datagram.bytes.get(5..8)?;
    Some(u32::from_be_bytes([0, b[0], b[1], b[2]]))
}

/// Send completions `wcs` are for wr_ids `0..n` in order, all Success.
fn assert_sends_ok(wcs: &[WorkCompletion], n: usize) {
    assert_eq!(wcs.len(), n);
    for (i, wc) in wcs.iter().enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status),
            (i as u64, WcStatus::Success),
            "{wc:?}"
        );
    }
}

/// Datagram `seq` of a numbered stream: its number, then a pattern.
fn numbered(seq: u64, len: usize) -> Vec<u8> {
    let mut d = migros_sim::support::pattern(seq ^ 0x5eed, len);
    d[..8].copy_from_slice(&seq.to_le_bytes());
    d
}

/// Received messages of a numbered stream, checked byte-exact against
/// `sent` (by the number they carry): returns the numbers, in receive
/// order. Panics on a duplicate, a corrupted or unknown message, a failed
/// or out-of-order receive completion. `slot` is the receive slot size and
/// `skip` the bytes before the data (the GRH area for UD).
fn check_numbered(
    sim: &Sim,
    rx: &migros_sim::support::Buffer,
    wcs: &[WorkCompletion],
    sent: &[Vec<u8>],
    slot: usize,
    skip: usize,
) -> Vec<u64> {
    let mut seen = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    for (i, wc) in wcs.iter().enumerate() {
        assert_eq!(
            (wc.wr_id, wc.status),
            (i as u64, WcStatus::Success),
            "{wc:?}"
        );
        let len = wc.byte_len as usize - skip;
        let got = sim.read_mem(rx.owner, rx.at(i * slot + skip), len);
        let seq = u64::from_le_bytes(got[..8].try_into().expect("8 bytes"));
        let expected = sent
            .get(seq as usize)
            .unwrap_or_else(|| panic!("receive {i}: unknown message number {seq}"));
        assert_eq!(&got, expected, "receive {i}: message {seq} corrupted");
        assert!(seen.insert(seq), "message {seq} delivered twice");
        order.push(seq);
    }
    order
}

mod must_show_a_to_h;
mod must_show_i_to_k;
mod selective_resend;
mod uc_and_further;
