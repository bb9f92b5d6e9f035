//! CQ and SRQ verbs beyond create and destroy: arming a CQ for its
//! completion event, resizing CQs and SRQs, the SRQ limit, and how much
//! of each work queue is outstanding (what bounds posting).

use super::{not_found, Device};
use crate::error::VerbsError;
use crate::queues::Arm;
use migros_proto::verbs::*;

/// An SRQ's attributes (`struct ibv_srq_attr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrqAttr {
    pub max_wr: u32,
    /// 0: the limit event is disarmed.
    pub limit: u32,
}

impl Device {
    /// `ibv_req_notify_cq`: the next completion (or the next solicited
    /// one) raises `CqNotify` once. Returns whether completions are
    /// waiting already (rxe's `IB_CQ_REPORT_MISSED_EVENTS`).
    pub fn req_notify_cq(&mut self, cq: Cqn, solicited_only: bool) -> Result<bool, VerbsError> {
        let q = self
            .objs
            .cqs
            .get_mut(&cq)
            .ok_or_else(|| not_found("cq", cq))?;
        q.arm(solicited_only);
        Ok(!q.entries.is_empty())
    }

    /// How the CQ is armed.
    pub fn cq_arm(&self, cq: Cqn) -> Option<Arm> {
        self.objs.cqs.get(&cq).map(|q| q.arm)
    }

    /// `ibv_resize_cq`: the CQ holds `capacity` completions from now on;
    /// fewer than it holds now is refused (rxe's `rxe_cq_chk_attr`).
    pub fn resize_cq(&mut self, cq: Cqn, capacity: u32) -> Result<(), VerbsError> {
        let q = self
            .objs
            .cqs
            .get_mut(&cq)
            .ok_or_else(|| not_found("cq", cq))?;
        if capacity == 0 || (capacity as usize) < q.entries.len() {
            return Err(VerbsError::InvalidArgument(format!(
                "a cq of {capacity} cannot hold its {} completions",
                q.entries.len()
            )));
        }
        q.capacity = capacity;
        Ok(())
    }

    /// `ibv_modify_srq` (rxe's `rxe_srq_chk_attr`): `max_wr` resizes the
    /// queue (not below what it holds, nor below an armed limit); `limit`
    /// arms the limit event (at most the queue's size; 0 disarms).
    pub fn modify_srq(
        &mut self,
        srq: Srqn,
        max_wr: Option<u32>,
        limit: Option<u32>,
    ) -> Result<(), VerbsError> {
        let s = self
            .objs
            .srqs
            .get_mut(&srq)
            .ok_or_else(|| not_found("srq", srq))?;
        let new_max = max_wr.unwrap_or(s.max_wr);
        let new_limit = limit.unwrap_or(s.limit);
        let invalid = |m: String| Err(VerbsError::InvalidArgument(m));
        if new_max == 0 || (new_max as usize) < s.queue.len() {
            return invalid(format!(
                "an srq of {new_max} cannot hold its {} receives",
                s.queue.len()
            ));
        }
        if new_limit > new_max {
            return invalid(format!("srq limit {new_limit} exceeds its size {new_max}"));
        }
        s.max_wr = new_max;
        s.limit = new_limit;
        Ok(())
    }

    /// `ibv_query_srq`: the SRQ's size and armed limit.
    pub fn query_srq(&self, srq: Srqn) -> Result<SrqAttr, VerbsError> {
        let s = self
            .objs
            .srqs
            .get(&srq)
            .ok_or_else(|| not_found("srq", srq))?;
        Ok(SrqAttr {
            max_wr: s.max_wr,
            limit: s.limit,
        })
    }

    /// Receives posted to the SRQ and not yet taken by a QP.
    pub fn srq_outstanding(&self, srq: Srqn) -> Option<usize> {
        self.objs.srqs.get(&srq).map(|s| s.queue.len())
    }

    /// Request PSNs QP `qpn` has sent and not yet seen acknowledged (RC:
    /// what a retransmission could resend), zero for UD and UC.
    pub fn qp_unacknowledged(&self, qpn: Qpn) -> Option<u32> {
        let qp = self.qps.get(&qpn)?;
        if qp.qp_type() != QpType::Rc {
            return Some(0);
        }
        Some(qp.req.high_psn.distance(qp.req.una).max(0) as u32)
    }

    /// Work requests of QP `qpn` posted and not yet completed: (send
    /// queue, receive queue). A receive being filled counts as posted.
    pub fn qp_outstanding(&self, qpn: Qpn) -> Option<(usize, usize)> {
        let qp = self.qps.get(&qpn)?;
        let filling = usize::from(
            qp.init.srq.is_none()
                && matches!(
                    qp.resp.current,
                    Some(crate::responder::Inbound::Send { .. })
                ),
        );
        Some((qp.req.sq.len(), qp.rq.len() + filling))
    }
}
