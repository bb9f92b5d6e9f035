//! What stays on the old node when a QP migrates away: a tombstone that
//! answers the partner's requests with the pause NAK (so the partner pauses
//! instead of timing out) and, once it knows the QP's new node, forwards
//! RESUMEs there (both ends migrating at once) and tells UD senders where
//! the QP went (a RESUME naming the new node: their device redirects).

use std::net::IpAddr;

use migros_wire::{AckSyndrome, OpKind, Opcode, Packet, Psn};

use crate::device::DeviceConfig;
use crate::packet_builder::{ack_headers, PacketBuilder, Route};
use crate::qp::Qp;
use crate::resume::resume_payload;
use migros_proto::verbs::*;

/// The remains of a migrated QP.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    qpn: Qpn,
    qp_type: QpType,
    peer_qpn: Qpn,
    epsn: Psn,
    msn: u32,
    /// Where the QP went, once known.
    pub forward: Option<IpAddr>,
}

impl Tombstone {
    pub fn of(qp: &Qp) -> Tombstone {
        Tombstone {
            qpn: qp.qpn(),
            qp_type: qp.qp_type(),
            peer_qpn: qp.attr.dest_qp_num,
            epsn: qp.resp.epsn,
            msn: qp.resp.msn,
            forward: None,
        }
    }

    /// The datagram to send in answer to `pkt` (which arrived from `src`
    /// as `datagram`), if any.
    pub fn answer(
        &self,
        config: &DeviceConfig,
        pkt: &Packet,
        datagram: &[u8],
        src: IpAddr,
    ) -> Option<(IpAddr, Vec<u8>)> {
        let info = pkt.info();
        if self.qp_type == QpType::Ud {
            // The datagram is lost (UD is unreliable); its sender learns
            // where to send from now on.
            let (to, deth) = (self.forward?, pkt.headers.deth?);
            return self.redirect(config, src, deth.src_qpn, to);
        }
        if info.kind == OpKind::Resume {
            if let Some(to) = self.forward {
                // The same bytes, sealed again: the ICRC covers the addresses.
                let mut out = datagram.to_vec();
                migros_wire::seal(&Route::new(config, to).ip_context(), &mut out);
                return Some((to, out));
            }
        }
        let wants_pause_nak =
            self.qp_type == QpType::Rc && (info.kind == OpKind::Resume || info.is_request());
        if !wants_pause_nak {
            return None;
        }
        let h = ack_headers(
            Opcode::RC_ACKNOWLEDGE,
            self.peer_qpn,
            self.epsn,
            migros_wire::PAUSE_NAK_SYNDROME,
            self.msn,
        );
        let mut out = Vec::new();
        PacketBuilder::new(&mut out, &h, 0)
            .ok()?
            .finish(Route::new(config, src));
        Some((src, out))
    }

    /// A RESUME to UD QP `dest_qpn` at `dst` saying this QP now lives at `to`.
    fn redirect(
        &self,
        config: &DeviceConfig,
        dst: IpAddr,
        dest_qpn: Qpn,
        to: IpAddr,
    ) -> Option<(IpAddr, Vec<u8>)> {
        let mut h = ack_headers(
            Opcode::RC_RESUME,
            dest_qpn,
            self.epsn,
            AckSyndrome::Ack { credits: 0x1f }.encode(),
            self.msn,
        );
        h.bth.ack_req = false;
        let payload = resume_payload(to, self.qpn);
        let mut out = Vec::new();
        PacketBuilder::with_payload(&mut out, &h, &payload)
            .ok()?
            .finish(Route::new(config, dst));
        Some((dst, out))
    }
}
