//! The responder: executes incoming requests in PSN order (SEND into posted
//! receives or the SRQ, RDMA WRITE and READ through rkeys, atomics), answers
//! duplicates without executing them twice (READ re-executed from its
//! resource, atomics replayed from the cache), NAKs a sequence gap once,
//! sends RNR NAKs, coalesces ACKs, and produces the response packets.

use std::collections::VecDeque;
use std::net::IpAddr;

use migros_wire::{
    AckSyndrome, AtomicAckEth, Headers, NakCode, OpKind, Opcode, Packet, Position, Psn,
};
use serde::{Deserialize, Serialize};

use crate::dma::{self, DmaError};
use crate::qp::{assemble, Env, Qp, MAX_UD_PEERS};
use crate::requester::packets_for;
use migros_proto::verbs::*;

/// Most READ/atomic results kept for duplicates, whatever max_dest_rd_atomic says.
const MIN_RESOURCES: usize = 16;
/// Bytes reserved for the GRH at the start of every UD receive buffer.
pub const GRH_LEN: usize = 40;

/// A multi-packet message being received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Inbound {
    Send {
        recv: RecvWr,
        offset: u64,
    },
    Write {
        va: u64,
        rkey: u32,
        len: u64,
        offset: u64,
    },
}

/// What the responder remembers of an executed READ or atomic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RdResource {
    Read { first_psn: Psn, last_psn: Psn },
    Atomic { psn: Psn, orig: u64 },
}

/// A response waiting to be sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    Ack {
        psn: Psn,
        syndrome: u8,
        msn: u32,
    },
    Read {
        next_psn: Psn,
        va: u64,
        rkey: u32,
        remaining: u64,
        first: bool,
        msn: u32,
    },
    AtomicAck {
        psn: Psn,
        orig: u64,
        msn: u32,
    },
}

/// Receive-side state of a QP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Responder {
    /// Expected PSN of the next request.
    pub epsn: Psn,
    /// Message sequence number: messages completed.
    pub msn: u32,
    /// A sequence NAK was sent for `epsn` and not yet answered.
    pub nak_sent: bool,
    /// UC: drop packets until the next FIRST or ONLY.
    pub uc_skip: bool,
    pub current: Option<Inbound>,
    pub resources: VecDeque<RdResource>,
    pub out: VecDeque<Response>,
    /// Stopped: answer with the pause NAK.
    pub pause_nak: bool,
}

/// Why a request could not be executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No receive posted: RNR NAK, the requester retries.
    Rnr,
    InvalidRequest,
    RemoteAccess,
    RemoteOperational,
}

impl Qp {
    /// Handles a request packet (the QP may receive).
    pub fn handle_request(&mut self, pkt: &Packet, src: IpAddr, env: &mut Env) {
        match self.qp_type() {
            QpType::Rc => self.rc_request(pkt, env),
            QpType::Uc => self.uc_request(pkt, env),
            QpType::Ud => self.ud_request(pkt, src, env),
        }
    }

    fn rc_request(&mut self, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        if self.mig() == MigrationState::Stopped {
            // Being checkpointed: nothing may change. Tell the peer to pause.
            self.resp.pause_nak = true;
            return;
        }
        let d = psn.distance(self.resp.epsn);
        if d > 0 {
            self.counters.out_of_sequence += 1;
            if !self.resp.nak_sent {
                self.resp.nak_sent = true;
                self.counters.naks_sent += 1;
                let syndrome = AckSyndrome::Nak(NakCode::PsnSequenceError).encode();
                let (epsn, msn) = (self.resp.epsn, self.resp.msn);
                self.resp.out.push_back(Response::Ack {
                    psn: epsn,
                    syndrome,
                    msn,
                });
            }
            return;
        }
        if d < 0 {
            self.counters.duplicates += 1;
            self.duplicate(pkt, env);
            return;
        }
        self.resp.nak_sent = false;
        match self.execute(pkt, env) {
            Ok(()) => {
                if pkt.headers.bth.ack_req && is_send_or_write(pkt) {
                    self.queue_ack(psn);
                }
            }
            Err(Refusal::Rnr) => {
                self.counters.rnr_naks_sent += 1;
                let syndrome = AckSyndrome::RnrNak {
                    timer: self.attr.min_rnr_timer & 0x1f,
                }
                .encode();
                let msn = self.resp.msn;
                self.resp
                    .out
                    .push_back(Response::Ack { psn, syndrome, msn });
            }
            Err(refusal) => {
                self.counters.naks_sent += 1;
                let code = match refusal {
                    Refusal::RemoteAccess => NakCode::RemoteAccessError,
                    Refusal::RemoteOperational => NakCode::RemoteOperationalError,
                    _ => NakCode::InvalidRequest,
                };
                let syndrome = AckSyndrome::Nak(code).encode();
                let msn = self.resp.msn;
                self.resp
                    .out
                    .push_back(Response::Ack { psn, syndrome, msn });
                self.enter_error(env);
            }
        }
    }

    fn uc_request(&mut self, pkt: &Packet, env: &mut Env) {
        if self.mig() == MigrationState::Stopped {
            // Being checkpointed: nothing may change, and UC has no NAK.
            self.counters.rx_dropped += 1;
            return;
        }
        let psn = pkt.headers.bth.psn;
        let Some(info) = pkt.headers.bth.opcode.info() else {
            return;
        };
        let starts = matches!(info.position, Position::First | Position::Only);
        if psn != self.resp.epsn || self.resp.uc_skip {
            // Packets were lost: the message in progress is dropped, its
            // receive WR goes back for the next message.
            self.abandon_current(env);
            if !starts {
                self.resp.epsn = psn.add(1);
                self.resp.uc_skip = true;
                return;
            }
            self.resp.uc_skip = false;
            self.resp.epsn = psn;
        }
        if self.execute(pkt, env).is_err() {
            self.abandon_current(env);
            self.resp.uc_skip = true;
            self.resp.epsn = psn.add(1);
        }
    }

    fn abandon_current(&mut self, env: &mut Env) {
        if let Some(Inbound::Send { recv, .. }) = self.resp.current.take() {
            match self.init.srq.and_then(|s| env.objs.srqs.get_mut(&s)) {
                Some(srq) => srq.queue.push_front(recv),
                None => self.rq.push_front(recv),
            }
        }
    }

    /// Executes an in-sequence RC or UC request, advancing `epsn`.
    fn execute(&mut self, pkt: &Packet, env: &mut Env) -> Result<(), Refusal> {
        let Some(info) = pkt.headers.bth.opcode.info() else {
            return Err(Refusal::InvalidRequest);
        };
        let psn = pkt.headers.bth.psn;
        let first = matches!(info.position, Position::First | Position::Only);
        let last = matches!(info.position, Position::Last | Position::Only);
        // The packet must continue the message in progress, or start one.
        let continues = match (&self.resp.current, info.kind) {
            (Some(Inbound::Send { .. }), OpKind::Send)
            | (Some(Inbound::Write { .. }), OpKind::RdmaWrite) => !first,
            (None, _) => first,
            _ => false,
        };
        if !continues {
            return Err(Refusal::InvalidRequest);
        }
        // First and middle packets carry exactly the path MTU, a last or
        // only packet at most that (the kernel's rxe checks the same and
        // answers an invalid-request NAK).
        let payload = pkt.payload.len() as u64;
        if (!last && payload != self.mtu()) || payload > self.mtu() {
            return Err(Refusal::InvalidRequest);
        }
        match info.kind {
            OpKind::Send => self.exec_send(pkt, first, last, env)?,
            OpKind::RdmaWrite => self.exec_write(pkt, first, last, env)?,
            OpKind::ReadRequest => return self.exec_read(pkt, env),
            OpKind::CompareSwap | OpKind::FetchAdd => return self.exec_atomic(pkt, env),
            _ => return Err(Refusal::InvalidRequest),
        }
        self.resp.epsn = psn.add(1);
        Ok(())
    }

    fn exec_send(
        &mut self,
        pkt: &Packet,
        first: bool,
        last: bool,
        env: &mut Env,
    ) -> Result<(), Refusal> {
        if first {
            let recv = self.take_recv(env).ok_or(Refusal::Rnr)?;
            self.resp.current = Some(Inbound::Send { recv, offset: 0 });
        }
        let Some(Inbound::Send { recv, offset }) = &mut self.resp.current else {
            return Err(Refusal::InvalidRequest);
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
            let (wr_id, status) = (recv.wr_id, dma_status(e));
            self.resp.current = None;
            let wc = self.recv_wc(wr_id, status, WcOpcode::Recv, 0);
            env.objs.complete(self.init.recv_cq, wc);
            return Err(if e == DmaError::Length {
                Refusal::InvalidRequest
            } else {
                Refusal::RemoteOperational
            });
        }
        if last {
            let Some(Inbound::Send { recv, offset }) = self.resp.current.take() else {
                return Err(Refusal::InvalidRequest);
            };
            let mut wc = self.recv_wc(recv.wr_id, WcStatus::Success, WcOpcode::Recv, offset as u32);
            wc.imm_data = pkt.headers.immdt;
            wc.invalidated_rkey = pkt.headers.ieth;
            env.objs.complete(self.init.recv_cq, wc);
            self.resp.msn = self.resp.msn.wrapping_add(1) & 0x00ff_ffff;
        }
        Ok(())
    }

    fn exec_write(
        &mut self,
        pkt: &Packet,
        first: bool,
        last: bool,
        env: &mut Env,
    ) -> Result<(), Refusal> {
        let with_imm = pkt.headers.immdt.is_some();
        if first {
            let reth = pkt.headers.reth.ok_or(Refusal::InvalidRequest)?;
            let len = u64::from(reth.dma_len);
            self.check_rkey(reth, Access::REMOTE_WRITE, env)?;
            self.resp.current = Some(Inbound::Write {
                va: reth.va,
                rkey: reth.rkey,
                len,
                offset: 0,
            });
        }
        let Some(Inbound::Write {
            va,
            rkey,
            len,
            offset,
        }) = self.resp.current.clone()
        else {
            return Err(Refusal::InvalidRequest);
        };
        let end = offset + pkt.payload.len() as u64;
        if end > len || (last && end != len) {
            self.resp.current = None;
            return Err(Refusal::InvalidRequest);
        }
        // WRITE with immediate needs a receive WR: take it before writing so
        // an RNR retry finds the data path untouched.
        let recv = if last && with_imm {
            match self.take_recv(env) {
                Some(r) => Some(r),
                None => {
                    if first {
                        self.resp.current = None;
                    }
                    return Err(Refusal::Rnr);
                }
            }
        } else {
            None
        };
        if !pkt.payload.is_empty() {
            dma::remote_write(
                env.mem,
                &env.objs.mrs,
                self.init.pd,
                rkey,
                va + offset,
                pkt.payload,
            )
            .map_err(|_| Refusal::RemoteAccess)?;
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
                env.objs.complete(self.init.recv_cq, wc);
            }
            self.resp.msn = self.resp.msn.wrapping_add(1) & 0x00ff_ffff;
        } else if let Some(Inbound::Write { offset, .. }) = &mut self.resp.current {
            *offset = end;
        }
        Ok(())
    }

    fn exec_read(&mut self, pkt: &Packet, env: &mut Env) -> Result<(), Refusal> {
        if self.qp_type() != QpType::Rc {
            return Err(Refusal::InvalidRequest);
        }
        let reth = pkt.headers.reth.ok_or(Refusal::InvalidRequest)?;
        let len = u64::from(reth.dma_len);
        self.check_rkey(reth, Access::REMOTE_READ, env)?;
        let psn = pkt.headers.bth.psn;
        let npkts = packets_for(len, self.mtu());
        self.resp.msn = self.resp.msn.wrapping_add(1) & 0x00ff_ffff;
        self.remember(RdResource::Read {
            first_psn: psn,
            last_psn: psn.add(npkts - 1),
        });
        self.resp.out.push_back(Response::Read {
            next_psn: psn,
            va: reth.va,
            rkey: reth.rkey,
            remaining: len,
            first: true,
            msn: self.resp.msn,
        });
        self.resp.epsn = psn.add(npkts);
        Ok(())
    }

    fn exec_atomic(&mut self, pkt: &Packet, env: &mut Env) -> Result<(), Refusal> {
        if self.qp_type() != QpType::Rc {
            return Err(Refusal::InvalidRequest);
        }
        let eth = pkt.headers.atomic_eth.ok_or(Refusal::InvalidRequest)?;
        if eth.va % 8 != 0 {
            return Err(Refusal::InvalidRequest);
        }
        let owner = env
            .objs
            .mrs
            .check_remote(eth.rkey, self.init.pd, eth.va, 8, Access::REMOTE_ATOMIC)
            .map_err(|_| Refusal::RemoteAccess)?;
        let mut cur = [0u8; 8];
        env.mem
            .read(owner, eth.va, &mut cur)
            .map_err(|_| Refusal::RemoteAccess)?;
        // Atomics operate on the value in host byte order, as verbs defines it.
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
                .write(owner, eth.va, &new.to_le_bytes())
                .map_err(|_| Refusal::RemoteAccess)?;
        }
        let psn = pkt.headers.bth.psn;
        self.resp.msn = self.resp.msn.wrapping_add(1) & 0x00ff_ffff;
        self.remember(RdResource::Atomic { psn, orig });
        self.resp.out.push_back(Response::AtomicAck {
            psn,
            orig,
            msn: self.resp.msn,
        });
        self.resp.epsn = psn.add(1);
        Ok(())
    }

    /// Checks a RETH's rkey, range and rights (a zero-length access needs none).
    fn check_rkey(&self, reth: migros_wire::Reth, need: Access, env: &Env) -> Result<(), Refusal> {
        if reth.dma_len == 0 {
            return Ok(());
        }
        env.objs
            .mrs
            .check_remote(
                reth.rkey,
                self.init.pd,
                reth.va,
                u64::from(reth.dma_len),
                need,
            )
            .map(|_| ())
            .map_err(|_| Refusal::RemoteAccess)
    }

    fn remember(&mut self, res: RdResource) {
        let cap = usize::from(self.attr.max_dest_rd_atomic).max(MIN_RESOURCES);
        while self.resp.resources.len() >= cap {
            self.resp.resources.pop_front();
        }
        self.resp.resources.push_back(res);
    }

    /// A request we already executed came again.
    fn duplicate(&mut self, pkt: &Packet, env: &mut Env) {
        let psn = pkt.headers.bth.psn;
        let Some(info) = pkt.headers.bth.opcode.info() else {
            return;
        };
        match info.kind {
            OpKind::ReadRequest => {
                let known = self.resp.resources.iter().any(|r| match r {
                    RdResource::Read {
                        first_psn,
                        last_psn,
                    } => psn.distance(*first_psn) >= 0 && psn.distance(*last_psn) <= 0,
                    RdResource::Atomic { .. } => false,
                });
                let Some(reth) = pkt.headers.reth else { return };
                let len = u64::from(reth.dma_len);
                let allowed = self.check_rkey(reth, Access::REMOTE_READ, env).is_ok();
                if known && allowed {
                    // A READ has no side effect: execute it again from the
                    // PSN asked for (the requester may retry a partial READ).
                    // Responses still queued from that PSN on are stale: the
                    // requester asks again because it lost one of them.
                    self.resp.out.retain(|r| match r {
                        Response::Read { next_psn, .. } => next_psn.distance(psn) < 0,
                        _ => true,
                    });
                    let msn = self.resp.msn;
                    self.resp.out.push_back(Response::Read {
                        next_psn: psn,
                        va: reth.va,
                        rkey: reth.rkey,
                        remaining: len,
                        first: true,
                        msn,
                    });
                }
            }
            OpKind::CompareSwap | OpKind::FetchAdd => {
                // Replay the saved result; never execute an atomic twice.
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

    /// Queues an ACK through `psn`, merging with an ACK already waiting at
    /// the tail (ACK coalescing: one ACK answers a burst).
    pub fn queue_ack(&mut self, psn: Psn) {
        let msn = self.resp.msn;
        let ack = AckSyndrome::Ack { credits: 0x1f }.encode();
        if let Some(Response::Ack {
            psn: p,
            syndrome,
            msn: m,
        }) = self.resp.out.back_mut()
        {
            if *syndrome == ack {
                *p = psn;
                *m = msn;
                return;
            }
        }
        self.resp.out.push_back(Response::Ack {
            psn,
            syndrome: ack,
            msn,
        });
    }

    /// Takes the next receive WR (the SRQ's if the QP has one).
    fn take_recv(&mut self, env: &mut Env) -> Option<RecvWr> {
        match self.init.srq {
            Some(srqn) => {
                let srq = env.objs.srqs.get_mut(&srqn)?;
                let wr = srq.queue.pop_front()?;
                if srq.limit > 0 && (srq.queue.len() as u32) < srq.limit {
                    srq.limit = 0;
                    env.objs
                        .events
                        .push_back(DeviceEvent::SrqLimitReached { srq: srqn });
                }
                Some(wr)
            }
            None => self.rq.pop_front(),
        }
    }

    fn ud_request(&mut self, pkt: &Packet, src: IpAddr, env: &mut Env) {
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
            Err(e) => self.recv_wc(recv.wr_id, dma_status(e), WcOpcode::Recv, 0),
        };
        wc.imm_data = pkt.headers.immdt;
        wc.src_qp = deth.src_qpn;
        wc.src_addr = Some(src);
        self.counters.rx_bytes += pkt.payload.len() as u64;
        env.objs.complete(self.init.recv_cq, wc);
        if self.ud_peers.len() < MAX_UD_PEERS {
            self.ud_peers.insert((src, deth.src_qpn));
        }
    }

    /// Whether a response is waiting to go out.
    pub fn has_response(&self) -> bool {
        !self.resp.out.is_empty() || self.resp.pause_nak
    }

    /// Builds the next response packet into `buf`.
    pub fn next_response(&mut self, env: &mut Env, buf: &mut Vec<u8>) -> Option<IpAddr> {
        let dst = self.attr.dest_addr?;
        let (src, port) = (env.config.addr, env.config.udp_src_port);
        if self.resp.pause_nak {
            self.resp.pause_nak = false;
            let h = self.ack_headers(
                Opcode::RC_ACKNOWLEDGE,
                self.resp.epsn,
                migros_wire::PAUSE_NAK_SYNDROME,
                self.resp.msn,
            );
            assemble::<()>(buf, &h, 0, src, dst, port, |_| Ok(())).ok()?;
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
                assemble::<()>(buf, &h, 0, src, dst, port, |_| Ok(())).ok()?;
            }
            Response::AtomicAck { psn, orig, msn } => {
                self.resp.out.pop_front();
                let mut h = self.ack_headers(
                    Opcode::RC_ATOMIC_ACKNOWLEDGE,
                    psn,
                    AckSyndrome::Ack { credits: 0x1f }.encode(),
                    msn,
                );
                h.atomic_ack_eth = Some(AtomicAckEth { orig });
                assemble::<()>(buf, &h, 0, src, dst, port, |_| Ok(())).ok()?;
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
                let mut h = self.ack_headers(
                    opcode,
                    next_psn,
                    AckSyndrome::Ack { credits: 0x1f }.encode(),
                    msn,
                );
                if opcode == Opcode::RC_RDMA_READ_RESPONSE_MIDDLE {
                    h.aeth = None;
                }
                let pd = self.init.pd;
                let res = assemble(buf, &h, chunk as usize, src, dst, port, |out| {
                    if out.is_empty() {
                        return Ok(());
                    }
                    dma::remote_read(env.mem, &env.objs.mrs, pd, rkey, va, out)
                });
                if res.is_err() {
                    // The region went away under the READ: answer with a NAK.
                    self.resp.out.pop_front();
                    let syndrome = AckSyndrome::Nak(NakCode::RemoteAccessError).encode();
                    let h = self.ack_headers(Opcode::RC_ACKNOWLEDGE, next_psn, syndrome, msn);
                    assemble::<()>(buf, &h, 0, src, dst, port, |_| Ok(())).ok()?;
                } else if last {
                    self.resp.out.pop_front();
                } else if let Some(Response::Read {
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
        self.counters.tx_packets += 1;
        self.counters.tx_bytes += buf.len() as u64;
        Some(dst)
    }
}

fn is_send_or_write(pkt: &Packet) -> bool {
    pkt.headers
        .bth
        .opcode
        .info()
        .is_some_and(|i| matches!(i.kind, OpKind::Send | OpKind::RdmaWrite))
}

fn dma_status(e: DmaError) -> WcStatus {
    match e {
        DmaError::Length => WcStatus::LocLenErr,
        DmaError::Protection => WcStatus::LocProtErr,
        DmaError::Access => WcStatus::LocAccessErr,
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

#[allow(unused_imports)]
use Headers as _;
