//! Checkpoint images come from disk, written by another node: decoding one
//! must never panic, and an image that decodes must restore, resume and run
//! its timers without panicking either (the engines index queues by the
//! cursors the image carries).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use migros_transport::{Device, DeviceConfig, Instant, Memory, MemoryFault, OwnerId, OwnerSnapshot};

/// Memory that is there and all zero: lets the engines run their data path.
struct Zeros;

impl Memory for Zeros {
    fn read(&mut self, _: OwnerId, _: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        buf.fill(0);
        Ok(())
    }
    fn write(&mut self, _: OwnerId, _: u64, _: &[u8]) -> Result<(), MemoryFault> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = OwnerSnapshot::decode(data) else { return };
    let again = OwnerSnapshot::decode(&snap.encode()).expect("a decoded image re-encodes");
    assert_eq!(again.qpns(), snap.qpns());
    let owner = snap.owner;
    let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
    let mut dev = Device::new(DeviceConfig::new(addr));
    let mut now = Instant::from_nanos(1_000_000);
    if dev.restore(now, snap).is_err() {
        return;
    }
    let _ = dev.resume_owner(now, owner);
    let mut buf = Vec::new();
    for _ in 0..4 {
        for _ in 0..64 {
            if dev.poll_transmit(now, &mut Zeros, &mut buf).is_none() {
                break;
            }
        }
        while dev.poll_event().is_some() {}
        now = dev.poll_timeout().unwrap_or(now + Duration::from_millis(1));
        dev.handle_timeout(now);
    }
});
