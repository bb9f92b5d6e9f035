//! What stays on the old node when a QP migrates away: a tombstone that
//! answers the partner's requests with the pause NAK (so the partner pauses
//! instead of timing out), answers the partner's key probe with the QP's
//! connection key (sent to the partner's recorded address, never to the
//! asker), and, once it knows the QP's new node, forwards RESUMEs and key
//! answers there (both ends migrating at once) and tells UD senders where
//! the QP went (a RESUME naming the new node: their device redirects).

use std::net::IpAddr;

use migros_wire::{OpKind, Opcode, Packet, Psn};

use crate::device::DeviceConfig;
use crate::packet_builder::{ack_headers, PacketBuilder, Route};
use crate::qp::Qp;
use crate::resume::{build_message, message_headers, ResumeMessage};
use migros_proto::verbs::*;

/// The remains of a migrated QP.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    qpn: Qpn,
    qp_type: QpType,
    peer_qpn: Qpn,
    /// The partner's address when the QP left (connected QPs).
    peer_addr: Option<IpAddr>,
    epsn: Psn,
    msn: u32,
    /// The QP's connection key: only an image holding it may take this
    /// QPN back, and the partner learns it from here.
    pub key: u64,
    /// Where the QP went, once known.
    pub forward: Option<IpAddr>,
}

impl Tombstone {
    pub fn of(qp: &Qp) -> Tombstone {
        Tombstone {
            qpn: qp.qpn(),
            qp_type: qp.qp_type(),
            peer_qpn: qp.attr.dest_qp_num,
            peer_addr: qp.attr.dest_addr,
            epsn: qp.resp.epsn,
            msn: qp.resp.msn,
            key: qp.resume_key,
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
        let message = if info.kind == OpKind::Resume {
            ResumeMessage::parse(pkt.payload)
        } else {
            None
        };
        if self.qp_type == QpType::Ud {
            // The datagram is lost (UD is unreliable); its sender learns
            // where to send from now on. A probe (a device checking a UD
            // announcement) gets the same answer.
            let to = self.forward?;
            let asker = match message {
                Some(ResumeMessage::Probe { qpn, .. }) => qpn,
                _ => pkt.headers.deth?.src_qpn,
            };
            return self.redirect(config, src, asker, to);
        }
        match message {
            Some(ResumeMessage::Probe { qpn, nonce }) => {
                // The partner checks that we left: tell it the key, at
                // its recorded address (a forged probe teaches nobody).
                if qpn != self.peer_qpn {
                    return None;
                }
                let to = self.peer_addr?;
                let key = ResumeMessage::Key {
                    qpn: self.qpn,
                    nonce,
                    key: self.key,
                };
                let mut out = Vec::new();
                let h = message_headers(self.peer_qpn, self.epsn, self.msn);
                build_message(&mut out, config, to, h, &key)?;
                return Some((to, out));
            }
            Some(ResumeMessage::Resume { .. } | ResumeMessage::Key { .. }) => {
                if let Some(to) = self.forward {
                    // The same bytes, sealed again: the ICRC covers the addresses.
                    let mut out = datagram.to_vec();
                    migros_wire::seal(&Route::new(config, to).ip_context(), &mut out);
                    return Some((to, out));
                }
            }
            None => {}
        }
        let wants_pause_nak = self.qp_type == QpType::Rc
            && (matches!(message, Some(ResumeMessage::Resume { .. })) || info.is_request());
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
        let msg = ResumeMessage::Resume {
            location: to,
            qpn: self.qpn,
            key: self.key,
            expected: None,
        };
        let mut out = Vec::new();
        let h = message_headers(dest_qpn, self.epsn, self.msn);
        build_message(&mut out, config, dst, h, &msg)?;
        Some((dst, out))
    }
}
