//! The completer: handles what comes back for our requests (ACKs, NAKs,
//! READ responses, atomic ACKs), completes send WRs in order, and decides
//! retransmission: go-back-N after a sequence NAK, a timeout or a missing
//! response, the RNR wait, and the retry counters.

use migros_wire::{AckSyndrome, NakCode, OpKind, Packet, Psn};

use crate::dma;
use crate::qp::{Env, Failure, Qp};
use crate::time::Instant;
use migros_proto::verbs::*;

/// The IB RNR NAK timer table (5-bit code → microseconds).
const RNR_TIMER_US: [u32; 32] = [
    655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1_280, 1_920, 2_560, 3_840,
    5_120, 7_680, 10_240, 15_360, 20_480, 30_720, 40_960, 61_440, 81_920, 122_880, 163_840,
    245_760, 327_680, 491_520,
];

/// How long an RNR NAK with timer code `code` asks the requester to wait.
pub(crate) fn rnr_delay(code: u8) -> std::time::Duration {
    std::time::Duration::from_micros(u64::from(RNR_TIMER_US[usize::from(code & 0x1f)]))
}

impl Qp {
    /// Handles a response packet (the QP is RC and may receive).
    pub fn handle_response(&mut self, now: Instant, pkt: &Packet, env: &mut Env) {
        match self.mig() {
            // A stopped QP's state is being checkpointed: ignore, the peer
            // repeats after RESUME.
            MigrationState::Stopped => return,
            // Paused: ACKs are ignored until RESUME.
            MigrationState::Paused => return,
            MigrationState::Resuming => {
                // Any response from the partner at our new address means it
                // has processed our RESUME, unless it is the pause NAK of a
                // partner that is itself away. Its answer (an ACK through
                // the last PSN it has) completes what arrived first, then
                // the requester restarts from what the partner lacks.
                if is_pause_nak(pkt) {
                    return;
                }
                let psn = pkt.headers.bth.psn;
                let ack = pkt.info().kind == OpKind::Ack
                    && pkt.headers.aeth.is_some_and(|a| {
                        matches!(AckSyndrome::decode(a.syndrome), AckSyndrome::Ack { .. })
                    });
                if ack {
                    // The partner has everything before psn + 1.
                    if !self.ack_told(now, psn, env) {
                        return;
                    }
                    self.note_told(psn.add(1));
                } else {
                    self.completer_step(now, pkt, env);
                }
                self.finish_resume(now);
                return;
            }
            MigrationState::Running => {}
        }
        self.completer_step(now, pkt, env);
    }

    /// One response of a running (or resuming) QP.
    fn completer_step(&mut self, now: Instant, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        match pkt.info().kind {
            OpKind::Ack => {
                let Some(aeth) = pkt.headers.aeth else { return };
                match AckSyndrome::decode(aeth.syndrome) {
                    AckSyndrome::Ack { .. } => {
                        self.ack_through(now, psn, env);
                    }
                    AckSyndrome::RnrNak { timer } => {
                        self.counters.rnr_naks_received += 1;
                        env.objs.counters.rnr_naks_received += 1;
                        if !self.ack_through(now, psn.sub(1), env) {
                            return;
                        }
                        self.on_rnr_nak(now, psn, timer, env);
                    }
                    AckSyndrome::Nak(NakCode::Pause) => self.enter_paused(now, env),
                    AckSyndrome::Nak(NakCode::PsnSequenceError) => {
                        self.counters.naks_received += 1;
                        env.objs.counters.naks_received += 1;
                        if !self.ack_through(now, psn.sub(1), env) {
                            return;
                        }
                        // One NAK per gap: resend from it, unless we already
                        // did (a duplicated NAK) or it is stale.
                        if psn == self.req.una && self.req.rewound_at != Some(psn) {
                            // The receiver lost packets (its queue may
                            // have overflowed): resend with half the
                            // window, growing back as ACKs come.
                            self.req.window.on_sequence_nak(self.mtu());
                            self.retry(now, psn, env);
                        }
                    }
                    AckSyndrome::Nak(code) => {
                        self.counters.naks_received += 1;
                        env.objs.counters.naks_received += 1;
                        if !self.ack_through(now, psn.sub(1), env) {
                            return;
                        }
                        let status = match code {
                            NakCode::RemoteAccessError => WcStatus::RemAccessErr,
                            NakCode::RemoteOperationalError => WcStatus::RemOpErr,
                            _ => WcStatus::RemInvReqErr,
                        };
                        self.fail_head(status, env);
                    }
                    AckSyndrome::Reserved(_) => {}
                }
            }
            OpKind::ReadResponse => self.read_response(now, pkt, env),
            OpKind::AtomicAck => self.atomic_ack(now, pkt, env),
            _ => {}
        }
    }

    /// Completes every WR acknowledged by an ACK through `psn`. Returns
    /// false if the QP failed meanwhile.
    fn ack_through(&mut self, now: Instant, psn: Psn, env: &mut Env) -> bool {
        self.complete_through(now, psn, true, env)
    }

    /// Completes what a resuming partner's expected PSN (`psn` + 1) says
    /// it has: as an ACK through `psn`, except that a READ or atomic whose
    /// response has not come stops it without a retry (the requester
    /// restarts from it anyway). Returns false if the QP failed meanwhile.
    pub(crate) fn ack_told(&mut self, now: Instant, psn: Psn, env: &mut Env) -> bool {
        self.complete_through(now, psn, false, env)
    }

    /// The partner has every request before `expected`: remembered (if
    /// it is past what is acknowledged and not past what was sent) so the
    /// requester skips those packets when it goes back.
    pub(crate) fn note_told(&mut self, expected: Psn) {
        let past_una = expected.distance(self.req.una) > 0;
        let sent = expected.distance(self.req.high_psn) <= 0;
        if past_una && sent {
            self.req.told = Some(expected);
        }
    }

    /// [`Qp::ack_through`]; `retry_reads`: a READ or atomic the partner
    /// went past without its response is asked again at once.
    fn complete_through(
        &mut self,
        now: Instant,
        psn: Psn,
        retry_reads: bool,
        env: &mut Env,
    ) -> bool {
        if psn.distance(self.req.una) < 0 {
            return true; // stale: acknowledges nothing new
        }
        if psn.distance(self.req.high_psn) >= 0 {
            return true; // acknowledges something never sent: ignore
        }
        let una_before = self.req.una;
        let mut progressed = false;
        while let Some(head) = self.req.sq.front() {
            if head.is_local() {
                // Executed local operations complete when they reach the
                // head; they hold no PSN.
                if !head.sent {
                    break;
                }
                self.complete_head(WcStatus::Success, env);
                continue;
            }
            if !head.sent || psn.distance(head.first_psn) < 0 {
                break;
            }
            if head.is_read_or_atomic() {
                // The responder went past a READ or atomic whose response we
                // have not seen: it was lost. Ask again.
                if retry_reads {
                    self.fast_retry(now, env);
                }
                break;
            }
            if psn.distance(head.last_psn()) >= 0 {
                self.req.una = head.last_psn().add(1);
                self.complete_head(WcStatus::Success, env);
                progressed = true;
            } else {
                self.req.una = psn.add(1);
                progressed = true;
                break;
            }
        }
        if progressed {
            let acked = self.req.una.distance(una_before).max(1) as u32;
            self.on_progress(now, acked);
            self.after_completions(now, env);
        }
        self.state() != QpState::Err
    }

    /// Forward progress (`acked` more PSNs acknowledged): counters refill,
    /// the timer restarts, a shrunk window grows.
    fn on_progress(&mut self, now: Instant, acked: u32) {
        self.req.retry_left = self.attr.retry_cnt;
        self.req.rnr_left = self.attr.rnr_retry;
        self.req.rewound_at = None;
        self.req.window.on_ack(acked, self.mtu());
        if self
            .req
            .retry_fence
            .is_some_and(|f| self.req.una.distance(f) >= 0)
        {
            self.req.retry_fence = None;
        }
        if self.req.next_psn.distance(self.req.una) < 0 {
            // A late ACK covered packets we had rewound to resend.
            self.rewind(self.req.una);
            if self.req.next_psn.distance(self.req.una) < 0 {
                self.req.next_psn = self.req.una;
            }
        }
        self.timers.retransmit = if self.req.outstanding() {
            self.ack_timeout().map(|t| now + t)
        } else {
            None
        };
    }

    /// After WRs completed: report a local error that reached the head, and
    /// the end of an SQD drain.
    fn after_completions(&mut self, now: Instant, env: &mut Env) {
        if let Some(told) = self.req.told {
            // A READ or atomic that stopped a resume's acknowledgement
            // completed: what follows it up to `told` arrived too.
            if told.distance(self.req.una) > 0 {
                if !self.ack_told(now, told.sub(1), env) {
                    return;
                }
            } else {
                self.req.told = None;
            }
        }
        self.complete_local_error_at_head(env);
        self.check_drained(env);
    }

    /// Pops the oldest WR and completes it with `status` (if signalled or failed).
    pub(crate) fn complete_head(&mut self, status: WcStatus, env: &mut Env) {
        let Some(wqe) = self.req.sq.pop_front() else {
            return;
        };
        if wqe.sent && wqe.is_read_or_atomic() {
            self.req.rd_atomic_outstanding = self.req.rd_atomic_outstanding.saturating_sub(1);
        }
        if self.req.next_idx == 0 {
            // We were (re)sending this very WR: start the next one afresh.
            self.req.next_off = 0;
        } else {
            self.req.next_idx -= 1;
        }
        let signaled = self.init.sq_sig_all || wqe.wr.flags.contains(SendFlags::SIGNALED);
        if signaled || status != WcStatus::Success {
            let wc = self.send_wc(&wqe.wr, status, wqe.len as u32);
            env.objs.complete(self.init.send_cq, wc);
        }
    }

    /// The oldest WR failed remotely: complete it with `status`, QP to ERR.
    fn fail_head(&mut self, status: WcStatus, env: &mut Env) {
        self.complete_head(status, env);
        self.enter_error(Failure::Completed, env);
    }

    /// Go-back-N from `psn`, consuming one retry; the QP fails when none are left.
    pub fn retry(&mut self, _now: Instant, psn: Psn, env: &mut Env) {
        if self.req.retry_left == 0 {
            self.fail_head(WcStatus::RetryExcErr, env);
            return;
        }
        self.req.retry_left -= 1;
        self.req.rewound_at = Some(psn);
        self.req.retry_fence = Some(self.req.high_psn);
        self.rewind(psn);
    }

    /// Go-back-N from the oldest unacknowledged PSN because a response is
    /// missing. Responses to requests sent before the last rewind may still
    /// arrive out of order; until everything sent then is acknowledged,
    /// gaps are left to the retransmission timer.
    fn fast_retry(&mut self, now: Instant, env: &mut Env) {
        if self.req.retry_fence.is_some() {
            return;
        }
        let una = self.req.una;
        self.retry(now, una, env);
    }

    fn on_rnr_nak(&mut self, now: Instant, psn: Psn, timer: u8, env: &mut Env) {
        if self.attr.rnr_retry != 7 {
            if self.req.rnr_left == 0 {
                self.fail_head(WcStatus::RnrRetryExcErr, env);
                return;
            }
            self.req.rnr_left -= 1;
        }
        self.rewind(psn);
        self.timers.rnr = Some(now + rnr_delay(timer));
        self.timers.retransmit = None;
    }

    /// The retransmission timer fired.
    pub fn on_retransmit_timeout(&mut self, now: Instant, env: &mut Env) {
        self.timers.retransmit = None;
        if !self.req.outstanding() {
            return;
        }
        self.counters.timeouts += 1;
        let una = self.req.una;
        // Resend the oldest packet alone, more once ACKs come back.
        self.req.window.on_timeout(self.mtu());
        self.retry(now, una, env);
        if self.state() != QpState::Err {
            self.timers.retransmit = self.ack_timeout().map(|t| now + t);
        }
    }

    /// The RNR wait is over: send again from where the NAK pointed.
    pub fn on_rnr_timeout(&mut self, now: Instant) {
        self.timers.rnr = None;
        if self.req.outstanding() {
            self.timers.retransmit = self.ack_timeout().map(|t| now + t);
        }
    }

    fn read_response(&mut self, now: Instant, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        let mtu = self.mtu();
        let Some(head) = self.req.sq.front() else {
            return;
        };
        if head.sent && matches!(head.wr.opcode, WrOpcode::AtomicWrite { .. }) {
            self.atomic_write_ack(now, pkt, env);
            return;
        }
        if !head.sent || !matches!(head.wr.opcode, WrOpcode::RdmaRead { .. }) || !head.covers(psn) {
            // Not for the oldest outstanding request: a duplicate, or the
            // responder went past what we wait for.
            if psn.distance(self.req.una) > 0 {
                self.fast_retry(now, env);
            }
            return;
        }
        let d = psn.distance(self.req.una);
        if d < 0 {
            return; // duplicate response
        }
        if d > 0 {
            // An earlier response was lost.
            self.fast_retry(now, env);
            return;
        }
        let expected = (head.len - head.read_done).min(mtu) as usize;
        let is_last = head.read_done + expected as u64 == head.len;
        if pkt.payload.len() != expected {
            self.fail_head(WcStatus::BadRespErr, env);
            return;
        }
        let SendData::Sges(sges) = &head.wr.data else {
            self.fail_head(WcStatus::LocProtErr, env);
            return;
        };
        let res = dma::scatter(
            env.mem,
            &env.objs.mrs,
            self.init.pd,
            sges,
            head.read_done,
            pkt.payload,
        );
        if let Err(e) = res {
            self.fail_head(e.status(), env);
            return;
        }
        self.counters.rx_bytes += pkt.payload.len() as u64;
        if let Some(head) = self.req.sq.front_mut() {
            head.read_done += expected as u64;
        }
        self.req.una = psn.add(1);
        if is_last {
            self.complete_head(WcStatus::Success, env);
        }
        self.on_progress(now, 1);
        self.after_completions(now, env);
    }

    /// The answer to an ATOMIC WRITE: a READ response without data at its
    /// PSN (rxe's `COMPST_WRITE_SEND` for it).
    fn atomic_write_ack(&mut self, now: Instant, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        let Some(head) = self.req.sq.front() else {
            return;
        };
        let answers_head = psn == head.first_psn
            && pkt.headers.bth.opcode == migros_wire::Opcode::RC_RDMA_READ_RESPONSE_ONLY;
        if !answers_head {
            if psn.distance(self.req.una) > 0 {
                self.fast_retry(now, env);
            }
            return;
        }
        if !pkt.payload.is_empty() {
            self.fail_head(WcStatus::BadRespErr, env);
            return;
        }
        self.req.una = psn.add(1);
        self.complete_head(WcStatus::Success, env);
        self.on_progress(now, 1);
        self.after_completions(now, env);
    }

    fn atomic_ack(&mut self, now: Instant, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        let Some(head) = self.req.sq.front() else {
            return;
        };
        let is_atomic = matches!(
            head.wr.opcode,
            WrOpcode::AtomicCmpSwap { .. } | WrOpcode::AtomicFetchAdd { .. }
        );
        if !head.sent || !is_atomic || psn != head.first_psn {
            if psn.distance(self.req.una) > 0 {
                self.fast_retry(now, env);
            }
            return;
        }
        let Some(ack) = pkt.headers.atomic_ack_eth else {
            return;
        };
        let SendData::Sges(sges) = &head.wr.data else {
            return;
        };
        // The original value lands in host byte order, as verbs defines it.
        let bytes = ack.orig.to_le_bytes();
        if let Err(e) = dma::scatter(env.mem, &env.objs.mrs, self.init.pd, sges, 0, &bytes) {
            self.fail_head(e.status(), env);
            return;
        }
        self.req.una = psn.add(1);
        self.complete_head(WcStatus::Success, env);
        self.on_progress(now, 1);
        self.after_completions(now, env);
    }
}

fn is_pause_nak(pkt: &Packet) -> bool {
    pkt.headers
        .aeth
        .is_some_and(|a| a.syndrome == migros_wire::PAUSE_NAK_SYNDROME)
        && pkt.headers.bth.opcode == migros_wire::Opcode::RC_ACKNOWLEDGE
}
