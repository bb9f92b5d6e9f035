//! What the transport's fuzz targets share: memory that is always there,
//! and a restored device run for a while.
#![allow(dead_code)] // each target uses a part of it

use std::time::Duration;

use migros_transport::{Device, Instant, Memory, MemoryFault, OwnerId};

/// Memory that is there and all zero: lets the engines run their data path.
pub struct Zeros;

impl Memory for Zeros {
    fn read(&mut self, _: OwnerId, _: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        buf.fill(0);
        Ok(())
    }
    fn write(&mut self, _: OwnerId, _: u64, _: &[u8]) -> Result<(), MemoryFault> {
        Ok(())
    }
}

/// Resumes `owner` (restored on `dev` at `now`), then four rounds of:
/// send what there is (64 packets at most), drop the events, run the
/// timers at the next deadline (or 1 ms later).
pub fn resume_and_run(dev: &mut Device, mut now: Instant, owner: OwnerId) {
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
}
