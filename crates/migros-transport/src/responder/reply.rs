//! The responder's packets: ACKs and NAKs, READ responses (read from
//! memory one path MTU at a time), atomic ACKs, and the pause NAK while
//! the QP is stopped.

use std::net::IpAddr;

use migros_wire::{AckSyndrome, AtomicAckEth, NakCode, Opcode, PAUSE_NAK_SYNDROME};

use super::Response;
use crate::dma;
use crate::packet_builder::{PacketBuilder, Route};
use crate::qp::{Env, Failure, Qp};
use migros_proto::verbs::*;

impl Qp {
    /// Data this QP received was not written into its owner's memory (the
    /// daemon's write failed after the packet was accepted): the responses
    /// not yet sent, which would acknowledge it, are replaced by one NAK
    /// (remote operational error) at the oldest of their PSNs (RC), and the
    /// QP enters the error state. The peer's WR completes with an error
    /// and the application sees a QP error, never an ACK for lost data.
    pub fn memory_lost(&mut self, env: &mut Env) {
        if !matches!(self.state(), QpState::Rtr | QpState::Rts | QpState::Sqd) {
            return;
        }
        let oldest = self
            .resp
            .out
            .iter()
            .map(|r| match r {
                Response::Ack { psn, .. }
                | Response::AtomicAck { psn, .. }
                | Response::AtomicWriteAck { psn, .. } => *psn,
                Response::Read { next_psn, .. } => *next_psn,
            })
            .reduce(|a, b| if b.distance(a) < 0 { b } else { a });
        let msn = self.resp.msn;
        self.resp.out.clear();
        if self.qp_type() == QpType::Rc {
            let psn = oldest.unwrap_or(self.resp.epsn);
            self.resp.out.push_back(Response::Ack {
                psn,
                syndrome: AckSyndrome::Nak(NakCode::RemoteOperationalError).encode(),
                msn,
            });
            self.counters.naks_sent += 1;
        }
        // The application cannot be told by a completion: QP_FATAL.
        self.enter_error(Failure::Fatal, env);
    }

    /// Whether a response is waiting to go out.
    pub fn has_response(&self) -> bool {
        !self.resp.out.is_empty() || self.resp.pause_nak
    }

    /// Builds the next response packet into `buf`.
    pub fn next_response(&mut self, env: &mut Env, buf: &mut Vec<u8>) -> Option<IpAddr> {
        let dst = self.attr.dest_addr?;
        let route = Route::new(env.config, dst);
        let ack = AckSyndrome::Ack { credits: 0x1f }.encode();
        if self.resp.pause_nak {
            self.resp.pause_nak = false;
            let (epsn, msn) = (self.resp.epsn, self.resp.msn);
            let h = self.ack_headers(Opcode::RC_ACKNOWLEDGE, epsn, PAUSE_NAK_SYNDROME, msn);
            PacketBuilder::new(buf, &h, 0).ok()?.finish(route);
            return Some(dst);
        }
        if self.mig() == MigrationState::Stopped {
            return None;
        }
        let mtu = self.mtu();
        let front = self.resp.out.front_mut()?;
        match front.clone() {
            Response::Ack { psn, syndrome, msn } => {
                self.resp.out.pop_front();
                let h = self.ack_headers(Opcode::RC_ACKNOWLEDGE, psn, syndrome, msn);
                PacketBuilder::new(buf, &h, 0).ok()?.finish(route);
            }
            Response::AtomicAck { psn, orig, msn } => {
                self.resp.out.pop_front();
                let mut h = self.ack_headers(Opcode::RC_ATOMIC_ACKNOWLEDGE, psn, ack, msn);
                h.atomic_ack_eth = Some(AtomicAckEth { orig });
                PacketBuilder::new(buf, &h, 0).ok()?.finish(route);
            }
            Response::AtomicWriteAck { psn, msn } => {
                // As rxe answers an ATOMIC WRITE: a READ response, no data.
                self.resp.out.pop_front();
                let h = self.ack_headers(Opcode::RC_RDMA_READ_RESPONSE_ONLY, psn, ack, msn);
                PacketBuilder::new(buf, &h, 0).ok()?.finish(route);
            }
            Response::Read {
                next_psn,
                va,
                rkey,
                remaining,
                first,
                msn,
            } => {
                let chunk = remaining.min(mtu);
                let last = chunk == remaining;
                let opcode = match (first, last) {
                    (true, true) => Opcode::RC_RDMA_READ_RESPONSE_ONLY,
                    (true, false) => Opcode::RC_RDMA_READ_RESPONSE_FIRST,
                    (false, false) => Opcode::RC_RDMA_READ_RESPONSE_MIDDLE,
                    (false, true) => Opcode::RC_RDMA_READ_RESPONSE_LAST,
                };
                let mut h = self.ack_headers(opcode, next_psn, ack, msn);
                if opcode == Opcode::RC_RDMA_READ_RESPONSE_MIDDLE {
                    h.aeth = None;
                }
                let mut packet = PacketBuilder::new(buf, &h, chunk as usize).ok()?;
                let out = packet.payload_mut();
                let read = out.is_empty()
                    || dma::remote_read(env.mem, &env.objs.mrs, self.requestee(), rkey, va, out)
                        .is_ok();
                if !read {
                    // The region went away under the READ: answer with a NAK.
                    self.resp.out.pop_front();
                    let syndrome = AckSyndrome::Nak(NakCode::RemoteAccessError).encode();
                    let h = self.ack_headers(Opcode::RC_ACKNOWLEDGE, next_psn, syndrome, msn);
                    PacketBuilder::new(buf, &h, 0).ok()?.finish(route);
                } else if last {
                    packet.finish(route);
                    self.resp.out.pop_front();
                } else {
                    packet.finish(route);
                    if let Some(Response::Read {
                        next_psn,
                        va,
                        remaining,
                        first,
                        ..
                    }) = self.resp.out.front_mut()
                    {
                        *next_psn = next_psn.add(1);
                        *va += chunk;
                        *remaining -= chunk;
                        *first = false;
                    }
                }
            }
        }
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += buf.len() as u64;
        Some(dst)
    }
}
