//! The pause/resume protocol at the QP: Stopped while checkpointed, Paused
//! after the partner's pause NAK, Resuming after restore until the partner
//! answers RESUME; the pause timeout; RESUME packets and their handling.
//!
//! Three messages share the RESUME opcode (0x19, BTH + AETH), told apart by
//! their payload length:
//! - **RESUME** (32 bytes): the sender's new location (16 bytes,
//!   IPv4-mapped for IPv4), its QPN (4), its connection key (8) and the
//!   PSN its responder expects next (4: 24 bits, the top byte zero), all
//!   big endian. The location travels in the payload, not only as the IP
//!   source, so a tombstone can forward a RESUME when both ends migrate.
//!   The expected PSN is what the partner resends from: exactly what the
//!   sender lacks, not the partner's whole unacknowledged window. The
//!   28-byte RESUME of the previous version (no expected PSN) is still
//!   taken, and the partner then goes back to its oldest unacknowledged
//!   PSN as before; UD announcements and tombstone redirects, which have
//!   no PSN to tell, are 28 bytes.
//! - **PROBE** (12 bytes): the sender's QPN and a nonce. A QP sends it to
//!   its partner's current address when it cannot yet check a RESUME (it
//!   does not know the partner's key, or it is Running): only the partner's
//!   old location (a stopped QP or its tombstone) or a resuming QP answers.
//! - **KEY** (24 bytes): QPN, the probe's nonce, the key, 4 reserved bytes;
//!   sent to the QP's recorded partner address only, never to whoever
//!   asked, so the key reaches the real peer (or its tombstone, which
//!   forwards it to the peer's new node) and nobody else.
//!
//! Every RC and UC QP has a random 64-bit connection key from the device's
//! CSPRNG ([`crate::secret`]), kept in its image and by its tombstone. A
//! RESUME is taken only by a QP that is Stopped, Paused or Resuming, from
//! its partner's QPN, with a PSN within [`RESUME_PSN_WINDOW`] of what it
//! expects, and with the key its peer's old location told it. A RESUME it
//! cannot check yet is remembered (one claim) and checked when the KEY
//! comes. A kernel peer never sends any of these (it drops the unknown
//! opcode); the empty and 16/20-byte RESUMEs of MigrOS and older migros
//! are refused, and so is a 32-byte RESUME whose expected PSN has a
//! nonzero top byte. (A migros of the previous version refuses the
//! 32-byte RESUME, as it refuses every length it does not know.)

use std::net::IpAddr;

use migros_wire::{AckSyndrome, Headers, Opcode, Packet, Psn};

use crate::packet_builder::{ack_headers, PacketBuilder, Route};
use crate::qp::{Env, Failure, Qp};
use crate::time::Instant;
use migros_proto::verbs::*;

/// Bytes of a RESUME payload with the sender's expected PSN.
pub const RESUME_PAYLOAD_LEN: usize = 32;
/// Bytes of a RESUME payload without it (UD; connected QPs of the
/// previous version).
pub const RESUME_PAYLOAD_LEN_NO_PSN: usize = 28;
/// Bytes of a PROBE payload.
pub const PROBE_PAYLOAD_LEN: usize = 12;
/// Bytes of a KEY payload.
pub const KEY_PAYLOAD_LEN: usize = 24;

/// How far (in PSNs, either way) a RESUME's PSN, the sender's oldest
/// unacknowledged one, may lie from the PSN the receiver expects: twice
/// the most a QP keeps unacknowledged, with room for UC losses.
pub const RESUME_PSN_WINDOW: u32 = 1 << 15;

/// Times a migrated UD QP announces itself to each peer it knew.
const ANNOUNCE_REPEAT: usize = 3;

/// A message carried by the RESUME opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeMessage {
    /// The sender, QP `qpn`, now lives at `location`; `key` proves it.
    /// `expected`: the PSN its responder expects next (`None`: not told).
    Resume {
        location: IpAddr,
        qpn: Qpn,
        key: u64,
        expected: Option<Psn>,
    },
    /// QP `qpn` asks its partner's old location for the connection key.
    Probe { qpn: Qpn, nonce: u64 },
    /// The key of QP `qpn`, answering the probe `nonce`.
    Key { qpn: Qpn, nonce: u64, key: u64 },
}

impl ResumeMessage {
    /// The payload bytes of this message.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(RESUME_PAYLOAD_LEN);
        match *self {
            ResumeMessage::Resume {
                location,
                qpn,
                key,
                expected,
            } => {
                let v6 = match location {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                p.extend_from_slice(&v6.octets());
                p.extend_from_slice(&qpn.to_be_bytes());
                p.extend_from_slice(&key.to_be_bytes());
                if let Some(psn) = expected {
                    p.extend_from_slice(&psn.value().to_be_bytes());
                }
            }
            ResumeMessage::Probe { qpn, nonce } => {
                p.extend_from_slice(&qpn.to_be_bytes());
                p.extend_from_slice(&nonce.to_be_bytes());
            }
            ResumeMessage::Key { qpn, nonce, key } => {
                p.extend_from_slice(&qpn.to_be_bytes());
                p.extend_from_slice(&nonce.to_be_bytes());
                p.extend_from_slice(&key.to_be_bytes());
                p.extend_from_slice(&[0; 4]);
            }
        }
        p
    }

    /// Reads a payload; `None` for the lengths migros no longer takes
    /// (empty, 16 and 20 bytes), an expected PSN wider than 24 bits, and
    /// anything else.
    pub fn parse(payload: &[u8]) -> Option<ResumeMessage> {
        let u32_at = |i: usize| {
            let b: [u8; 4] = payload.get(i..i + 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(b) & MAX_QPN)
        };
        let u64_at = |i: usize| {
            let b: [u8; 8] = payload.get(i..i + 8)?.try_into().ok()?;
            Some(u64::from_be_bytes(b))
        };
        match payload.len() {
            RESUME_PAYLOAD_LEN | RESUME_PAYLOAD_LEN_NO_PSN => {
                let octets: [u8; 16] = payload.get(..16)?.try_into().ok()?;
                let v6 = std::net::Ipv6Addr::from(octets);
                let location = match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                };
                let expected = match payload.get(28..32) {
                    Some(b) => {
                        let v = u32::from_be_bytes(b.try_into().ok()?);
                        if v > MAX_QPN {
                            return None;
                        }
                        Some(Psn::new(v))
                    }
                    None => None,
                };
                Some(ResumeMessage::Resume {
                    location,
                    qpn: u32_at(16)?,
                    key: u64_at(20)?,
                    expected,
                })
            }
            PROBE_PAYLOAD_LEN => Some(ResumeMessage::Probe {
                qpn: u32_at(0)?,
                nonce: u64_at(4)?,
            }),
            KEY_PAYLOAD_LEN => Some(ResumeMessage::Key {
                qpn: u32_at(0)?,
                nonce: u64_at(4)?,
                key: u64_at(12)?,
            }),
            _ => None,
        }
    }
}

/// Headers of a RESUME-opcode message to QP `dest_qpn`.
pub(crate) fn message_headers(dest_qpn: Qpn, psn: Psn, msn: u32) -> Headers {
    ack_headers(
        Opcode::RC_RESUME,
        dest_qpn,
        psn,
        AckSyndrome::Ack { credits: 0x1f }.encode(),
        msn,
    )
}

/// A RESUME-opcode datagram to `dst` with `headers` carrying `msg`, into
/// `buf` (a RESUME asks for an acknowledgement).
pub(crate) fn build_message(
    buf: &mut Vec<u8>,
    config: &crate::device::DeviceConfig,
    dst: IpAddr,
    mut headers: Headers,
    msg: &ResumeMessage,
) -> Option<()> {
    headers.bth.ack_req = matches!(msg, ResumeMessage::Resume { .. });
    PacketBuilder::with_payload(buf, &headers, &msg.encode())
        .ok()?
        .finish(Route::new(config, dst));
    Some(())
}

/// A RESUME claim not yet checked: kept until the partner's key is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct KeyExchange {
    /// The partner's connection key, once its old location told it.
    pub peer_key: Option<u64>,
    /// A probe is due.
    pub probe_due: bool,
    /// The probe sent last: its nonce and when.
    pub probe: Option<(u64, Instant)>,
    /// A probe to answer with our key (its nonce).
    pub answer: Option<u64>,
    /// The last RESUME that could not be checked yet: location, key and
    /// the PSN the partner expects.
    pub claim: Option<(IpAddr, u64, Option<Psn>)>,
}

impl Qp {
    /// Migration step 1: stop. Nothing is sent (but the pause NAK) and
    /// nothing is written into the owner's memory from now on.
    pub fn pause(&mut self) {
        if self.mig() != MigrationState::Stopped {
            self.attr.migration = MigrationState::Stopped;
            self.counters.pauses += 1;
        }
    }

    /// After restore (or a rolled-back checkpoint): announce where we are.
    /// RC runs the RESUME handshake; UC, which has no acknowledgements, and
    /// UD send a few RESUMEs and carry on.
    pub fn start_resume(&mut self, now: Instant, env: &mut Env) {
        if self.mig() != MigrationState::Stopped {
            return;
        }
        self.counters.resumes += 1;
        let partner = self.attr.dest_addr.filter(|_| self.can_receive());
        match (self.qp_type(), partner) {
            (QpType::Rc, Some(_)) => {
                self.attr.migration = MigrationState::Resuming;
                self.timers.retransmit = None;
                self.timers.resume = Some(now);
                self.timers.pause = Some(now + env.config.pause_timeout);
            }
            (QpType::Uc, Some(addr)) => {
                self.attr.migration = MigrationState::Running;
                let peer = (addr, self.attr.dest_qp_num);
                self.announce
                    .extend(std::iter::repeat_n(peer, ANNOUNCE_REPEAT));
            }
            _ => {
                self.attr.migration = MigrationState::Running;
                for _ in 0..ANNOUNCE_REPEAT {
                    self.announce.extend(self.ud_peers.iter().copied());
                }
                self.restart_requester(now);
            }
        }
    }

    /// The partner answered with the pause NAK: hold everything, with the
    /// transport timers frozen and the pause timeout running.
    pub fn enter_paused(&mut self, now: Instant, env: &mut Env) {
        if self.mig() != MigrationState::Running {
            return;
        }
        self.attr.migration = MigrationState::Paused;
        self.counters.pauses += 1;
        self.paused_at = Some(now);
        self.timers.retransmit = None;
        self.timers.pause = Some(now + env.config.pause_timeout);
        if self.keys.peer_key.is_none() {
            // Learn the key now, so the RESUME is taken when it comes.
            self.request_probe(now, env);
        }
    }

    /// A RESUME-opcode packet reached this connected QP from `src`.
    pub fn on_resume_message(&mut self, now: Instant, pkt: &Packet, src: IpAddr, env: &mut Env) {
        let _ = src; // authenticated by key and nonce, not by address
        let refused = match ResumeMessage::parse(pkt.payload) {
            Some(ResumeMessage::Resume {
                location,
                qpn,
                key,
                expected,
            }) => {
                let psn = (pkt.headers.bth.psn, pkt.headers.bth.solicited);
                !self.on_resume(now, psn, (location, qpn, key), expected, env)
            }
            Some(ResumeMessage::Probe { qpn, nonce }) => !self.on_probe(qpn, nonce),
            Some(ResumeMessage::Key { qpn, nonce, key }) => !self.on_key(now, qpn, nonce, key, env),
            None => true,
        };
        if refused {
            env.objs.counters.rx_resume_refused += 1;
        }
    }

    /// Whether a RESUME's PSN lies within [`RESUME_PSN_WINDOW`] of what
    /// this QP knows: the sender's oldest unacknowledged PSN against the
    /// PSN we expect, or (`expected`: the BTH's solicited bit, set by a
    /// sender that never reached RTS and so has no send PSN) the PSN the
    /// sender expects from us against the PSN we send next.
    fn psn_plausible(&self, psn: Psn, expected: bool) -> bool {
        let ours = if expected {
            self.req.next_psn
        } else {
            self.resp.epsn
        };
        let d = ours.value().wrapping_sub(psn.value()) & MAX_QPN;
        d <= RESUME_PSN_WINDOW || (MAX_QPN + 1 - d) <= RESUME_PSN_WINDOW
    }

    /// A RESUME: taken when it is the partner's, in a state that expects
    /// one, within the PSN window and with the partner's key; kept as a
    /// claim (and the key asked for) when it cannot be checked yet.
    /// `told`: the PSN the partner expects, if its RESUME says. False when
    /// refused.
    fn on_resume(
        &mut self,
        now: Instant,
        (psn, names_expected): (Psn, bool),
        (location, sender, key): (IpAddr, Qpn, u64),
        told: Option<Psn>,
        env: &mut Env,
    ) -> bool {
        if sender != self.attr.dest_qp_num
            || !self.can_receive()
            || !self.psn_plausible(psn, names_expected)
        {
            return false;
        }
        match self.keys.peer_key {
            Some(k) if k != key => return false, // a QP's key never changes
            // Paused, Stopped or Resuming: the partner comes back. Running
            // at that same address: our acknowledgement was lost; repeat it.
            Some(_)
                if self.mig() != MigrationState::Running
                    || self.attr.dest_addr == Some(location) =>
            {
                self.accept_resume(now, location, told, env);
                return true;
            }
            _ => {}
        }
        // Running (the partner never paused us) or the key is unknown:
        // ask the partner's old location, which answers only if the
        // partner really left it.
        self.keys.claim = Some((location, key, told));
        self.request_probe(now, env);
        true
    }

    /// A PROBE: a stopped QP (our old location, still here) or a resuming
    /// one (back where the partner looks for it) answers its partner with
    /// the key. A running QP has not moved: it stays silent.
    fn on_probe(&mut self, sender: Qpn, nonce: u64) -> bool {
        let moving = matches!(
            self.mig(),
            MigrationState::Stopped | MigrationState::Resuming
        );
        if sender != self.attr.dest_qp_num || !moving {
            return false;
        }
        self.keys.answer = Some(nonce);
        true
    }

    /// A KEY answering our probe: the partner left its old location. A
    /// running QP pauses (as after the pause NAK); a claim with that key
    /// is then taken.
    fn on_key(&mut self, now: Instant, sender: Qpn, nonce: u64, key: u64, env: &mut Env) -> bool {
        if sender != self.attr.dest_qp_num || self.keys.probe.map(|(n, _)| n) != Some(nonce) {
            return false;
        }
        self.keys.probe = None;
        self.keys.peer_key = Some(key);
        if self.mig() == MigrationState::Running {
            self.enter_paused(now, env);
        }
        if let Some((location, claimed, told)) = self.keys.claim.take() {
            if claimed == key && self.can_receive() {
                self.accept_resume(now, location, told, env);
            }
        }
        true
    }

    /// Asks for a probe, at most one per resume interval.
    fn request_probe(&mut self, now: Instant, env: &Env) {
        let recent = self
            .keys
            .probe
            .is_some_and(|(_, at)| now < at + env.config.resume_interval);
        if !recent && self.attr.dest_addr.is_some() {
            self.keys.probe_due = true;
        }
    }

    /// The partner, authenticated, is at `location`: go on with it there.
    /// `told`: the PSN the partner's responder expects. Everything before
    /// it arrived, so it counts as acknowledged (as an ACK through the PSN
    /// before it would), and the requester resends from there, not from
    /// its oldest unacknowledged PSN: only what the partner lacks.
    fn accept_resume(&mut self, now: Instant, location: IpAddr, told: Option<Psn>, env: &mut Env) {
        self.keys.claim = None;
        self.attr.dest_addr = Some(location);
        let was = self.mig();
        match was {
            MigrationState::Stopped => {
                // Our own move is under way: the new address is kept; the
                // partner hears from us when we resume, and its answer
                // tells us what it has.
                self.resp.pause_nak = self.qp_type() == QpType::Rc;
                return;
            }
            MigrationState::Paused => {
                self.attr.migration = MigrationState::Running;
                self.timers.pause = None;
                if let Some(since) = self.paused_at.take() {
                    let nanos = u64::try_from(now.saturating_duration_since(since).as_nanos())
                        .unwrap_or(u64::MAX);
                    self.counters.paused_nanos = self.counters.paused_nanos.saturating_add(nanos);
                    self.counters.last_pause_nanos = nanos;
                }
            }
            MigrationState::Resuming | MigrationState::Running => {}
        }
        self.counters.resumes += 1;
        if self.qp_type() != QpType::Rc {
            return; // UC: nothing to acknowledge, nothing to resend
        }
        // Acknowledge with the last PSN actually received in order, never
        // with the RESUME's PSN: that would complete data that never came.
        let last = self.resp.epsn.sub(1);
        let ack = AckSyndrome::Ack { credits: 0x1f }.encode();
        let msn = self.resp.msn;
        self.resp.out.push_back(crate::responder::Response::Ack {
            psn: last,
            syndrome: ack,
            msn,
        });
        if let Some(expected) = told {
            // Sends, WRITEs up to the first READ or atomic still owed its
            // response complete; a PSN we never sent is ignored.
            if !self.ack_told(now, expected.sub(1), env) {
                return;
            }
            self.note_told(expected);
            if self.mig() != MigrationState::Running {
                // Resuming: no retransmission timer until the partner
                // answers (the requester restarts then).
                self.timers.retransmit = None;
            }
        }
        // A repeated RESUME (our answer was lost) finds us running with
        // the requester restarted already: nothing to resend for it.
        if was == MigrationState::Paused {
            self.restart_requester(now);
        }
    }

    /// Leaves Resuming: the partner knows where we are.
    pub fn finish_resume(&mut self, now: Instant) {
        if self.mig() == MigrationState::Resuming {
            self.attr.migration = MigrationState::Running;
            self.timers.resume = None;
            self.timers.pause = None;
            self.restart_requester(now);
        }
    }

    /// Restarts the requester after a pause: go-back-N from the oldest
    /// unacknowledged PSN (which the partner's RESUME, or its answer to
    /// ours, moved to the first PSN it lacks) with fresh timers. It
    /// consumes no retry. The path to the partner is new (or was idle for
    /// the pause): the window starts small and grows by slow start, so the
    /// resend does not overrun a receiver that just came back.
    fn restart_requester(&mut self, now: Instant) {
        if self.req.outstanding() {
            let una = self.req.una;
            self.rewind(una);
            self.req.window.on_new_path(self.mtu());
            self.timers.retransmit = self.ack_timeout().map(|t| now + t);
        }
    }

    /// Paused or Resuming longer than the pause timeout: the partner is gone.
    pub fn on_pause_timeout(&mut self, env: &mut Env) {
        self.timers.pause = None;
        if let Some(wqe) = self.req.sq.pop_front() {
            let wc = self.send_wc(&wqe.wr, WcStatus::RetryExcErr, 0);
            env.objs.complete(self.init.send_cq, wc);
        }
        env.objs
            .events
            .push_back(DeviceEvent::PauseTimeout { qpn: self.qpn() });
        self.enter_error(Failure::Fatal, env);
    }

    /// Whether a RESUME, UD announcement, probe or key answer is due.
    pub fn wants_resume(&self, now: Instant) -> bool {
        !self.announce.is_empty()
            || self.keys.answer.is_some()
            || self.keys.probe_due
            || (self.mig() == MigrationState::Resuming
                && self.timers.resume.is_some_and(|t| t <= now))
    }

    /// Builds a due RESUME-opcode message into `buf`.
    pub fn next_resume(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Option<IpAddr> {
        let me = self.qpn();
        let (dst, dest_qpn, msg) = if let Some((dst, qpn)) = self.announce.pop_front() {
            let location = env.config.addr;
            let key = self.resume_key;
            (
                dst,
                qpn,
                // A UD or UC announcement: no acknowledged stream to
                // resume, so no expected PSN (28 bytes, as before).
                ResumeMessage::Resume {
                    location,
                    qpn: me,
                    key,
                    expected: None,
                },
            )
        } else if let Some(nonce) = self.keys.answer.take() {
            let key = self.resume_key;
            let dst = self.attr.dest_addr?;
            (
                dst,
                self.attr.dest_qp_num,
                ResumeMessage::Key {
                    qpn: me,
                    nonce,
                    key,
                },
            )
        } else if std::mem::take(&mut self.keys.probe_due) {
            let nonce = env.objs.secrets.draw();
            self.keys.probe = Some((nonce, now));
            let dst = self.attr.dest_addr?;
            (
                dst,
                self.attr.dest_qp_num,
                ResumeMessage::Probe { qpn: me, nonce },
            )
        } else if self.mig() == MigrationState::Resuming
            && self.timers.resume.is_some_and(|t| t <= now)
        {
            self.timers.resume = Some(now + env.config.resume_interval);
            let location = env.config.addr;
            let key = self.resume_key;
            let msg = ResumeMessage::Resume {
                location,
                qpn: me,
                key,
                expected: Some(self.resp.epsn),
            };
            (self.attr.dest_addr?, self.attr.dest_qp_num, msg)
        } else {
            return None;
        };
        // A QP that never reached RTS has no send PSN: it names the PSN it
        // expects instead, and says so with the solicited bit.
        let never_sent = self.state() == QpState::Rtr;
        let psn = if never_sent {
            self.resp.epsn
        } else {
            self.req.una
        };
        let mut headers = message_headers(dest_qpn, psn, self.resp.msn);
        headers.bth.solicited = never_sent;
        build_message(buf, env.config, dst, headers, &msg)?;
        self.counters.tx_packets += 1;
        Some(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LOCATION: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 3));

    fn resume(expected: Option<Psn>) -> ResumeMessage {
        ResumeMessage::Resume {
            location: LOCATION,
            qpn: 0x12_3456,
            key: 0x0102_0304_0506_0708,
            expected,
        }
    }

    #[test]
    fn resume_with_expected_psn_is_32_bytes() {
        let bytes = resume(Some(Psn::new(0xab_cdef))).encode();
        let mut golden = vec![0u8; 10];
        golden.extend_from_slice(&[0xff, 0xff, 198, 18, 0, 3]);
        golden.extend_from_slice(&[0x00, 0x12, 0x34, 0x56]);
        golden.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        golden.extend_from_slice(&[0x00, 0xab, 0xcd, 0xef]);
        assert_eq!(bytes, golden);
        assert_eq!(bytes.len(), RESUME_PAYLOAD_LEN);
        assert_eq!(
            ResumeMessage::parse(&bytes),
            Some(resume(Some(Psn::new(0xab_cdef))))
        );
    }

    #[test]
    fn resume_of_the_previous_version_parses_without_expected_psn() {
        let bytes = resume(None).encode();
        assert_eq!(bytes.len(), RESUME_PAYLOAD_LEN_NO_PSN);
        assert_eq!(ResumeMessage::parse(&bytes), Some(resume(None)));
        // The 32-byte form is the 28-byte one with the PSN appended.
        let long = resume(Some(Psn::new(7))).encode();
        assert_eq!(&long[..28], &bytes[..]);
    }

    #[test]
    fn expected_psn_wider_than_24_bits_is_refused() {
        let mut bytes = resume(Some(Psn::new(1))).encode();
        bytes[28] = 0x01;
        assert_eq!(ResumeMessage::parse(&bytes), None);
    }

    #[test]
    fn ipv6_location_and_other_lengths() {
        let v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9));
        let msg = ResumeMessage::Resume {
            location: v6,
            qpn: 5,
            key: 6,
            expected: Some(Psn::new(0)),
        };
        assert_eq!(ResumeMessage::parse(&msg.encode()), Some(msg));
        for len in [0, 16, 20, 27, 29, 31, 33] {
            assert_eq!(ResumeMessage::parse(&vec![0; len]), None, "{len} bytes");
        }
    }
}
