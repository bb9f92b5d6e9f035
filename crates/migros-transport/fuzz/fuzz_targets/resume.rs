//! RESUME handling is what an attacker on the network reaches first: any
//! sequence of RESUME-opcode packets (RESUME with and without the expected
//! PSN, PROBE, KEY and malformed ones, valid ICRC, from a third address or spoofing the peer's, at any
//! PSN), mixed with time passing, against an RC QP that is Running, Paused
//! (the peer's pause NAK) or Stopped (checkpointed), never panics and
//! never re-points the QP but to a location named by a RESUME whose key a
//! KEY message confirmed (the nonces come from a fixed seed here, so the
//! fuzzer may find one; a network attacker cannot).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use migros_transport::resume::ResumeMessage;
use migros_transport::{
    Access, AttrMask, Device, DeviceConfig, Instant, Memory, MemoryFault, Mtu,
    OwnerId, QpAttr, QpCap, QpInit, QpState, QpType,
};
use migros_wire::{Aeth, Bth, Headers, IpContext, Opcode, Packet, Psn, PAUSE_NAK_SYNDROME};

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
    let cap = QpCap {
        max_send_wr: 8,
        max_recv_wr: 8,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 0,
    };
    d.create_qp(QpInit {
        owner: OWNER,
        qpn: QPN,
        qp_type: QpType::Rc,
        pd: 1,
        send_cq: 3,
        recv_cq: 3,
        srq: None,
        cap,
        sq_sig_all: false,
    })
    .unwrap();
    let now = Instant::ZERO;
    let init = QpAttr {
        qp_state: QpState::Init,
        qp_access_flags: Access(0xf),
        ..QpAttr::default()
    };
    let m = AttrMask::STATE | AttrMask::ACCESS_FLAGS | AttrMask::PKEY_INDEX | AttrMask::PORT;
    d.modify_qp(now, QPN, &init, m).unwrap();
    let rtr = QpAttr {
        qp_state: QpState::Rtr,
        path_mtu: Mtu::Mtu1024,
        dest_qp_num: PEER_QPN,
        rq_psn: 1000,
        dest_addr: Some(addr(2)),
        max_dest_rd_atomic: 1,
        min_rnr_timer: 1,
        ..QpAttr::default()
    };
    let m = AttrMask::STATE
        | AttrMask::AV
        | AttrMask::PATH_MTU
        | AttrMask::DEST_QPN
        | AttrMask::RQ_PSN
        | AttrMask::MAX_DEST_RD_ATOMIC
        | AttrMask::MIN_RNR_TIMER;
    d.modify_qp(now, QPN, &rtr, m).unwrap();
    let rts = QpAttr {
        qp_state: QpState::Rts,
        sq_psn: 2000,
        timeout: 14,
        retry_cnt: 7,
        rnr_retry: 7,
        max_rd_atomic: 1,
        ..QpAttr::default()
    };
    let m = AttrMask::STATE
        | AttrMask::SQ_PSN
        | AttrMask::TIMEOUT
        | AttrMask::RETRY_CNT
        | AttrMask::RNR_RETRY
        | AttrMask::MAX_QP_RD_ATOMIC;
    d.modify_qp(now, QPN, &rts, m).unwrap();
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
