//! What stays on the old node when a QP migrates away: a tombstone that
//! answers the partner's requests with the pause NAK (so the partner pauses
//! instead of timing out), answers the partner's key probe with the QP's
//! connection key (sent to the partner's recorded address, never to the
//! asker), and, once it knows the QP's new node, forwards RESUMEs and key
//! answers there (both ends migrating at once) and tells UD senders where
//! the QP went (a RESUME naming the new node: their device redirects).
//! A device keeps them in [`Tombstones`]: indexed by QPN and by expiry,
//! bounded in number, each expiring once nobody needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use migros_wire::{OpKind, Opcode, Packet, Psn};

use crate::device::DeviceConfig;
use crate::packet_builder::{ack_headers, PacketBuilder, Route};
use crate::qp::Qp;
use crate::resume::{build_message, message_headers, ResumeMessage};
use crate::time::Instant;
use migros_proto::verbs::*;

/// Most tombstones a device keeps: beyond, the one expiring first goes.
/// As many as the QPs a device holds (2^20 − 16, the kernel's SoftRoCE
/// bound): every QP of a full device can move away at once and each keeps
/// its tombstone (2^16, the previous bound, dropped the tombstones of a
/// 100,000-QP move while it was under way, so their partners could not
/// check the RESUMEs). About 150 bytes each, indexes included.
pub const MAX_TOMBSTONES: usize = 1 << 20;
/// How long a tombstone lives after it was left, told where its QP went,
/// or last answered its partner. Longer than a UD redirect lives at a
/// sender ([`DeviceConfig::ud_redirect_ttl`], 5 min by default), so UD
/// senders that keep coming back keep it alive; far longer than a
/// partner waits paused (its `pause_timeout`, 30 s by default).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// The tombstones of a device: by QPN, and by expiry.
///
/// The rule: a tombstone is needed while someone may still send to the
/// QP's old place. Its partner does so while paused (it probes, retries,
/// sends its RESUME here when both ends move) and, for a UD QP, senders
/// do whenever their redirect expired. So each datagram it answers from
/// its partner (UD: from any sender it redirects) extends its life to
/// [`TOMBSTONE_TTL`] from then, as being left and being forwarded do. A
/// forwarded tombstone whose partner has resumed elsewhere, or an
/// unforwarded one whose partner gave up (its pause timed out), hears
/// nothing more and expires; so does one whose migration never finished.
/// Expired tombstones go at the next timer run ([`Tombstones::expire`];
/// [`Tombstones::next_expiry`] arms it); the count is bounded by
/// [`MAX_TOMBSTONES`].
#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    by_qpn: BTreeMap<Qpn, (Tombstone, Instant)>,
    by_expiry: BTreeSet<(Instant, Qpn)>,
}

impl Tombstones {
    /// Leaves `t` at `now`. Returns the QPN of a tombstone dropped to
    /// make room, if one was.
    pub fn insert(&mut self, now: Instant, t: Tombstone) -> Option<Qpn> {
        let qpn = t.qpn;
        self.remove(qpn);
        let dropped = if self.by_qpn.len() >= MAX_TOMBSTONES {
            self.by_expiry.pop_first().map(|(_, q)| {
                self.by_qpn.remove(&q);
                q
            })
        } else {
            None
        };
        let expires = now + TOMBSTONE_TTL;
        self.by_qpn.insert(qpn, (t, expires));
        self.by_expiry.insert((expires, qpn));
        dropped
    }

    pub fn get(&self, qpn: Qpn) -> Option<&Tombstone> {
        self.by_qpn.get(&qpn).map(|(t, _)| t)
    }

    pub fn contains(&self, qpn: Qpn) -> bool {
        self.by_qpn.contains_key(&qpn)
    }

    pub fn remove(&mut self, qpn: Qpn) -> Option<Tombstone> {
        let (t, expires) = self.by_qpn.remove(&qpn)?;
        self.by_expiry.remove(&(expires, qpn));
        Some(t)
    }

    /// Tells `qpn`'s tombstone where its QP went; false if it has none.
    pub fn forward(&mut self, now: Instant, qpn: Qpn, to: IpAddr) -> bool {
        let Some((t, _)) = self.by_qpn.get_mut(&qpn) else {
            return false;
        };
        t.forward = Some(to);
        self.extend(now, qpn);
        true
    }

    /// `qpn`'s tombstone lives [`TOMBSTONE_TTL`] from `now`.
    fn extend(&mut self, now: Instant, qpn: Qpn) {
        let Some((_, expires)) = self.by_qpn.get_mut(&qpn) else {
            return;
        };
        let new = now + TOMBSTONE_TTL;
        if new > *expires {
            self.by_expiry.remove(&(*expires, qpn));
            *expires = new;
            self.by_expiry.insert((new, qpn));
        }
    }

    /// The answer of `qpn`'s tombstone to `pkt` from `src` (see
    /// [`Tombstone::answer`]); one to its partner (UD: any answer) keeps
    /// it alive. None when there is no tombstone or nothing to answer.
    pub fn answer(
        &mut self,
        now: Instant,
        config: &DeviceConfig,
        qpn: Qpn,
        pkt: &Packet,
        datagram: &[u8],
        src: IpAddr,
    ) -> Option<(IpAddr, Vec<u8>)> {
        let t = self.get(qpn)?;
        let out = t.answer(config, pkt, datagram, src);
        let from_partner = if t.qp_type == QpType::Ud {
            out.is_some()
        } else {
            t.peer_addr == Some(src)
        };
        if from_partner {
            self.extend(now, qpn);
        }
        out
    }

    /// Drops the tombstones expired at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(expires, qpn)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_qpn.remove(&qpn);
            n += 1;
        }
        n
    }

    /// When the next tombstone expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    pub fn qpns(&self) -> impl Iterator<Item = Qpn> + '_ {
        self.by_qpn.keys().copied()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_qpn.len()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, i])
    }

    fn stone(qpn: Qpn, qp_type: QpType) -> Tombstone {
        Tombstone {
            qpn,
            qp_type,
            peer_qpn: 9,
            peer_addr: Some(addr(1)),
            epsn: Psn::new(5),
            msn: 0,
            key: 77,
            forward: None,
        }
    }

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    #[test]
    fn tombstones_expire_unless_forwarded_again() {
        let mut t = Tombstones::default();
        assert_eq!(t.insert(at(0), stone(10, QpType::Rc)), None);
        assert_eq!(t.insert(at(100), stone(11, QpType::Rc)), None);
        assert_eq!(t.next_expiry(), Some(at(0) + TOMBSTONE_TTL));
        // Forwarding gives 10 its full time again, from then.
        assert!(t.forward(at(200), 10, addr(3)));
        assert!(!t.forward(at(200), 12, addr(3)), "no such tombstone");
        assert_eq!(t.get(10).and_then(|s| s.forward), Some(addr(3)));
        assert_eq!(t.next_expiry(), Some(at(100) + TOMBSTONE_TTL));
        assert_eq!(t.expire(at(99) + TOMBSTONE_TTL), 0);
        assert_eq!(t.expire(at(100) + TOMBSTONE_TTL), 1);
        assert!(!t.contains(11) && t.contains(10));
        assert_eq!(t.expire(at(200) + TOMBSTONE_TTL), 1);
        assert_eq!((t.len(), t.next_expiry()), (0, None));
    }

    #[test]
    fn tombstones_are_bounded_and_the_first_to_expire_makes_room() {
        let mut t = Tombstones::default();
        for q in 0..MAX_TOMBSTONES as Qpn {
            assert_eq!(t.insert(at(u64::from(q)), stone(q + 1, QpType::Rc)), None);
        }
        // 1 expires first, but was just forwarded: 2 goes.
        t.forward(at(1 << 20), 1, addr(3));
        let dropped = t.insert(at(1 << 20), stone(1 << 23, QpType::Rc));
        assert_eq!(dropped, Some(2));
        assert_eq!(t.len(), MAX_TOMBSTONES);
        assert!(t.contains(1) && t.contains(1 << 23) && !t.contains(2));
        // Leaving a QPN again replaces its tombstone.
        assert_eq!(t.insert(at(1 << 20), stone(3, QpType::Ud)), None);
        assert_eq!(t.len(), MAX_TOMBSTONES);
        assert_eq!(t.remove(3).map(|s| s.qp_type), Some(QpType::Ud));
        assert_eq!(t.len(), MAX_TOMBSTONES - 1);
    }
}
