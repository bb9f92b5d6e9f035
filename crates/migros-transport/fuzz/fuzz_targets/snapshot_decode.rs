//! Checkpoint images come from disk, written by another node: decoding one
//! must never panic, and an image that decodes must restore, resume and run
//! its timers without panicking either (the engines index queues by the
//! cursors the image carries).
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use migros_transport::{Device, DeviceConfig, Instant, OwnerSnapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = OwnerSnapshot::decode(data) else {
        return;
    };
    let again = OwnerSnapshot::decode(&snap.encode()).expect("a decoded image re-encodes");
    assert_eq!(again.qpns(), snap.qpns());
    let owner = snap.owner;
    let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    let mut dev = Device::new(DeviceConfig::new(addr));
    let now = Instant::from_nanos(1_000_000);
    if dev.restore(now, snap).is_err() {
        return;
    }
    common::resume_and_run(&mut dev, now, owner);
});
