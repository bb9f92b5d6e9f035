//! Who owns what: every session with its objects, and one index from each
//! identifier (owner, PD, memory key, CQ, SRQ, QP, channel) to the session
//! holding it.
//!
//! A session's objects live in that session ([`Objects`]), so ending,
//! checkpointing or evicting a session are operations on one value
//! ([`Registry::close`], [`Registry::take_objects`]). The index answers
//! the data path's question "whose is this QP / CQ?" (doorbells,
//! completions, device events) and keeps identifiers unique on the device:
//! objects join and leave a session only through the registry, which
//! updates both in step.

mod objects;
mod session;

use std::collections::BTreeMap;

use migros_proto::admin::SessionIds;
use migros_proto::msg::ChannelId;
use migros_transport::{Cqn, OwnerId, Pdn, Qpn, Srqn};

pub use objects::{Channel, Mr, Objects};
pub use session::{Hold, Holder, Session};

use crate::rings::{CqRing, QpRings, SrqRing, Wq, WqRing};

/// A session's identifier (random, see the crate docs).
pub type SessionId = u64;

/// An identifier that is unique on the device. Memory keys (lkeys and
/// rkeys) share one space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    Owner(OwnerId),
    Pd(Pdn),
    Key(u32),
    Cq(Cqn),
    Srq(Srqn),
    Qp(Qpn),
    Channel(ChannelId),
}

/// The kinds of [`Id`], for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Owner = 0,
    Pd,
    Key,
    Cq,
    Srq,
    Qp,
    Channel,
}

const KINDS: usize = Kind::Channel as usize + 1;

impl Id {
    fn parts(self) -> (Kind, u64) {
        match self {
            Id::Owner(v) => (Kind::Owner, v),
            Id::Pd(v) => (Kind::Pd, v.into()),
            Id::Key(v) => (Kind::Key, v.into()),
            Id::Cq(v) => (Kind::Cq, v.into()),
            Id::Srq(v) => (Kind::Srq, v.into()),
            Id::Qp(v) => (Kind::Qp, v.into()),
            Id::Channel(v) => (Kind::Channel, v.into()),
        }
    }
}

/// Makes an [`Id`] of one kind from its value.
type IdOf = fn(u32) -> Id;

/// Every session of the daemon and the index of their identifiers.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: BTreeMap<SessionId, Session>,
    index: [BTreeMap<u64, SessionId>; KINDS],
    /// Memory regions of every session.
    mrs: usize,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    // ---- the index ----

    /// The session holding `id`.
    pub fn holder_of(&self, id: Id) -> Option<SessionId> {
        let (kind, v) = id.parts();
        self.index[kind as usize].get(&v).copied()
    }

    /// Whether `id` is in use on this device.
    pub fn is_taken(&self, id: Id) -> bool {
        self.holder_of(id).is_some()
    }

    /// How many identifiers of `kind` are in use.
    pub fn count(&self, kind: Kind) -> usize {
        self.index[kind as usize].len()
    }

    /// Memory regions on the device.
    pub fn mr_count(&self) -> usize {
        self.mrs
    }

    fn bind(&mut self, id: Id, sid: SessionId) {
        let (kind, v) = id.parts();
        self.index[kind as usize].insert(v, sid);
    }

    fn unbind(&mut self, id: Id) {
        let (kind, v) = id.parts();
        self.index[kind as usize].remove(&v);
    }

    /// The first identifier of `list` in use here, named for an error
    /// message ("session 0x…", "qp 0x12"): `migros migrate` asks before
    /// anything freezes.
    pub fn collision(&self, list: &[SessionIds]) -> Option<String> {
        for ids in list {
            if self.sessions.contains_key(&ids.session) {
                return Some(format!("session {:#x}", ids.session));
            }
            if let Some(found) = self.id_collision(ids) {
                return Some(found);
            }
        }
        None
    }

    /// Like [`Registry::collision`] for one set of identifiers, leaving
    /// out its session id (a restore brings objects into a session that
    /// exists).
    pub fn id_collision(&self, ids: &SessionIds) -> Option<String> {
        if self.is_taken(Id::Owner(ids.owner)) {
            return Some(format!("owner {:#x}", ids.owner));
        }
        let groups: [(&str, &[u32], IdOf); 6] = [
            ("qp", &ids.qpns, Id::Qp),
            ("memory key", &ids.keys, Id::Key),
            ("pd", &ids.pds, Id::Pd),
            ("cq", &ids.cqs, Id::Cq),
            ("srq", &ids.srqs, Id::Srq),
            ("channel", &ids.channels, Id::Channel),
        ];
        groups.into_iter().find_map(|(what, values, id)| {
            let v = values.iter().find(|v| self.is_taken(id(**v)))?;
            Some(format!("{what} {v:#x}"))
        })
    }

    // ---- sessions ----

    pub fn get(&self, sid: SessionId) -> Option<&Session> {
        self.sessions.get(&sid)
    }

    pub fn get_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(&sid)
    }

    pub fn contains(&self, sid: SessionId) -> bool {
        self.sessions.contains_key(&sid)
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Sessions of process `pid` (none for a pid that cannot be one).
    pub fn of_pid(&self, pid: i32) -> Vec<SessionId> {
        self.sessions
            .values()
            .filter(|s| s.pid == pid && pid > 0)
            .map(|s| s.id)
            .collect()
    }

    /// Adds a session that owns nothing yet; false (and nothing changes)
    /// when its id or owner is taken.
    pub fn open(&mut self, session: Session) -> bool {
        let sid = session.id;
        if self.sessions.contains_key(&sid) || self.is_taken(Id::Owner(session.owner)) {
            return false;
        }
        // A new session owns nothing (its objects come through the registry).
        debug_assert!(session.objects.is_empty());
        self.bind(Id::Owner(session.owner), sid);
        self.sessions.insert(sid, session);
        true
    }

    /// Removes a session with everything it owns.
    pub fn close(&mut self, sid: SessionId) -> Option<Session> {
        let objects = self.take_objects(sid);
        let mut s = self.sessions.remove(&sid)?;
        self.unbind(Id::Owner(s.owner));
        s.objects = objects;
        Some(s)
    }

    /// Gives session `sid` the transport owner `owner` (a restore adopts
    /// the image's).
    pub fn set_owner(&mut self, sid: SessionId, owner: OwnerId) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let old = std::mem::replace(&mut s.owner, owner);
        self.unbind(Id::Owner(old));
        self.bind(Id::Owner(owner), sid);
    }

    /// Takes every object of `sid` out of the registry (the session stays,
    /// owning nothing).
    pub fn take_objects(&mut self, sid: SessionId) -> Objects {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Objects::default();
        };
        let objects = std::mem::take(&mut s.objects);
        for id in objects.index_ids() {
            self.unbind(id);
        }
        self.mrs -= objects.mrs.len();
        objects
    }

    /// Gives `objects` to session `sid`. The caller checked that none of
    /// their identifiers is taken ([`Registry::collision`]).
    pub fn adopt(&mut self, sid: SessionId, objects: Objects) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        let ids: Vec<Id> = objects.index_ids().collect();
        let o = &mut s.objects;
        self.mrs += objects.mrs.len();
        o.pds.extend(objects.pds);
        o.mrs.extend(objects.mrs);
        o.cqs.extend(objects.cqs);
        o.srqs.extend(objects.srqs);
        o.qps.extend(objects.qps);
        o.channels.extend(objects.channels);
        for id in ids {
            self.bind(id, sid);
        }
    }

    /// The identifiers session `sid` holds.
    pub fn ids_of(&self, sid: SessionId) -> Option<SessionIds> {
        let s = self.sessions.get(&sid)?;
        Some(s.objects.ids(sid, s.owner))
    }

    // ---- one object of a session ----

    /// Runs `f` on the objects of `sid`, then indexes `new` for it.
    fn add(&mut self, sid: SessionId, new: &[Id], f: impl FnOnce(&mut Objects)) -> bool {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        f(&mut s.objects);
        for id in new {
            self.bind(*id, sid);
        }
        true
    }

    /// Takes an object out of the objects of `sid` with `f` and, when
    /// there was one, unindexes `id`.
    fn remove<T>(
        &mut self,
        sid: SessionId,
        id: Id,
        f: impl FnOnce(&mut Objects) -> Option<T>,
    ) -> Option<T> {
        let removed = f(&mut self.sessions.get_mut(&sid)?.objects)?;
        self.unbind(id);
        Some(removed)
    }

    pub fn add_pd(&mut self, sid: SessionId, pd: Pdn) -> bool {
        self.add(sid, &[Id::Pd(pd)], |o| o.insert_pd(pd))
    }

    pub fn remove_pd(&mut self, sid: SessionId, pd: Pdn) -> bool {
        let f = |o: &mut Objects| o.pds.remove(&pd).then_some(());
        self.remove(sid, Id::Pd(pd), f).is_some()
    }

    pub fn add_mr(&mut self, sid: SessionId, lkey: u32, mr: Mr) -> bool {
        let added = self.add(sid, &[Id::Key(lkey), Id::Key(mr.rkey)], |o| {
            o.insert_mr(lkey, mr)
        });
        self.mrs += usize::from(added);
        added
    }

    pub fn remove_mr(&mut self, sid: SessionId, lkey: u32) -> Option<Mr> {
        let mr = self.remove(sid, Id::Key(lkey), |o| o.mrs.remove(&lkey))?;
        self.unbind(Id::Key(mr.rkey));
        self.mrs -= 1;
        Some(mr)
    }

    pub fn add_cq(&mut self, sid: SessionId, cq: CqRing) -> bool {
        let id = Id::Cq(cq.cq);
        self.add(sid, &[id], |o| o.insert_cq(cq))
    }

    pub fn remove_cq(&mut self, sid: SessionId, cq: Cqn) -> Option<CqRing> {
        self.remove(sid, Id::Cq(cq), |o| o.cqs.remove(&cq))
    }

    pub fn add_srq(&mut self, sid: SessionId, srq: SrqRing) -> bool {
        let id = Id::Srq(srq.srq);
        self.add(sid, &[id], |o| o.insert_srq(srq))
    }

    pub fn remove_srq(&mut self, sid: SessionId, srq: Srqn) -> Option<SrqRing> {
        self.remove(sid, Id::Srq(srq), |o| o.srqs.remove(&srq))
    }

    pub fn add_qp(&mut self, sid: SessionId, qp: QpRings) -> bool {
        let id = Id::Qp(qp.qpn);
        self.add(sid, &[id], |o| o.insert_qp(qp))
    }

    pub fn remove_qp(&mut self, sid: SessionId, qpn: Qpn) -> Option<QpRings> {
        self.remove(sid, Id::Qp(qpn), |o| o.qps.remove(&qpn))
    }

    pub fn add_channel(&mut self, sid: SessionId, id: ChannelId, channel: Channel) -> bool {
        self.add(sid, &[Id::Channel(id)], |o| o.insert_channel(id, channel))
    }

    pub fn remove_channel(&mut self, sid: SessionId, id: ChannelId) -> Option<Channel> {
        self.remove(sid, Id::Channel(id), |o| o.channels.remove(&id))
    }

    // ---- by identifier, for the data path ----

    /// The session holding `id`, found through the index.
    fn holding(&mut self, id: Id) -> Option<&mut Session> {
        let sid = self.holder_of(id)?;
        self.sessions.get_mut(&sid)
    }

    /// QP `qpn` and its session.
    pub fn qp(&self, qpn: Qpn) -> Option<(&Session, &QpRings)> {
        let s = self.sessions.get(&self.holder_of(Id::Qp(qpn))?)?;
        Some((s, s.objects.qps.get(&qpn)?))
    }

    /// CQ `cq` and who holds it.
    pub fn cq_mut(&mut self, cq: Cqn) -> Option<(Holder, &mut CqRing)> {
        let s = self.holding(Id::Cq(cq))?;
        let holder = s.holder();
        Some((holder, s.objects.cqs.get_mut(&cq)?))
    }

    /// Channel `id` and who holds it.
    pub fn channel_mut(&mut self, id: ChannelId) -> Option<(Holder, &mut Channel)> {
        let s = self.holding(Id::Channel(id))?;
        let holder = s.holder();
        Some((holder, s.objects.channels.get_mut(&id)?))
    }

    /// The ring of work queue `wq`, who holds it, and where its consumer
    /// index goes in client memory.
    pub fn work_queue_mut(&mut self, wq: Wq) -> Option<(Holder, &mut WqRing, u64)> {
        let id = match wq {
            Wq::Sq(q) | Wq::Rq(q) => Id::Qp(q),
            Wq::Srq(s) => Id::Srq(s),
        };
        let s = self.holding(id)?;
        let holder = s.holder();
        let (ring, ci_at) = match wq {
            Wq::Sq(q) | Wq::Rq(q) => s.objects.qps.get_mut(&q)?.ring_mut(wq)?,
            Wq::Srq(srq) => s.objects.srqs.get_mut(&srq)?.ring_mut(),
        };
        Some((holder, ring, ci_at))
    }

    /// CQ `cq` of session `sid` (mutable ring state: arming, indices).
    pub fn session_cq_mut(&mut self, sid: SessionId, cq: Cqn) -> Option<&mut CqRing> {
        self.sessions.get_mut(&sid)?.objects.cqs.get_mut(&cq)
    }

    /// Channel `id` of session `sid`.
    pub fn session_channel_mut(&mut self, sid: SessionId, id: ChannelId) -> Option<&mut Channel> {
        self.sessions.get_mut(&sid)?.objects.channels.get_mut(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rings::WqRing;

    fn qp(qpn: Qpn, cq: Cqn) -> QpRings {
        QpRings {
            qpn,
            ctrl: 0x1000,
            sq: WqRing::new(0x2000, 4),
            rq: Some(WqRing::new(0x3000, 4)),
            send_cq: cq,
            recv_cq: cq,
        }
    }

    fn registry_with_one_session() -> Registry {
        let mut reg = Registry::new();
        assert!(reg.open(Session::new(7, 70, 1, 100, Hold::Running)));
        assert!(reg.add_pd(7, 1));
        assert!(reg.add_mr(
            7,
            10,
            Mr {
                rkey: 11,
                addr: 0x5000
            }
        ));
        assert!(reg.add_cq(7, CqRing::new(3, 0x4000, 8, 0x4800, Some(9))));
        assert!(reg.add_channel(7, 9, Channel::default()));
        assert!(reg.add_qp(7, qp(0x42, 3)));
        reg
    }

    #[test]
    fn objects_are_indexed_while_their_session_holds_them() {
        let mut reg = registry_with_one_session();
        for id in [
            Id::Owner(70),
            Id::Pd(1),
            Id::Key(10),
            Id::Key(11),
            Id::Cq(3),
            Id::Qp(0x42),
            Id::Channel(9),
        ] {
            assert_eq!(reg.holder_of(id), Some(7), "{id:?}");
        }
        assert_eq!(reg.mr_count(), 1);
        let (h, _, ci_at) = reg.work_queue_mut(Wq::Rq(0x42)).expect("rq");
        assert_eq!((h.session, h.owner, ci_at), (7, 70, 0x1004));
        assert!(reg.work_queue_mut(Wq::Srq(0x42)).is_none());
        assert_eq!(reg.remove_mr(7, 10).map(|m| m.rkey), Some(11));
        assert!(!reg.is_taken(Id::Key(11)) && reg.mr_count() == 0);
        assert!(reg.remove_qp(8, 0x42).is_none(), "another session's qp");
        assert!(reg.remove_qp(7, 0x42).is_some() && !reg.is_taken(Id::Qp(0x42)));
        assert!(reg.remove_pd(7, 1) && !reg.remove_pd(7, 1));
    }

    #[test]
    fn closing_a_session_frees_every_identifier() {
        let mut reg = registry_with_one_session();
        let s = reg.close(7).expect("session");
        assert_eq!(s.objects().qps().count(), 1);
        assert_eq!(s.objects().work_queues().count(), 2);
        for kind in [Kind::Owner, Kind::Pd, Kind::Key, Kind::Cq, Kind::Qp] {
            assert_eq!(reg.count(kind), 0, "{kind:?}");
        }
        assert_eq!(reg.mr_count(), 0);
    }

    #[test]
    fn taken_objects_can_be_adopted_again_and_collide_meanwhile() {
        let mut reg = registry_with_one_session();
        let ids = reg.ids_of(7).expect("ids");
        assert_eq!(ids.keys, vec![10, 11]);
        assert_eq!(
            reg.collision(std::slice::from_ref(&ids)),
            Some("session 0x7".into())
        );
        let objects = reg.take_objects(7);
        assert!(reg.get(7).is_some_and(|s| s.objects().is_empty()));
        let moved = SessionIds {
            session: 8,
            owner: 80,
            ..ids.clone()
        };
        assert_eq!(reg.collision(std::slice::from_ref(&moved)), None);
        reg.adopt(7, objects);
        assert_eq!(reg.collision(&[moved]), Some("qp 0x42".into()));
        reg.set_owner(7, 71);
        assert!(!reg.is_taken(Id::Owner(70)) && reg.holder_of(Id::Owner(71)) == Some(7));
        assert!(!reg.open(Session::new(8, 71, 2, 100, Hold::Running)));
    }
}
