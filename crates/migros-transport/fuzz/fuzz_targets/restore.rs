//! Restore is reachable with any image bytes (a client edits its own image;
//! authorisation is the daemon's, this target checks what comes after):
//! decoding and restoring never panic; a refused image changes nothing; an
//! image that takes the number of a live QP, or of a migrated QP's
//! tombstone without that QP's key, is always refused; a restored image
//! resumes, runs its timers and sends without panicking.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use migros_test_support::rc::{cap, rc_qp_init};
use migros_transport::{Device, DeviceConfig, Instant, OwnerId, OwnerSnapshot, QpInit};

/// The golden image's QPNs, so that the corpus reaches the collisions.
const LIVE_QPN: u32 = 0x42;
const TOMBSTONE_QPN: u32 = 0x44;

fn qp(owner: OwnerId, qpn: u32, pd: u32, cq: u32) -> QpInit {
    rc_qp_init(owner, qpn, pd, cq, cap(4, 4))
}

/// A device with a live QP and the tombstone of a QP that migrated away;
/// returns it with that QP's connection key.
fn device() -> (Device, u64) {
    let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    let mut d = Device::new(DeviceConfig::new(addr));
    d.alloc_pd(100, 100).unwrap();
    d.create_cq(100, 100, 8).unwrap();
    d.create_qp(qp(100, LIVE_QPN, 100, 100)).unwrap();
    d.alloc_pd(200, 200).unwrap();
    d.create_cq(200, 200, 8).unwrap();
    d.create_qp(qp(200, TOMBSTONE_QPN, 200, 200)).unwrap();
    let key = d.connection_key(TOMBSTONE_QPN).unwrap();
    d.pause_owner(200).unwrap();
    d.evict_owner(Instant::ZERO, 200).unwrap();
    (d, key)
}

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = OwnerSnapshot::decode(data) else {
        return;
    };
    let (mut dev, tomb_key) = device();
    let owner = snap.owner;
    let qpns = snap.qpns();
    let takes_live = qpns.contains(&LIVE_QPN);
    let takes_tomb = qpns.contains(&TOMBSTONE_QPN);
    let image: serde_json::Value = serde_json::from_slice(data).unwrap();
    let tomb_key_matches = image["qps"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|q| q["init"]["qpn"] == TOMBSTONE_QPN && q["resume_key"] == tomb_key);
    let before = (dev.qpns(), dev.tombstones());
    let now = Instant::from_nanos(1_000_000);
    match dev.restore(now, snap) {
        Err(_) => {
            assert_eq!(
                (dev.qpns(), dev.tombstones()),
                before,
                "a refusal changes nothing"
            );
            return;
        }
        Ok(()) => {
            assert!(!takes_live, "restored over a live qp");
            assert!(
                !takes_tomb || tomb_key_matches,
                "took a tombstone without its key"
            );
        }
    }
    common::resume_and_run(&mut dev, now, owner);
});
