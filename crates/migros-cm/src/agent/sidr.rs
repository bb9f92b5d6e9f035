//! UD service ID resolution: SIDR_REQ and SIDR_REP, and the replies kept
//! so that a resent SIDR_REQ gets the same answer.

use std::net::{IpAddr, SocketAddr};

use migros_proto::cm::{CmEvent, CmQpType, ConnInfo};

use crate::cma::{gid_of, CmaHeader, CMA_HDR_LEN};
use crate::conn::{Conn, State};
use crate::mad::MadHeader;
use crate::msg::{sidr_status, CmMessage, SidrRep, SidrReq};
use crate::time::{ib_time_to_ms, Instant};

use super::{ms, Agent, Transmit, CM_RESPONSE_TIMEOUT, MAX_CM_RETRIES};

impl Agent {
    /// Sends a SIDR_REP and keeps it for the resends of its SIDR_REQ.
    pub(super) fn send_sidr_rep(
        &mut self,
        now: Instant,
        key: (u32, IpAddr),
        dst: IpAddr,
        tid: u64,
        msg: &CmMessage,
    ) {
        if let Ok(mad) = msg.emit(tid) {
            let keep = ms(u64::from(MAX_CM_RETRIES + 1) * ib_time_to_ms(CM_RESPONSE_TIMEOUT));
            self.sidr_answered.insert(key, (now + keep, mad));
            self.counters.tx += 1;
            self.out.push_back(Transmit { dst, mad });
        }
    }

    /// Answers a SIDR_REQ with `status` and forgets it.
    pub(super) fn sidr_reject(&mut self, now: Instant, conn: u32, status: u8, private_data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let msg = CmMessage::SidrRep(SidrRep {
            request_id: c.remote_id,
            status,
            qpn: 0,
            service_id: c.service_id,
            qkey: 0,
            additional_info: Vec::new(),
            private_data: private_data.to_vec(),
        });
        c.state = State::Idle;
        let (dst, tid, key) = (c.peer_ip, c.tid, (c.remote_id, c.peer_ip));
        self.sidr_remote.remove(&key);
        self.send_sidr_rep(now, key, dst, tid, &msg);
    }

    pub(super) fn on_sidr_req(&mut self, now: Instant, src: IpAddr, hdr: &MadHeader, m: SidrReq) {
        if self.sidr_remote.contains_key(&(m.request_id, src)) {
            self.counters.rx_duplicates += 1;
            return;
        }
        if let Some((until, mad)) = self.sidr_answered.get(&(m.request_id, src)) {
            if *until > now {
                self.counters.rx_duplicates += 1;
                let t = Transmit {
                    dst: src,
                    mad: *mad,
                };
                self.counters.tx += 1;
                self.out.push_back(t);
                return;
            }
        }
        let reply = |status: u8| {
            CmMessage::SidrRep(SidrRep {
                request_id: m.request_id,
                status,
                qpn: 0,
                service_id: m.service_id,
                qkey: 0,
                additional_info: Vec::new(),
                private_data: Vec::new(),
            })
        };
        let Some(found) = self.find_listener(m.service_id) else {
            let msg = reply(sidr_status::UNSUPPORTED);
            self.send(src, hdr.tid, &msg);
            return;
        };
        let Some(((listen, l), cma)) = CmaHeader::parse(&m.private_data)
            .ok()
            .and_then(|h| Self::match_listener(&found, &h, CmQpType::Ud).map(|x| (x, h)))
        else {
            let msg = reply(sidr_status::REJECT);
            self.send(src, hdr.tid, &msg);
            return;
        };
        let local_id = self.new_local_id();
        let local = SocketAddr::new(l.addr.unwrap_or(cma.dst), l.port);
        let info = ConnInfo {
            local,
            peer: cma.src,
            remote_qpn: 0,
            rq_psn: 0,
            sq_psn: 0,
            path_mtu: 0,
            responder_resources: 0,
            initiator_depth: 0,
            flow_control: false,
            retry_count: 0,
            rnr_retry_count: 0,
            srq: false,
            remote_gid: gid_of(src),
            hop_limit: 0,
            traffic_class: 0,
            flow_label: 0,
            sl: 0,
            ack_timeout: 0,
            private_data: Vec::new(),
        };
        self.conns.insert(
            local_id,
            Conn {
                owner: l.owner,
                local_id,
                remote_id: m.request_id,
                state: State::SidrReqRcvd,
                qp_type: CmQpType::Ud,
                peer_ip: src,
                tid: hdr.tid,
                service_id: m.service_id,
                remote_ca_guid: 0,
                local_qpn: 0,
                remote_qpn: 0,
                local,
                peer: cma.src,
                info,
                timeout_ms: 0,
                max_cm_retries: 0,
                av_timeout: 0,
                retransmit: None,
                timewait_until: None,
                last_private: Vec::new(),
                disconnect_reported: false,
                indexed: false,
            },
        );
        self.sidr_remote.insert((m.request_id, src), local_id);
        self.events.push_back((
            l.owner,
            CmEvent::SidrRequest {
                listen,
                conn: local_id,
                local,
                peer: cma.src,
                private_data: m.private_data[CMA_HDR_LEN..].to_vec(),
            },
        ));
    }

    pub(super) fn on_sidr_rep(&mut self, src: IpAddr, m: SidrRep) {
        let Some(c) = self.conns.get_mut(&m.request_id) else {
            return;
        };
        if c.state != State::SidrReqSent {
            self.counters.rx_duplicates += 1;
            return;
        }
        c.state = State::Idle;
        c.retransmit = None;
        let id = c.local_id;
        let ev = if m.status == sidr_status::SUCCESS {
            CmEvent::SidrResolved {
                conn: id,
                qpn: m.qpn,
                qkey: m.qkey,
                peer_gid: gid_of(src),
                hop_limit: c.info.hop_limit,
                traffic_class: c.info.traffic_class,
                private_data: m.private_data,
            }
        } else {
            CmEvent::Unreachable {
                conn: id,
                status: i32::from(m.status),
            }
        };
        self.emit_event(id, ev);
    }
}
