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
//! protocol 17, identification [`IpContext::ip_id`] (this field is *not*
//! masked by the spec, so it must be known). IPv6 headers: next header 17,
//! no extension headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let ctx = IpContext::new(
            "fd00::1".parse().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            "fd00::2".parse().unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            50000,
            crate::ROCE_V2_PORT,
        );
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
    fn short_input() {
        assert!(!verify(&v4_ctx(), &[]));
        assert!(!verify(&v4_ctx(), &[0; 15]));
        // Does not panic on input shorter than a BTH.
        let _ = icrc(&v4_ctx(), &[1, 2, 3]);
    }
}
