//! Parses arbitrary bytes as a RoCE v2 UDP payload; whatever parses must
//! re-emit to the same bytes (pad and ICRC aside) and re-parse equal.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use migros_wire::{seal, verify, IpContext, Packet, ROCE_V2_PORT};

fuzz_target!(|data: &[u8]| {
    let v4 = IpContext {
        src: IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1)),
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2)),
        src_port: 49152,
        dst_port: ROCE_V2_PORT,
        ip_id: 0,
    };
    let v6 = IpContext {
        src: IpAddr::V6(Ipv6Addr::LOCALHOST),
        dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ..v4
    };
    let _ = verify(&v4, data);
    let _ = verify(&v6, data);

    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let mut out = [0u8; 65536];
    let len = packet.emit(&mut out).expect("a parsed packet re-emits");
    assert_eq!(len, data.len());
    let out = &mut out[..len];
    // Same headers (reserved bits aside) and payload.
    assert_eq!(Packet::parse(out), Ok(packet));
    seal(&v4, out);
    assert!(verify(&v4, out));
    assert_eq!(Packet::parse(out), Ok(packet));
});
