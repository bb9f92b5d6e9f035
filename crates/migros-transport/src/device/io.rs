//! The sans-IO entry points that move packets and time: datagrams in
//! (`handle_datagram`, with a UD QP's RESUME), datagrams out
//! (`poll_transmit`, QP by QP in turn), timers and device events.

use std::net::IpAddr;

use migros_wire::{IpContext, OpKind, Packet};

use crate::memory::Memory;
use crate::qp::Env;
use crate::time::Instant;
use migros_proto::verbs::*;

use super::{depth, Device, NoMemory, Transmit};

impl Device {
    /// A UDP datagram arrived on port 4791 from `src`:`src_port`.
    /// Anything malformed or with a bad ICRC is counted and dropped.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        src: IpAddr,
        src_port: u16,
        datagram: &[u8],
    ) {
        let c = &mut self.objs.counters;
        c.rx_packets += 1;
        c.rx_bytes += datagram.len() as u64;
        let ctx = IpContext::new(src, self.config.addr, src_port, migros_wire::ROCE_V2_PORT);
        // A UDP socket hides the IPv4 identification the ICRC covers: the
        // check recovers it (peers such as the kernel's rxe send nonzero ones).
        if migros_wire::verify_received(&ctx, datagram).is_none() {
            c.rx_icrc_errors += 1;
            return;
        }
        let Ok(pkt) = Packet::parse(datagram) else {
            c.rx_malformed += 1;
            return;
        };
        let qpn = pkt.headers.bth.dest_qpn;
        let is_resume = pkt.info().kind == OpKind::Resume;
        match self.qps.get(&qpn).map(|q| q.qp_type()) {
            Some(QpType::Ud) if is_resume => {
                if !self.on_ud_resume(now, qpn, &pkt, src) {
                    self.objs.counters.rx_resume_refused += 1;
                }
            }
            Some(_) => {
                // The closure's result is (); the QP exists, so this is Ok.
                let _ = self.with_qp(qpn, mem, |qp, env| qp.handle_packet(now, &pkt, src, env));
            }
            None if self.tombstones.contains(qpn) => {
                self.objs.counters.rx_tombstone += 1;
                let answer = self
                    .tombstones
                    .answer(now, &self.config, qpn, &pkt, datagram, src);
                if let Some(out) = answer {
                    self.control_out.push_back(out);
                }
            }
            None => self.objs.counters.rx_unknown_qp += 1,
        }
    }

    /// A RESUME-opcode packet to UD QP `qpn` from `src`: a UD QP it sent
    /// to moved. Only the node the QP was at may redirect its sends (the
    /// tombstone there answers from that address); the moved QP's own
    /// announcement, from its new address, is checked by asking that node
    /// (a probe, which the tombstone answers with the redirect). False
    /// when refused.
    fn on_ud_resume(&mut self, now: Instant, qpn: Qpn, pkt: &Packet, src: IpAddr) -> bool {
        let Some(crate::resume::ResumeMessage::Resume {
            location,
            qpn: moved,
            ..
        }) = crate::resume::ResumeMessage::parse(pkt.payload)
        else {
            return false;
        };
        let Some(qp) = self.qps.get(&qpn) else {
            return false;
        };
        if location != src {
            // From the old node: it knows. Only for a peer we sent to.
            if !qp.ud_peers.contains(&(src, moved)) {
                return false;
            }
            let ttl = self.config.ud_redirect_ttl;
            return self.objs.ud_redirects.learn(now, src, moved, location, ttl);
        }
        // An announcement: ask the old nodes we sent `moved` to (a few).
        let old: Vec<IpAddr> = qp
            .ud_peers
            .iter()
            .filter(|(a, q)| *q == moved && *a != src)
            .map(|(a, _)| *a)
            .take(4)
            .collect();
        for addr in old {
            let probe = crate::resume::ResumeMessage::Probe { qpn, nonce: 0 };
            let mut out = Vec::new();
            let h = crate::resume::message_headers(moved, migros_wire::Psn::new(0), 0);
            if crate::resume::build_message(&mut out, &self.config, addr, h, &probe).is_some() {
                self.control_out.push_back((addr, out));
            }
        }
        true
    }

    /// Writes the next datagram (a whole UDP payload, ICRC included) into
    /// `buf` (cleared first) and says where it goes; `None` when idle.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let src_port = self.config.udp_src_port;
        let out = if let Some((dst, bytes)) = self.control_out.pop_front() {
            buf.clear();
            buf.extend_from_slice(&bytes);
            Some(dst)
        } else {
            self.next_qp_packet(now, mem, buf)
        };
        let dst = out?;
        self.objs.counters.tx_packets += 1;
        self.objs.counters.tx_bytes += buf.len() as u64;
        Some(Transmit { dst, src_port })
    }

    fn next_qp_packet(
        &mut self,
        now: Instant,
        mem: &mut dyn Memory,
        buf: &mut Vec<u8>,
    ) -> Option<IpAddr> {
        while let Some(qpn) = self.ready.pop_front() {
            self.scheduled.remove(&qpn);
            let Some(qp) = self.qps.get_mut(&qpn) else {
                continue;
            };
            let before = depth(qp, &self.objs);
            let mut env = Env {
                mem: &mut *mem,
                objs: &mut self.objs,
                config: &self.config,
            };
            let sent = qp.poll_packet(now, &mut env, buf);
            // UD and UC complete at send time, local operations run here.
            self.freed.note(qp, before, depth(qp, &self.objs));
            self.timers.set(qpn, qp.deadline());
            let Some(dst) = sent else {
                continue;
            };
            if qp.has_output(now) {
                self.schedule(qpn);
            }
            return Some(dst);
        }
        None
    }

    /// The earliest deadline of any timer, if one is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let earliest = self.timers.earliest();
        // The index must agree with the QPs (every test checks it).
        debug_assert_eq!(
            earliest,
            self.qps.values().filter_map(|q| q.deadline()).min(),
            "the timer index lost a deadline"
        );
        earliest
            .into_iter()
            .chain(self.tombstones.next_expiry())
            .min()
    }

    /// Runs every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired = self.tombstones.expire(now);
        self.objs.counters.tombstones_dropped += expired as u64;
        let due = self.timers.due(now);
        let mut nomem = NoMemory;
        for qpn in due {
            let _ = self.with_qp(qpn, &mut nomem, |qp, env| qp.on_timeout(now, env));
        }
    }

    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.objs.events.pop_front()
    }
}
