//! The verbs objects of one session, as the daemon tracks them: protection
//! domains, memory regions, CQ, SRQ and QP rings, completion channels.
//!
//! A set that belongs to a session is only reachable read-only (through
//! [`super::Session::objects`]); objects join or leave it through the
//! [`super::Registry`], which indexes their identifiers. A detached set
//! (a restore builds one from an image) may be filled freely, then adopted.

use std::collections::{BTreeMap, BTreeSet};

use migros_proto::admin::SessionIds;
use migros_proto::msg::ChannelId;
use migros_transport::{Cqn, OwnerId, Pdn, Qpn, Srqn};

use super::{Id, SessionId};
use crate::rings::{CqRing, QpRings, SrqRing, Wq};

/// A memory region (by its lkey in [`Objects`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mr {
    pub rkey: u32,
    /// Start address in the client (the key of its read-ahead region).
    pub addr: u64,
}

/// A completion channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Channel {
    /// Token of the attached channel connection.
    pub conn: Option<usize>,
    /// Inode of the client's end of the channel connection (0: none yet).
    pub inode: u64,
}

/// Everything one session owns.
#[derive(Debug, Default)]
pub struct Objects {
    pub(super) pds: BTreeSet<Pdn>,
    pub(super) mrs: BTreeMap<u32, Mr>,
    pub(super) cqs: BTreeMap<Cqn, CqRing>,
    pub(super) srqs: BTreeMap<Srqn, SrqRing>,
    pub(super) qps: BTreeMap<Qpn, QpRings>,
    pub(super) channels: BTreeMap<ChannelId, Channel>,
}

impl Objects {
    // ---- filling a detached set ----

    pub fn insert_pd(&mut self, pd: Pdn) {
        self.pds.insert(pd);
    }

    pub fn insert_mr(&mut self, lkey: u32, mr: Mr) {
        self.mrs.insert(lkey, mr);
    }

    pub fn insert_cq(&mut self, cq: CqRing) {
        self.cqs.insert(cq.cq, cq);
    }

    pub fn insert_srq(&mut self, srq: SrqRing) {
        self.srqs.insert(srq.srq, srq);
    }

    pub fn insert_qp(&mut self, qp: QpRings) {
        self.qps.insert(qp.qpn, qp);
    }

    pub fn insert_channel(&mut self, id: ChannelId, channel: Channel) {
        self.channels.insert(id, channel);
    }

    // ---- reading ----

    /// Whether the set holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.pds.is_empty()
            && self.mrs.is_empty()
            && self.cqs.is_empty()
            && self.srqs.is_empty()
            && self.qps.is_empty()
            && self.channels.is_empty()
    }

    pub fn has_pd(&self, pd: Pdn) -> bool {
        self.pds.contains(&pd)
    }

    pub fn pds(&self) -> impl Iterator<Item = Pdn> + '_ {
        self.pds.iter().copied()
    }

    pub fn mr(&self, lkey: u32) -> Option<&Mr> {
        self.mrs.get(&lkey)
    }

    /// Memory regions by lkey.
    pub fn mrs(&self) -> impl Iterator<Item = (u32, &Mr)> {
        self.mrs.iter().map(|(l, m)| (*l, m))
    }

    pub fn cq(&self, cq: Cqn) -> Option<&CqRing> {
        self.cqs.get(&cq)
    }

    pub fn cqs(&self) -> impl Iterator<Item = &CqRing> {
        self.cqs.values()
    }

    pub fn srq(&self, srq: Srqn) -> Option<&SrqRing> {
        self.srqs.get(&srq)
    }

    pub fn srqs(&self) -> impl Iterator<Item = &SrqRing> {
        self.srqs.values()
    }

    pub fn qp(&self, qpn: Qpn) -> Option<&QpRings> {
        self.qps.get(&qpn)
    }

    pub fn qps(&self) -> impl Iterator<Item = &QpRings> {
        self.qps.values()
    }

    pub fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(&id)
    }

    pub fn channels(&self) -> impl Iterator<Item = (ChannelId, &Channel)> {
        self.channels.iter().map(|(id, c)| (*id, c))
    }

    /// Tokens of the attached channel connections.
    pub fn channel_conns(&self) -> impl Iterator<Item = usize> + '_ {
        self.channels.values().filter_map(|c| c.conn)
    }

    /// Every work queue with a ring: each QP's send queue, its receive
    /// queue unless it uses an SRQ, and each SRQ.
    pub fn work_queues(&self) -> impl Iterator<Item = Wq> + '_ {
        let qps = self.qps.values().flat_map(|q| {
            let rq = q.rq.map(|_| Wq::Rq(q.qpn));
            std::iter::once(Wq::Sq(q.qpn)).chain(rq)
        });
        qps.chain(self.srqs.keys().map(|s| Wq::Srq(*s)))
    }

    /// The identifiers of the set, as those of session `session` of
    /// `owner` (for a restore's checks and `migros migrate`).
    pub fn ids(&self, session: SessionId, owner: OwnerId) -> SessionIds {
        SessionIds {
            session,
            owner,
            qpns: self.qps.keys().copied().collect(),
            keys: self.mrs.iter().flat_map(|(l, m)| [*l, m.rkey]).collect(),
            pds: self.pds.iter().copied().collect(),
            cqs: self.cqs.keys().copied().collect(),
            srqs: self.srqs.keys().copied().collect(),
            channels: self.channels.keys().copied().collect(),
        }
    }

    /// Every identifier the set holds (lkeys and rkeys as memory keys).
    pub(super) fn index_ids(&self) -> impl Iterator<Item = Id> + '_ {
        let pds = self.pds.iter().map(|p| Id::Pd(*p));
        let keys = self
            .mrs
            .iter()
            .flat_map(|(l, m)| [Id::Key(*l), Id::Key(m.rkey)]);
        let cqs = self.cqs.keys().map(|c| Id::Cq(*c));
        let srqs = self.srqs.keys().map(|s| Id::Srq(*s));
        let qps = self.qps.keys().map(|q| Id::Qp(*q));
        let channels = self.channels.keys().map(|c| Id::Channel(*c));
        pds.chain(keys)
            .chain(cqs)
            .chain(srqs)
            .chain(qps)
            .chain(channels)
    }
}
