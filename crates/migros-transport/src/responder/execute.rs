//! Executing a request that passed every check (rxe's `execute`,
//! `read_reply`, `atomic_reply` and `atomic_write_reply` as far as they
//! change state, and `invalidate_rkey`; the response packets are built in
//! `reply`), and answering duplicates (rxe's `duplicate_request`).

use migros_wire::{OpKind, Opcode, Packet, Psn, Reth};

use super::{is_first, is_last, Inbound, RdResource, Refusal, Response, Target};
use crate::dma::{self, DmaError};
use crate::mw::{self, InvalidateError};
use crate::qp::{Env, Qp};
use crate::requester::packets_for;
use migros_proto::verbs::*;

impl Qp {
    /// Executes an in-sequence RC or UC request, advancing the expected PSN.
    pub(super) fn execute(
        &mut self,
        pkt: &Packet,
        target: Target,
        env: &mut Env,
    ) -> Result<(), Refusal> {
        let psn = pkt.headers.bth.psn;
        match target {
            Target::Recv => self.execute_send(pkt, env)?,
            Target::Write {
                va,
                rkey,
                len,
                offset,
            } => self.execute_write(pkt, (va, rkey, len, offset), env)?,
            Target::Read(reth) => {
                let npkts = packets_for(u64::from(reth.dma_len), self.mtu());
                self.next_msn();
                self.remember(RdResource::Read {
                    first_psn: psn,
                    last_psn: psn.add(npkts - 1),
                });
                self.queue_read_response(psn, reth);
                self.resp.epsn = psn.add(npkts);
                return Ok(());
            }
            Target::Atomic { at, eth } => {
                let mut cur = [0u8; 8];
                env.mem
                    .read(at.owner, at.addr, &mut cur)
                    .map_err(|_| Refusal::RkeyViolation)?;
                // Atomics operate on the value in host byte order, as verbs
                // defines it.
                let orig = u64::from_le_bytes(cur);
                let new = if pkt.headers.bth.opcode == Opcode::RC_COMPARE_SWAP {
                    if orig == eth.compare {
                        eth.swap_add
                    } else {
                        orig
                    }
                } else {
                    orig.wrapping_add(eth.swap_add)
                };
                if new != orig {
                    env.mem
                        .write(at.owner, at.addr, &new.to_le_bytes())
                        .map_err(|_| Refusal::RkeyViolation)?;
                }
                self.next_msn();
                self.remember(RdResource::Atomic { psn, orig });
                self.resp.out.push_back(Response::AtomicAck {
                    psn,
                    orig,
                    msn: self.resp.msn,
                });
            }
            Target::AtomicWrite { at } => {
                // The 8 bytes land as they came, in one write.
                env.mem
                    .write(at.owner, at.addr, pkt.payload)
                    .map_err(|_| Refusal::RkeyViolation)?;
                self.next_msn();
                self.remember(RdResource::AtomicWrite { psn });
                self.resp.out.push_back(Response::AtomicWriteAck {
                    psn,
                    msn: self.resp.msn,
                });
            }
        }
        self.resp.epsn = psn.add(1);
        Ok(())
    }

    /// A SEND packet: its first takes a receive WR, each is scattered into
    /// it, the last completes it.
    fn execute_send(&mut self, pkt: &Packet, env: &mut Env) -> Result<(), Refusal> {
        if is_first(pkt) {
            let recv = self.take_recv(env).ok_or(Refusal::Rnr)?;
            self.resp.current = Some(Inbound::Send { recv, offset: 0 });
        }
        // check_op_seq let only a SEND continuation through.
        let Some(Inbound::Send { recv, offset }) = &mut self.resp.current else {
            return Err(Refusal::MissingOpcodeFirst);
        };
        let res = dma::scatter(
            env.mem,
            &env.objs.mrs,
            self.init.pd,
            &recv.sges,
            *offset,
            pkt.payload,
        );
        *offset += pkt.payload.len() as u64;
        self.counters.rx_bytes += pkt.payload.len() as u64;
        if let Err(e) = res {
            // A message longer than the receive WR: rxe (6.1) completes the
            // receive with LocQpOpErr and NAKs a remote operational error,
            // as for any receive WR it cannot write (see the module docs).
            let status = match e {
                DmaError::Length => WcStatus::LocQpOpErr,
                e => e.status(),
            };
            let wr_id = recv.wr_id;
            self.resp.current = None;
            let wc = self.recv_wc(wr_id, status, WcOpcode::Recv, 0);
            env.objs.complete(self.init.recv_cq, wc);
            return Err(Refusal::MalformedWqe);
        }
        if is_last(pkt) {
            if let Some(Inbound::Send { recv, offset }) = self.resp.current.take() {
                if let Some(rkey) = pkt.headers.ieth {
                    if self.invalidate(rkey, env).is_err() {
                        // rxe's class J: the message is placed, its
                        // receive completes in error, the QP fails.
                        let status = WcStatus::RemInvReqErr;
                        let wc = self.recv_wc(recv.wr_id, status, WcOpcode::Recv, 0);
                        env.objs.complete(self.init.recv_cq, wc);
                        return Err(Refusal::InvalidateRkey);
                    }
                }
                let mut wc =
                    self.recv_wc(recv.wr_id, WcStatus::Success, WcOpcode::Recv, offset as u32);
                wc.imm_data = pkt.headers.immdt;
                wc.invalidated_rkey = pkt.headers.ieth;
                let solicited = pkt.headers.bth.solicited;
                env.objs
                    .complete_solicited(self.init.recv_cq, wc, solicited);
                self.next_msn();
            }
        }
        Ok(())
    }

    /// Frees the type 2 memory window `rkey` names, bound to this QP
    /// (LOCAL_INV and SEND_WITH_INV; rxe's `invalidate_rkey`). A memory
    /// region's key cannot be invalidated: migros has no fast-registration
    /// regions, the only ones rxe invalidates.
    pub(crate) fn invalidate(&mut self, rkey: u32, env: &mut Env) -> Result<(), InvalidateError> {
        let (qpn, pd) = (self.qpn(), self.init.pd);
        let mrs = &mut env.objs.mrs;
        if mrs.by_rkey(rkey).is_some() {
            return Err(InvalidateError::Region);
        }
        let window = mrs.window_mut(rkey).ok_or(InvalidateError::UnknownWindow)?;
        mw::check_invalidate(window, qpn, pd)?;
        window.unbind();
        Ok(())
    }

    /// A WRITE packet at `offset` of the `len`-byte message at `va`; the
    /// last one with immediate data completes a receive WR.
    fn execute_write(
        &mut self,
        pkt: &Packet,
        (va, rkey, len, offset): (u64, u32, u64, u64),
        env: &mut Env,
    ) -> Result<(), Refusal> {
        let last = is_last(pkt);
        // WRITE with immediate needs a receive WR: take it before writing so
        // an RNR retry finds the data path untouched.
        let recv = match (last, pkt.headers.immdt) {
            (true, Some(_)) => Some(self.take_recv(env).ok_or(Refusal::Rnr)?),
            _ => None,
        };
        if is_first(pkt) {
            self.resp.current = Some(Inbound::Write {
                va,
                rkey,
                len,
                offset,
            });
        }
        if !pkt.payload.is_empty() {
            dma::remote_write(
                env.mem,
                &env.objs.mrs,
                self.requestee(),
                rkey,
                va + offset,
                pkt.payload,
            )
            .map_err(|_| Refusal::RkeyViolation)?;
        }
        self.counters.rx_bytes += pkt.payload.len() as u64;
        if last {
            self.resp.current = None;
            if let Some(recv) = recv {
                let mut wc = self.recv_wc(
                    recv.wr_id,
                    WcStatus::Success,
                    WcOpcode::RecvRdmaWithImm,
                    len as u32,
                );
                wc.imm_data = pkt.headers.immdt;
                let solicited = pkt.headers.bth.solicited;
                env.objs
                    .complete_solicited(self.init.recv_cq, wc, solicited);
            }
            self.next_msn();
        } else if let Some(Inbound::Write { offset: at, .. }) = &mut self.resp.current {
            *at = offset + pkt.payload.len() as u64;
        }
        Ok(())
    }

    /// Queues the READ response to the request at `psn` for what `reth`
    /// names (sent one path MTU at a time by `reply`).
    fn queue_read_response(&mut self, psn: Psn, reth: Reth) {
        self.resp.out.push_back(Response::Read {
            next_psn: psn,
            va: reth.va,
            rkey: reth.rkey,
            remaining: u64::from(reth.dma_len),
            first: true,
            msn: self.resp.msn,
        });
    }

    /// rxe's `duplicate_request`: a request already executed came again.
    /// A SEND or WRITE is ACKed again; a READ still remembered is executed
    /// again from the PSN asked for; an atomic is answered from the replay
    /// cache, never executed twice. What is not remembered is dropped.
    pub(super) fn duplicate_request(&mut self, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        match pkt.info().kind {
            OpKind::ReadRequest => {
                let known = self.resp.resources.iter().any(|r| match r {
                    RdResource::Read {
                        first_psn,
                        last_psn,
                    } => psn.distance(*first_psn) >= 0 && psn.distance(*last_psn) <= 0,
                    RdResource::Atomic { .. } | RdResource::AtomicWrite { .. } => false,
                });
                let Some(reth) = pkt.headers.reth else { return };
                let allowed = self.check_reth(reth, Access::REMOTE_READ, env).is_ok();
                if known && allowed {
                    // A READ has no side effect: execute it again from the
                    // PSN asked for (the requester may retry a partial READ).
                    // Responses still queued from that PSN on are stale: the
                    // requester asks again because it lost one of them.
                    self.resp.out.retain(|r| match r {
                        Response::Read { next_psn, .. } => next_psn.distance(psn) < 0,
                        _ => true,
                    });
                    self.queue_read_response(psn, reth);
                }
            }
            OpKind::AtomicWrite => {
                let replayed = self.resp.resources.iter().any(|r| match r {
                    RdResource::AtomicWrite { psn: p } => *p == psn,
                    _ => false,
                });
                if replayed {
                    let msn = self.resp.msn;
                    self.resp
                        .out
                        .push_back(Response::AtomicWriteAck { psn, msn });
                }
            }
            OpKind::CompareSwap | OpKind::FetchAdd => {
                let saved = self.resp.resources.iter().find_map(|r| match r {
                    RdResource::Atomic { psn: p, orig } if *p == psn => Some(*orig),
                    _ => None,
                });
                if let Some(orig) = saved {
                    let msn = self.resp.msn;
                    self.resp
                        .out
                        .push_back(Response::AtomicAck { psn, orig, msn });
                }
            }
            _ => {
                let last = self.resp.epsn.sub(1);
                self.queue_ack(last);
            }
        }
    }
}
