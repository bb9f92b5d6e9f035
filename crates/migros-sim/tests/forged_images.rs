//! Forged checkpoint images: a client edits its own image (the JSON) and
//! restores it. Every forgery the issue names is refused by the device
//! with a clear error, nothing of it is created, nothing panics, and a
//! connection of another owner on the same node keeps working byte-exact
//! meanwhile.

use std::time::Duration;

use migros_sim::support::{
    assert_buf_eq, assert_no_completion, rc_pair, uc_pair, ud_pair, wr, Endpoint, RcOptions,
};
use migros_sim::{NodeId, Sim};
use migros_transport::{Mtu, OwnerSnapshot, SendData, SendFlags, SendWr, WcStatus, WrOpcode};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);
const MSG: usize = 4096;
const N: usize = 32;

/// The image of `ep`'s owner as JSON (taken while paused, then unpaused).
fn image_of(sim: &mut Sim, ep: &Endpoint) -> Value {
    let node = ep.node(sim);
    let owner = ep.owner;
    let bytes = sim.with_device(node, |d, _, now| {
        d.pause_owner(owner).expect("pause");
        let snap = d.snapshot_owner(now, owner).expect("snapshot");
        d.unpause_owner(now, owner).expect("unpause");
        snap.encode()
    });
    serde_json::from_slice(&bytes).expect("json")
}

/// Restores `image` on `node`; the error's text when refused.
fn restore(sim: &mut Sim, node: NodeId, image: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(image).expect("encode");
    let snap = OwnerSnapshot::decode(&bytes).map_err(|e| e.to_string())?;
    sim.with_device(node, |d, _, now| d.restore(now, snap))
        .map_err(|e| e.to_string())
}

/// Gives the image's objects identifiers of their own (so that only the
/// forgery can be the reason for a refusal) and a new owner.
fn renumber(img: &mut Value, sim: &mut Sim) {
    let owner = u64::from(sim.alloc_id()) + (1 << 40);
    img["owner"] = json!(owner);
    let mut map = std::collections::BTreeMap::new();
    let mut fresh = |sim: &mut Sim, old: &Value| -> Value {
        let old = old.as_u64().expect("id");
        json!(*map.entry(old).or_insert_with(|| sim.alloc_id()))
    };
    for pd in img["pds"].as_array_mut().unwrap() {
        *pd = fresh(sim, pd);
    }
    for mr in img["mrs"].as_array_mut().unwrap() {
        mr["pd"] = fresh(sim, &mr["pd"].clone());
        mr["lkey"] = fresh(sim, &mr["lkey"].clone());
        mr["rkey"] = fresh(sim, &mr["rkey"].clone());
    }
    for cq in img["cqs"].as_array_mut().unwrap() {
        cq["cq"] = fresh(sim, &cq["cq"].clone());
    }
    for qp in img["qps"].as_array_mut().unwrap() {
        let init = &mut qp["init"];
        init["owner"] = json!(owner);
        for k in ["qpn", "pd", "send_cq", "recv_cq"] {
            init[k] = fresh(sim, &init[k].clone());
        }
    }
}

/// A queued send WR (no data, no address handle) as the image holds it.
fn send_wr(opcode: WrOpcode) -> Value {
    let wr = SendWr {
        wr_id: 1,
        opcode,
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(Vec::new()),
        ud: None,
    };
    json!({
        "wr": serde_json::to_value(&wr).unwrap(),
        "len": 0, "first_psn": 0, "npkts": 0, "sent": false,
        "read_done": 0, "local_error": null
    })
}

fn setup(seed: u64) -> (Sim, Vec<NodeId>, RcOptions) {
    let mut sim = Sim::new(seed);
    let nodes = (0..3).map(|_| sim.add_node()).collect();
    let opts = RcOptions {
        mtu: Mtu::Mtu1024,
        buf_len: N * MSG,
        ..RcOptions::default()
    };
    (sim, nodes, opts)
}

#[test]
fn forged_images_are_refused_while_another_connection_runs() {
    let (mut sim, n, opts) = setup(0x4800);
    // The bystander: a stream into node 1, where every forgery is restored.
    let (a, b) = rc_pair(&mut sim, n[0], n[1], &opts);
    let mut data = Vec::new();
    for i in 0..N {
        b.recv(&mut sim, i as u64, i * MSG, MSG);
        data.push(a.fill_tx(&mut sim, i * MSG, MSG, 9 + i as u64));
        a.post_send(&mut sim, wr::send(i as u64, a.tx.sges(i * MSG, MSG)))
            .expect("posted");
    }
    sim.run_for(Duration::from_micros(30));

    // The forger's own objects, on node 2.
    let (rc, _) = rc_pair(&mut sim, n[2], n[0], &opts);
    let (uc, _) = uc_pair(&mut sim, n[2], n[0], &opts);
    let (ud, _) = ud_pair(&mut sim, n[2], n[0], 0x1111, &opts);
    let (rc_img, uc_img, ud_img) = (
        image_of(&mut sim, &rc),
        image_of(&mut sim, &uc),
        image_of(&mut sim, &ud),
    );

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    // A UD WR without an address handle.
    let mut img = ud_img.clone();
    img["qps"][0]["requester"]["send_queue"] = json!([send_wr(WrOpcode::Send)]);
    cases.push(("ud wr without an address handle", img, "address handle"));
    // A UC QP holding a SEND_WITH_INV (RC only).
    let mut img = uc_img.clone();
    img["qps"][0]["requester"]["send_queue"] = json!([send_wr(WrOpcode::SendWithInv { rkey: 5 })]);
    cases.push(("uc qp with send_with_inv", img, "not supported on Uc"));
    // A READ response with an enormous `remaining`.
    let mut img = rc_img.clone();
    img["qps"][0]["responder"]["responses"] = json!([{"Read": {
        "next_psn": 0, "va": 0, "rkey": 1, "remaining": u64::MAX, "first": true, "msn": 0
    }}]);
    cases.push(("read response of 2^64 bytes", img, "read response longer"));
    // A memory region wrapping the address space.
    let mut img = rc_img.clone();
    img["mrs"][0]["addr"] = json!(u64::MAX - 10);
    cases.push(("memory region wrapping", img, "wraps"));
    // Unknown access bits.
    let mut img = rc_img.clone();
    img["mrs"][0]["access"] = json!(0xffff_u32);
    cases.push(("unknown access bits", img, "access rights reg_mr refuses"));
    // More receives queued than the QP holds.
    let mut img = rc_img.clone();
    let recv = json!({"wr_id": 1, "sges": []});
    img["qps"][0]["recv_queue"] = json!(vec![recv; 100_000]);
    cases.push(("queue deeper than its qp", img, "more work requests"));
    // No connection key.
    let mut img = rc_img.clone();
    img["qps"][0]["resume_key"] = json!(0);
    cases.push(("rc qp without a connection key", img, "no connection key"));

    for (what, mut img, expect) in cases {
        renumber(&mut img, &mut sim);
        let before = sim.device(n[1]).qpns().len();
        let err = restore(&mut sim, n[1], &img).expect_err(what);
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(
            sim.device(n[1]).qpns().len(),
            before,
            "{what}: nothing created"
        );
        sim.run_for(Duration::from_micros(10));
    }

    // A forged QP taking the number of a QP that migrated away from node 1
    // (its tombstone, and with it its paused partner): refused. The real
    // QP's own image (a rolled-back move) is taken.
    let (mover, _partner) = rc_pair(&mut sim, n[1], n[0], &opts);
    let report = sim
        .migrate_owner(mover.owner, n[1], n[2], Duration::from_micros(100))
        .expect("migrated");
    assert_eq!(report.qpns, [mover.qpn]);
    assert!(sim.device(n[1]).tombstones().contains(&mover.qpn));
    let mut img = rc_img.clone();
    renumber(&mut img, &mut sim);
    img["qps"][0]["init"]["qpn"] = json!(mover.qpn);
    let err = restore(&mut sim, n[1], &img).expect_err("tombstone theft");
    assert!(err.contains("migrated away"), "{err}");
    assert!(sim.device(n[1]).tombstones().contains(&mover.qpn));

    // The bystander's stream finished byte-exact meanwhile.
    let r = b.expect_recv(&mut sim, N, DEADLINE);
    let c = a.expect_send(&mut sim, N, DEADLINE);
    for i in 0..N {
        assert_eq!((r[i].wr_id, r[i].status), (i as u64, WcStatus::Success));
        assert_eq!((c[i].wr_id, c[i].status), (i as u64, WcStatus::Success));
        assert_buf_eq(&sim, &b.rx, i * MSG, &data[i]);
    }
    assert_no_completion(&mut sim, b.owner, b.recv_cq, Duration::from_millis(5));
}

/// An image of many PDs and memory regions is checked with sets (n log n,
/// where the PD of every MR was looked up in a list before) and restores.
#[test]
fn a_huge_image_is_checked_without_quadratic_work() {
    let (mut sim, n, opts) = setup(0x4900);
    let (rc, _) = rc_pair(&mut sim, n[2], n[0], &opts);
    let mut img = image_of(&mut sim, &rc);
    renumber(&mut img, &mut sim);
    const K: u32 = 100_000;
    let base = 1u32 << 23;
    let pd = img["pds"][0].clone();
    let mut pds = vec![pd.clone()];
    pds.extend((0..K).map(|i| json!(base + i)));
    img["pds"] = json!(pds);
    let mut mrs = img["mrs"].as_array().unwrap().clone();
    for i in 0..K {
        mrs.push(
            json!({"pd": base + i, "addr": 4096 * u64::from(i), "length": 4096,
            "lkey": (1u32 << 30) + i, "rkey": (1u32 << 31) + i, "access": 1,
            "iova": 4096 * u64::from(i)}),
        );
    }
    img["mrs"] = json!(mrs);
    restore(&mut sim, n[1], &img).expect("a big but honest image restores");
}
