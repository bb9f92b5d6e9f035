//! What the ICRC costs per packet: the plain check (identification 0), the
//! check that recovers another identification, and resealing a packet for
//! another identification. `cargo run --release -p migros-wire --example
//! icrc_cost [payload bytes]`; one run, figures vary with the machine.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use migros_wire::{reseal_ipv4_id, seal, verify, verify_received, IpContext};

fn main() {
    let payload: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4096);
    let ctx = IpContext::new(
        IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1)),
        IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2)),
        4791,
        4791,
    );
    let mut p = vec![0x04, 0, 0xff, 0xff, 0, 0, 0, 0x20, 0x80, 0, 1, 0];
    p.extend((0..payload).map(|i| i as u8));
    p.extend([0; 4]);
    seal(&ctx, &mut p);
    let mut q = p.clone();
    reseal_ipv4_id(&mut q, 0, 3);

    let n = 200_000u32;
    let time = |what: &str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("{what:<44} {ns:>8.1} ns/packet ({payload} B payload)");
    };
    time("verify, identification 0", &mut || {
        assert!(verify(black_box(&ctx), black_box(&p)));
    });
    time("verify_received, identification 0", &mut || {
        assert!(verify_received(black_box(&ctx), black_box(&p)).is_some());
    });
    time("verify_received, identification 3 (recovered)", &mut || {
        assert!(verify_received(black_box(&ctx), black_box(&q)).is_some());
    });
    let mut id = 0u16;
    time("reseal_ipv4_id", &mut || {
        reseal_ipv4_id(black_box(&mut q), id, id.wrapping_add(1));
        id = id.wrapping_add(1);
    });
}
