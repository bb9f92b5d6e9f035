//! The RoCE v2 Invariant CRC, computed the way the Linux kernel's rxe does.
//!
//! The ICRC is a CRC-32 (the IEEE/Ethernet polynomial, reflected, as zlib's
//! `crc32`) over:
//!
//! 1. eight `0xff` bytes standing for the masked InfiniBand LRH;
//! 2. the IP header with its variant fields set to all ones — IPv4: TOS,
//!    TTL and header checksum; IPv6: traffic class, flow label and hop limit;
//! 3. the UDP header with its checksum set to all ones;
//! 4. the BTH with byte 4 (FECN, BECN and the reserved bits, IBA's resv8a)
//!    set to all ones;
//! 5. everything after the BTH up to the ICRC: extension headers, payload, pad.
//!
//! [`icrc`] returns that CRC-32 value; it goes on the wire **little-endian**
//! (the kernel stores the `u32` in host order on x86; checked against the
//! golden capture), which is what [`seal`] writes and [`verify`] reads.
//!
//! The IP header is rebuilt from an [`IpContext`], not read from a socket.
//! IPv4 headers are assumed to be what Linux sends for a UDP datagram with
//! DF set: version/IHL `0x45`, no options, flags DF, fragment offset 0,
//! protocol 17, identification [`IpContext::ip_id`]. IPv6 headers: next
//! header 17, no extension headers.
//!
//! The IPv4 identification and flags are *not* masked, and a UDP socket
//! does not show them. [`verify_received`] recovers them from the CRC
//! itself (see [`crate::crc_algebra`]): the difference between the ICRC
//! received and the one computed for identification 0 with DF determines
//! the four bytes of identification and flags/fragment offset, and the
//! packet is accepted only when the flags are DF alone (the kernel's rxe
//! and every Linux UDP socket with path MTU discovery send that; RoCE is
//! never fragmented) and the fragment offset is 0. The identification stays
//! free: 16 of the 32 bits, so a corruption that changes the ICRC at random
//! is accepted with probability 2^-16 instead of 2^-32 (not even every
//! single-bit error is certain to be caught any more: the tests count them),
//! and an error confined to the identification is not seen at all (it
//! changes nothing a receiver uses for an unfragmented datagram; the IPv4
//! header checksum covers it on the last hop). [`reseal_ipv4_id`] moves a sealed packet to another
//! identification at the cost of one polynomial product, for the
//! consecutive identifications Linux gives the segments of a GSO batch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::crc_algebra;
use crate::headers::Bth;

/// Length of the ICRC at the end of every packet.
pub const ICRC_LEN: usize = 4;

/// CRC seed input standing for the masked LRH.
const MASKED_LRH: [u8; 8] = [0xff; 8];
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
const IPPROTO_UDP: u8 = 17;
const IPV4_FLAG_DF: u16 = 0x4000;
/// Bytes of the ICRC's input after the IPv4 identification and the
/// flags/fragment offset, not counting the UDP payload: the rest of the IP
/// header (TTL, protocol, checksum, addresses) and the UDP header.
const IPV4_TAIL_AFTER_FLAGS: usize = 12 + UDP_HEADER_LEN;
/// Byte of the BTH masked to all ones (FECN, BECN, resv6a).
const BTH_MASKED_BYTE: usize = 4;

/// The IP and UDP header values a packet travels (or travelled) with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpContext {
    /// Source address. IPv4 and IPv4-mapped IPv6 addresses mean IPv4.
    pub src: IpAddr,
    /// Destination address. IPv4 and IPv4-mapped IPv6 addresses mean IPv4.
    pub dst: IpAddr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port (normally [`crate::ROCE_V2_PORT`]).
    pub dst_port: u16,
    /// IPv4 identification field, which the ICRC covers. Ignored for IPv6.
    ///
    /// Linux sends 0 for DF datagrams from *unconnected* UDP sockets, which
    /// is what migros uses; connected sockets and the kernel's rxe (which
    /// picks a hashed id for every packet) send nonzero ids. A receiver on
    /// a plain UDP socket cannot see this field, so it can verify the ICRC
    /// only of senders that use 0.
    pub ip_id: u16,
}

impl IpContext {
    /// A context with IPv4 identification 0.
    pub fn new(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16) -> IpContext {
        IpContext {
            src,
            dst,
            src_port,
            dst_port,
            ip_id: 0,
        }
    }

    /// Both addresses as IPv4 if both are IPv4 (or IPv4-mapped IPv6).
    fn ipv4(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        match (self.src.to_canonical(), self.dst.to_canonical()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Some((src, dst)),
            _ => None,
        }
    }
}

fn ipv6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The ICRC of a UDP payload given without its last 4 bytes, as a CRC-32
/// value whose little-endian bytes go on the wire.
///
/// Never panics: input shorter than a BTH is masked as far as it goes (such
/// a packet is invalid anyway).
pub fn icrc(ctx: &IpContext, udp_payload_without_icrc: &[u8]) -> u32 {
    let data = udp_payload_without_icrc;
    // Datagram lengths do not exceed 16 bits on a real link; longer input
    // wraps here the way it could not on the wire.
    let udp_len = (UDP_HEADER_LEN + data.len() + ICRC_LEN) as u16;

    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&MASKED_LRH);

    if let Some((src, dst)) = ctx.ipv4() {
        let mut ip = [0u8; IPV4_HEADER_LEN];
        ip[0] = 0x45;
        ip[1] = 0xff; // TOS, masked
        let total_len = (IPV4_HEADER_LEN as u16).wrapping_add(udp_len);
        ip[2..4].copy_from_slice(&total_len.to_be_bytes());
        ip[4..6].copy_from_slice(&ctx.ip_id.to_be_bytes());
        ip[6..8].copy_from_slice(&IPV4_FLAG_DF.to_be_bytes());
        ip[8] = 0xff; // TTL, masked
        ip[9] = IPPROTO_UDP;
        ip[10..12].fill(0xff); // header checksum, masked
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        hasher.update(&ip);
    } else {
        let mut ip = [0u8; IPV6_HEADER_LEN];
        // Version 6, then traffic class and flow label masked.
        ip[0..4].copy_from_slice(&[0x6f, 0xff, 0xff, 0xff]);
        ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
        ip[6] = IPPROTO_UDP;
        ip[7] = 0xff; // hop limit, masked
        ip[8..24].copy_from_slice(&ipv6(ctx.src).octets());
        ip[24..40].copy_from_slice(&ipv6(ctx.dst).octets());
        hasher.update(&ip);
    }

    let mut udp = [0xffu8; UDP_HEADER_LEN]; // checksum stays masked
    udp[0..2].copy_from_slice(&ctx.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&ctx.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    hasher.update(&udp);

    let bth_len = data.len().min(Bth::LEN);
    let mut bth = [0u8; Bth::LEN];
    bth[..bth_len].copy_from_slice(&data[..bth_len]);
    if bth_len > BTH_MASKED_BYTE {
        bth[BTH_MASKED_BYTE] = 0xff;
    }
    hasher.update(&bth[..bth_len]);
    hasher.update(&data[bth_len..]);
    hasher.finalize()
}

/// Computes the ICRC over all but the last 4 bytes of `udp_payload` and
/// writes it into those 4 bytes, as the kernel puts it on the wire.
///
/// # Panics
///
/// If `udp_payload` is shorter than 4 bytes; the emitters in
/// [`crate::packet`] always leave room for the ICRC.
pub fn seal(ctx: &IpContext, udp_payload: &mut [u8]) {
    let (data, crc) = udp_payload.split_at_mut(udp_payload.len() - ICRC_LEN);
    crc.copy_from_slice(&icrc(ctx, data).to_le_bytes());
}

/// Whether the last 4 bytes of `udp_payload` are its ICRC. False if the
/// packet is shorter than a BTH plus the ICRC.
pub fn verify(ctx: &IpContext, udp_payload: &[u8]) -> bool {
    let Some(data_len) = udp_payload.len().checked_sub(ICRC_LEN) else {
        return false;
    };
    if data_len < Bth::LEN {
        return false;
    }
    let (data, crc) = udp_payload.split_at(data_len);
    crc == icrc(ctx, data).to_le_bytes()
}

/// What [`verify_received`] learnt about the IP header a packet came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedHeader {
    /// IPv6: no field the ICRC covers is hidden from a UDP socket.
    Ipv6,
    /// IPv4 with this identification (and DF alone in the flags).
    Ipv4 {
        /// The identification the sender put in the IPv4 header.
        ip_id: u16,
    },
}

/// Whether the last 4 bytes of `udp_payload` are its ICRC for *some*
/// identification of an IPv4 header with DF and the addresses and ports of
/// `ctx`: a UDP
/// socket hides the identification and flags, which the ICRC covers, so
/// they are recovered from the CRC (`ctx.ip_id` is only the first guess).
/// `None` when no such header fits (or the packet is shorter than a BTH
/// plus the ICRC). Costs one CRC pass, plus two polynomial products when
/// the identification is not `ctx.ip_id` with DF.
pub fn verify_received(ctx: &IpContext, udp_payload: &[u8]) -> Option<ReceivedHeader> {
    let data_len = udp_payload.len().checked_sub(ICRC_LEN)?;
    if data_len < Bth::LEN {
        return None;
    }
    let (data, crc) = udp_payload.split_at(data_len);
    let received = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let expected = icrc(ctx, data);
    if ctx.ipv4().is_none() {
        return (received == expected).then_some(ReceivedHeader::Ipv6);
    }
    if received == expected {
        return Some(ReceivedHeader::Ipv4 { ip_id: ctx.ip_id });
    }
    let tail = u32::try_from(IPV4_TAIL_AFTER_FLAGS + data_len).ok()?;
    let x = crc_algebra::bytes_for(received ^ expected, tail);
    // The flags and fragment offset as sent, not only the identification,
    // are what the difference shows; only DF alone is accepted.
    if x[2..] != [0, 0] {
        return None;
    }
    Some(ReceivedHeader::Ipv4 {
        ip_id: ctx.ip_id ^ u16::from_be_bytes([x[0], x[1]]),
    })
}

/// Changes the ICRC of a sealed IPv4 packet (`udp_payload`, ICRC included)
/// from identification `from` to `to`, without reading the packet again.
/// Packets for IPv6 must not be resealed (their ICRC has no such field).
/// Does nothing to a payload too short to hold an ICRC.
pub fn reseal_ipv4_id(udp_payload: &mut [u8], from: u16, to: u16) {
    let Some(data_len) = udp_payload.len().checked_sub(ICRC_LEN) else {
        return;
    };
    if from == to {
        return;
    }
    let Ok(tail) = u32::try_from(IPV4_TAIL_AFTER_FLAGS + data_len) else {
        return;
    };
    let [hi, lo] = (from ^ to).to_be_bytes();
    let diff = crc_algebra::difference([hi, lo, 0, 0], tail);
    let crc = &mut udp_payload[data_len..];
    let sealed = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) ^ diff;
    crc.copy_from_slice(&sealed.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_ctx() -> IpContext {
        IpContext::new(
            "fd00::1".parse().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            "fd00::2".parse().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            50000,
            crate::ROCE_V2_PORT,
        )
    }

    fn v4_ctx() -> IpContext {
        IpContext::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2)),
            0xc220,
            crate::ROCE_V2_PORT,
        )
    }

    // Packet 1 of the kernel capture (RC SEND Only, 64 bytes), IPv4 id 0x2eb5.
    fn captured_packet_1() -> Vec<u8> {
        let mut p = vec![0x04, 0x00, 0xff, 0xff, 0, 0, 0, 0x20, 0x80, 0, 0x01, 0x00];
        p.extend((0..64u32).map(|i| ((i * 7 + 3) & 0xff) as u8));
        p.extend([0xc7, 0x5c, 0x41, 0x34]);
        p
    }

    #[test]
    fn kernel_vector() {
        // The ICRC below was computed by the Linux kernel's rxe.
        let ctx = IpContext {
            ip_id: 0x2eb5,
            ..v4_ctx()
        };
        let p = captured_packet_1();
        assert!(verify(&ctx, &p));
        assert_eq!(icrc(&ctx, &p[..p.len() - 4]), 0x3441_5cc7);
        assert!(!verify(&v4_ctx(), &p), "the ip id is covered");
    }

    #[test]
    fn variant_fields_are_masked() {
        let ctx = IpContext {
            ip_id: 0x2eb5,
            ..v4_ctx()
        };
        let mut p = captured_packet_1();
        p[4] = 0xc0; // FECN and BECN
        assert!(verify(&ctx, &p));
        p[5] = 1; // a QPN bit is not masked
        assert!(!verify(&ctx, &p));
    }

    #[test]
    fn mapped_addresses_mean_ipv4() {
        let ctx = IpContext {
            ip_id: 0x2eb5,
            ..v4_ctx()
        };
        let mapped = IpContext {
            src: IpAddr::V6(Ipv4Addr::new(198, 18, 10, 1).to_ipv6_mapped()),
            dst: IpAddr::V6(Ipv4Addr::new(198, 18, 10, 2).to_ipv6_mapped()),
            ..ctx
        };
        assert!(verify(&mapped, &captured_packet_1()));
    }

    #[test]
    fn ipv6_seal_verify() {
        let ctx = v6_ctx();
        let mut p = captured_packet_1();
        seal(&ctx, &mut p);
        assert!(verify(&ctx, &p));
        assert!(!verify(&v4_ctx(), &p));
        // The IPv4 id does not matter for IPv6.
        assert!(verify(&IpContext { ip_id: 7, ..ctx }, &p));
        // Traffic class, flow label and hop limit are not inputs at all;
        // addresses are.
        let other = IpContext {
            dst: "fd00::3"
                .parse()
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            ..ctx
        };
        assert!(!verify(&other, &p));
    }

    #[test]
    fn recovers_the_kernels_identification() {
        // Packet 1 of the kernel capture was sent with id 0x2eb5 and DF.
        let p = captured_packet_1();
        assert_eq!(
            verify_received(&v4_ctx(), &p),
            Some(ReceivedHeader::Ipv4 { ip_id: 0x2eb5 })
        );
        // Other addresses or ports: no identification fits (with
        // probability 1 - 2^-16).
        let other = IpContext {
            src_port: 0xc221,
            ..v4_ctx()
        };
        assert_eq!(verify_received(&other, &p), None);
    }

    #[test]
    fn reseal_then_recover_every_id_and_df() {
        let mut p = captured_packet_1();
        seal(&v4_ctx(), &mut p);
        for id in [0u16, 1, 2, 3, 0x1234, 0xffff] {
            let mut q = p.clone();
            reseal_ipv4_id(&mut q, 0, id);
            let direct = IpContext {
                ip_id: id,
                ..v4_ctx()
            };
            assert!(verify(&direct, &q), "id {id}");
            assert_eq!(
                verify_received(&v4_ctx(), &q),
                Some(ReceivedHeader::Ipv4 { ip_id: id })
            );
            // Back again.
            reseal_ipv4_id(&mut q, id, 0);
            assert_eq!(q, p);
        }
        // Sealed without DF, or as a fragment: refused.
        for flags in [[0x00, 0x00], [0x20, 0x00], [0x40, 0x01]] {
            let mut q = p.clone();
            let tail = (IPV4_TAIL_AFTER_FLAGS + q.len() - ICRC_LEN) as u32;
            let diff = crc_algebra::difference([0x00, 0x07, flags[0] ^ 0x40, flags[1]], tail);
            let n = q.len();
            let crc = u32::from_le_bytes([q[n - 4], q[n - 3], q[n - 2], q[n - 1]]) ^ diff;
            q[n - 4..].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(verify_received(&v4_ctx(), &q), None, "flags {flags:?}");
        }
    }

    #[test]
    fn recovery_misses_few_single_bit_errors() {
        // Each single-bit error (a fixed pattern the plain CRC always
        // catches) passes with probability about 2^-16 once the
        // identification is free: over 1, 2 and 4 KiB packets, 57 000
        // errors, about 0.9 expected to pass. The count is deterministic.
        let mut total = (0, 0);
        for extra in [1000usize, 2048, 4096] {
            let mut p = captured_packet_1();
            p.extend((0..extra).map(|i| (i * 13) as u8));
            seal(&v4_ctx(), &mut p);
            for bit in 0..p.len() * 8 {
                if bit / 8 == BTH_MASKED_BYTE {
                    continue; // FECN, BECN, resv6a: masked
                }
                p[bit / 8] ^= 1 << (bit % 8);
                total.1 += 1;
                if verify_received(&v4_ctx(), &p).is_some() {
                    total.0 += 1;
                }
                assert!(!verify(&v4_ctx(), &p));
                p[bit / 8] ^= 1 << (bit % 8);
            }
        }
        eprintln!("single-bit errors passed: {} of {}", total.0, total.1);
        assert!(total.0 <= 3, "{total:?}");
    }

    #[test]
    fn recovery_misses_random_corruption_rarely() {
        // Random corruption of the payload: 2^-16 expected to pass; 20000
        // tries see a handful at most (binomial, mean 0.3).
        let mut p = captured_packet_1();
        seal(&v4_ctx(), &mut p);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut missed = 0;
        for _ in 0..20_000 {
            let mut q = p.clone();
            for b in &mut q[Bth::LEN..] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b ^= state as u8;
            }
            if verify_received(&v4_ctx(), &q).is_some() {
                missed += 1;
            }
        }
        assert!(missed <= 5, "{missed} of 20000 random corruptions passed");
    }

    #[test]
    fn ipv6_is_checked_as_before() {
        let ctx = v6_ctx();
        let mut p = captured_packet_1();
        seal(&ctx, &mut p);
        assert_eq!(verify_received(&ctx, &p), Some(ReceivedHeader::Ipv6));
        p[20] ^= 1;
        assert_eq!(verify_received(&ctx, &p), None);
    }

    #[test]
    fn short_input() {
        assert_eq!(verify_received(&v4_ctx(), &[0; 15]), None);
        let mut tiny = [1u8, 2];
        reseal_ipv4_id(&mut tiny, 0, 5);
        assert_eq!(tiny, [1, 2]);
        assert!(!verify(&v4_ctx(), &[]));
        assert!(!verify(&v4_ctx(), &[0; 15]));
        // Does not panic on input shorter than a BTH.
        let _ = icrc(&v4_ctx(), &[1, 2, 3]);
    }
}
