//! Property tests: emit then parse gives back what was emitted, and parsing
//! arbitrary bytes never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use migros_wire::opcode::ENTRIES;
use migros_wire::{
    seal, verify, Aeth, AtomicAckEth, AtomicEth, Bth, Deth, Headers, IpContext, OpKind, Opcode,
    Packet, Psn, Reth,
};
use proptest::prelude::*;

const MASK_24: u32 = 0x00ff_ffff;

fn bth(opcode: Opcode) -> impl Strategy<Value = Bth> {
    (
        any::<(bool, bool, u16, bool, bool)>(),
        (0..=MASK_24, any::<bool>(), 0..=MASK_24),
    )
        .prop_map(
            move |((solicited, mig_req, pkey, fecn, becn), (dest_qpn, ack_req, psn))| Bth {
                opcode,
                solicited,
                mig_req,
                pad_count: 0,
                tver: 0,
                pkey,
                fecn,
                becn,
                dest_qpn,
                ack_req,
                psn: Psn::new(psn),
            },
        )
}

/// Valid headers and payload for one opcode from the table.
fn packet_parts() -> impl Strategy<Value = (Headers, Vec<u8>)> {
    (0..ENTRIES.len()).prop_flat_map(|i| {
        let (opcode, info) = ENTRIES[i];
        let payload = if info.kind == OpKind::Resume {
            prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), 16)].boxed()
        } else if info.has_payload {
            proptest::collection::vec(any::<u8>(), 0..300).boxed()
        } else {
            Just(Vec::new()).boxed()
        };
        (
            bth(opcode),
            any::<(u32, u32, u64, u64, u64, u32, u32)>(),
            (any::<u8>(), 0..=MASK_24, 0..=MASK_24),
            payload,
        )
            .prop_map(
                move |(bth, (a, b, c, d, e, imm, ieth), (syndrome, msn, qpn), payload)| {
                    let headers = Headers {
                        bth,
                        deth: info.has_deth.then_some(Deth {
                            qkey: a,
                            src_qpn: qpn,
                        }),
                        reth: info.has_reth.then_some(Reth {
                            va: c,
                            rkey: a,
                            dma_len: b,
                        }),
                        atomic_eth: info.has_atomic_eth.then_some(AtomicEth {
                            va: c,
                            rkey: b,
                            swap_add: d,
                            compare: e,
                        }),
                        aeth: info.has_aeth.then_some(Aeth { syndrome, msn }),
                        atomic_ack_eth: info.has_atomic_ack_eth.then_some(AtomicAckEth { orig: e }),
                        immdt: info.has_immdt.then_some(imm),
                        ieth: info.has_ieth.then_some(ieth),
                    };
                    (headers, payload)
                },
            )
    })
}

fn ip_context() -> impl Strategy<Value = IpContext> {
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<(u16, u16, u16)>(),
    )
        .prop_map(|(v4, a, b, (src_port, dst_port, ip_id))| {
            let (src, dst) = if v4 {
                (
                    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                )
            } else {
                (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))
            };
            IpContext {
                src,
                dst,
                src_port,
                dst_port,
                ip_id,
            }
        })
}

proptest! {
    #[test]
    fn parse_emit_round_trip((headers, payload) in packet_parts(), ctx in ip_context()) {
        let packet = Packet::new(headers, &payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut out = vec![0xaa; packet.buffer_len() + 7];
        let len = packet.emit(&mut out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(len, packet.buffer_len());
        prop_assert_eq!(len % 4, 0);
        let out = &mut out[..len];
        seal(&ctx, out);
        prop_assert!(verify(&ctx, out));

        let parsed = Packet::parse(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected = packet;
        expected.headers.bth.pad_count = migros_wire::pad_len(payload.len()) as u8;
        prop_assert_eq!(parsed, expected);

        // emit_headers writes the same header bytes.
        let mut headers_only = vec![0; len];
        let header_len = migros_wire::emit_headers(&headers, payload.len(), &mut headers_only)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&headers_only[..header_len], &out[..header_len]);

        // A buffer one byte short is an error, not a panic.
        let mut short = vec![0; len - 1];
        prop_assert!(packet.emit(&mut short).is_err());
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Packet::parse(&bytes);
    }

    #[test]
    fn parse_never_panics_on_known_opcodes(
        i in 0..ENTRIES.len(),
        second in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..80),
        ctx in ip_context(),
    ) {
        let mut bytes = vec![ENTRIES[i].0 .0, second & 0xf0];
        bytes.extend(rest);
        if let Ok(packet) = Packet::parse(&bytes) {
            let mut out = vec![0; packet.buffer_len()];
            prop_assert_eq!(packet.emit(&mut out), Ok(bytes.len()));
            prop_assert_eq!(Packet::parse(&out), Ok(packet));
        }
        let _ = verify(&ctx, &bytes);
    }
}
