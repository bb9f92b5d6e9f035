//! Golden packets captured from the Linux kernel's SoftRoCE (rdma_rxe).
//!
//! `data/kernel-rxe-requests.pcap` holds 14 requests sent by rxe on Linux
//! 6.1 (see /work/shared/data/README.md). Their ICRCs were computed by the
//! kernel's rxe, so they are known right: our parser must accept each
//! packet, our `verify` must accept its ICRC, and re-emitting plus `seal`
//! must reproduce it byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use migros_wire::{
    seal, verify, AtomicEth, Bth, Deth, Headers, IpContext, Opcode, Packet, Position, Psn, Reth,
    ServiceType, ROCE_V2_PORT,
};

const PCAP: &[u8] = include_bytes!("data/kernel-rxe-requests.pcap");

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_LINUX_SLL: u32 = 113;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// One captured RoCE v2 datagram.
struct Captured {
    ctx: IpContext,
    udp_payload: Vec<u8>,
}

fn u16_be(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A minimal pcap reader: classic format, either byte order, Ethernet or
/// Linux cooked link type, IPv4 or IPv6, UDP.
fn read_pcap(file: &[u8]) -> Vec<Captured> {
    let magic = &file[0..4];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file"),
    };
    let u32_at = |at: usize| {
        let b = [file[at], file[at + 1], file[at + 2], file[at + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link_type = u32_at(20);
    let mut packets = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let incl_len = u32_at(at + 8) as usize;
        let frame = &file[at + 16..at + 16 + incl_len];
        at += 16 + incl_len;
        let (ethertype, l3) = match link_type {
            LINKTYPE_ETHERNET => (u16_be(frame, 12), &frame[14..]),
            LINKTYPE_LINUX_SLL => (u16_be(frame, 14), &frame[16..]),
            other => panic!("unsupported link type {other}"),
        };
        let (src, dst, ip_id, udp) = match ethertype {
            ETHERTYPE_IPV4 => {
                assert_eq!(l3[9], 17, "not udp");
                let ihl = usize::from(l3[0] & 0x0f) * 4;
                let total = usize::from(u16_be(l3, 2));
                let src = Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
                let dst = Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]);
                (
                    IpAddr::V4(src),
                    IpAddr::V4(dst),
                    u16_be(l3, 4),
                    &l3[ihl..total],
                )
            }
            ETHERTYPE_IPV6 => {
                assert_eq!(l3[6], 17, "not udp");
                let len = usize::from(u16_be(l3, 4));
                let octets = |at: usize| -> [u8; 16] {
                    let mut a = [0; 16];
                    a.copy_from_slice(&l3[at..at + 16]);
                    a
                };
                let src = Ipv6Addr::from(octets(8));
                let dst = Ipv6Addr::from(octets(24));
                (IpAddr::V6(src), IpAddr::V6(dst), 0, &l3[40..40 + len])
            }
            other => panic!("unsupported ethertype {other:#06x}"),
        };
        let udp_len = usize::from(u16_be(udp, 4));
        packets.push(Captured {
            ctx: IpContext {
                src,
                dst,
                src_port: u16_be(udp, 0),
                dst_port: u16_be(udp, 2),
                ip_id,
            },
            udp_payload: udp[8..udp_len].to_vec(),
        });
    }
    packets
}

/// The memory region's contents the payloads were sent from.
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| ((i * 7 + 3) & 0xff) as u8)
        .collect()
}

/// What the README's table says about one packet.
struct Expected {
    opcode: Opcode,
    dest_qpn: u32,
    psn: u32,
    payload: Vec<u8>,
    reth: Option<Reth>,
    atomic_eth: Option<AtomicEth>,
    deth: Option<Deth>,
    immdt: Option<u32>,
}

fn expected() -> Vec<Expected> {
    let rkey = 0xabcd_1234;
    let e = |opcode, dest_qpn, psn, payload| Expected {
        opcode,
        dest_qpn,
        psn,
        payload,
        reth: None,
        atomic_eth: None,
        deth: None,
        immdt: None,
    };
    let reth = |va, dma_len| Some(Reth { va, rkey, dma_len });
    // The application put 0x11223344 into the verbs `imm_data` field, which
    // is nominally big-endian but was filled in host (little-endian) order,
    // so the wire carries 44 33 22 11 and we, reading network order, see
    // 0x44332211.
    let imm = Some(0x4433_2211);
    vec![
        e(Opcode::RC_SEND_ONLY, 0x20, 0x100, pattern(0, 64)),
        e(Opcode::RC_SEND_FIRST, 0x21, 0x100, pattern(0, 1024)),
        e(Opcode::RC_SEND_MIDDLE, 0x21, 0x101, pattern(1024, 1024)),
        e(Opcode::RC_SEND_LAST, 0x21, 0x102, pattern(2048, 452)),
        Expected {
            immdt: imm,
            ..e(
                Opcode::RC_SEND_ONLY_WITH_IMMEDIATE,
                0x22,
                0x100,
                pattern(0, 100),
            )
        },
        Expected {
            reth: reth(0x7f00_0000_1000, 64),
            ..e(Opcode::RC_RDMA_WRITE_ONLY, 0x23, 0x100, pattern(0, 64))
        },
        Expected {
            reth: reth(0x7f00_0000_1000, 2500),
            ..e(Opcode::RC_RDMA_WRITE_FIRST, 0x24, 0x100, pattern(0, 1024))
        },
        e(
            Opcode::RC_RDMA_WRITE_MIDDLE,
            0x24,
            0x101,
            pattern(1024, 1024),
        ),
        e(Opcode::RC_RDMA_WRITE_LAST, 0x24, 0x102, pattern(2048, 452)),
        Expected {
            reth: reth(0x7f00_0000_1000, 100),
            immdt: imm,
            ..e(
                Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE,
                0x25,
                0x100,
                pattern(0, 100),
            )
        },
        Expected {
            reth: reth(0x7f00_0000_1000, 3000),
            ..e(Opcode::RC_RDMA_READ_REQUEST, 0x26, 0x100, Vec::new())
        },
        Expected {
            atomic_eth: Some(AtomicEth {
                va: 0x7f00_0000_2000,
                rkey,
                swap_add: 9,
                compare: 5,
            }),
            ..e(Opcode::RC_COMPARE_SWAP, 0x27, 0x100, Vec::new())
        },
        Expected {
            atomic_eth: Some(AtomicEth {
                va: 0x7f00_0000_2000,
                rkey,
                swap_add: 5,
                compare: 0,
            }),
            ..e(Opcode::RC_FETCH_ADD, 0x28, 0x100, Vec::new())
        },
        Expected {
            deth: Some(Deth {
                qkey: 0x1111_1111,
                src_qpn: 0x1a,
            }),
            ..e(Opcode::UD_SEND_ONLY, 0x30, 0x200, pattern(0, 200))
        },
    ]
}

#[test]
fn kernel_packets_parse_verify_and_reemit() {
    let captured = read_pcap(PCAP);
    let expected = expected();
    assert_eq!(captured.len(), 14);
    for (i, (cap, exp)) in captured.iter().zip(&expected).enumerate() {
        let n = i + 1;
        assert_eq!(cap.ctx.src, IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1)));
        assert_eq!(cap.ctx.dst, IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2)));
        assert_eq!(cap.ctx.dst_port, ROCE_V2_PORT);
        // rxe gives every packet a nonzero IPv4 id, and the ICRC covers it.
        assert_ne!(cap.ctx.ip_id, 0, "packet {n}");

        let packet = Packet::parse(&cap.udp_payload)
            .unwrap_or_else(|e| panic!("packet {n} does not parse: {e}"));
        let h = &packet.headers;
        assert_eq!(h.bth.opcode, exp.opcode, "packet {n}");
        assert_eq!(h.bth.dest_qpn, exp.dest_qpn, "packet {n}");
        assert_eq!(h.bth.psn, Psn::new(exp.psn), "packet {n}");
        assert_eq!(h.bth.pkey, 0xffff, "packet {n}");
        assert_eq!(h.reth, exp.reth, "packet {n}");
        assert_eq!(h.atomic_eth, exp.atomic_eth, "packet {n}");
        assert_eq!(h.deth, exp.deth, "packet {n}");
        assert_eq!(h.immdt, exp.immdt, "packet {n}");
        assert_eq!((h.aeth, h.atomic_ack_eth, h.ieth), (None, None, None));
        assert_eq!(packet.payload, exp.payload.as_slice(), "packet {n}");

        assert!(verify(&cap.ctx, &cap.udp_payload), "packet {n} icrc");
        let wrong_id = IpContext {
            ip_id: cap.ctx.ip_id ^ 1,
            ..cap.ctx
        };
        assert!(!verify(&wrong_id, &cap.udp_payload), "packet {n}");

        let mut out = vec![0xaa; packet.buffer_len()];
        assert_eq!(packet.emit(&mut out), Ok(cap.udp_payload.len()));
        seal(&cap.ctx, &mut out);
        assert_eq!(out, cap.udp_payload, "packet {n} re-emitted");
    }
}

/// Builds each packet from the README's values alone (not from the parsed
/// bytes) and checks the emitter plus `seal` produce the kernel's bytes.
#[test]
fn emitting_the_table_reproduces_the_kernel_bytes() {
    let captured = read_pcap(PCAP);
    for (i, (cap, exp)) in captured.iter().zip(expected()).enumerate() {
        let info = exp.opcode.info().expect("the table lists known opcodes");
        let mut bth = Bth::new(exp.opcode, exp.dest_qpn, Psn::new(exp.psn));
        // rxe asks for an ACK on the last packet of every RC message.
        bth.ack_req = info.service == ServiceType::Rc
            && matches!(info.position, Position::Last | Position::Only);
        let headers = Headers {
            reth: exp.reth,
            atomic_eth: exp.atomic_eth,
            deth: exp.deth,
            immdt: exp.immdt,
            ..Headers::new(bth)
        };
        let packet = Packet::new(headers, &exp.payload).expect("the table's headers fit");
        let mut out = vec![0; packet.buffer_len()];
        assert_eq!(packet.emit(&mut out), Ok(out.len()));
        seal(&cap.ctx, &mut out);
        assert_eq!(out, cap.udp_payload, "packet {}", i + 1);
    }
}

#[test]
fn flipped_bit_is_rejected() {
    let captured = read_pcap(PCAP);
    for cap in &captured {
        for bit in [0, 8 * 12 + 3, 8 * cap.udp_payload.len() - 1] {
            let mut p = cap.udp_payload.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&cap.ctx, &p), "bit {bit}");
        }
    }
}
