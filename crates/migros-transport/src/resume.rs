//! The pause/resume protocol at the QP: Stopped while checkpointed, Paused
//! after the partner's pause NAK, Resuming after restore until the partner
//! answers RESUME; the pause timeout; RESUME packets and their handling.
//!
//! RESUME (opcode 0x19) carries BTH + AETH and a 20-byte payload: the
//! sender's location (16 bytes, IPv4-mapped for IPv4) and its QPN (4 bytes,
//! big endian). The location travels in the payload, not only as the IP
//! source, so a tombstone can forward a RESUME when both ends migrate.

use std::net::IpAddr;

use migros_wire::{AckSyndrome, Opcode, Packet};

use crate::packet_builder::{ack_headers, PacketBuilder, Route};
use crate::qp::{Env, Failure, Qp};
use crate::time::Instant;
use migros_proto::verbs::*;

/// Bytes of a RESUME payload.
pub const RESUME_PAYLOAD_LEN: usize = 20;

/// Times a migrated UD QP announces itself to each peer it knew.
const ANNOUNCE_REPEAT: usize = 3;

/// The payload of a RESUME: where the sender now is, and its QPN.
pub fn resume_payload(location: IpAddr, qpn: Qpn) -> [u8; RESUME_PAYLOAD_LEN] {
    let mut p = [0u8; RESUME_PAYLOAD_LEN];
    let v6 = match location {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    p[..16].copy_from_slice(&v6.octets());
    p[16..].copy_from_slice(&qpn.to_be_bytes());
    p
}

/// Reads a RESUME payload: (location, sender QPN), if well formed.
pub fn parse_resume_payload(payload: &[u8]) -> Option<(IpAddr, Qpn)> {
    let p: &[u8; RESUME_PAYLOAD_LEN] = payload.try_into().ok()?;
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&p[..16]);
    let v6 = std::net::Ipv6Addr::from(octets);
    let addr = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    let qpn = u32::from_be_bytes([p[16], p[17], p[18], p[19]]);
    Some((addr, qpn & MAX_QPN))
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
    }

    /// The partner (or a QP we sent to, for UD) announced its new location.
    pub fn on_resume_packet(&mut self, now: Instant, pkt: &Packet, src: IpAddr) {
        let (location, sender) =
            parse_resume_payload(pkt.payload).unwrap_or((src, self.attr.dest_qp_num));
        if sender != self.attr.dest_qp_num || !self.can_receive() {
            return;
        }
        self.attr.dest_addr = Some(location);
        match self.mig() {
            MigrationState::Stopped => {
                // Our own move is under way: the new address is kept; the
                // partner hears from us when we resume.
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
        if self.mig() == MigrationState::Running {
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

    /// Go-back-N from the oldest unacknowledged PSN with fresh timers:
    /// whatever was in flight across the pause is sent again. It consumes
    /// no retry.
    fn restart_requester(&mut self, now: Instant) {
        if self.req.outstanding() {
            let una = self.req.una;
            self.rewind(una);
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

    /// Whether a RESUME or UD announcement is due.
    pub fn wants_resume(&self, now: Instant) -> bool {
        !self.announce.is_empty()
            || (self.mig() == MigrationState::Resuming
                && self.timers.resume.is_some_and(|t| t <= now))
    }

    /// Builds a due RESUME into `buf`.
    pub fn next_resume(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Option<IpAddr> {
        let (dst, dest_qpn) = if let Some(peer) = self.announce.pop_front() {
            peer
        } else if self.mig() == MigrationState::Resuming
            && self.timers.resume.is_some_and(|t| t <= now)
        {
            self.timers.resume = Some(now + env.config.resume_interval);
            (self.attr.dest_addr?, self.attr.dest_qp_num)
        } else {
            return None;
        };
        let mut headers = ack_headers(
            Opcode::RC_RESUME,
            dest_qpn,
            self.req.una,
            AckSyndrome::Ack { credits: 0x1f }.encode(),
            self.resp.msn,
        );
        headers.bth.ack_req = true;
        let payload = resume_payload(env.config.addr, self.qpn());
        PacketBuilder::with_payload(buf, &headers, &payload)
            .ok()?
            .finish(Route::new(env.config, dst));
        self.counters.tx_packets += 1;
        Some(dst)
    }
}
