//! RESUME handling is what an attacker on the network reaches first: any
//! sequence of RESUME-opcode packets (RESUME with and without the expected
//! PSN, PROBE, KEY and malformed ones, valid ICRC, from a third address or spoofing the peer's, at any
//! PSN), mixed with time passing, against an RC QP that is Running, Paused
//! (the peer's pause NAK) or Stopped (checkpointed), never panics and
//! never re-points the QP but to a location named by a RESUME whose key a
//! KEY message confirmed (the nonces come from a fixed seed here, so the
//! fuzzer may find one; a network attacker cannot).
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::Zeros;
use libfuzzer_sys::fuzz_target;
use migros_test_support::rc::{cap, rc_qp_init, RcParams};
use migros_transport::resume::ResumeMessage;
use migros_transport::{Device, DeviceConfig, Instant, OwnerId};
use migros_wire::{Aeth, Bth, Headers, IpContext, Opcode, Packet, Psn, PAUSE_NAK_SYNDROME};

const OWNER: OwnerId = 1;
const QPN: u32 = 0x42;
const PEER_QPN: u32 = 0x77;

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

/// A device with one RC QP in RTS connected to `PEER_QPN` at `addr(2)`.
fn device() -> Device {
    let mut d = Device::new(DeviceConfig::new(addr(1)));
    d.alloc_pd(OWNER, 1).unwrap();
    d.create_cq(OWNER, 3, 64).unwrap();
    d.create_qp(rc_qp_init(OWNER, QPN, 1, 3, cap(8, 8)))
        .unwrap();
    let params = RcParams {
        sq_psn: 2000,
        rq_psn: 1000,
        timeout: 14,
        max_rd_atomic: 1,
        max_dest_rd_atomic: 1,
        ..RcParams::new(PEER_QPN, addr(2))
    };
    for (attr, mask) in params.transitions() {
        d.modify_qp(Instant::ZERO, QPN, &attr, mask).unwrap();
    }
    d
}

fn sealed(src: IpAddr, headers: Headers, payload: &[u8]) -> Option<Vec<u8>> {
    let p = Packet::new(headers, payload).ok()?;
    let mut bytes = vec![0u8; p.buffer_len()];
    p.emit(&mut bytes).ok()?;
    migros_wire::seal(&IpContext::new(src, addr(1), 4791, 4791), &mut bytes);
    Some(bytes)
}

fn aeth_headers(opcode: Opcode, psn: u32, syndrome: u8, solicited: bool) -> Headers {
    let mut bth = Bth::new(opcode, QPN, Psn::new(psn));
    bth.solicited = solicited;
    let mut h = Headers::new(bth);
    h.aeth = Some(Aeth { syndrome, msn: 0 });
    h
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut dev = device();
    let mut now = Instant::from_nanos(1_000_000);
    let mut buf = Vec::new();
    match mode % 3 {
        1 => {
            // The peer paused us (its pause NAK).
            let h = aeth_headers(Opcode::RC_ACKNOWLEDGE, 2000, PAUSE_NAK_SYNDROME, false);
            let bytes = sealed(addr(2), h, &[]).unwrap();
            dev.handle_datagram(now, &mut Zeros, addr(2), 4791, &bytes);
        }
        2 => dev.pause_owner(OWNER).unwrap(),
        _ => {}
    }
    // Keys KEY messages told, and what RESUMEs claimed.
    let mut told = Vec::new();
    let mut claims = Vec::new();
    while rest.len() >= 5 {
        let (head, tail) = rest.split_at(5);
        let op = head[0];
        let psn = u32::from_be_bytes([0, head[1], head[2], head[3]]);
        let len = usize::from(head[4]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let src = if op & 0x10 != 0 { addr(2) } else { addr(3) };
        match op & 0x7 {
            0..=3 => {
                // A RESUME-opcode packet with these payload bytes (any
                // length the wire allows; others are malformed).
                match ResumeMessage::parse(payload) {
                    Some(ResumeMessage::Resume { location, key, .. }) => {
                        claims.push((location, key))
                    }
                    Some(ResumeMessage::Key { key, .. }) => told.push(key),
                    _ => {}
                }
                let h = aeth_headers(Opcode::RC_RESUME, psn, 0x1f, op & 0x20 != 0);
                let bytes = sealed(src, h, payload).unwrap_or_else(|| payload.to_vec());
                dev.handle_datagram(now, &mut Zeros, src, 4791, &bytes);
            }
            4 => {
                // A well-formed RESUME built from the input's fields.
                let mut k = [0u8; 8];
                for (i, b) in payload.iter().take(8).enumerate() {
                    k[i] = *b;
                }
                let key = u64::from_be_bytes(k);
                claims.push((addr(3), key));
                // With the PSN the sender expects (the 32-byte RESUME) or
                // without it (the 28 bytes of the previous version).
                let expected = (op & 0x20 != 0).then(|| Psn::new(psn));
                let msg = ResumeMessage::Resume {
                    location: addr(3),
                    qpn: PEER_QPN,
                    key,
                    expected,
                };
                let h = aeth_headers(Opcode::RC_RESUME, psn, 0x1f, false);
                let bytes = sealed(src, h, &msg.encode()).unwrap();
                dev.handle_datagram(now, &mut Zeros, src, 4791, &bytes);
            }
            5 => {
                now = now + Duration::from_micros(u64::from(psn & 0xffff));
                dev.handle_timeout(now);
            }
            _ => {
                for _ in 0..16 {
                    if dev.poll_transmit(now, &mut Zeros, &mut buf).is_none() {
                        break;
                    }
                }
                while dev.poll_event().is_some() {}
            }
        }
        let attr = dev.query_qp(QPN).unwrap();
        if let Some(to) = attr.dest_addr.filter(|a| *a != addr(2)) {
            assert!(
                claims.iter().any(|(l, k)| *l == to && told.contains(k)),
                "re-pointed to {to} without a confirmed key ({:?})",
                attr.migration
            );
        }
    }
});
