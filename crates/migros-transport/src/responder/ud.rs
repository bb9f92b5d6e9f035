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
            return;
        }
        let Some(recv) = self.take_recv(env) else {
            // UD drops silently when no receive is posted.
            self.counters.rx_dropped += 1;
            return;
        };
        let grh = grh_bytes(src, env.config.addr, pkt.payload.len());
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
/// IPv4 header (as rxe and RoCE NICs place it); for IPv6, the IPv6 header.
fn grh_bytes(src: IpAddr, dst: IpAddr, payload_len: usize) -> [u8; GRH_LEN] {
    let mut grh = [0u8; GRH_LEN];
    let udp_len = 8 + 12 + 8 + payload_len + 4;
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

fn to_v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
