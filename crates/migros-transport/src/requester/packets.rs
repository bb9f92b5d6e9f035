//! How a send WR becomes request packets: the UD datagram of a WR, and a
//! connected WR's next packet (its `Segment`: opcode by position in the
//! message, extension headers, payload cut by path MTU).

use std::net::IpAddr;

use migros_wire::{AtomicEth, Bth, Deth, Headers, Opcode, Reth};

use crate::dma::{self, DmaError};
use crate::packet_builder::{new_bth, PacketBuilder, Route};
use crate::qp::{Env, Qp, MAX_UD_PEERS};
use crate::time::Instant;
use migros_proto::verbs::*;

use super::{packets_for, SendWqe, ACK_REQ_EVERY};

impl Qp {
    /// Builds the UD datagram of the oldest WR and completes it. Errors
    /// with the status the WR fails with.
    pub(super) fn build_ud(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Result<IpAddr, WcStatus> {
        let idx = self.req.next_idx;
        let wqe = &self.req.sq[idx];
        // post_send refuses a UD WR without a destination; an image could
        // still hold one.
        let ud = wqe.wr.ud.ok_or(WcStatus::LocQpOpErr)?;
        let dst = env
            .objs
            .ud_redirects
            .lookup(now, ud.addr, ud.remote_qpn)
            .unwrap_or(ud.addr);
        let qkey = if ud.remote_qkey & 0x8000_0000 != 0 {
            self.attr.qkey
        } else {
            ud.remote_qkey
        };
        let (opcode, imm) = match wqe.wr.opcode {
            WrOpcode::SendWithImm { imm } => (Opcode::UD_SEND_ONLY_WITH_IMMEDIATE, Some(imm)),
            _ => (Opcode::UD_SEND_ONLY, None),
        };
        let psn = self.req.next_psn;
        let mut bth = new_bth(opcode, ud.remote_qpn, psn);
        bth.solicited = wqe.wr.flags.contains(SendFlags::SOLICITED);
        let mut headers = Headers::new(bth);
        headers.deth = Some(Deth {
            qkey,
            src_qpn: self.qpn(),
        });
        headers.immdt = imm;
        let mut packet = PacketBuilder::new(buf, &headers, wqe.len as usize)
            .map_err(|_| WcStatus::LocQpOpErr)?;
        fill_payload(env, self.init.pd, &wqe.wr.data, 0, packet.payload_mut())
            .map_err(DmaError::status)?;
        packet.finish(Route::new(env.config, dst));
        self.req.next_psn = psn.add(1);
        if self.ud_peers.len() < MAX_UD_PEERS {
            self.ud_peers.insert((dst, ud.remote_qpn));
        }
        // UD completes as soon as the packet is on its way.
        if let Some(wqe) = self.req.sq.remove(idx) {
            if self.init.sq_sig_all || wqe.wr.flags.contains(SendFlags::SIGNALED) {
                let wc = self.send_wc(&wqe.wr, WcStatus::Success, wqe.len as u32);
                env.objs.complete(self.init.send_cq, wc);
            }
        }
        Ok(dst)
    }

    /// Builds the next RC or UC request packet of the WR being sent.
    /// Errors with the status the WR fails with.
    pub(super) fn build_connected(
        &mut self,
        now: Instant,
        env: &mut Env,
        buf: &mut Vec<u8>,
    ) -> Result<IpAddr, WcStatus> {
        let mtu = self.mtu();
        let idx = self.req.next_idx;
        let off = self.req.next_off;
        let psn = self.req.next_psn;
        let dst = self.attr.dest_addr.unwrap_or(env.config.addr);
        let is_rc = self.qp_type() == QpType::Rc;
        let wqe = &mut self.req.sq[idx];
        if !wqe.sent {
            // First transmission: the message takes its PSNs. A resend
            // (go-back-N) keeps them.
            wqe.first_psn = psn;
            wqe.npkts = packets_for(wqe.len, mtu);
            if wqe.is_read_or_atomic() {
                self.req.rd_atomic_outstanding += 1;
            }
            wqe.sent = true;
        }
        let bth = new_bth(Opcode::RC_SEND_ONLY, self.attr.dest_qp_num, psn);
        let mut seg = Segment::of(wqe, off, mtu, is_rc, bth);
        self.req.since_ack_req += 1;
        // The last packet the window lets out asks for an ACK, or the
        // requester could wait for one the responder never sends.
        let after = psn.add(seg.psns).distance(self.req.una);
        let fills_window = !self.req.window.has_room(after, mtu);
        if is_rc && (seg.finished || fills_window || self.req.since_ack_req >= ACK_REQ_EVERY) {
            seg.headers.bth.ack_req = true;
            self.req.since_ack_req = 0;
        }
        let mut packet = PacketBuilder::new(buf, &seg.headers, seg.payload_len)
            .map_err(|_| WcStatus::LocQpOpErr)?;
        let data = &self.req.sq[idx].wr.data;
        fill_payload(env, self.init.pd, data, off, packet.payload_mut())
            .map_err(DmaError::status)?;
        packet.finish(Route::new(env.config, dst));
        if psn.distance(self.req.high_psn) < 0 {
            self.counters.retransmits += 1;
            env.objs.counters.retransmits += 1;
        }
        self.req.next_psn = psn.add(seg.psns);
        if self.req.next_psn.distance(self.req.high_psn) > 0 {
            self.req.high_psn = self.req.next_psn;
        }
        if seg.finished {
            self.req.next_off = 0;
            self.req.next_idx += 1;
        } else {
            self.req.next_off = off + seg.payload_len as u64;
        }
        if is_rc {
            if self.timers.retransmit.is_none() {
                self.timers.retransmit = self.ack_timeout().map(|t| now + t);
            }
        } else if seg.finished {
            // UC: a message is complete once its last packet is sent.
            self.req.next_idx -= 1;
            if let Some(wqe) = self.req.sq.remove(idx) {
                if self.init.sq_sig_all || wqe.wr.flags.contains(SendFlags::SIGNALED) {
                    let wc = self.send_wc(&wqe.wr, WcStatus::Success, wqe.len as u32);
                    env.objs.complete(self.init.send_cq, wc);
                }
            }
            self.req.una = self.req.next_psn;
        }
        Ok(dst)
    }
}

/// The next request packet of a connected WR: its headers (the ACK request
/// aside), how much payload it carries and how many PSNs it takes.
struct Segment {
    headers: Headers,
    payload_len: usize,
    /// PSNs the packet consumes (a READ request: one per response packet).
    psns: u32,
    /// The WR has no packet left after this one.
    finished: bool,
}

impl Segment {
    /// The packet of `wqe` starting at message byte `off`, with `bth`'s
    /// destination and PSN.
    fn of(wqe: &SendWqe, off: u64, mtu: u64, is_rc: bool, bth: Bth) -> Segment {
        let mut headers = Headers::new(bth);
        let whole = |headers: Headers, psns: u32| Segment {
            headers,
            payload_len: 0,
            psns,
            finished: true,
        };
        let atomic = |mut headers: Headers, opcode, va, rkey, swap_add, compare| {
            headers.bth.opcode = opcode;
            headers.atomic_eth = Some(AtomicEth {
                va,
                rkey,
                swap_add,
                compare,
            });
            whole(headers, 1)
        };
        match wqe.wr.opcode {
            WrOpcode::RdmaRead { remote_addr, rkey } => {
                // A READ goes out whole, or from the first byte not yet placed
                // when it is retried after a partial response.
                let done = wqe.read_done;
                headers.bth.opcode = Opcode::RC_RDMA_READ_REQUEST;
                headers.reth = Some(Reth {
                    va: remote_addr.wrapping_add(done),
                    rkey,
                    dma_len: (wqe.len - done) as u32,
                });
                whole(headers, packets_for(wqe.len - done, mtu))
            }
            WrOpcode::AtomicCmpSwap {
                remote_addr,
                rkey,
                compare,
                swap,
            } => atomic(
                headers,
                Opcode::RC_COMPARE_SWAP,
                remote_addr,
                rkey,
                swap,
                compare,
            ),
            WrOpcode::AtomicFetchAdd {
                remote_addr,
                rkey,
                add,
            } => atomic(headers, Opcode::RC_FETCH_ADD, remote_addr, rkey, add, 0),
            WrOpcode::AtomicWrite { remote_addr, rkey } => {
                headers.bth.opcode = Opcode::RC_ATOMIC_WRITE;
                headers.reth = Some(Reth {
                    va: remote_addr,
                    rkey,
                    dma_len: 8,
                });
                Segment {
                    headers,
                    payload_len: 8,
                    psns: 1,
                    finished: true,
                }
            }
            op => {
                let remaining = wqe.len - off;
                let chunk = remaining.min(mtu);
                let first = off == 0;
                let last = chunk == remaining;
                headers.bth.opcode = data_opcode(op, is_rc, first, last);
                if first {
                    if let WrOpcode::RdmaWrite { remote_addr, rkey }
                    | WrOpcode::RdmaWriteWithImm {
                        remote_addr, rkey, ..
                    } = op
                    {
                        headers.reth = Some(Reth {
                            va: remote_addr,
                            rkey,
                            dma_len: wqe.len as u32,
                        });
                    }
                }
                if last {
                    match op {
                        WrOpcode::SendWithImm { imm } | WrOpcode::RdmaWriteWithImm { imm, .. } => {
                            headers.immdt = Some(imm)
                        }
                        WrOpcode::SendWithInv { rkey } => headers.ieth = Some(rkey),
                        _ => {}
                    }
                    // The SE bit means something on SENDs and WRITEs with
                    // immediate only (rxe's init_req_packet).
                    let carries_event = matches!(
                        op,
                        WrOpcode::Send
                            | WrOpcode::SendWithImm { .. }
                            | WrOpcode::SendWithInv { .. }
                            | WrOpcode::RdmaWriteWithImm { .. }
                    );
                    headers.bth.solicited =
                        carries_event && wqe.wr.flags.contains(SendFlags::SOLICITED);
                }
                Segment {
                    headers,
                    payload_len: chunk as usize,
                    psns: 1,
                    finished: last,
                }
            }
        }
    }
}

/// Copies message bytes `[off, off + out.len())` of a send WR into `out`.
fn fill_payload(
    env: &mut Env,
    pd: Pdn,
    data: &SendData,
    off: u64,
    out: &mut [u8],
) -> Result<(), DmaError> {
    if out.is_empty() {
        return Ok(());
    }
    match data {
        SendData::Inline(bytes) => {
            let start = off as usize;
            let src = bytes
                .get(start..start + out.len())
                .ok_or(DmaError::Length)?;
            out.copy_from_slice(src);
            Ok(())
        }
        SendData::Sges(sges) => dma::gather(env.mem, &env.objs.mrs, pd, sges, off, out),
    }
}

/// The opcode of a SEND or WRITE packet at this position of its message.
fn data_opcode(op: WrOpcode, rc: bool, first: bool, last: bool) -> Opcode {
    use WrOpcode::*;
    let code = match (op, first, last) {
        (Send | SendWithImm { .. } | SendWithInv { .. }, true, false) => Opcode::RC_SEND_FIRST,
        (Send | SendWithImm { .. } | SendWithInv { .. }, false, false) => Opcode::RC_SEND_MIDDLE,
        (Send, false, true) => Opcode::RC_SEND_LAST,
        (Send, true, true) => Opcode::RC_SEND_ONLY,
        (SendWithImm { .. }, false, true) => Opcode::RC_SEND_LAST_WITH_IMMEDIATE,
        (SendWithImm { .. }, true, true) => Opcode::RC_SEND_ONLY_WITH_IMMEDIATE,
        (SendWithInv { .. }, false, true) => Opcode::RC_SEND_LAST_WITH_INVALIDATE,
        (SendWithInv { .. }, true, true) => Opcode::RC_SEND_ONLY_WITH_INVALIDATE,
        (_, true, false) => Opcode::RC_RDMA_WRITE_FIRST,
        (_, false, false) => Opcode::RC_RDMA_WRITE_MIDDLE,
        (RdmaWriteWithImm { .. }, false, true) => Opcode::RC_RDMA_WRITE_LAST_WITH_IMMEDIATE,
        (RdmaWriteWithImm { .. }, true, true) => Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE,
        (_, false, true) => Opcode::RC_RDMA_WRITE_LAST,
        (_, true, true) => Opcode::RC_RDMA_WRITE_ONLY,
    };
    if rc {
        code
    } else {
        // UC opcodes are the RC ones in the 0x20 range.
        Opcode(code.0 | 0x20)
    }
}
