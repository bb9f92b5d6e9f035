//! The responder: executes incoming requests in PSN order (SEND into posted
//! receives or the SRQ, RDMA WRITE and READ through rkeys, atomics), answers
//! duplicates without executing them twice (READ re-executed from its
//! resource, atomics replayed from the cache), NAKs a sequence gap once,
//! sends RNR NAKs, coalesces ACKs, and produces the response packets.
//!
//! An RC or UC request goes through the checks of the kernel's rxe
//! (`rxe_resp.c`), under rxe's names, so the two can be compared line by
//! line:
//!
//! | step | rxe | refuses with |
//! |---|---|---|
//! | [`Qp::check_psn`] | `check_psn` | `PsnOutOfSeq`, or a duplicate is answered |
//! | [`Qp::check_op_seq`] | `check_op_seq` | `MissingOpcodeFirst`, `MissingOpcodeLast` |
//! | [`Qp::check_op_valid`] | `check_op_valid` | `UnsupportedOpcode` (also what the QP's `qp_access_flags` do not allow) |
//! | [`Qp::check_length`] | `check_length` | `Length` |
//! | [`Qp::check_rkey`] | `check_rkey` | `RkeyViolation`, `Length`, `MisalignedAtomic` |
//! | [`Qp::check_resource`] | `check_resource` | `TooManyRdAtomic`, `Rnr` |
//! | `execute` ([`execute`]) | `execute`, `read_reply`, `atomic_reply`, `atomic_write_reply` | `Length`, `MalformedWqe`, `RkeyViolation`, `InvalidateRkey` |
//! | [`Qp::acknowledge`] | `acknowledge` | — |
//!
//! Each check returns a [`Refusal`] named after rxe's `RESPST_ERR_*` state,
//! and [`Qp::refuse`] alone decides what the requester sees (the NAK, the
//! move to ERR and its asynchronous event, or for UC dropping the message).
//!
//! An RC request the QP's `qp_access_flags` do not allow (a READ without
//! REMOTE_READ, a WRITE or ATOMIC WRITE without REMOTE_WRITE, an atomic
//! without REMOTE_ATOMIC) is refused as rxe refuses it: as an unsupported
//! opcode, NAK "invalid request", so the requester completes with
//! `RemInvReqErr` (RoCE NICs answer "remote access error" instead). On UC
//! a WRITE without REMOTE_WRITE is dropped.
//!
//! One deliberate difference from rxe's order: `check_resource` (is a
//! receive WR posted?) runs last, after the length and rkey checks, where
//! rxe runs it before them. A request that is refused anyway is then
//! refused at once, not answered with an RNR NAK and refused on its retry,
//! and a receive WR is never taken for a request that fails.
//!
//! `check_length` refuses payloads larger than the path MTU as rxe does.
//!
//! SEND with invalidate frees the type 2 memory window its IETH names
//! once the message is placed (rxe's `invalidate_rkey`). When it cannot
//! (rxe's class J) the receive completes with `RemInvReqErr` and the QP
//! fails; where rxe still ACKs the message, migros NAKs it "invalid
//! request", so the requester learns at once instead of after retries.
//!
//! Where rxe (6.1) and the specification differ, migros does as rxe, the
//! peer it is tested against: a SEND longer than its receive WR gets a
//! remote operational error NAK and the receive completes with
//! `LocQpOpErr` (rxe takes the overflow for a malformed WQE; the
//! specification asks for an invalid-request NAK and `LocLenErr`).

mod execute;
mod reply;
mod ud;

use std::collections::VecDeque;
use std::net::IpAddr;

use migros_wire::{AckSyndrome, AtomicEth, NakCode, OpKind, Packet, Position, Psn, Reth};
use serde::{Deserialize, Serialize};

use crate::dma::Requestee;
use crate::memory::Reach;
use crate::qp::{Env, Failure, Qp};
use migros_proto::verbs::*;

pub use ud::GRH_LEN;

/// Most READ/atomic results kept for duplicates, whatever max_dest_rd_atomic says.
const MIN_RESOURCES: usize = 16;

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

/// What the responder remembers of an executed READ, atomic or ATOMIC
/// WRITE.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RdResource {
    Read { first_psn: Psn, last_psn: Psn },
    Atomic { psn: Psn, orig: u64 },
    AtomicWrite { psn: Psn },
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
    /// The answer to an ATOMIC WRITE: an RDMA READ response without data.
    AtomicWriteAck {
        psn: Psn,
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

/// Why the responder did not execute a request, named after rxe's error
/// states (`RESPST_ERR_*`). [`Qp::refuse`] maps each to what the requester
/// sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The QP is being checkpointed (migros): nothing may change.
    Stopped,
    /// `ERR_PSN_OUT_OF_SEQ`: the PSN is past the expected one (a gap).
    PsnOutOfSeq,
    /// rxe's `CLEANUP` with nothing sent: another packet past a gap
    /// already NAKed (RC), a packet of a message being dropped (UC).
    Drop,
    /// `ERR_MISSING_OPCODE_FIRST`: a MIDDLE or LAST packet with no message
    /// in progress.
    MissingOpcodeFirst,
    /// `ERR_MISSING_OPCODE_LAST_C`: a message in progress not continued.
    MissingOpcodeLast,
    /// `ERR_UNSUPPORTED_OPCODE`: this QP does not execute the operation, or
    /// its access flags do not allow it.
    UnsupportedOpcode,
    /// `ERR_LENGTH`: the payload does not fit the MTU or the RETH's length.
    Length,
    /// `ERR_MISALIGNED_ATOMIC`: an atomic's address is not 8-byte aligned.
    MisalignedAtomic,
    /// `ERR_RKEY_VIOLATION`: the rkey, its range or its rights do not allow
    /// the access, or the memory behind it could not be reached.
    RkeyViolation,
    /// `ERR_RNR`: no receive WR is posted.
    Rnr,
    /// `ERR_MALFORMED_WQE`: the receive WR's buffer could not be written
    /// (or is too short for the message: rxe 6.1 says so too).
    MalformedWqe,
    /// `ERR_TOO_MANY_RDMA_ATM_REQ`: a READ or atomic to a QP that serves
    /// none (`max_dest_rd_atomic` 0).
    TooManyRdAtomic,
    /// `ERR_INVALIDATE_RKEY`: SEND with invalidate named an rkey that
    /// cannot be invalidated (the message was placed, its receive
    /// completed in error).
    InvalidateRkey,
}

/// The PSN of a request compared with the one expected (`check_psn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sequence {
    /// The expected PSN: check and execute.
    Expected,
    /// A PSN already executed: answer again, never execute twice.
    Duplicate,
}

/// What a request asks the responder to do (`check_op_valid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Send,
    Write,
    Read,
    Atomic,
    AtomicWrite,
}

/// What a request may touch once `check_rkey` passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SEND: the receive WR (taken on its first packet).
    Recv,
    /// WRITE bytes at `va + offset` of the `len`-byte message at `va`.
    Write {
        va: u64,
        rkey: u32,
        len: u64,
        offset: u64,
    },
    /// READ what the RETH names.
    Read(Reth),
    /// An atomic on the 8 bytes the AtomicETH names, found `at`.
    Atomic { at: Reach, eth: AtomicEth },
    /// An ATOMIC WRITE of the packet's 8 bytes, `at`.
    AtomicWrite { at: Reach },
}

fn is_first(pkt: &Packet) -> bool {
    matches!(pkt.info().position, Position::First | Position::Only)
}

fn is_last(pkt: &Packet) -> bool {
    matches!(pkt.info().position, Position::Last | Position::Only)
}

impl Qp {
    /// Handles a request packet (the QP may receive).
    pub fn handle_request(&mut self, pkt: &Packet, src: IpAddr, env: &mut Env) {
        if self.qp_type() == QpType::Ud {
            self.ud_request(pkt, src, env);
        } else if let Err(refusal) = self.connected_request(pkt, env) {
            self.refuse(refusal, pkt.headers.bth.psn, env);
        }
    }

    /// One RC or UC request: rxe's checks in order, then execute and
    /// acknowledge.
    fn connected_request(&mut self, pkt: &Packet, env: &mut Env) -> Result<(), Refusal> {
        if self.mig() == MigrationState::Stopped {
            return Err(Refusal::Stopped);
        }
        if self.check_psn(pkt, env)? == Sequence::Duplicate {
            self.duplicate_request(pkt, env);
            return Ok(());
        }
        self.check_op_seq(pkt)?;
        let op = self.check_op_valid(pkt)?;
        self.check_length(pkt, op)?;
        let target = self.check_rkey(pkt, op, env)?;
        self.check_resource(pkt, op, target, env)?;
        self.execute(pkt, target, env)?;
        self.acknowledge(pkt, op);
        Ok(())
    }

    /// The one place that decides what a refused request gets.
    ///
    /// RC: a gap gets one sequence NAK at the expected PSN, a missing
    /// receive an RNR NAK (the requester retries), the pause NAK while
    /// stopped; any other refusal a NAK (invalid request, remote access or
    /// remote operational error, as rxe's class C, J and A errors) and the
    /// QP goes to ERR, raising QP_REQ_ERR, QP_ACCESS_ERR or QP_FATAL (IBA
    /// 11.6.3). UC has no NAK: the message is dropped and the responder
    /// waits for the next FIRST or ONLY (rxe's class D).
    pub(crate) fn refuse(&mut self, refusal: Refusal, psn: Psn, env: &mut Env) {
        if self.qp_type() != QpType::Rc {
            if refusal == Refusal::Stopped {
                self.counters.rx_dropped += 1;
                env.objs.counters.rx_dropped += 1;
            } else {
                self.abandon_current(env);
                self.resp.uc_skip = true;
                self.resp.epsn = psn.add(1);
            }
            return;
        }
        // (PSN answered, syndrome, why the QP fails if it does)
        let (at, syndrome, fails) = match refusal {
            Refusal::Stopped => {
                self.resp.pause_nak = true;
                return;
            }
            Refusal::Drop => return,
            Refusal::PsnOutOfSeq => {
                let nak = AckSyndrome::Nak(NakCode::PsnSequenceError);
                (self.resp.epsn, nak, None)
            }
            Refusal::Rnr => {
                let timer = self.attr.min_rnr_timer & 0x1f;
                (psn, AckSyndrome::RnrNak { timer }, None)
            }
            Refusal::RkeyViolation => (
                psn,
                AckSyndrome::Nak(NakCode::RemoteAccessError),
                Some(Failure::AccessViolation),
            ),
            Refusal::MalformedWqe => (
                psn,
                AckSyndrome::Nak(NakCode::RemoteOperationalError),
                Some(Failure::Fatal),
            ),
            Refusal::MissingOpcodeFirst
            | Refusal::MissingOpcodeLast
            | Refusal::UnsupportedOpcode
            | Refusal::Length
            | Refusal::MisalignedAtomic
            | Refusal::TooManyRdAtomic
            | Refusal::InvalidateRkey => (
                psn,
                AckSyndrome::Nak(NakCode::InvalidRequest),
                Some(Failure::InvalidRequest),
            ),
        };
        match syndrome {
            AckSyndrome::RnrNak { .. } => {
                self.counters.rnr_naks_sent += 1;
                env.objs.counters.rnr_naks_sent += 1;
            }
            _ => {
                self.counters.naks_sent += 1;
                env.objs.counters.naks_sent += 1;
            }
        }
        self.resp.out.push_back(Response::Ack {
            psn: at,
            syndrome: syndrome.encode(),
            msn: self.resp.msn,
        });
        if let Some(why) = fails {
            self.enter_error(why, env);
        }
    }

    /// rxe's `check_psn`. RC: the expected PSN goes on, an earlier one is a
    /// duplicate, a later one a gap (NAKed once until the expected PSN
    /// comes). UC: a gap drops the message in progress; a FIRST or ONLY
    /// starts over from its PSN, anything else is dropped.
    fn check_psn(&mut self, pkt: &Packet, env: &mut Env) -> Result<Sequence, Refusal> {
        let psn = pkt.headers.bth.psn;
        if self.qp_type() != QpType::Rc {
            if psn != self.resp.epsn || self.resp.uc_skip {
                // Packets were lost: the message in progress is dropped, its
                // receive WR goes back for the next message.
                self.abandon_current(env);
                if !is_first(pkt) {
                    return Err(Refusal::Drop);
                }
                self.resp.uc_skip = false;
                self.resp.epsn = psn;
            }
            return Ok(Sequence::Expected);
        }
        let d = psn.distance(self.resp.epsn);
        if d > 0 {
            self.counters.out_of_sequence += 1;
            env.objs.counters.out_of_sequence += 1;
            if self.resp.nak_sent {
                return Err(Refusal::Drop);
            }
            self.resp.nak_sent = true;
            return Err(Refusal::PsnOutOfSeq);
        }
        if d < 0 {
            self.counters.duplicates += 1;
            env.objs.counters.duplicates += 1;
            return Ok(Sequence::Duplicate);
        }
        self.resp.nak_sent = false;
        Ok(Sequence::Expected)
    }

    /// rxe's `check_op_seq`: the packet continues the message in progress
    /// (same operation, not a FIRST or ONLY), or starts one.
    fn check_op_seq(&self, pkt: &Packet) -> Result<(), Refusal> {
        let first = is_first(pkt);
        match (&self.resp.current, pkt.info().kind) {
            (Some(Inbound::Send { .. }), OpKind::Send)
            | (Some(Inbound::Write { .. }), OpKind::RdmaWrite)
                if !first =>
            {
                Ok(())
            }
            (None, _) if first => Ok(()),
            (None, _) => Err(Refusal::MissingOpcodeFirst),
            _ => Err(Refusal::MissingOpcodeLast),
        }
    }

    /// rxe's `check_op_valid`: the operations this QP executes (UC
    /// carries SEND and WRITE only), and only those its `qp_access_flags`
    /// allow: READ needs REMOTE_READ, WRITE and ATOMIC WRITE REMOTE_WRITE,
    /// an atomic REMOTE_ATOMIC. As in rxe, RC answers a refused one with an
    /// invalid-request NAK (where the memory region's rights, checked
    /// later, give a remote access error) and UC drops the message.
    fn check_op_valid(&self, pkt: &Packet) -> Result<Operation, Refusal> {
        let rc = self.qp_type() == QpType::Rc;
        let (op, need) = match pkt.info().kind {
            OpKind::Send => (Operation::Send, None),
            OpKind::RdmaWrite => (Operation::Write, Some(Access::REMOTE_WRITE)),
            OpKind::ReadRequest if rc => (Operation::Read, Some(Access::REMOTE_READ)),
            OpKind::CompareSwap | OpKind::FetchAdd if rc => {
                (Operation::Atomic, Some(Access::REMOTE_ATOMIC))
            }
            OpKind::AtomicWrite if rc => (Operation::AtomicWrite, Some(Access::REMOTE_WRITE)),
            _ => return Err(Refusal::UnsupportedOpcode),
        };
        if need.is_some_and(|n| !self.attr.qp_access_flags.contains(n)) {
            return Err(Refusal::UnsupportedOpcode);
        }
        Ok(op)
    }

    /// rxe's `check_length`: a FIRST or MIDDLE packet carries exactly one
    /// path MTU, a LAST or ONLY packet at most that; an ATOMIC WRITE
    /// exactly 8 bytes.
    fn check_length(&self, pkt: &Packet, op: Operation) -> Result<(), Refusal> {
        let payload = pkt.payload.len() as u64;
        if (!is_last(pkt) && payload != self.mtu()) || payload > self.mtu() {
            return Err(Refusal::Length);
        }
        let reth_len = pkt.headers.reth.map(|r| r.dma_len);
        if op == Operation::AtomicWrite && (pkt.payload.len() != 8 || reth_len != Some(8)) {
            return Err(Refusal::Length);
        }
        Ok(())
    }

    /// This QP as the target of a remote access.
    fn requestee(&self) -> Requestee {
        Requestee {
            pd: self.init.pd,
            qpn: self.qpn(),
        }
    }

    /// rxe's `check_rkey`: what the request may touch. A WRITE's first
    /// packet and a READ are checked against their RETH (rkey, PD, range,
    /// rights; a zero-length access needs none), and every WRITE packet
    /// must stay within the RETH's length and end exactly at it; an atomic
    /// must be 8-byte aligned and its rkey allow REMOTE_ATOMIC.
    fn check_rkey(&self, pkt: &Packet, op: Operation, env: &Env) -> Result<Target, Refusal> {
        match op {
            Operation::Send => Ok(Target::Recv),
            Operation::Write => {
                let (va, rkey, len, offset) = if is_first(pkt) {
                    // The parser guarantees a RETH on FIRST and ONLY.
                    let reth = pkt.headers.reth.ok_or(Refusal::UnsupportedOpcode)?;
                    self.check_reth(reth, Access::REMOTE_WRITE, env)?;
                    (reth.va, reth.rkey, u64::from(reth.dma_len), 0)
                } else {
                    // check_op_seq let only a continuation through.
                    let Some(Inbound::Write {
                        va,
                        rkey,
                        len,
                        offset,
                    }) = self.resp.current
                    else {
                        return Err(Refusal::MissingOpcodeFirst);
                    };
                    (va, rkey, len, offset)
                };
                let end = offset + pkt.payload.len() as u64;
                if end > len || (is_last(pkt) && end != len) {
                    return Err(Refusal::Length);
                }
                Ok(Target::Write {
                    va,
                    rkey,
                    len,
                    offset,
                })
            }
            Operation::Read => {
                let reth = pkt.headers.reth.ok_or(Refusal::UnsupportedOpcode)?;
                self.check_reth(reth, Access::REMOTE_READ, env)?;
                Ok(Target::Read(reth))
            }
            Operation::Atomic => {
                let eth = pkt.headers.atomic_eth.ok_or(Refusal::UnsupportedOpcode)?;
                if eth.va % 8 != 0 {
                    return Err(Refusal::MisalignedAtomic);
                }
                let at = self.reach(eth.rkey, eth.va, 8, Access::REMOTE_ATOMIC, env)?;
                Ok(Target::Atomic { at, eth })
            }
            Operation::AtomicWrite => {
                // The parser guarantees a RETH; check_length its length 8.
                let reth = pkt.headers.reth.ok_or(Refusal::UnsupportedOpcode)?;
                let at = self.reach(reth.rkey, reth.va, 8, Access::REMOTE_WRITE, env)?;
                if reth.va % 8 != 0 {
                    return Err(Refusal::MisalignedAtomic);
                }
                Ok(Target::AtomicWrite { at })
            }
        }
    }

    /// Where `len` bytes at `va` through `rkey` are, if this QP may `need`
    /// them.
    fn reach(
        &self,
        rkey: u32,
        va: u64,
        len: u64,
        need: Access,
        env: &Env,
    ) -> Result<Reach, Refusal> {
        let me = self.requestee();
        env.objs
            .mrs
            .check_remote(rkey, me.pd, me.qpn, va, len, need)
            .map_err(|_| Refusal::RkeyViolation)
    }

    /// A RETH's rkey, range and rights (a zero-length access needs none).
    fn check_reth(&self, reth: Reth, need: Access, env: &Env) -> Result<(), Refusal> {
        if reth.dma_len == 0 {
            return Ok(());
        }
        self.reach(reth.rkey, reth.va, u64::from(reth.dma_len), need, env)
            .map(|_| ())
    }

    /// rxe's `check_resource`: a READ, atomic or ATOMIC WRITE needs a QP
    /// that serves them (`max_dest_rd_atomic` > 0); a SEND's first packet
    /// and the last packet of a WRITE with immediate need a receive WR
    /// (the QP's, or its SRQ's).
    fn check_resource(
        &self,
        pkt: &Packet,
        op: Operation,
        target: Target,
        env: &Env,
    ) -> Result<(), Refusal> {
        let rd_atomic = matches!(
            op,
            Operation::Read | Operation::Atomic | Operation::AtomicWrite
        );
        if rd_atomic && self.attr.max_dest_rd_atomic == 0 {
            return Err(Refusal::TooManyRdAtomic);
        }
        let needs_recv = match target {
            Target::Recv => is_first(pkt),
            Target::Write { .. } => is_last(pkt) && pkt.headers.immdt.is_some(),
            Target::Read(_) | Target::Atomic { .. } | Target::AtomicWrite { .. } => false,
        };
        let posted = match self.init.srq {
            Some(srqn) => env
                .objs
                .srqs
                .get(&srqn)
                .is_some_and(|s| !s.queue.is_empty()),
            None => !self.rq.is_empty(),
        };
        if needs_recv && !posted {
            return Err(Refusal::Rnr);
        }
        Ok(())
    }

    /// rxe's `acknowledge`: an executed SEND or WRITE packet that asks for
    /// an ACK gets one (READs and atomics are answered by their responses).
    /// UC sends none.
    fn acknowledge(&mut self, pkt: &Packet, op: Operation) {
        // READs, atomics and ATOMIC WRITEs are answered by their responses.
        let acked = matches!(op, Operation::Send | Operation::Write);
        if self.qp_type() == QpType::Rc && acked && pkt.headers.bth.ack_req {
            self.queue_ack(pkt.headers.bth.psn);
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

    /// Drops the message in progress; a SEND's receive WR goes back to the
    /// front of its queue for the next message.
    fn abandon_current(&mut self, env: &mut Env) {
        if let Some(Inbound::Send { recv, .. }) = self.resp.current.take() {
            match self.init.srq.and_then(|s| env.objs.srqs.get_mut(&s)) {
                Some(srq) => srq.queue.push_front(recv),
                None => self.rq.push_front(recv),
            }
        }
    }

    /// Takes the next receive WR (the SRQ's if the QP has one).
    pub(crate) fn take_recv(&mut self, env: &mut Env) -> Option<RecvWr> {
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

    /// Keeps a READ or atomic for duplicates, forgetting the oldest.
    fn remember(&mut self, res: RdResource) {
        let cap = usize::from(self.attr.max_dest_rd_atomic).max(MIN_RESOURCES);
        while self.resp.resources.len() >= cap {
            self.resp.resources.pop_front();
        }
        self.resp.resources.push_back(res);
    }

    /// Counts a message completed (the MSN has 24 bits).
    fn next_msn(&mut self) {
        self.resp.msn = self.resp.msn.wrapping_add(1) & 0x00ff_ffff;
    }
}

#[cfg(test)]
mod tests;
