//! The verbs beyond creating and destroying objects: memory windows
//! (`AllocMw`, `DeallocMw`), resizing CQs and SRQs, querying SRQs, arming
//! CQs, and choosing the channel of the asynchronous events. The rules
//! (sizes, limits, errno values) are the transport's, after rxe; this
//! module moves the rings in client memory along.

use migros_proto::msg::{ChannelId, Response, SrqResize};
use migros_proto::ring::{self, CQE_SIZE, RQ_WQE_SIZE};
use migros_transport::{Cqn, MwType, OwnerId, Pdn, Srqn};

use super::dispatch::Res;
use super::Daemon;
use crate::errno::ReqError;
use crate::limits;
use crate::registry::{mw_base, Id, Objects, SessionId};
use crate::rings::{CqRing, Wq, WqRing};

impl Daemon {
    // ---- memory windows ----

    /// `ibv_alloc_mw`: a window whose index no region's rkey and no other
    /// window has; its first key byte is 0.
    pub(super) fn alloc_mw(
        &mut self,
        sid: SessionId,
        owner: OwnerId,
        pd: Pdn,
        mw_type: MwType,
    ) -> Res {
        self.own_pd(sid, pd)?;
        if self.objects(sid)?.0.mws().count() >= migros_proto::msg::MAX_MW as usize {
            return Err(ReqError::nomem("too many memory windows"));
        }
        // A region's rkey inside the index is the device's to refuse:
        // try a few indices before giving up.
        for _ in 0..8 {
            let reg = &self.reg;
            let base = self
                .ids
                .u32(|v| mw_base(v) == 0 || reg.is_taken(Id::Key(mw_base(v))))
                .map(mw_base)
                .ok_or_else(|| ReqError::nomem("no free memory window index"))?;
            if self.device.alloc_mw(owner, pd, mw_type, base).is_ok() {
                self.reg.add_mw(sid, base);
                return Ok(Response::Mw { rkey: base });
            }
        }
        Err(ReqError::nomem("no free memory window index"))
    }

    /// `ibv_dealloc_mw`, by any rkey the window has had.
    pub(super) fn dealloc_mw(&mut self, sid: SessionId, rkey: u32) -> Res {
        if !self.objects(sid)?.0.has_mw(rkey) {
            return Err(ReqError::noent(format!("no memory window {rkey:#x}")));
        }
        self.device.dealloc_mw(mw_base(rkey))?;
        self.reg.remove_mw(sid, rkey);
        Ok(Response::Ok)
    }

    // ---- CQs ----

    /// `ibv_req_notify_cq`: the transport arms the CQ (solicited only or
    /// not). Completions the transport holds that are not in the ring yet
    /// are new to the client: they owe the event when they reach it.
    pub(super) fn req_notify_cq(&mut self, sid: SessionId, cq: Cqn, solicited_only: bool) -> Res {
        self.own(sid, "cq", cq, Objects::cq)?;
        let waiting = self.device.req_notify_cq(cq, solicited_only)?;
        if waiting {
            if let Some(c) = self.reg.session_cq_mut(sid, cq) {
                c.armed = true;
            }
            self.data.completed(cq);
        }
        Ok(Response::Ok)
    }

    /// `ibv_resize_cq`: the completions in the old ring that the client
    /// has not polled move to the start of the new one, in order; the
    /// transport's CQ takes the new size. Fewer entries than those is
    /// EINVAL (rxe's `rxe_cq_chk_attr`).
    pub(super) fn resize_cq(
        &mut self,
        sid: SessionId,
        owner: OwnerId,
        cq: Cqn,
        entries: u32,
        ring_addr: u64,
        ctrl: u64,
    ) -> Res {
        self.own(sid, "cq", cq, Objects::cq)?;
        if !entries.is_power_of_two() || entries > limits::MAX_CQE {
            return Err(ReqError::inval(format!(
                "a cq ring of {entries} entries (a power of two up to {})",
                limits::MAX_CQE
            )));
        }
        self.check_client_memory(owner, ring_addr, u64::from(entries) * CQE_SIZE as u64, true)?;
        self.check_client_memory(owner, ctrl, ring::CQ_CTRL_SIZE as u64, true)?;
        let old = self
            .reg
            .session_cq_mut(sid, cq)
            .ok_or_else(|| ReqError::noent(format!("no cq {cq}")))?
            .clone();
        let mut ci = [0u8; 4];
        self.mem
            .read_now(owner, old.ctrl + ring::CQ_CTRL_CI, &mut ci)
            .map_err(|_| ReqError::new(libc::EFAULT, "the cq's control block is not readable"))?;
        let ci = u32::from_le_bytes(ci);
        let unpolled = old.pi.wrapping_sub(ci);
        if unpolled > old.entries {
            return Err(ReqError::inval(
                "the cq's consumer index is out of its ring",
            ));
        }
        if unpolled > entries {
            return Err(ReqError::inval(format!(
                "a cq of {entries} entries cannot hold its {unpolled} unpolled completions"
            )));
        }
        let mut wcs = Vec::with_capacity(unpolled as usize);
        let mut cqe = [0u8; CQE_SIZE];
        for k in 0..unpolled {
            let slot = ci.wrapping_add(k) & (old.entries - 1);
            let at = old.addr + u64::from(slot) * CQE_SIZE as u64;
            self.mem
                .read_now(owner, at, &mut cqe)
                .map_err(|_| ReqError::new(libc::EFAULT, "the cq ring is not readable"))?;
            let wc = ring::decode_cqe(&cqe)
                .map_err(|e| ReqError::inval(format!("a completion in the cq ring: {e}")))?;
            wcs.push(wc);
        }
        let capacity = u32::try_from(CqRing::queue_limit(entries)).unwrap_or(u32::MAX);
        self.device.resize_cq(cq, capacity)?;
        let mut new = CqRing::new(cq, ring_addr, entries, ctrl, old.channel);
        new.armed = old.armed;
        let mut scratch = Vec::new();
        if let Err(e) = new.write(&mut self.mem, owner, &wcs, &mut scratch) {
            // The client keeps its old ring: so does the daemon.
            let old_capacity = u32::try_from(CqRing::queue_limit(old.entries)).unwrap_or(u32::MAX);
            let _ = self.device.resize_cq(cq, old_capacity);
            return Err(ReqError::new(
                libc::EFAULT,
                format!("cannot write the new cq ring: {e}"),
            ));
        }
        if let Some(c) = self.reg.session_cq_mut(sid, cq) {
            *c = new;
        }
        self.data.completed(cq);
        Ok(Response::Ok)
    }

    // ---- SRQs ----

    /// `ibv_modify_srq`: both attributes checked by the transport before
    /// either applies. A resize first takes the old ring's receives up to
    /// the client's producer index, then reads the new ring from index 0.
    pub(super) fn modify_srq(
        &mut self,
        sid: SessionId,
        owner: OwnerId,
        srq: Srqn,
        limit: Option<u32>,
        resize: Option<SrqResize>,
    ) -> Res {
        self.own(sid, "srq", srq, Objects::srq)?;
        let Some(r) = resize else {
            self.device.modify_srq(srq, None, limit)?;
            return Ok(Response::Ok);
        };
        if !r.max_wr.is_power_of_two() || r.max_wr > limits::MAX_SRQ_WR {
            return Err(ReqError::inval(format!("srq of {} entries", r.max_wr)));
        }
        self.check_client_memory(
            owner,
            r.ring,
            u64::from(r.max_wr) * RQ_WQE_SIZE as u64,
            false,
        )?;
        self.check_client_memory(owner, r.ctrl, ring::SRQ_CTRL_SIZE as u64, true)?;
        let old = self
            .reg
            .session_srq_mut(sid, srq)
            .map(|s| s.rq)
            .ok_or_else(|| ReqError::noent(format!("no srq {srq}")))?;
        if !old.valid_pi(r.pi) {
            return Err(ReqError::inval("srq producer index out of its ring"));
        }
        let unread = r.pi.wrapping_sub(old.ci);
        let held = self.device.srq_outstanding(srq).unwrap_or(0) as u32;
        if held.saturating_add(unread) > r.max_wr {
            return Err(ReqError::inval(format!(
                "an srq of {} cannot hold its {} receives",
                r.max_wr,
                held + unread
            )));
        }
        self.device.modify_srq(srq, Some(r.max_wr), limit)?;
        if let Some(s) = self.reg.session_srq_mut(sid, srq) {
            s.rq.pi = r.pi;
        }
        // The old ring's receives go to the transport now (its queue has
        // room for them: checked above).
        self.data.wake(Wq::Srq(srq));
        self.pump(Some(sid));
        if let Some(s) = self.reg.session_srq_mut(sid, srq) {
            if s.rq.ci != r.pi {
                tracing::warn!(
                    srq,
                    "receives of the old srq ring were not taken before the resize"
                );
            }
            s.rq = WqRing::new(r.ring, r.max_wr);
            s.ctrl = r.ctrl;
        }
        Ok(Response::Ok)
    }

    /// `ibv_query_srq`.
    pub(super) fn query_srq(&mut self, sid: SessionId, srq: Srqn) -> Res {
        self.own(sid, "srq", srq, Objects::srq)?;
        let a = self.device.query_srq(srq)?;
        Ok(Response::SrqAttr {
            max_wr: a.max_wr,
            limit: a.limit,
        })
    }

    // ---- asynchronous events ----

    /// The session's asynchronous events go to `channel` from now on.
    pub(super) fn subscribe_async(&mut self, sid: SessionId, channel: ChannelId) -> Res {
        self.own(sid, "channel", channel, Objects::channel)?;
        self.reg.set_async_channel(sid, channel);
        Ok(Response::Ok)
    }
}
