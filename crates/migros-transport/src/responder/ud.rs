//! UD receive: a datagram lands in the next receive WR (the SRQ's if the
//! QP has one) behind the 40-byte GRH area, or is dropped; UD has no
//! acknowledgements and no sequence.

use std::net::IpAddr;

use migros_wire::Packet;

use crate::dma;
use crate::qp::{Env, Qp, MAX_UD_PEERS};
use migros_proto::verbs::*;

/// Bytes reserved for the GRH at the start of every UD receive buffer.
pub const GRH_LEN: usize = 40;

impl Qp {
    /// A UD datagram for this QP: checked against the Q_Key and delivered.
    pub(super) fn ud_request(&mut self, pkt: &Packet, src: IpAddr, env: &mut Env) {
        let Some(deth) = pkt.headers.deth else { return };
        if deth.qkey != self.attr.qkey || self.mig() == MigrationState::Stopped {
            self.counters.rx_dropped += 1;
            env.objs.counters.rx_dropped += 1;
            return;
        }
        let Some(recv) = self.take_recv(env) else {
            // UD drops silently when no receive is posted.
            self.counters.rx_dropped += 1;
            env.objs.counters.rx_dropped += 1;
            return;
        };
        let grh = grh_bytes(src, env.config.addr, pkt.buffer_len());
        let pd = self.init.pd;
        let res = dma::scatter(env.mem, &env.objs.mrs, pd, &recv.sges, 0, &grh).and_then(|_| {
            dma::scatter(
                env.mem,
                &env.objs.mrs,
                pd,
                &recv.sges,
                GRH_LEN as u64,
                pkt.payload,
            )
        });
        let byte_len = (GRH_LEN + pkt.payload.len()) as u32;
        let mut wc = match res {
            Ok(()) => self.recv_wc(recv.wr_id, WcStatus::Success, WcOpcode::Recv, byte_len),
            Err(e) => self.recv_wc(recv.wr_id, e.status(), WcOpcode::Recv, 0),
        };
        wc.imm_data = pkt.headers.immdt;
        wc.src_qp = deth.src_qpn;
        wc.src_addr = Some(src);
        self.counters.rx_bytes += pkt.payload.len() as u64;
        let solicited = pkt.headers.bth.solicited;
        env.objs
            .complete_solicited(self.init.recv_cq, wc, solicited);
        if self.ud_peers.len() < MAX_UD_PEERS {
            self.ud_peers.insert((src, deth.src_qpn));
        }
    }
}

/// The 40-byte GRH area of a UD receive: for IPv4, 20 zero bytes then the
/// IPv4 header (as rxe and RoCE NICs place it, with a valid header
/// checksum: rxe copies the header as it arrived); for IPv6, the IPv6
/// header. The fields a UDP socket does not show are those Linux sends:
/// identification 0 with DF, TTL 64, TOS 0. `roce_len` is the RoCE
/// packet's length on the wire (every header, the ImmDt of a SEND with
/// immediate included, payload, pad and ICRC: [`Packet::buffer_len`]), so
/// the lengths are those of the datagram that arrived.
fn grh_bytes(src: IpAddr, dst: IpAddr, roce_len: usize) -> [u8; GRH_LEN] {
    let mut grh = [0u8; GRH_LEN];
    let udp_len = 8 + roce_len;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut grh[20..];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = 17;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let sum = ipv4_header_checksum(h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        _ => {
            let s = to_v6(src);
            let d = to_v6(dst);
            grh[0] = 0x60;
            grh[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            grh[6] = 17;
            grh[7] = 64;
            grh[8..24].copy_from_slice(&s.octets());
            grh[24..40].copy_from_slice(&d.octets());
        }
    }
    grh
}

/// The IPv4 header checksum (RFC 791) of a 20-byte header whose checksum
/// field is zero.
fn ipv4_header_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn to_v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_wire::{Bth, Deth, Headers, Opcode, Psn};
    use std::net::Ipv4Addr;

    #[test]
    fn ipv4_grh_is_a_valid_header_in_the_last_20_bytes() {
        let src = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1));
        let dst = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2));
        // A SEND with immediate of 61 bytes: BTH, DETH, ImmDt, payload,
        // 3 pad bytes, ICRC.
        let opcode = Opcode::UD_SEND_ONLY_WITH_IMMEDIATE;
        let headers = Headers {
            deth: Some(Deth {
                qkey: 1,
                src_qpn: 2,
            }),
            immdt: Some(7),
            ..Headers::new(Bth::new(opcode, 3, Psn::new(0)))
        };
        let wire = Packet::new(headers, &[0u8; 61]).unwrap();
        assert_eq!(wire.buffer_len(), 12 + 8 + 4 + 61 + 3 + 4);
        let grh = grh_bytes(src, dst, wire.buffer_len());
        assert_eq!(grh[..20], [0; 20]);
        let h = &grh[20..];
        // Version 4, IHL 5; total length: IP, UDP and the RoCE packet.
        assert_eq!(h[0], 0x45);
        assert_eq!(
            u16::from_be_bytes([h[2], h[3]]),
            20 + 8 + 12 + 8 + 4 + 64 + 4
        );
        assert_eq!((h[6], h[7], h[9]), (0x40, 0, 17));
        assert_eq!(
            (&h[12..16], &h[16..20]),
            (&[198, 18, 10, 1][..], &[198, 18, 10, 2][..])
        );
        // A header with its checksum sums to 0xffff (its checksum is 0).
        let mut copy = [0u8; 20];
        copy.copy_from_slice(h);
        assert_eq!(ipv4_header_checksum(&copy), 0);
        // RFC 1071's example words: 0x0001 0xf203 0xf4f5 0xf6f7 sum to
        // 0xddf2, checksum 0x220d.
        let mut words = [0u8; 20];
        words[..8].copy_from_slice(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(ipv4_header_checksum(&words), 0x220d);
    }
}
