//! MADs from the network: `handle_mad` (with forwarding for migrated
//! connections) and the handling of REQ, MRA, REJ, REP, RTU, DREQ and DREP.

use std::net::{IpAddr, SocketAddr};

use migros_proto::cm::{CmEvent, CmQpType, ConnInfo, PortSpace};

use crate::cma::{CmaHeader, CMA_HDR_LEN};
use crate::conn::{Conn, State};
use crate::error::MadError;
use crate::mad::{MadHeader, MAD_LEN};
use crate::msg::{
    rej_reason, CmMessage, Drep, Dreq, Mra, MsgResponse, Rej, Rep, Req, Rtu, ServiceType,
};
use crate::time::{ib_time_to_ms, Instant};

use super::{ack_timeout, ms, Agent, Listener, Transmit, MAX_HELD_PER_OWNER, MRA_SERVICE_TIMEOUT};
use crate::tombstone::Fate;

impl Agent {
    /// Takes a MAD that arrived from `src` (the sender's address). Bad
    /// MADs are counted and dropped, never answered.
    pub fn handle_mad(&mut self, now: Instant, src: IpAddr, mad: &[u8]) -> Result<(), MadError> {
        let (hdr, msg) = match CmMessage::parse(mad) {
            Ok(m) => m,
            Err(e) => {
                self.counters.rx_dropped += 1;
                return Err(e);
            }
        };
        self.counters.rx += 1;
        self.dispatch(now, src, mad, hdr, msg);
        Ok(())
    }

    /// Handles a MAD held earlier (it was counted when it arrived).
    pub(crate) fn replay(&mut self, now: Instant, src: IpAddr, mad: &[u8]) {
        if let Ok((hdr, msg)) = CmMessage::parse(mad) {
            self.dispatch(now, src, mad, hdr, msg);
        }
    }

    fn dispatch(&mut self, now: Instant, src: IpAddr, mad: &[u8], hdr: MadHeader, msg: CmMessage) {
        // For a connection that migrated away: forwarded to its new node,
        // or held until the tombstone knows where that is.
        if let Some(id) = self.tombstone_for(&msg) {
            let ends = matches!(
                msg,
                CmMessage::Dreq(_) | CmMessage::Drep(_) | CmMessage::Rej(_)
            );
            match self.tombstones.take(now, id, src, mad, ends) {
                Some(Fate::Forward(dst)) => {
                    let mut mad_copy = [0u8; MAD_LEN];
                    mad_copy.copy_from_slice(mad);
                    self.counters.forwarded += 1;
                    self.out.push_back(Transmit { dst, mad: mad_copy });
                }
                Some(Fate::Held) => self.counters.held += 1,
                _ => {}
            }
            return;
        }
        // For an owner being checkpointed: kept untouched, so that its
        // state stays what the checkpoint took; handled here if the
        // checkpoint rolls back, given to its tombstones if it commits.
        if let Some(owner) = self.held_owner_of(&msg) {
            if let Some(list) = self.held.get_mut(&owner) {
                if list.len() < MAX_HELD_PER_OWNER {
                    let mut mad_copy = [0u8; MAD_LEN];
                    mad_copy.copy_from_slice(mad);
                    list.push((src, mad_copy));
                    self.counters.held += 1;
                }
            }
            return;
        }
        match msg {
            CmMessage::Req(m) => self.on_req(now, src, &hdr, m),
            CmMessage::Mra(m) => self.on_mra(now, m),
            CmMessage::Rej(m) => self.on_rej(now, m),
            CmMessage::Rep(m) => self.on_rep(now, src, &hdr, m),
            CmMessage::Rtu(m) => self.on_rtu(m),
            CmMessage::Dreq(m) => self.on_dreq(src, &hdr, m),
            CmMessage::Drep(m) => self.on_drep(now, m),
            CmMessage::SidrReq(m) => self.on_sidr_req(now, src, &hdr, m),
            CmMessage::SidrRep(m) => self.on_sidr_rep(src, m),
            CmMessage::Other(_) => {}
        }
    }

    /// The tombstone a MAD is for: the connection it names moved away, or
    /// it is a resent REQ of one (named by the peer's CA GUID and comm ID).
    fn tombstone_for(&self, msg: &CmMessage) -> Option<u32> {
        match crate::migrate::target(msg) {
            Some(t) => (!self.conns.contains_key(&t) && self.tombstones.contains(t)).then_some(t),
            None => match msg {
                CmMessage::Req(m) => {
                    let remote = (m.local_ca_guid, m.local_comm_id);
                    if self.remote_ids.contains_key(&remote) {
                        None
                    } else {
                        self.tombstones.by_remote(remote)
                    }
                }
                _ => None,
            },
        }
    }

    /// The checkpointed owner ([`Agent::hold_owner`]) a MAD is for: the
    /// owner of the connection it names, of the one a resent REQ is for,
    /// or of the listener a new REQ or SIDR_REQ would reach.
    fn held_owner_of(&self, msg: &CmMessage) -> Option<u64> {
        if self.held.is_empty() {
            return None;
        }
        let owner_of_conn = |id: &u32| self.conns.get(id).map(|c| c.owner);
        let owner_of_service = |service_id: u64, private: &[u8], kind: CmQpType| {
            let found = self.find_listener(service_id)?;
            let by_header = CmaHeader::parse(private)
                .ok()
                .and_then(|h| Self::match_listener(&found, &h, kind));
            by_header
                .or_else(|| found.first().cloned())
                .map(|(_, l)| l.owner)
        };
        let owner = match msg {
            CmMessage::Req(m) => match self.remote_ids.get(&(m.local_ca_guid, m.local_comm_id)) {
                Some(id) => owner_of_conn(id),
                None => {
                    let kind = match m.service_type {
                        ServiceType::Uc => CmQpType::Uc,
                        _ => CmQpType::Rc,
                    };
                    owner_of_service(m.service_id, &m.private_data, kind)
                }
            },
            CmMessage::SidrReq(m) => owner_of_service(m.service_id, &m.private_data, CmQpType::Ud),
            _ => crate::migrate::target(msg).and_then(|t| owner_of_conn(&t)),
        };
        owner.filter(|o| self.held.contains_key(o))
    }

    /// A REJ to a REQ we take no further (`cm_issue_rej`).
    fn issue_rej(&mut self, dst: IpAddr, tid: u64, req: &Req, reason: u16) {
        let msg = CmMessage::Rej(Rej {
            local_comm_id: 0,
            remote_comm_id: req.local_comm_id,
            message_rejected: MsgResponse::Req,
            ari: Vec::new(),
            reason,
            private_data: Vec::new(),
        });
        self.send(dst, tid, &msg);
    }

    pub(super) fn find_listener(&self, service_id: u64) -> Option<Vec<(u32, Listener)>> {
        let (ps, port) = PortSpace::from_service_id(service_id)?;
        let found: Vec<(u32, Listener)> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.ps == ps && l.port == port)
            .map(|(id, l)| (*id, l.clone()))
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// The listener whose address the RDMA CM header names.
    pub(super) fn match_listener(
        found: &[(u32, Listener)],
        hdr: &CmaHeader,
        kind: CmQpType,
    ) -> Option<(u32, Listener)> {
        found
            .iter()
            .find(|(_, l)| l.addr == Some(hdr.dst) && l.qp_type == kind)
            .or_else(|| {
                found
                    .iter()
                    .find(|(_, l)| l.addr.is_none() && l.qp_type == kind)
            })
            .cloned()
    }

    fn on_req(&mut self, now: Instant, src: IpAddr, hdr: &MadHeader, m: Req) {
        // A duplicate: answered from the connection's state.
        if let Some(&id) = self.remote_ids.get(&(m.local_ca_guid, m.local_comm_id)) {
            self.counters.rx_duplicates += 1;
            let Some(c) = self.conns.get(&id) else {
                return;
            };
            match c.state {
                State::MraReqSent => {
                    let msg = CmMessage::Mra(Mra {
                        local_comm_id: c.local_id,
                        remote_comm_id: c.remote_id,
                        message_mraed: MsgResponse::Req,
                        service_timeout: MRA_SERVICE_TIMEOUT,
                        private_data: Vec::new(),
                    });
                    // To the peer, not to `src`: a resent REQ can come
                    // forwarded by the node the connection migrated from.
                    let dst = c.peer_ip;
                    self.send(dst, hdr.tid, &msg);
                }
                State::Timewait => {
                    let dst = c.peer_ip;
                    self.issue_rej(dst, hdr.tid, &m, rej_reason::STALE_CONN)
                }
                _ => {}
            }
            return;
        }
        // Another REQ from a QP we are connected to: stale.
        if let Some(&id) = self.remote_qpns.get(&(m.local_ca_guid, m.local_qpn)) {
            self.issue_rej(src, hdr.tid, &m, rej_reason::STALE_CONN);
            if self.conns.get(&id).map(|c| c.state) == Some(State::Established) {
                self.send_dreq(now, id);
            }
            return;
        }
        let Some(found) = self.find_listener(m.service_id) else {
            self.issue_rej(src, hdr.tid, &m, rej_reason::INVALID_SERVICE_ID);
            return;
        };
        let kind = match m.service_type {
            ServiceType::Rc => CmQpType::Rc,
            ServiceType::Uc => CmQpType::Uc,
            ServiceType::Other { .. } => {
                self.issue_rej(src, hdr.tid, &m, rej_reason::CONSUMER_DEFINED);
                return;
            }
        };
        let matched = CmaHeader::parse(&m.private_data)
            .ok()
            .and_then(|h| Self::match_listener(&found, &h, kind).map(|x| (x, h)));
        let Some(((listen, l), cma)) = matched else {
            // The RDMA CM refuses it after the IB CM took it.
            self.issue_rej(src, hdr.tid, &m, rej_reason::CONSUMER_DEFINED);
            return;
        };
        if m.path_mtu == 0 || m.path_mtu > self.cfg.max_mtu {
            self.issue_rej(src, hdr.tid, &m, rej_reason::INVALID_MTU);
            return;
        }
        let local_id = self.new_local_id();
        let psn = self.psn();
        let local = SocketAddr::new(l.addr.unwrap_or(cma.dst), l.port);
        let av_timeout = m.primary.local_ack_timeout;
        let info = ConnInfo {
            local,
            peer: cma.src,
            remote_qpn: m.local_qpn,
            rq_psn: psn,
            sq_psn: m.starting_psn,
            path_mtu: m.path_mtu,
            // The peer's initiator depth is what we answer, and back.
            responder_resources: m.initiator_depth,
            initiator_depth: m.responder_resources,
            flow_control: m.flow_control,
            retry_count: m.retry_count,
            rnr_retry_count: m.rnr_retry_count,
            srq: m.srq,
            remote_gid: m.primary.local_gid,
            hop_limit: m.primary.hop_limit,
            traffic_class: m.primary.traffic_class,
            flow_label: m.primary.flow_label,
            sl: m.primary.sl,
            ack_timeout: av_timeout,
            private_data: m.private_data[CMA_HDR_LEN..].to_vec(),
        };
        let conn = Conn {
            owner: l.owner,
            local_id,
            remote_id: m.local_comm_id,
            state: State::ReqRcvd,
            qp_type: kind,
            peer_ip: src,
            tid: hdr.tid,
            service_id: m.service_id,
            remote_ca_guid: m.local_ca_guid,
            local_qpn: 0,
            remote_qpn: m.local_qpn,
            local,
            peer: cma.src,
            info: info.clone(),
            timeout_ms: ib_time_to_ms(m.local_cm_response_timeout),
            max_cm_retries: m.max_cm_retries,
            av_timeout,
            retransmit: None,
            timewait_until: None,
            last_private: Vec::new(),
            disconnect_reported: false,
            indexed: true,
        };
        self.remote_ids
            .insert((m.local_ca_guid, m.local_comm_id), local_id);
        self.remote_qpns
            .insert((m.local_ca_guid, m.local_qpn), local_id);
        self.conns.insert(local_id, conn);
        self.events.push_back((
            l.owner,
            CmEvent::ConnectRequest {
                listen,
                conn: local_id,
                info,
            },
        ));
        // The RDMA CM's delayed MRA: sent only if the REQ comes again.
        if let Some(c) = self.conns.get_mut(&local_id) {
            c.state = State::MraReqSent;
        }
    }

    fn on_mra(&mut self, now: Instant, m: Mra) {
        let Some(c) = self.conns.get_mut(&m.remote_comm_id) else {
            return;
        };
        if m.message_mraed != MsgResponse::Req && c.remote_id != m.local_comm_id {
            return;
        }
        let next = match (c.state, m.message_mraed) {
            (State::ReqSent, MsgResponse::Req) => State::MraReqRcvd,
            (State::RepSent, MsgResponse::Rep) => State::MraRepRcvd,
            (State::MraReqRcvd | State::MraRepRcvd, _) => {
                self.counters.rx_duplicates += 1;
                return;
            }
            _ => return,
        };
        let wait = ib_time_to_ms(m.service_timeout) + ib_time_to_ms(c.av_timeout);
        if let Some(r) = c.retransmit.as_mut() {
            r.timeout = ms(wait);
            r.deadline = now + r.timeout;
        }
        c.state = next;
    }

    fn on_rej(&mut self, now: Instant, m: Rej) {
        let Some(c) = self.conns.get(&m.remote_comm_id) else {
            return;
        };
        // A REJ of our REQ does not know our peer's id yet; others must match.
        if m.message_rejected != MsgResponse::Req
            && m.reason != rej_reason::TIMEOUT
            && c.remote_id != m.local_comm_id
        {
            return;
        }
        let id = c.local_id;
        match c.state {
            State::ReqSent
            | State::MraReqRcvd
            | State::RepSent
            | State::MraRepRcvd
            | State::ReqRcvd
            | State::MraReqSent => {
                if m.reason == rej_reason::STALE_CONN {
                    self.enter_timewait(now, id);
                } else {
                    self.reset_to_idle(id);
                }
            }
            State::DreqSent | State::RepRcvd | State::MraRepSent | State::Established => {
                self.enter_timewait(now, id);
            }
            _ => return,
        }
        self.emit_event(
            id,
            CmEvent::Rejected {
                conn: id,
                reason: m.reason,
                private_data: m.private_data,
            },
        );
    }

    fn on_rep(&mut self, now: Instant, src: IpAddr, hdr: &MadHeader, m: Rep) {
        let Some(c) = self.conns.get(&m.remote_comm_id) else {
            return;
        };
        let id = c.local_id;
        match c.state {
            State::ReqSent | State::MraReqRcvd => {}
            // A duplicate: answer from the state (cm_dup_rep_handler).
            State::Established if c.remote_id == m.local_comm_id => {
                self.counters.rx_duplicates += 1;
                let msg = CmMessage::Rtu(Rtu {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    private_data: c.last_private.clone(),
                });
                // To the peer, not to `src`: a MAD can come forwarded by
                // the node the connection migrated from.
                let dst = c.peer_ip;
                self.send(dst, hdr.tid, &msg);
                return;
            }
            State::MraRepSent if c.remote_id == m.local_comm_id => {
                self.counters.rx_duplicates += 1;
                let msg = CmMessage::Mra(Mra {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    message_mraed: MsgResponse::Rep,
                    service_timeout: MRA_SERVICE_TIMEOUT,
                    private_data: Vec::new(),
                });
                let dst = c.peer_ip;
                self.send(dst, hdr.tid, &msg);
                return;
            }
            _ => {
                self.counters.rx_duplicates += 1;
                return;
            }
        }
        if self
            .remote_ids
            .contains_key(&(m.local_ca_guid, m.local_comm_id))
        {
            return;
        }
        if let Some(&other) = self.remote_qpns.get(&(m.local_ca_guid, m.local_qpn)) {
            // Stale: the peer QP is someone else's connection.
            let msg = CmMessage::Rej(Rej {
                local_comm_id: m.remote_comm_id,
                remote_comm_id: m.local_comm_id,
                message_rejected: MsgResponse::Rep,
                ari: Vec::new(),
                reason: rej_reason::STALE_CONN,
                private_data: Vec::new(),
            });
            self.send(src, hdr.tid, &msg);
            if self.conns.get(&other).map(|c| c.state) == Some(State::Established) {
                self.send_dreq(now, other);
            }
            return;
        }
        let ca_ack_delay = m.target_ack_delay;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.remote_id = m.local_comm_id;
        c.remote_ca_guid = m.local_ca_guid;
        c.remote_qpn = m.local_qpn;
        c.indexed = true;
        c.retransmit = None;
        c.av_timeout = ack_timeout(ca_ack_delay, c.av_timeout.saturating_sub(1));
        c.info.remote_qpn = m.local_qpn;
        c.info.sq_psn = m.starting_psn;
        c.info.responder_resources = m.initiator_depth;
        c.info.initiator_depth = m.responder_resources;
        c.info.flow_control = m.flow_control;
        c.info.rnr_retry_count = m.rnr_retry_count;
        c.info.srq = m.srq;
        c.info.ack_timeout = c.av_timeout;
        c.info.private_data = m.private_data;
        // REP_RCVD, then the RDMA CM's delayed MRA.
        c.state = State::MraRepSent;
        let info = c.info.clone();
        self.remote_ids
            .insert((m.local_ca_guid, m.local_comm_id), id);
        self.remote_qpns.insert((m.local_ca_guid, m.local_qpn), id);
        self.emit_event(id, CmEvent::ConnectResponse { conn: id, info });
    }

    fn on_rtu(&mut self, m: Rtu) {
        let Some(c) = self.conns.get_mut(&m.remote_comm_id) else {
            return;
        };
        if c.remote_id != m.local_comm_id {
            return;
        }
        if !matches!(c.state, State::RepSent | State::MraRepRcvd) {
            self.counters.rx_duplicates += 1;
            return;
        }
        c.state = State::Established;
        c.retransmit = None;
        let id = c.local_id;
        self.emit_event(id, CmEvent::Established { conn: id });
    }

    fn on_dreq(&mut self, src: IpAddr, hdr: &MadHeader, m: Dreq) {
        let known = self
            .conns
            .get(&m.remote_comm_id)
            .is_some_and(|c| c.remote_id == m.local_comm_id);
        if !known {
            // cm_issue_drep: a DREQ for nothing we know still gets a DREP.
            self.counters.rx_duplicates += 1;
            let msg = CmMessage::Drep(Drep {
                local_comm_id: m.remote_comm_id,
                remote_comm_id: m.local_comm_id,
                private_data: Vec::new(),
            });
            self.send(src, hdr.tid, &msg);
            return;
        }
        let id = m.remote_comm_id;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.local_qpn != m.remote_qpn {
            return;
        }
        match c.state {
            State::RepSent | State::DreqSent | State::Established | State::MraRepRcvd => {}
            // Time-wait, or past it (the peer's DREQ resent after our DREP
            // was lost outlives a short time-wait): the DREP again. The
            // kernel ignores an idle id's DREQ and its peer times out;
            // answering it as for an unknown connection ends both cleanly.
            State::Timewait | State::Idle if c.disconnect_reported => {
                self.counters.rx_duplicates += 1;
                let msg = CmMessage::Drep(Drep {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    private_data: c.last_private.clone(),
                });
                let dst = c.peer_ip;
                self.send(dst, hdr.tid, &msg);
                return;
            }
            State::DreqRcvd => {
                self.counters.rx_duplicates += 1;
                return;
            }
            _ => return,
        }
        c.retransmit = None;
        c.state = State::DreqRcvd;
        c.tid = hdr.tid;
        self.report_disconnect(id, 0);
    }

    fn on_drep(&mut self, now: Instant, m: Drep) {
        let Some(c) = self.conns.get(&m.remote_comm_id) else {
            return;
        };
        if c.remote_id != m.local_comm_id || !matches!(c.state, State::DreqSent | State::DreqRcvd) {
            return;
        }
        let id = c.local_id;
        self.enter_timewait(now, id);
        self.report_disconnect(id, 0);
    }
}
