//! Client requests mapped onto the device, and the doorbells' work queues.

use migros_proto::msg::{Event, Request, Response, PROTOCOL_VERSION};
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{
    Access, AttrMask, MrSpec, QpAttr, QpInit, QpState, RecvWr, VerbsError, WcOpcode, WcStatus,
    WorkCompletion,
};

use crate::daemon::{limits, Channel, Daemon, MrEntry, Wq};
use crate::errno::ReqError;
use crate::image::Image;
use crate::rings::{CqRing, QpRings, SrqRing, WqRing, WQ_BATCH};
use crate::session::{ConnKind, Hold, Session};

type Res = Result<Response, ReqError>;

/// What to do after a request.
enum Outcome {
    Reply(Response),
    Silent,
    /// Reply, then disconnect the client.
    Fatal(Response),
    /// Reply, then write these bytes verbatim (a restored connection's replay).
    Replay(Response, Vec<u8>),
}

impl Daemon {
    /// Handles one request from connection `token`.
    pub(crate) fn on_request(&mut self, token: usize, req: Request) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        let outcome = match conn.kind {
            ConnKind::New => self.on_first(token, req),
            ConnKind::Session(sid) => self.on_session(sid, req),
            ConnKind::Channel { .. } => Outcome::Fatal(error(
                libc::EPROTO,
                "a completion channel connection takes no requests",
            )),
            ConnKind::Admin => return,
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match outcome {
            Outcome::Reply(r) => {
                let _ = conn.send(&r);
            }
            Outcome::Silent => {}
            Outcome::Replay(r, bytes) => {
                let _ = conn.send(&r);
                conn.send_raw(&bytes);
            }
            Outcome::Fatal(r) => {
                let _ = conn.send(&r);
                conn.closing = true;
            }
        }
    }

    fn on_first(&mut self, token: usize, req: Request) -> Outcome {
        match req {
            Request::Hello {
                version,
                path,
                inode,
            } => {
                if version != PROTOCOL_VERSION {
                    return Outcome::Fatal(error(
                        libc::EPROTONOSUPPORT,
                        format!(
                            "protocol version {version} (this daemon speaks {PROTOCOL_VERSION})"
                        ),
                    ));
                }
                let Some(conn) = self.conns.get(&token) else {
                    return Outcome::Silent;
                };
                let pid = conn.pid;
                if pid <= 0 {
                    return Outcome::Fatal(error(libc::EPERM, "the peer has no process id"));
                }
                let sessions = &self.sessions;
                let owners = &self.owners;
                let (Some(sid), Some(owner)) = (
                    self.ids.u64(|v| sessions.contains_key(&v)),
                    self.ids.u64(|v| owners.contains_key(&v)),
                ) else {
                    return Outcome::Fatal(error(libc::ENOMEM, "no free session id"));
                };
                self.sessions.insert(
                    sid,
                    Session {
                        id: sid,
                        conn: token,
                        pid,
                        owner,
                        path,
                        inode,
                        tombstones: Vec::new(),
                        checkpointed: false,
                        hold: Hold::Running,
                        seen_running: false,
                    },
                );
                self.owners.insert(owner, sid);
                self.mem.bind(owner, pid);
                if let Some(c) = self.conns.get_mut(&token) {
                    c.kind = ConnKind::Session(sid);
                }
                tracing::info!(session = sid, pid, owner, "session started");
                Outcome::Reply(Response::Welcome {
                    session: sid,
                    device: self.info.clone(),
                })
            }
            Request::AttachChannel {
                version,
                session,
                channel,
                inode,
            } => {
                if version != PROTOCOL_VERSION {
                    return Outcome::Fatal(error(
                        libc::EPROTONOSUPPORT,
                        "protocol version mismatch",
                    ));
                }
                let pid = self.conns.get(&token).map_or(0, |c| c.pid);
                let ok = self.sessions.get(&session).is_some_and(|s| s.pid == pid)
                    && self
                        .channels
                        .get(&channel)
                        .is_some_and(|c| c.session == session);
                if !ok {
                    return Outcome::Fatal(error(
                        libc::ENOENT,
                        format!("no channel {channel} in session {session} of this process"),
                    ));
                }
                if let Some(old) = self.channels.get(&channel).and_then(|c| c.conn) {
                    if let Some(c) = self.conns.get_mut(&old) {
                        c.closing = true;
                    }
                }
                if let Some(c) = self.channels.get_mut(&channel) {
                    c.conn = Some(token);
                    c.inode = inode;
                }
                let held = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.hold.holds_output());
                if let Some(c) = self.conns.get_mut(&token) {
                    c.kind = ConnKind::Channel { session, channel };
                    c.held = held;
                }
                Outcome::Silent
            }
            Request::RestoreSession {
                version,
                session,
                path,
                inode,
                image,
                replay,
            } => match self.restore_session(token, version, session, path, inode, &image) {
                Ok(r) => Outcome::Replay(r, replay),
                Err(e) => Outcome::Fatal(error(e.errno, e.message)),
            },
            Request::RestoreChannel {
                version,
                session,
                channel,
                inode,
                replay,
            } => match self.restore_channel(token, version, session, channel, inode) {
                Ok(r) => Outcome::Replay(r, replay),
                Err(e) => Outcome::Fatal(error(e.errno, e.message)),
            },
            _ => Outcome::Fatal(error(libc::EPROTO, "the first request must be hello")),
        }
    }

    fn on_session(&mut self, sid: u64, req: Request) -> Outcome {
        let doorbell = matches!(
            req,
            Request::SqDoorbell { .. } | Request::RqDoorbell { .. } | Request::SrqDoorbell { .. }
        );
        if doorbell {
            return self.on_doorbell(sid, req);
        }
        // A request may change what the transport accepts (a QP moved to RTS).
        let blocked = std::mem::take(&mut self.blocked_wqs);
        self.pending_wqs.extend(blocked);
        // Requests see the effect of every earlier doorbell.
        self.pump_wqs(Some(sid));
        match self.dispatch(sid, req) {
            Ok(r) => Outcome::Reply(r),
            Err(e) => Outcome::Reply(error(e.errno, e.message)),
        }
    }

    fn on_doorbell(&mut self, sid: u64, req: Request) -> Outcome {
        let checkpointed = self.sessions.get(&sid).is_some_and(|s| s.checkpointed);
        let (wq, pi) = match req {
            Request::SqDoorbell { qpn, pi } => (Wq::Sq(qpn), pi),
            Request::RqDoorbell { qpn, pi } => (Wq::Rq(qpn), pi),
            Request::SrqDoorbell { srq, pi } => (Wq::Srq(srq), pi),
            _ => return Outcome::Silent,
        };
        let ring = match wq {
            Wq::Sq(q) => self
                .qps
                .get_mut(&q)
                .filter(|r| r.session == sid)
                .map(|r| &mut r.sq),
            Wq::Rq(q) => self
                .qps
                .get_mut(&q)
                .filter(|r| r.session == sid)
                .and_then(|r| r.rq.as_mut()),
            Wq::Srq(s) => self
                .srqs
                .get_mut(&s)
                .filter(|r| r.session == sid)
                .map(|r| &mut r.rq),
        };
        let Some(ring) = ring else {
            if checkpointed {
                // A late doorbell after the objects moved away.
                return Outcome::Silent;
            }
            tracing::info!(
                session = sid,
                ?wq,
                "doorbell for a queue the session does not own"
            );
            return Outcome::Fatal(error(
                libc::EPERM,
                format!("doorbell for {wq:?}, which this session does not own"),
            ));
        };
        if !ring.valid_pi(pi) {
            return Outcome::Fatal(error(
                libc::EINVAL,
                format!("doorbell of {wq:?} claims more entries than its ring holds"),
            ));
        }
        ring.pi = pi;
        if ring.pending() > 0 {
            self.pending_wqs.insert(wq);
        }
        Outcome::Silent
    }

    fn dispatch(&mut self, sid: u64, req: Request) -> Res {
        let owner = self.owner_of(sid)?;
        match req {
            Request::Hello { .. }
            | Request::AttachChannel { .. }
            | Request::RestoreSession { .. }
            | Request::RestoreChannel { .. } => Err(ReqError::new(
                libc::EPROTO,
                "the session has said hello already",
            )),
            Request::QueryDevice => Ok(Response::Device(self.info.clone())),
            Request::AllocPd => {
                if self.pds.len() >= limits::MAX_PD as usize {
                    return Err(ReqError::nomem("too many protection domains"));
                }
                let pds = &self.pds;
                let pd = self
                    .ids
                    .u32(|v| pds.contains_key(&v))
                    .ok_or_else(|| ReqError::nomem("no free pd handle"))?;
                self.device.alloc_pd(owner, pd)?;
                self.pds.insert(pd, sid);
                Ok(Response::Pd { pd })
            }
            Request::DeallocPd { pd } => {
                self.own_pd(sid, pd)?;
                self.device.dealloc_pd(pd)?;
                self.pds.remove(&pd);
                Ok(Response::Ok)
            }
            Request::RegMr {
                pd,
                addr,
                length,
                access,
            } => self.reg_mr(sid, owner, pd, addr, length, access),
            Request::DeregMr { lkey } => {
                let mr = self
                    .mrs
                    .get(&lkey)
                    .filter(|m| m.session == sid)
                    .copied()
                    .ok_or_else(|| ReqError::noent(format!("no memory region {lkey:#x}")))?;
                self.device.dereg_mr(lkey)?;
                self.mrs.remove(&lkey);
                self.keys.remove(&lkey);
                self.keys.remove(&mr.rkey);
                self.mem.remove_region(owner, mr.addr);
                Ok(Response::Ok)
            }
            Request::CreateChannel => {
                let chans = &self.channels;
                let channel = self
                    .ids
                    .u32(|v| chans.contains_key(&v))
                    .ok_or_else(|| ReqError::nomem("no free channel id"))?;
                self.channels.insert(
                    channel,
                    Channel {
                        session: sid,
                        conn: None,
                        inode: 0,
                    },
                );
                Ok(Response::Channel { channel })
            }
            Request::DestroyChannel { channel } => {
                let c = self
                    .channels
                    .get(&channel)
                    .filter(|c| c.session == sid)
                    .copied()
                    .ok_or_else(|| ReqError::noent(format!("no channel {channel}")))?;
                if self.cqs.values().any(|q| q.channel == Some(channel)) {
                    return Err(ReqError::busy(format!("channel {channel} is used by a cq")));
                }
                self.channels.remove(&channel);
                if let Some(conn) = c.conn.and_then(|t| self.conns.get_mut(&t)) {
                    conn.closing = true;
                }
                Ok(Response::Ok)
            }
            Request::CreateCq {
                entries,
                ring,
                ctrl,
                channel,
            } => self.create_cq(sid, owner, entries, ring, ctrl, channel),
            Request::DestroyCq { cq } => {
                self.own_cq(sid, cq)?;
                self.device.destroy_cq(cq)?;
                self.cqs.remove(&cq);
                self.dirty_cqs.remove(&cq);
                Ok(Response::Ok)
            }
            Request::ReqNotifyCq { cq, solicited_only } => {
                self.own_cq(sid, cq)?;
                if let Some(c) = self.cqs.get_mut(&cq) {
                    c.armed = true;
                    c.solicited_only = solicited_only;
                }
                Ok(Response::Ok)
            }
            Request::CreateSrq {
                pd,
                max_wr,
                max_sge,
                limit,
                ring,
                ctrl,
            } => {
                self.own_pd(sid, pd)?;
                if max_wr == 0 || max_wr > limits::MAX_SRQ_WR {
                    return Err(ReqError::inval(format!("srq of {max_wr} entries")));
                }
                if max_sge as usize > ring::MAX_RECV_SGE {
                    return Err(ReqError::inval(format!("{max_sge} sges per receive")));
                }
                if self.srqs.len() >= limits::MAX_SRQ as usize {
                    return Err(ReqError::nomem("too many srqs"));
                }
                let entries = max_wr.next_power_of_two();
                self.check_client_memory(owner, ring, u64::from(entries) * RQ_WQE_SIZE as u64)?;
                self.check_client_memory(owner, ctrl, ring::SRQ_CTRL_SIZE as u64)?;
                let srqs = &self.srqs;
                let srq = self
                    .ids
                    .u32(|v| srqs.contains_key(&v))
                    .ok_or_else(|| ReqError::nomem("no free srq handle"))?;
                self.device.create_srq(owner, srq, pd, entries, limit)?;
                self.srqs.insert(
                    srq,
                    SrqRing {
                        srq,
                        session: sid,
                        owner,
                        ctrl,
                        rq: WqRing::new(ring, entries),
                    },
                );
                Ok(Response::Srq { srq })
            }
            Request::ModifySrq { srq, limit } => {
                self.own_srq(sid, srq)?;
                self.device.modify_srq_limit(srq, limit)?;
                Ok(Response::Ok)
            }
            Request::DestroySrq { srq } => {
                self.own_srq(sid, srq)?;
                self.device.destroy_srq(srq)?;
                self.srqs.remove(&srq);
                self.pending_wqs.remove(&Wq::Srq(srq));
                self.blocked_wqs.remove(&Wq::Srq(srq));
                Ok(Response::Ok)
            }
            Request::CreateQp {
                pd,
                qp_type,
                send_cq,
                recv_cq,
                srq,
                cap,
                sq_sig_all,
                sq_ring,
                rq_ring,
                ctrl,
            } => {
                self.own_pd(sid, pd)?;
                self.own_cq(sid, send_cq)?;
                self.own_cq(sid, recv_cq)?;
                if let Some(s) = srq {
                    self.own_srq(sid, s)?;
                }
                if cap.max_send_wr > limits::MAX_QP_WR
                    || cap.max_recv_wr > limits::MAX_QP_WR
                    || cap.max_send_sge as usize > ring::MAX_SEND_SGE
                    || cap.max_recv_sge as usize > ring::MAX_RECV_SGE
                    || cap.max_inline_data > limits::MAX_INLINE_DATA
                {
                    return Err(ReqError::inval(
                        "qp capabilities exceed the device's limits",
                    ));
                }
                if self.qps.len() >= limits::MAX_QP as usize {
                    return Err(ReqError::nomem("too many qps"));
                }
                let sq_entries = if cap.max_send_wr == 0 {
                    0
                } else {
                    cap.max_send_wr.next_power_of_two()
                };
                let rq_entries = match srq {
                    Some(_) => 0,
                    None if cap.max_recv_wr == 0 => 0,
                    None => cap.max_recv_wr.next_power_of_two(),
                };
                self.check_client_memory(owner, ctrl, ring::QP_CTRL_SIZE as u64)?;
                if sq_entries > 0 {
                    self.check_client_memory(
                        owner,
                        sq_ring,
                        u64::from(sq_entries) * SQ_WQE_SIZE as u64,
                    )?;
                }
                if rq_entries > 0 {
                    self.check_client_memory(
                        owner,
                        rq_ring,
                        u64::from(rq_entries) * RQ_WQE_SIZE as u64,
                    )?;
                }
                let qps = &self.qps;
                let tomb = self.device.tombstones();
                let qpn = self
                    .ids
                    .qpn(|q| qps.contains_key(&q) || tomb.contains(&q))
                    .ok_or_else(|| ReqError::nomem("no free qp number"))?;
                self.device.create_qp(QpInit {
                    owner,
                    qpn,
                    qp_type,
                    pd,
                    send_cq,
                    recv_cq,
                    srq,
                    cap,
                    sq_sig_all,
                })?;
                self.qps.insert(
                    qpn,
                    QpRings {
                        qpn,
                        session: sid,
                        owner,
                        ctrl,
                        sq: WqRing::new(sq_ring, sq_entries),
                        rq: (srq.is_none()).then(|| WqRing::new(rq_ring, rq_entries)),
                        send_cq,
                        recv_cq,
                    },
                );
                Ok(Response::Qp { qpn })
            }
            Request::ModifyQp { qpn, attr, mask } => {
                self.own_qp(sid, qpn)?;
                self.device.modify_qp(self.now, qpn, &attr, mask)?;
                // Receives posted before the QP could take them, sends held back.
                self.pending_wqs.insert(Wq::Sq(qpn));
                self.pending_wqs.insert(Wq::Rq(qpn));
                Ok(Response::Ok)
            }
            Request::QueryQp { qpn } => {
                self.own_qp(sid, qpn)?;
                Ok(Response::QpAttr(self.device.query_qp(qpn)?))
            }
            Request::DestroyQp { qpn } => {
                self.own_qp(sid, qpn)?;
                self.device.destroy_qp(qpn)?;
                self.qps.remove(&qpn);
                for wq in [Wq::Sq(qpn), Wq::Rq(qpn)] {
                    self.pending_wqs.remove(&wq);
                    self.blocked_wqs.remove(&wq);
                }
                Ok(Response::Ok)
            }
            Request::SqDoorbell { .. }
            | Request::RqDoorbell { .. }
            | Request::SrqDoorbell { .. } => Ok(Response::Ok),
            Request::Stats => {
                let qps = self
                    .qps
                    .values()
                    .filter(|q| q.session == sid)
                    .filter_map(|q| self.device.qp_counters(q.qpn).map(|c| (q.qpn, c)))
                    .collect();
                Ok(Response::Stats {
                    device: self.device.counters(),
                    qps,
                })
            }
            Request::Checkpoint => self.checkpoint(sid, owner),
            Request::Restore { image } => {
                self.restore(sid, owner, &image)?;
                Ok(Response::Ok)
            }
            Request::Resume => {
                self.start_session(sid, owner)?;
                Ok(Response::Ok)
            }
            Request::ForwardTombstones { qpns, to } => {
                let s = self
                    .sessions
                    .get(&sid)
                    .ok_or_else(|| ReqError::noent("no session"))?;
                if let Some(q) = qpns.iter().find(|q| !s.tombstones.contains(q)) {
                    return Err(ReqError::noent(format!(
                        "qp {q} was not checkpointed by this session"
                    )));
                }
                self.device.forward_tombstones(&qpns, to);
                Ok(Response::Ok)
            }
        }
    }

    // ---- ownership checks ----

    fn owner_of(&self, sid: u64) -> Result<u64, ReqError> {
        self.sessions
            .get(&sid)
            .map(|s| s.owner)
            .ok_or_else(|| ReqError::noent("no session"))
    }

    fn own_pd(&self, sid: u64, pd: u32) -> Result<(), ReqError> {
        match self.pds.get(&pd) {
            Some(s) if *s == sid => Ok(()),
            _ => Err(ReqError::noent(format!("no pd {pd}"))),
        }
    }

    fn own_cq(&self, sid: u64, cq: u32) -> Result<(), ReqError> {
        match self.cqs.get(&cq) {
            Some(c) if c.session == sid => Ok(()),
            _ => Err(ReqError::noent(format!("no cq {cq}"))),
        }
    }

    fn own_srq(&self, sid: u64, srq: u32) -> Result<(), ReqError> {
        match self.srqs.get(&srq) {
            Some(s) if s.session == sid => Ok(()),
            _ => Err(ReqError::noent(format!("no srq {srq}"))),
        }
    }

    fn own_qp(&self, sid: u64, qpn: u32) -> Result<(), ReqError> {
        match self.qps.get(&qpn) {
            Some(q) if q.session == sid => Ok(()),
            _ => Err(ReqError::noent(format!("no qp {qpn}"))),
        }
    }

    /// Checks that `[addr, addr+len)` is mapped in the client (first and
    /// last byte readable).
    fn check_client_memory(&mut self, owner: u64, addr: u64, len: u64) -> Result<(), ReqError> {
        if addr == 0 || len == 0 {
            return Err(ReqError::inval("null or empty client memory"));
        }
        let last = addr
            .checked_add(len - 1)
            .ok_or_else(|| ReqError::inval("client memory wraps the address space"))?;
        let mut b = [0u8; 1];
        for at in [addr, last] {
            self.mem.read_now(owner, at, &mut b).map_err(|_| {
                ReqError::new(
                    libc::EFAULT,
                    format!("client memory at {at:#x} is not mapped"),
                )
            })?;
        }
        Ok(())
    }

    fn reg_mr(
        &mut self,
        sid: u64,
        owner: u64,
        pd: u32,
        addr: u64,
        length: u64,
        access: Access,
    ) -> Res {
        self.own_pd(sid, pd)?;
        if length > limits::MAX_MR_SIZE {
            return Err(ReqError::inval(format!(
                "memory region of {length} bytes is too large"
            )));
        }
        if access.0 & !0xf != 0 {
            return Err(ReqError::inval(format!(
                "unknown access flags {:#x}",
                access.0
            )));
        }
        if self.mrs.len() >= limits::MAX_MR as usize {
            return Err(ReqError::nomem("too many memory regions"));
        }
        if length > 0 {
            self.check_client_memory(owner, addr, length)?;
        }
        let keys = &self.keys;
        let lkey = self
            .ids
            .u32(|v| keys.contains(&v))
            .ok_or_else(|| ReqError::nomem("no free memory key"))?;
        let rkey = self
            .ids
            .u32(|v| v == lkey || keys.contains(&v))
            .ok_or_else(|| ReqError::nomem("no free memory key"))?;
        self.device.reg_mr(MrSpec {
            owner,
            pd,
            addr,
            length,
            iova: addr,
            lkey,
            rkey,
            access,
        })?;
        self.keys.insert(lkey);
        self.keys.insert(rkey);
        self.mrs.insert(
            lkey,
            MrEntry {
                session: sid,
                rkey,
                addr,
            },
        );
        self.mem.add_region(owner, addr, length);
        Ok(Response::Mr { lkey, rkey })
    }

    fn create_cq(
        &mut self,
        sid: u64,
        owner: u64,
        entries: u32,
        ring_addr: u64,
        ctrl: u64,
        channel: Option<u32>,
    ) -> Res {
        if !entries.is_power_of_two() || entries > limits::MAX_CQE {
            return Err(ReqError::inval(format!(
                "a cq ring of {entries} entries (a power of two up to {})",
                limits::MAX_CQE
            )));
        }
        if let Some(ch) = channel {
            if self.channels.get(&ch).is_none_or(|c| c.session != sid) {
                return Err(ReqError::noent(format!("no channel {ch}")));
            }
        }
        if self.cqs.len() >= limits::MAX_CQ as usize {
            return Err(ReqError::nomem("too many cqs"));
        }
        self.check_client_memory(owner, ring_addr, u64::from(entries) * ring::CQE_SIZE as u64)?;
        self.check_client_memory(owner, ctrl, ring::CQ_CTRL_SIZE as u64)?;
        let cqs = &self.cqs;
        let cq = self
            .ids
            .u32(|v| cqs.contains_key(&v))
            .ok_or_else(|| ReqError::nomem("no free cq handle"))?;
        let ring = CqRing {
            cq,
            session: sid,
            owner,
            addr: ring_addr,
            entries,
            ctrl,
            pi: 0,
            client_ci: 0,
            armed: false,
            solicited_only: false,
            channel,
            backlog: Default::default(),
            overflows: 0,
        };
        let capacity = u32::try_from(ring.backlog_limit()).unwrap_or(u32::MAX);
        self.device.create_cq(owner, cq, capacity)?;
        self.cqs.insert(cq, ring);
        Ok(Response::Cq { cq })
    }

    // ---- migration ----

    fn checkpoint(&mut self, sid: u64, owner: u64) -> Res {
        if self.sessions.get(&sid).is_some_and(|s| s.checkpointed) {
            return Err(ReqError::busy("the session was checkpointed already"));
        }
        let image = match self.snapshot_session(sid, owner, Vec::new()) {
            Ok((image, _)) => image,
            Err(e) => {
                let _ = self.device.unpause_owner(self.now, owner);
                return Err(e);
            }
        };
        let qpns = self.evict_session(sid, owner)?;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.checkpointed = true;
            s.tombstones = qpns.clone();
        }
        tracing::info!(
            session = sid,
            owner,
            qps = qpns.len(),
            bytes = image.len(),
            "checkpointed"
        );
        Ok(Response::Image { image, qpns })
    }

    /// Pauses every QP of session `sid`, moves what the transport completed
    /// into the CQ backlogs and encodes the session's image with its QPNs
    /// (and `inbox`, a request cut short). The objects stay (stopped); on
    /// failure they stay paused.
    pub(crate) fn snapshot_session(
        &mut self,
        sid: u64,
        owner: u64,
        inbox: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<u32>), ReqError> {
        let now = self.now;
        self.device.pause_owner(now, owner)?;
        // Everything completed so far goes into the backlogs (and the image).
        let cqs: Vec<u32> = self
            .cqs
            .values()
            .filter(|c| c.session == sid)
            .map(|c| c.cq)
            .collect();
        for cq in &cqs {
            let mut wcs = Vec::new();
            let _ = self.device.poll_cq(*cq, usize::MAX, &mut wcs);
            if let Some(r) = self.cqs.get_mut(cq) {
                r.backlog.extend(wcs);
            }
        }
        self.mem.flush();
        let snap = self.device.snapshot_owner(now, owner)?;
        let qpns = snap.qpns();
        let image = Image::new(
            &snap,
            self.qps
                .values()
                .filter(|q| q.session == sid)
                .cloned()
                .collect(),
            self.cqs
                .values()
                .filter(|c| c.session == sid)
                .cloned()
                .collect(),
            self.srqs
                .values()
                .filter(|s| s.session == sid)
                .cloned()
                .collect(),
            self.channels
                .iter()
                .filter(|(_, c)| c.session == sid)
                .map(|(id, _)| *id)
                .collect(),
        )
        .and_then(|mut i| {
            i.inbox = inbox;
            i.encode()
        })
        .map_err(|e| ReqError::new(libc::EIO, format!("cannot encode the image: {e}")))?;
        Ok((image, qpns))
    }

    /// Removes every object of session `sid` from the device, leaving a
    /// tombstone per QP; returns their QPNs. The session itself stays.
    pub(crate) fn evict_session(&mut self, sid: u64, owner: u64) -> Result<Vec<u32>, ReqError> {
        let qpns = self.device.evict_owner(self.now, owner)?;
        self.forget_session_objects(sid);
        self.mem.unbind(owner);
        Ok(qpns)
    }

    /// Recreates the objects of image `bytes` for session `sid` (which owns
    /// nothing yet); returns the image's inbox (the start of a request cut
    /// by a freeze, empty but for admin checkpoints).
    pub(crate) fn restore(
        &mut self,
        sid: u64,
        old_owner: u64,
        bytes: &[u8],
    ) -> Result<Vec<u8>, ReqError> {
        let owns_something = self.pds.values().any(|s| *s == sid)
            || self.cqs.values().any(|c| c.session == sid)
            || self.channels.values().any(|c| c.session == sid);
        let checkpointed = self.sessions.get(&sid).is_some_and(|s| s.checkpointed);
        if owns_something || checkpointed {
            return Err(ReqError::busy(
                "restore needs a session that owns nothing yet",
            ));
        }
        let (img, snap) =
            Image::decode(bytes).map_err(|e| ReqError::inval(format!("bad image: {e}")))?;
        let pds = img
            .pds()
            .map_err(|e| ReqError::inval(format!("bad image: no pd list: {e}")))?;
        if self.owners.contains_key(&img.owner) {
            return Err(ReqError::new(
                libc::EEXIST,
                format!("owner {} is in use here", img.owner),
            ));
        }
        let exists = |what: &str, id: u64| {
            Err(ReqError::new(
                libc::EEXIST,
                format!("{what} {id} exists on this device"),
            ))
        };
        if let Some(p) = pds.iter().find(|p| self.pds.contains_key(p)) {
            return exists("pd", u64::from(*p));
        }
        if let Some(c) = img.cqs.iter().find(|c| self.cqs.contains_key(&c.cq)) {
            return exists("cq", u64::from(c.cq));
        }
        if let Some(s) = img.srqs.iter().find(|s| self.srqs.contains_key(&s.srq)) {
            return exists("srq", u64::from(s.srq));
        }
        if let Some(q) = img.qps.iter().find(|q| self.qps.contains_key(&q.qpn)) {
            return exists("qp", u64::from(q.qpn));
        }
        if let Some(c) = img.channels.iter().find(|c| self.channels.contains_key(c)) {
            return exists("channel", u64::from(*c));
        }
        if let Some(m) = snap
            .mrs()
            .iter()
            .find(|m| self.keys.contains(&m.lkey) || self.keys.contains(&m.rkey))
        {
            return exists("memory key", u64::from(m.lkey));
        }
        if self.qps.len() + img.qps.len() > limits::MAX_QP as usize {
            return Err(ReqError::nomem("too many qps"));
        }
        self.device.check_restore(&snap)?;
        let mrs: Vec<MrSpec> = snap.mrs().to_vec();
        let new_owner = img.owner;
        self.device.restore(self.now, snap)?;

        // Adopt the image's owner.
        let pid = self.sessions.get(&sid).map_or(0, |s| s.pid);
        self.owners.remove(&old_owner);
        self.mem.unbind(old_owner);
        self.owners.insert(new_owner, sid);
        self.mem.bind(new_owner, pid);
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.owner = new_owner;
        }
        for pd in pds {
            self.pds.insert(pd, sid);
        }
        for m in mrs {
            self.keys.insert(m.lkey);
            self.keys.insert(m.rkey);
            self.mrs.insert(
                m.lkey,
                MrEntry {
                    session: sid,
                    rkey: m.rkey,
                    addr: m.addr,
                },
            );
            self.mem.add_region(new_owner, m.addr, m.length);
        }
        for ch in img.channels {
            self.channels.insert(
                ch,
                Channel {
                    session: sid,
                    conn: None,
                    inode: 0,
                },
            );
        }
        for mut c in img.cqs {
            c.session = sid;
            if !c.backlog.is_empty() {
                self.dirty_cqs.insert(c.cq);
            }
            self.cqs.insert(c.cq, c);
        }
        for mut s in img.srqs {
            s.session = sid;
            self.srqs.insert(s.srq, s);
        }
        for mut q in img.qps {
            q.session = sid;
            self.qps.insert(q.qpn, q);
        }
        tracing::info!(session = sid, owner = new_owner, "restored");
        Ok(img.inbox)
    }

    // ---- work queues ----

    /// Reads and posts what doorbells announced (of session `only`, or all).
    pub(crate) fn pump_wqs(&mut self, only: Option<u64>) {
        if self.pending_wqs.is_empty() {
            return;
        }
        let wqs: Vec<Wq> = self.pending_wqs.iter().copied().collect();
        for wq in wqs {
            let sid = match wq {
                Wq::Sq(q) | Wq::Rq(q) => self.qps.get(&q).map(|r| r.session),
                Wq::Srq(s) => self.srqs.get(&s).map(|r| r.session),
            };
            let Some(sid) = sid else {
                self.pending_wqs.remove(&wq);
                continue;
            };
            if only.is_some_and(|o| o != sid) {
                continue;
            }
            self.pending_wqs.remove(&wq);
            if !self.pump(wq) {
                self.blocked_wqs.insert(wq);
            }
        }
    }

    /// Posts the pending entries of one work queue; returns whether it is
    /// drained (false: the transport's queue is full, try again later).
    fn pump(&mut self, wq: Wq) -> bool {
        let mut buf = std::mem::take(&mut self.wq_buf);
        let drained = self.pump_with(wq, &mut buf);
        self.wq_buf = buf;
        drained
    }

    fn pump_with(&mut self, wq: Wq, buf: &mut Vec<u8>) -> bool {
        loop {
            let (owner, ring, size) = match wq {
                Wq::Sq(q) => match self.qps.get(&q) {
                    Some(r) => (r.owner, r.sq, SQ_WQE_SIZE),
                    None => return true,
                },
                Wq::Rq(q) => match self.qps.get(&q).and_then(|r| r.rq.map(|rq| (r.owner, rq))) {
                    Some((o, rq)) => (o, rq, RQ_WQE_SIZE),
                    None => return true,
                },
                Wq::Srq(s) => match self.srqs.get(&s) {
                    Some(r) => (r.owner, r.rq, RQ_WQE_SIZE),
                    None => return true,
                },
            };
            let n = match ring.read(&mut self.mem, owner, size, WQ_BATCH, buf) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(?wq, error = %e, "cannot read a work queue ring: disconnecting the client");
                    self.kill_owner_session(owner);
                    return true;
                }
            };
            if n == 0 {
                return true;
            }
            let mut consumed = 0;
            let mut full = false;
            for k in 0..n as usize {
                let entry = &buf[k * size..(k + 1) * size];
                if !self.post_entry(wq, entry) {
                    full = true;
                    break;
                }
                consumed += 1;
            }
            if consumed > 0 {
                let ring = match wq {
                    Wq::Sq(q) => self.qps.get_mut(&q).map(|r| &mut r.sq),
                    Wq::Rq(q) => self.qps.get_mut(&q).and_then(|r| r.rq.as_mut()),
                    Wq::Srq(s) => self.srqs.get_mut(&s).map(|r| &mut r.rq),
                };
                if let Some(r) = ring {
                    r.ci = r.ci.wrapping_add(consumed);
                }
                self.ci_dirty.insert(wq);
            }
            if full {
                return false;
            }
        }
    }

    /// Posts one ring entry; false when the transport's queue is full.
    fn post_entry(&mut self, wq: Wq, entry: &[u8]) -> bool {
        let now = self.now;
        match wq {
            Wq::Sq(qpn) => {
                let mut e = [0u8; SQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let wr_id = u64::from_le_bytes(e[..8].try_into().unwrap_or([0; 8]));
                let wr = match ring::decode_send(&e) {
                    Ok(wr) => wr,
                    Err(err) => {
                        self.fail_wr(qpn, true, wr_id, WcOpcode::Send, &err.to_string());
                        return true;
                    }
                };
                let opcode = wr.opcode.wc_opcode();
                match self.device.post_send(now, qpn, wr) {
                    Ok(()) => true,
                    Err(VerbsError::QueueFull) => false,
                    Err(err) => {
                        self.fail_wr(qpn, true, wr_id, opcode, &err.to_string());
                        true
                    }
                }
            }
            Wq::Rq(qpn) => {
                let mut e = [0u8; RQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let wr_id = u64::from_le_bytes(e[..8].try_into().unwrap_or([0; 8]));
                let wr: RecvWr = match ring::decode_recv(&e) {
                    Ok(wr) => wr,
                    Err(err) => {
                        self.fail_wr(qpn, false, wr_id, WcOpcode::Recv, &err.to_string());
                        return true;
                    }
                };
                match self.device.post_recv(qpn, wr) {
                    Ok(()) => true,
                    Err(VerbsError::QueueFull) => false,
                    Err(err) => {
                        self.fail_wr(qpn, false, wr_id, WcOpcode::Recv, &err.to_string());
                        true
                    }
                }
            }
            Wq::Srq(srq) => {
                let mut e = [0u8; RQ_WQE_SIZE];
                e.copy_from_slice(entry);
                let Ok(wr) = ring::decode_recv(&e) else {
                    tracing::debug!(srq, "undecodable srq entry skipped");
                    return true;
                };
                !matches!(
                    self.device.post_srq_recv(srq, wr),
                    Err(VerbsError::QueueFull)
                )
            }
        }
    }

    /// A work request the transport refused: the QP goes to the error
    /// state (flushing what it holds, in order), then the WR completes with
    /// `LocQpOpErr`.
    fn fail_wr(&mut self, qpn: u32, send: bool, wr_id: u64, opcode: WcOpcode, why: &str) {
        tracing::info!(qpn, wr_id, why, "work request refused: qp moves to error");
        let Some(q) = self.qps.get(&qpn) else {
            return;
        };
        let cq = if send { q.send_cq } else { q.recv_cq };
        let attr = QpAttr {
            qp_state: QpState::Err,
            ..QpAttr::default()
        };
        let _ = self.device.modify_qp(self.now, qpn, &attr, AttrMask::STATE);
        for c in [q.send_cq, q.recv_cq] {
            self.drain_cq_into_backlog(c);
        }
        if let Some(r) = self.cqs.get_mut(&cq) {
            let wc = WorkCompletion::new(wr_id, WcStatus::LocQpOpErr, opcode, qpn, 0);
            r.backlog.push_back(wc);
            self.dirty_cqs.insert(cq);
        }
        if let Some(sid) = self.qps.get(&qpn).map(|q| q.session) {
            self.session_event(sid, Event::QpFatal { qpn });
        }
    }

    fn drain_cq_into_backlog(&mut self, cq: u32) {
        let mut wcs = Vec::new();
        let _ = self.device.poll_cq(cq, usize::MAX, &mut wcs);
        if let Some(r) = self.cqs.get_mut(&cq) {
            r.backlog.extend(wcs);
            if !r.backlog.is_empty() {
                self.dirty_cqs.insert(cq);
            }
        }
    }

    /// Disconnects the session of `owner` (it broke the ring contract).
    fn kill_owner_session(&mut self, owner: u64) {
        if let Some(conn) = self
            .owners
            .get(&owner)
            .and_then(|sid| self.sessions.get(sid))
            .map(|s| s.conn)
            .and_then(|t| self.conns.get_mut(&t))
        {
            let _ = conn.send(&error(
                libc::EFAULT,
                "a ring of this session is not readable",
            ));
            conn.closing = true;
        }
        // Nothing more is read for it this turn.
        let qps = &self.qps;
        let srqs = &self.srqs;
        let others = |w: &Wq| match w {
            Wq::Sq(q) | Wq::Rq(q) => qps.get(q).is_some_and(|r| r.owner != owner),
            Wq::Srq(s) => srqs.get(s).is_some_and(|r| r.owner != owner),
        };
        self.pending_wqs.retain(others);
        self.blocked_wqs.retain(others);
    }
}

fn error(errno: i32, message: impl Into<String>) -> Response {
    Response::Error {
        errno,
        message: message.into(),
    }
}
