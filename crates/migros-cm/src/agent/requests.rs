//! What the agent's clients ask of their connections: `connect`,
//! `establish`, `accept`, `reject`, `disconnect`, `destroy`, and the REJ,
//! DREQ and DREP these send.

use std::net::SocketAddr;

use migros_proto::cm::{AcceptParams, CmEvent, CmQpType, ConnInfo, ConnectParams};

use crate::cma::{gid_of, user_private_data_len as user_pd, CmaHeader};
use crate::conn::{Conn, State};
use crate::error::CmError;
use crate::msg::{
    private_data_len as pd_len, rej_reason, sidr_status, CmMessage, Drep, Dreq, MsgResponse,
    PathInfo, Rej, Rep, Req, Rtu, ServiceType, SidrRep, SidrReq,
};
use crate::time::{ib_time_to_ms, Instant};

use super::{ack_timeout, fit, Agent, Connecting, CM_RESPONSE_TIMEOUT, MAX_CM_RETRIES};

impl Agent {
    /// Sends a REQ (RC, UC) or SIDR_REQ (UD) for `p`.
    pub fn connect(
        &mut self,
        now: Instant,
        owner: u64,
        p: &ConnectParams,
    ) -> Result<Connecting, CmError> {
        let b = self.ports.get(p.bind).ok_or(CmError::NoId)?;
        if b.owner != owner {
            return Err(CmError::NoId);
        }
        let local = SocketAddr::new(p.src, b.port);
        let service_id = b.ps.service_id(p.dst.port());
        let hdr = CmaHeader {
            src: local,
            dst: p.dst.ip(),
        }
        .emit();
        let local_id = self.new_local_id();
        let tid = self.form_tid(local_id);
        let psn = self.psn();
        let plt = p.packet_life_time;
        let av_timeout = ack_timeout(self.cfg.ca_ack_delay, plt);
        let info = ConnInfo {
            local,
            peer: p.dst,
            remote_qpn: 0,
            rq_psn: psn,
            sq_psn: 0,
            path_mtu: p.path_mtu,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            flow_control: p.flow_control,
            retry_count: p.retry_count.min(7),
            rnr_retry_count: p.rnr_retry_count.min(7),
            srq: p.srq,
            remote_gid: gid_of(p.dst.ip()),
            hop_limit: p.hop_limit,
            traffic_class: p.traffic_class,
            flow_label: 0,
            sl: 0,
            ack_timeout: av_timeout,
            private_data: Vec::new(),
        };
        let (msg, state, timeout_ms) = match p.qp_type {
            CmQpType::Ud => {
                fit(&p.private_data, user_pd::SIDR_REQ)?;
                let mut pd = hdr.to_vec();
                pd.extend_from_slice(&p.private_data);
                let m = CmMessage::SidrReq(SidrReq {
                    request_id: local_id,
                    pkey: crate::gsi::DEFAULT_PKEY,
                    service_id,
                    private_data: pd,
                });
                (m, State::SidrReqSent, ib_time_to_ms(CM_RESPONSE_TIMEOUT))
            }
            CmQpType::Rc | CmQpType::Uc => {
                fit(&p.private_data, user_pd::REQ)?;
                if !(1..=5).contains(&p.path_mtu) {
                    return Err(CmError::Invalid("path mtu"));
                }
                let mut pd = hdr.to_vec();
                pd.extend_from_slice(&p.private_data);
                let subnet_local = p.hop_limit <= 1;
                let lid = if subnet_local { 0 } else { 0xffff };
                let m = CmMessage::Req(Req {
                    local_comm_id: local_id,
                    service_id,
                    local_ca_guid: self.cfg.node_guid,
                    local_qkey: 0,
                    local_qpn: p.qpn & 0x00ff_ffff,
                    responder_resources: p.responder_resources,
                    local_eecn: 0,
                    initiator_depth: p.initiator_depth,
                    remote_eecn: 0,
                    remote_cm_response_timeout: CM_RESPONSE_TIMEOUT,
                    service_type: if p.qp_type == CmQpType::Uc {
                        ServiceType::Uc
                    } else {
                        ServiceType::Rc
                    },
                    flow_control: p.flow_control,
                    starting_psn: psn,
                    local_cm_response_timeout: CM_RESPONSE_TIMEOUT,
                    retry_count: p.retry_count.min(7),
                    pkey: crate::gsi::DEFAULT_PKEY,
                    path_mtu: p.path_mtu,
                    rdc_exists: false,
                    rnr_retry_count: p.rnr_retry_count.min(7),
                    max_cm_retries: MAX_CM_RETRIES,
                    srq: p.srq,
                    primary: PathInfo {
                        local_lid: lid,
                        remote_lid: lid,
                        local_gid: gid_of(p.src),
                        remote_gid: gid_of(p.dst.ip()),
                        flow_label: 0,
                        packet_rate: 0,
                        traffic_class: p.traffic_class,
                        hop_limit: p.hop_limit,
                        sl: 0,
                        subnet_local,
                        local_ack_timeout: av_timeout,
                    },
                    alternate: PathInfo::default(),
                    sap_supported: false,
                    private_data: pd,
                });
                let t = 2 * ib_time_to_ms(plt) + ib_time_to_ms(CM_RESPONSE_TIMEOUT);
                (m, State::ReqSent, t)
            }
        };
        let mad = msg
            .emit(tid)
            .map_err(|_| CmError::Invalid("private data"))?;
        let conn = Conn {
            owner,
            local_id,
            remote_id: 0,
            state,
            qp_type: p.qp_type,
            peer_ip: p.dst.ip(),
            tid,
            service_id,
            remote_ca_guid: 0,
            local_qpn: p.qpn,
            remote_qpn: 0,
            local,
            peer: p.dst,
            info,
            timeout_ms,
            max_cm_retries: MAX_CM_RETRIES,
            av_timeout,
            retransmit: None,
            timewait_until: None,
            last_private: Vec::new(),
            disconnect_reported: false,
            indexed: false,
        };
        self.conns.insert(local_id, conn);
        self.send_expecting(now, local_id, mad);
        Ok(Connecting {
            conn: local_id,
            psn,
        })
    }

    /// Sends the RTU once the QP is ready (after `ConnectResponse`).
    pub fn establish(&mut self, owner: u64, conn: u32) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        if !matches!(c.state, State::RepRcvd | State::MraRepSent) {
            return Err(CmError::Invalid("no REP to answer"));
        }
        c.state = State::Established;
        c.last_private = Vec::new();
        let msg = CmMessage::Rtu(Rtu {
            local_comm_id: c.local_id,
            remote_comm_id: c.remote_id,
            private_data: Vec::new(),
        });
        let (dst, tid) = (c.peer_ip, c.tid);
        self.send(dst, tid, &msg);
        Ok(())
    }

    /// Answers a connection request with a REP (RC, UC) or SIDR_REP (UD).
    pub fn accept(
        &mut self,
        now: Instant,
        owner: u64,
        conn: u32,
        p: &AcceptParams,
    ) -> Result<(), CmError> {
        let ack_delay = self.cfg.ca_ack_delay;
        let guid = self.cfg.node_guid;
        let c = self.owned(owner, conn)?;
        match c.state {
            State::ReqRcvd | State::MraReqSent => {
                fit(&p.private_data, pd_len::REP)?;
                c.local_qpn = p.qpn & 0x00ff_ffff;
                c.info.responder_resources = p.responder_resources;
                c.info.initiator_depth = p.initiator_depth;
                c.state = State::RepSent;
                let msg = CmMessage::Rep(Rep {
                    local_comm_id: c.local_id,
                    remote_comm_id: c.remote_id,
                    local_qkey: 0,
                    local_qpn: c.local_qpn,
                    local_eecn: 0,
                    starting_psn: c.info.rq_psn,
                    responder_resources: p.responder_resources,
                    initiator_depth: p.initiator_depth,
                    target_ack_delay: ack_delay,
                    failover_accepted: 0,
                    flow_control: p.flow_control,
                    rnr_retry_count: p.rnr_retry_count.min(7),
                    srq: p.srq,
                    local_ca_guid: guid,
                    private_data: p.private_data.clone(),
                });
                let mad = msg
                    .emit(c.tid)
                    .map_err(|_| CmError::Invalid("private data"))?;
                self.send_expecting(now, conn, mad);
                Ok(())
            }
            State::SidrReqRcvd => {
                fit(&p.private_data, pd_len::SIDR_REP)?;
                let msg = CmMessage::SidrRep(SidrRep {
                    request_id: c.remote_id,
                    status: sidr_status::SUCCESS,
                    qpn: p.qpn & 0x00ff_ffff,
                    service_id: c.service_id,
                    qkey: p.qkey,
                    additional_info: Vec::new(),
                    private_data: p.private_data.clone(),
                });
                c.state = State::Idle;
                let (dst, tid, key) = (c.peer_ip, c.tid, (c.remote_id, c.peer_ip));
                self.sidr_remote.remove(&key);
                self.send_sidr_rep(now, key, dst, tid, &msg);
                Ok(())
            }
            _ => Err(CmError::Invalid("no connection request to accept")),
        }
    }

    /// Rejects a connection: a REJ with `reason` (0: "consumer defined",
    /// as `rdma_reject`), or a SIDR_REP "reject".
    pub fn reject(
        &mut self,
        now: Instant,
        owner: u64,
        conn: u32,
        reason: u16,
        private_data: &[u8],
    ) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        if c.state == State::SidrReqRcvd {
            fit(private_data, pd_len::SIDR_REP)?;
            self.sidr_reject(now, conn, sidr_status::REJECT, private_data);
            return Ok(());
        }
        fit(private_data, pd_len::REJ)?;
        let reason = if reason == 0 {
            rej_reason::CONSUMER_DEFINED
        } else {
            reason
        };
        self.send_rej(now, conn, reason, &[], private_data)
    }

    /// `ib_send_cm_rej`: REJ in the states that allow it; idle or
    /// time-wait after.
    fn send_rej(
        &mut self,
        now: Instant,
        conn: u32,
        reason: u16,
        ari: &[u8],
        private_data: &[u8],
    ) -> Result<(), CmError> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Err(CmError::NoId);
        };
        let (local_id, rejected) = match c.state {
            State::ReqRcvd => (0, MsgResponse::Req),
            State::MraReqSent => (c.local_id, MsgResponse::Req),
            State::RepRcvd | State::MraRepSent => (c.local_id, MsgResponse::Rep),
            State::ReqSent | State::MraReqRcvd | State::RepSent | State::MraRepRcvd => {
                (c.local_id, MsgResponse::Other)
            }
            _ => return Err(CmError::Invalid("nothing to reject")),
        };
        let msg = CmMessage::Rej(Rej {
            local_comm_id: local_id,
            remote_comm_id: c.remote_id,
            message_rejected: rejected,
            ari: ari.to_vec(),
            reason,
            private_data: private_data.to_vec(),
        });
        let timewait = matches!(c.state, State::RepSent | State::MraRepRcvd);
        c.retransmit = None;
        let (dst, tid) = (c.peer_ip, c.tid);
        if timewait {
            self.enter_timewait(now, conn);
        } else {
            self.reset_to_idle(conn);
        }
        self.send(dst, tid, &msg);
        Ok(())
    }

    /// The passive QP saw traffic before the RTU (`IBV_EVENT_COMM_EST`).
    pub fn notify_established(&mut self, owner: u64, conn: u32) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        match c.state {
            State::RepSent | State::MraRepRcvd => {
                c.state = State::Established;
                c.retransmit = None;
                let o = c.owner;
                self.events.push_back((o, CmEvent::Established { conn }));
                Ok(())
            }
            State::Established => Err(CmError::IsConnected),
            _ => Err(CmError::Invalid("not waiting for an RTU")),
        }
    }

    /// Sends a DREQ (connected) or the DREP (a DREQ arrived). Nothing to
    /// do in other states (as `rdma_disconnect`, which then succeeds).
    pub fn disconnect(&mut self, now: Instant, owner: u64, conn: u32) -> Result<(), CmError> {
        let c = self.owned(owner, conn)?;
        match c.state {
            State::Established => {
                self.send_dreq(now, conn);
            }
            State::DreqRcvd => {
                self.send_drep(now, conn);
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn send_dreq(&mut self, now: Instant, conn: u32) {
        let tid = self.form_tid(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.tid = tid;
        c.state = State::DreqSent;
        let msg = CmMessage::Dreq(Dreq {
            local_comm_id: c.local_id,
            remote_comm_id: c.remote_id,
            remote_qpn: c.remote_qpn,
            private_data: Vec::new(),
        });
        if let Ok(mad) = msg.emit(tid) {
            self.send_expecting(now, conn, mad);
        }
    }

    fn send_drep(&mut self, now: Instant, conn: u32) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_private = Vec::new();
        let msg = CmMessage::Drep(Drep {
            local_comm_id: c.local_id,
            remote_comm_id: c.remote_id,
            private_data: Vec::new(),
        });
        let (dst, tid) = (c.peer_ip, c.tid);
        self.enter_timewait(now, conn);
        self.send(dst, tid, &msg);
    }

    /// Forgets a connection, telling the peer as the kernel does.
    pub fn destroy(&mut self, now: Instant, owner: u64, conn: u32) -> Result<(), CmError> {
        self.owned(owner, conn)?;
        self.destroy_conn(now, conn);
        Ok(())
    }

    fn destroy_conn(&mut self, now: Instant, conn: u32) {
        let Some(state) = self.conns.get(&conn).map(|c| c.state) else {
            return;
        };
        match state {
            State::SidrReqRcvd => self.sidr_reject(now, conn, sidr_status::REJECT, &[]),
            State::ReqSent | State::MraReqRcvd => {
                let guid = self.cfg.node_guid.to_be_bytes();
                let _ = self.send_rej(now, conn, rej_reason::TIMEOUT, &guid, &[]);
            }
            State::ReqRcvd
            | State::MraReqSent
            | State::RepSent
            | State::MraRepRcvd
            | State::RepRcvd
            | State::MraRepSent => {
                let _ = self.send_rej(now, conn, rej_reason::CONSUMER_DEFINED, &[], &[]);
            }
            State::Established => self.send_dreq(now, conn),
            State::DreqRcvd => self.send_drep(now, conn),
            State::DreqSent | State::Timewait | State::Idle | State::SidrReqSent => {}
        }
        self.unindex(conn);
        self.conns.remove(&conn);
    }

    /// Forgets everything of `owner` (its process is gone).
    pub fn destroy_owner(&mut self, now: Instant, owner: u64) {
        let held = self.held.remove(&owner).unwrap_or_default();
        let conns: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for c in conns {
            self.destroy_conn(now, c);
        }
        self.listeners.retain(|_, l| l.owner != owner);
        self.ports.unbind_owner(owner);
        self.events.retain(|(o, _)| *o != owner);
        // What came for it while it was held: handled as for nobody.
        for (src, mad) in held {
            self.replay(now, src, &mad);
        }
    }
}
