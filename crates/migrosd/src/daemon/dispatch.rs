//! A session's control requests, each mapped onto the registry and the
//! device.

use migros_proto::msg::{Request, Response};
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_transport::{Access, MrSpec, QpInit};

use super::{Channel, Daemon, MrEntry, Wq};
use crate::errno::ReqError;
use crate::limits;
use crate::rings::{CqRing, QpRings, SrqRing, WqRing};

pub(super) type Res = Result<Response, ReqError>;

impl Daemon {
    pub(super) fn dispatch(&mut self, sid: u64, req: Request) -> Res {
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
}
