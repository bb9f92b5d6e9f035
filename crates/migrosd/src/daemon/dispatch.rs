//! A session's control requests, each mapped onto the registry (what the
//! session owns) and the device (the transport's objects).
//!
//! Every handler first checks that the session owns what the request
//! names, then changes the device, then the registry, so a refused request
//! changes nothing.

use migros_proto::msg::{ChannelId, Request, Response};
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{
    Access, AttrMask, Cqn, OwnerId, Pdn, QpAttr, QpCap, QpInit, QpType, Qpn, Srqn,
};

use super::Daemon;
use crate::client::RangeError;
use crate::errno::ReqError;
use crate::limits;
use crate::registry::{Channel, Id, Kind, Mr, Objects, SessionId};
use crate::rings::{CqRing, QpRings, SrqRing, Wq, WqRing};

pub(super) type Res = Result<Response, ReqError>;

/// What CreateQp asks for.
struct NewQp {
    pd: Pdn,
    qp_type: QpType,
    send_cq: Cqn,
    recv_cq: Cqn,
    srq: Option<Srqn>,
    cap: QpCap,
    sq_sig_all: bool,
    sq_ring: u64,
    rq_ring: u64,
    ctrl: u64,
}

/// What CreateSrq asks for.
struct NewSrq {
    pd: Pdn,
    max_wr: u32,
    max_sge: u32,
    limit: u32,
    ring: u64,
    ctrl: u64,
}

impl Daemon {
    pub(super) fn dispatch(&mut self, sid: SessionId, req: Request) -> Res {
        let owner = self.objects(sid)?.1;
        match req {
            Request::Hello { .. }
            | Request::AttachChannel { .. }
            | Request::RestoreSession { .. }
            | Request::RestoreChannel { .. }
            | Request::CmHello { .. }
            | Request::RestoreCm { .. } => Err(ReqError::new(
                libc::EPROTO,
                "the session has said hello already",
            )),
            Request::QueryDevice => Ok(Response::Device(self.info.clone())),
            Request::AllocPd => self.alloc_pd(sid, owner),
            Request::DeallocPd { pd } => self.dealloc_pd(sid, pd),
            Request::RegMr {
                pd,
                addr,
                length,
                iova,
                access,
            } => self.reg_mr(sid, owner, pd, (addr, length, iova), access),
            Request::DeregMr { lkey } => self.dereg_mr(sid, owner, lkey),
            Request::CreateChannel => self.create_channel(sid),
            Request::DestroyChannel { channel } => self.destroy_channel(sid, channel),
            Request::CreateCq {
                entries,
                ring,
                ctrl,
                channel,
            } => self.create_cq(sid, owner, entries, ring, ctrl, channel),
            Request::DestroyCq { cq } => self.destroy_cq(sid, cq),
            Request::ReqNotifyCq { cq, solicited_only } => {
                self.req_notify_cq(sid, cq, solicited_only)
            }
            Request::ResizeCq {
                cq,
                entries,
                ring,
                ctrl,
            } => self.resize_cq(sid, owner, cq, entries, ring, ctrl),
            Request::AllocMw { pd, mw_type } => self.alloc_mw(sid, owner, pd, mw_type),
            Request::DeallocMw { rkey } => self.dealloc_mw(sid, rkey),
            Request::QuerySrq { srq } => self.query_srq(sid, srq),
            Request::SubscribeAsync { channel } => self.subscribe_async(sid, channel),
            Request::CreateSrq {
                pd,
                max_wr,
                max_sge,
                limit,
                ring,
                ctrl,
            } => {
                let srq = NewSrq {
                    pd,
                    max_wr,
                    max_sge,
                    limit,
                    ring,
                    ctrl,
                };
                self.create_srq(sid, owner, srq)
            }
            Request::ModifySrq { srq, limit, resize } => {
                self.modify_srq(sid, owner, srq, limit, resize)
            }
            Request::DestroySrq { srq } => self.destroy_srq(sid, srq),
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
                let qp = NewQp {
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
                };
                self.create_qp(sid, owner, qp)
            }
            Request::ModifyQp { qpn, attr, mask } => self.modify_qp(sid, qpn, &attr, mask),
            Request::QueryQp { qpn } => {
                self.own(sid, "qp", qpn, Objects::qp)?;
                Ok(Response::QpAttr(self.device.query_qp(qpn)?))
            }
            Request::DestroyQp { qpn } => self.destroy_qp(sid, qpn),
            Request::SqDoorbell { .. }
            | Request::RqDoorbell { .. }
            | Request::SrqDoorbell { .. } => Ok(Response::Ok),
            Request::Stats => {
                let qps = self
                    .objects(sid)?
                    .0
                    .qps()
                    .filter_map(|q| self.device.qp_counters(q.qpn).map(|c| (q.qpn, c)))
                    .collect();
                Ok(Response::Stats {
                    device: self.link_counters(),
                    qps,
                })
            }
            Request::Checkpoint => self.checkpoint(sid, owner),
            Request::Restore { image } => {
                self.authorise_session_restore(sid)?;
                self.restore(sid, &image)?;
                Ok(Response::Ok)
            }
            Request::Resume => {
                self.authorise_session_restore(sid)?;
                self.start_session(sid)?;
                Ok(Response::Ok)
            }
            Request::ForwardTombstones { qpns, to } => {
                let s = self
                    .reg
                    .get(sid)
                    .ok_or_else(|| ReqError::noent("no session"))?;
                if let Some(q) = qpns.iter().find(|q| !s.tombstones.contains(q)) {
                    return Err(ReqError::noent(format!(
                        "qp {q} was not checkpointed by this session"
                    )));
                }
                self.device.forward_tombstones(self.now, &qpns, to);
                Ok(Response::Ok)
            }
        }
    }

    // ---- ownership ----

    /// The objects and the transport owner of session `sid`.
    pub(super) fn objects(&self, sid: SessionId) -> Result<(&Objects, OwnerId), ReqError> {
        self.reg
            .get(sid)
            .map(|s| (s.objects(), s.owner()))
            .ok_or_else(|| ReqError::noent("no session"))
    }

    /// Fails unless session `sid` owns the `what` `id` (`find` looks it up).
    pub(super) fn own<T>(
        &self,
        sid: SessionId,
        what: &str,
        id: u32,
        find: impl Fn(&Objects, u32) -> Option<&T>,
    ) -> Result<(), ReqError> {
        match self.objects(sid) {
            Ok((o, _)) if find(o, id).is_some() => Ok(()),
            _ => Err(ReqError::noent(format!("no {what} {id}"))),
        }
    }

    pub(super) fn own_pd(&self, sid: SessionId, pd: Pdn) -> Result<(), ReqError> {
        match self.objects(sid) {
            Ok((o, _)) if o.has_pd(pd) => Ok(()),
            _ => Err(ReqError::noent(format!("no pd {pd}"))),
        }
    }

    /// Fails when the device holds `limit` objects of `kind` already.
    /// Refuses one more object of `kind` for session `sid` beyond its
    /// session's or its uid's quota.
    fn within_quota(&self, sid: SessionId, kind: Kind, q: limits::Quota) -> Result<(), ReqError> {
        let Some(s) = self.reg.get(sid) else {
            return Err(ReqError::noent("no session"));
        };
        if s.objects().count(kind) >= q.per_session {
            return Err(ReqError::nomem(format!(
                "session quota: at most {} {} per session",
                q.per_session, q.what
            )));
        }
        let uid = s.uid;
        let of_uid: usize = self
            .reg
            .sessions()
            .filter(|s| s.uid == uid)
            .map(|s| s.objects().count(kind))
            .sum();
        if of_uid >= q.per_uid {
            return Err(ReqError::nomem(format!(
                "uid quota: at most {} {} for uid {uid}",
                q.per_uid, q.what
            )));
        }
        Ok(())
    }

    fn below_limit(&self, kind: Kind, limit: u32, what: &str) -> Result<(), ReqError> {
        if self.reg.count(kind) >= limit as usize {
            return Err(ReqError::nomem(format!("too many {what}")));
        }
        Ok(())
    }

    /// A free identifier made by `id`, or ENOMEM naming `what`.
    fn free_u32(&mut self, id: fn(u32) -> Id, what: &str) -> Result<u32, ReqError> {
        let reg = &self.reg;
        self.ids
            .u32(|v| reg.is_taken(id(v)))
            .ok_or_else(|| ReqError::nomem(format!("no free {what}")))
    }

    /// Every page of `[addr, addr + len)` must be mapped in the client's
    /// process, readable, writable if `write`, and backed by memory or a
    /// local disk (never FUSE or a network filesystem: `backing.rs`).
    pub(super) fn check_client_memory(
        &mut self,
        owner: OwnerId,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<(), ReqError> {
        if addr == 0 || len == 0 {
            return Err(ReqError::inval("null or empty client memory"));
        }
        let p = self
            .mem
            .process(owner)
            .ok_or_else(|| ReqError::new(libc::ESRCH, "the client process is gone"))?;
        p.check_range(addr, len, write).map_err(|e| match e {
            RangeError::Wraps => ReqError::inval(e.to_string()),
            RangeError::Gone => ReqError::new(libc::ESRCH, e.to_string()),
            RangeError::Unmapped(_) | RangeError::Rights { .. } | RangeError::Backing(_) => {
                ReqError::new(libc::EFAULT, e.to_string())
            }
        })
    }

    // ---- protection domains and memory regions ----

    fn alloc_pd(&mut self, sid: SessionId, owner: OwnerId) -> Res {
        self.below_limit(Kind::Pd, limits::MAX_PD, "protection domains")?;
        self.within_quota(sid, Kind::Pd, self.cfg.quotas.pd)?;
        let pd = self.free_u32(Id::Pd, "pd handle")?;
        self.device.alloc_pd(owner, pd)?;
        self.reg.add_pd(sid, pd);
        Ok(Response::Pd { pd })
    }

    fn dealloc_pd(&mut self, sid: SessionId, pd: Pdn) -> Res {
        self.own_pd(sid, pd)?;
        self.device.dealloc_pd(pd)?;
        self.reg.remove_pd(sid, pd);
        Ok(Response::Ok)
    }

    fn reg_mr(
        &mut self,
        sid: SessionId,
        owner: OwnerId,
        pd: Pdn,
        (addr, length, iova): (u64, u64, u64),
        access: Access,
    ) -> Res {
        self.own_pd(sid, pd)?;
        if length > limits::MAX_MR_SIZE {
            return Err(ReqError::inval(format!(
                "memory region of {length} bytes is too large"
            )));
        }
        if self.reg.mr_count() >= limits::MAX_MR as usize {
            return Err(ReqError::nomem("too many memory regions"));
        }
        self.within_quota(sid, Kind::Key, self.cfg.quotas.mr)?;
        if length > 0 {
            let write = access.0
                & (Access::LOCAL_WRITE.0 | Access::REMOTE_WRITE.0 | Access::REMOTE_ATOMIC.0)
                != 0;
            self.check_client_memory(owner, addr, length, write)?;
        }
        let lkey = self.free_u32(Id::Key, "memory key")?;
        let reg = &self.reg;
        // Not in a memory window's index (its base key is taken).
        let rkey = self
            .ids
            .u32(|v| v == lkey || reg.is_taken(Id::Key(v)) || reg.is_taken(Id::Key(v & !0xff)))
            .ok_or_else(|| ReqError::nomem("no free memory key"))?;
        self.device.reg_mr(migros_transport::MrSpec {
            owner,
            pd,
            addr,
            length,
            iova,
            lkey,
            rkey,
            access,
        })?;
        self.reg.add_mr(sid, lkey, Mr { rkey, addr });
        self.mem.add_region(owner, addr, length);
        Ok(Response::Mr { lkey, rkey })
    }

    fn dereg_mr(&mut self, sid: SessionId, owner: OwnerId, lkey: u32) -> Res {
        self.own(sid, "memory region", lkey, Objects::mr)
            .map_err(|_| ReqError::noent(format!("no memory region {lkey:#x}")))?;
        self.device.dereg_mr(lkey)?;
        if let Some(mr) = self.reg.remove_mr(sid, lkey) {
            self.mem.remove_region(owner, mr.addr);
        }
        Ok(Response::Ok)
    }

    // ---- completion channels and CQs ----

    fn create_channel(&mut self, sid: SessionId) -> Res {
        self.within_quota(sid, Kind::Channel, self.cfg.quotas.channel)?;
        let channel = self.free_u32(Id::Channel, "channel id")?;
        self.reg.add_channel(sid, channel, Channel::default());
        Ok(Response::Channel { channel })
    }

    fn destroy_channel(&mut self, sid: SessionId, channel: ChannelId) -> Res {
        self.own(sid, "channel", channel, Objects::channel)?;
        let (objects, _) = self.objects(sid)?;
        if objects.cqs().any(|q| q.channel == Some(channel)) {
            return Err(ReqError::busy(format!("channel {channel} is used by a cq")));
        }
        let c = self.reg.remove_channel(sid, channel);
        if let Some(conn) = c.and_then(|c| c.conn).and_then(|t| self.conns.get_mut(&t)) {
            conn.closing = true;
        }
        Ok(Response::Ok)
    }

    fn create_cq(
        &mut self,
        sid: SessionId,
        owner: OwnerId,
        entries: u32,
        ring_addr: u64,
        ctrl: u64,
        channel: Option<ChannelId>,
    ) -> Res {
        if !entries.is_power_of_two() || entries > limits::MAX_CQE {
            return Err(ReqError::inval(format!(
                "a cq ring of {entries} entries (a power of two up to {})",
                limits::MAX_CQE
            )));
        }
        if let Some(ch) = channel {
            self.own(sid, "channel", ch, Objects::channel)?;
        }
        self.below_limit(Kind::Cq, limits::MAX_CQ, "cqs")?;
        self.within_quota(sid, Kind::Cq, self.cfg.quotas.cq)?;
        self.check_client_memory(
            owner,
            ring_addr,
            u64::from(entries) * ring::CQE_SIZE as u64,
            true,
        )?;
        self.check_client_memory(owner, ctrl, ring::CQ_CTRL_SIZE as u64, true)?;
        let cq = self.free_u32(Id::Cq, "cq handle")?;
        let ring = CqRing::new(cq, ring_addr, entries, ctrl, channel);
        let capacity = u32::try_from(CqRing::queue_limit(entries)).unwrap_or(u32::MAX);
        self.device.create_cq(owner, cq, capacity)?;
        self.reg.add_cq(sid, ring);
        Ok(Response::Cq { cq })
    }

    fn destroy_cq(&mut self, sid: SessionId, cq: Cqn) -> Res {
        self.own(sid, "cq", cq, Objects::cq)?;
        self.device.destroy_cq(cq)?;
        self.reg.remove_cq(sid, cq);
        self.data.forget_cq(cq);
        Ok(Response::Ok)
    }

    // ---- SRQs and QPs ----

    fn create_srq(&mut self, sid: SessionId, owner: OwnerId, new: NewSrq) -> Res {
        self.own_pd(sid, new.pd)?;
        if new.max_wr == 0 || new.max_wr > limits::MAX_SRQ_WR {
            return Err(ReqError::inval(format!("srq of {} entries", new.max_wr)));
        }
        if new.max_sge as usize > ring::MAX_RECV_SGE {
            return Err(ReqError::inval(format!("{} sges per receive", new.max_sge)));
        }
        self.below_limit(Kind::Srq, limits::MAX_SRQ, "srqs")?;
        self.within_quota(sid, Kind::Srq, self.cfg.quotas.srq)?;
        let entries = new.max_wr.next_power_of_two();
        let ring_len = u64::from(entries) * RQ_WQE_SIZE as u64;
        self.check_client_memory(owner, new.ring, ring_len, true)?;
        self.check_client_memory(owner, new.ctrl, ring::SRQ_CTRL_SIZE as u64, true)?;
        let srq = self.free_u32(Id::Srq, "srq handle")?;
        self.device
            .create_srq(owner, srq, new.pd, entries, new.limit)?;
        let ring = SrqRing {
            srq,
            ctrl: new.ctrl,
            rq: WqRing::new(new.ring, entries),
        };
        self.reg.add_srq(sid, ring);
        Ok(Response::Srq { srq })
    }

    fn destroy_srq(&mut self, sid: SessionId, srq: Srqn) -> Res {
        self.own(sid, "srq", srq, Objects::srq)?;
        self.device.destroy_srq(srq)?;
        self.reg.remove_srq(sid, srq);
        self.data.forget_wq(Wq::Srq(srq));
        Ok(Response::Ok)
    }

    fn create_qp(&mut self, sid: SessionId, owner: OwnerId, new: NewQp) -> Res {
        self.own_pd(sid, new.pd)?;
        self.own(sid, "cq", new.send_cq, Objects::cq)?;
        self.own(sid, "cq", new.recv_cq, Objects::cq)?;
        if let Some(s) = new.srq {
            self.own(sid, "srq", s, Objects::srq)?;
        }
        let cap = new.cap;
        check_cap(&cap, None)?;
        self.below_limit(Kind::Qp, limits::MAX_QP, "qps")?;
        self.within_quota(sid, Kind::Qp, self.cfg.quotas.qp)?;
        let ring_entries = |wr: u32| if wr == 0 { 0 } else { wr.next_power_of_two() };
        let sq_entries = ring_entries(cap.max_send_wr);
        let rq_entries = match new.srq {
            Some(_) => 0,
            None => ring_entries(cap.max_recv_wr),
        };
        self.check_client_memory(owner, new.ctrl, ring::QP_CTRL_SIZE as u64, true)?;
        if sq_entries > 0 {
            let len = u64::from(sq_entries) * SQ_WQE_SIZE as u64;
            self.check_client_memory(owner, new.sq_ring, len, true)?;
        }
        if rq_entries > 0 {
            let len = u64::from(rq_entries) * RQ_WQE_SIZE as u64;
            self.check_client_memory(owner, new.rq_ring, len, true)?;
        }
        let (reg, device) = (&self.reg, &self.device);
        let qpn = self
            .ids
            .qpn(|q| reg.is_taken(Id::Qp(q)) || device.has_tombstone(q))
            .ok_or_else(|| ReqError::nomem("no free qp number"))?;
        self.device.create_qp(QpInit {
            owner,
            qpn,
            qp_type: new.qp_type,
            pd: new.pd,
            send_cq: new.send_cq,
            recv_cq: new.recv_cq,
            srq: new.srq,
            cap,
            sq_sig_all: new.sq_sig_all,
        })?;
        let rings = QpRings {
            qpn,
            ctrl: new.ctrl,
            sq: WqRing::new(new.sq_ring, sq_entries),
            rq: new
                .srq
                .is_none()
                .then(|| WqRing::new(new.rq_ring, rq_entries)),
            send_cq: new.send_cq,
            recv_cq: new.recv_cq,
        };
        self.reg.add_qp(sid, rings);
        Ok(Response::Qp { qpn })
    }

    fn modify_qp(&mut self, sid: SessionId, qpn: Qpn, attr: &QpAttr, mask: AttrMask) -> Res {
        self.own(sid, "qp", qpn, Objects::qp)?;
        if mask.0 & AttrMask::CAP.0 != 0 {
            // The rings were sized at creation: a QP may not grow past them.
            let now = self.device.query_qp(qpn)?.cap;
            check_cap(&attr.cap, Some(&now))?;
        }
        self.device.modify_qp(self.now, qpn, attr, mask)?;
        // Receives posted before the QP could take them, sends held back.
        self.data.wake(Wq::Sq(qpn));
        self.data.wake(Wq::Rq(qpn));
        Ok(Response::Ok)
    }

    fn destroy_qp(&mut self, sid: SessionId, qpn: Qpn) -> Res {
        self.own(sid, "qp", qpn, Objects::qp)?;
        self.device.destroy_qp(qpn)?;
        self.reg.remove_qp(sid, qpn);
        self.data.forget_qp(qpn);
        Ok(Response::Ok)
    }
}

/// Refuses QP capabilities beyond the device's limits (or, on a modify,
/// beyond what the QP has: its rings do not grow).
fn check_cap(cap: &QpCap, current: Option<&QpCap>) -> Result<(), ReqError> {
    if cap.max_send_wr > limits::MAX_QP_WR
        || cap.max_recv_wr > limits::MAX_QP_WR
        || cap.max_send_sge as usize > ring::MAX_SEND_SGE
        || cap.max_recv_sge as usize > ring::MAX_RECV_SGE
        || cap.max_inline_data > limits::MAX_INLINE_DATA
    {
        return Err(ReqError::inval(format!(
            "qp capabilities {cap:?} exceed the device's limits \
             ({} wrs, {} send / {} recv sges, {} inline bytes)",
            limits::MAX_QP_WR,
            ring::MAX_SEND_SGE,
            ring::MAX_RECV_SGE,
            limits::MAX_INLINE_DATA
        )));
    }
    if let Some(c) = current {
        if cap.max_send_wr > c.max_send_wr
            || cap.max_recv_wr > c.max_recv_wr
            || cap.max_send_sge > c.max_send_sge
            || cap.max_recv_sge > c.max_recv_sge
            || cap.max_inline_data > c.max_inline_data
        {
            return Err(ReqError::inval(format!(
                "qp capabilities {cap:?} exceed those it was created with {c:?}"
            )));
        }
    }
    Ok(())
}
