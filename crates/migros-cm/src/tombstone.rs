//! What stays on the old node when a process's CM connections migrate
//! away: a tombstone per connection, which forwards the peer's MADs to the
//! new node once told where it is, and keeps the ones that arrive before
//! (between the checkpoint and the forward) to send them on then. An
//! agent keeps them in [`CmTombstones`]: indexed by comm ID, by the peer's
//! (CA GUID, comm ID) (its resent REQs name only those) and by expiry,
//! bounded in number, each expiring once nobody needs it, as the
//! transport's QP tombstones do (`migros-transport` `tombstone.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::mad::MAD_LEN;
use crate::time::Instant;

/// Most CM tombstones an agent keeps: beyond, the one expiring first goes.
pub const MAX_CM_TOMBSTONES: usize = 1 << 16;
/// How long a CM tombstone lives after it was left, told where its
/// connection went, or last heard from its peer. The longest a peer keeps
/// resending a MAD is 15 resends of at most 2^23 ms (a REQ with the
/// largest response timeout); the RDMA CM's own (about 6 s × 15) and a
/// DREQ's are far shorter, so ten minutes after the last one the peer has
/// given up or reached the new node.
pub const CM_TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// How long a forwarded tombstone of a connection that has not ended lives
/// after it was forwarded or last heard from its peer. The peer sends
/// nothing on an established connection until it ends, and then sends its
/// DREQ (or DREP) to this node, which must still forward it: so such a
/// tombstone outlives [`CM_TOMBSTONE_TTL`] by far. A connection idle
/// longer than this after its move is disconnected by its peer without
/// the new node hearing of it (the new node's own DREQ still works).
pub const CM_TOMBSTONE_LIVE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most MADs a tombstone keeps while it does not know where its
/// connection went (the peer resends what is lost).
pub const MAX_HELD_MADS: usize = 16;

/// The remains of a migrated connection.
#[derive(Debug, Clone)]
pub(crate) struct CmTombstone {
    /// The peer's address: MADs from it keep the tombstone alive.
    pub peer_ip: IpAddr,
    /// The peer's (CA GUID, comm ID), when the connection had one.
    pub remote: Option<(u64, u32)>,
    /// Where the connection went, once known.
    pub forward: Option<IpAddr>,
    /// MADs that arrived before `forward` was known, oldest first.
    pub held: Vec<[u8; MAD_LEN]>,
    /// The connection ended (it was in time-wait or disconnecting when it
    /// left, or a DREQ, DREP or REJ went through since).
    pub ended: bool,
}

impl CmTombstone {
    /// How long it lives after something keeps it alive.
    fn ttl(&self) -> Duration {
        if self.forward.is_some() && !self.ended {
            CM_TOMBSTONE_LIVE_TTL
        } else {
            CM_TOMBSTONE_TTL
        }
    }
}

/// What a tombstone did with a MAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Send it on to this address.
    Forward(IpAddr),
    /// Kept until the tombstone is forwarded.
    Held,
    /// Dropped: the tombstone holds [`MAX_HELD_MADS`] already.
    Dropped,
}

/// The CM tombstones of an agent.
#[derive(Debug, Default)]
pub(crate) struct CmTombstones {
    by_id: BTreeMap<u32, (CmTombstone, Instant)>,
    by_remote: BTreeMap<(u64, u32), u32>,
    by_expiry: BTreeSet<(Instant, u32)>,
}

impl CmTombstones {
    /// Leaves `t` for comm ID `id` at `now`. Returns the ID of a tombstone
    /// dropped to make room, if one was.
    pub fn insert(&mut self, now: Instant, id: u32, t: CmTombstone) -> Option<u32> {
        self.remove(id);
        let dropped = if self.by_id.len() >= MAX_CM_TOMBSTONES {
            self.by_expiry.first().map(|&(_, old)| old)
        } else {
            None
        };
        if let Some(old) = dropped {
            self.remove(old);
        }
        let expires = now + t.ttl();
        if let Some(r) = t.remote {
            self.by_remote.insert(r, id);
        }
        self.by_id.insert(id, (t, expires));
        self.by_expiry.insert((expires, id));
        dropped
    }

    pub fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The tombstone of the connection the peer (CA GUID, comm ID) had.
    pub fn by_remote(&self, remote: (u64, u32)) -> Option<u32> {
        self.by_remote.get(&remote).copied()
    }

    pub fn remove(&mut self, id: u32) -> Option<CmTombstone> {
        let (t, expires) = self.by_id.remove(&id)?;
        self.by_expiry.remove(&(expires, id));
        if let Some(r) = t.remote {
            if self.by_remote.get(&r) == Some(&id) {
                self.by_remote.remove(&r);
            }
        }
        Some(t)
    }

    /// `id`'s tombstone lives its TTL from `now` (a shorter one once its
    /// connection ended).
    fn refresh(&mut self, now: Instant, id: u32) {
        let Some((t, expires)) = self.by_id.get_mut(&id) else {
            return;
        };
        let new = now + t.ttl();
        if new != *expires {
            self.by_expiry.remove(&(*expires, id));
            *expires = new;
            self.by_expiry.insert((new, id));
        }
    }

    /// Tells `id`'s tombstone where its connection went: the MADs it held
    /// (to send there now). `None` if it has no tombstone.
    pub fn forward(&mut self, now: Instant, id: u32, to: IpAddr) -> Option<Vec<[u8; MAD_LEN]>> {
        let (t, _) = self.by_id.get_mut(&id)?;
        t.forward = Some(to);
        let held = std::mem::take(&mut t.held);
        self.refresh(now, id);
        Some(held)
    }

    /// A MAD for `id`'s connection arrived from `src` (`ends`: a DREQ,
    /// DREP or REJ): forwarded, held or dropped. One from the peer keeps
    /// the tombstone alive, for [`CM_TOMBSTONE_TTL`] once the connection
    /// ended. `None` if there is no tombstone.
    pub fn take(
        &mut self,
        now: Instant,
        id: u32,
        src: IpAddr,
        mad: &[u8],
        ends: bool,
    ) -> Option<Fate> {
        let (t, _) = self.by_id.get_mut(&id)?;
        let from_peer = t.peer_ip == src;
        let was_ended = t.ended;
        t.ended |= ends;
        let fate = match t.forward {
            Some(to) => Fate::Forward(to),
            None if t.held.len() < MAX_HELD_MADS && mad.len() == MAD_LEN => {
                let mut m = [0u8; MAD_LEN];
                m.copy_from_slice(mad);
                t.held.push(m);
                Fate::Held
            }
            None => Fate::Dropped,
        };
        if from_peer || t.ended != was_ended {
            self.refresh(now, id);
        }
        Some(fate)
    }

    /// Drops the tombstones expired at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(expires, id)) = self.by_expiry.first() {
            if expires > now {
                break;
            }
            self.remove(id);
            n += 1;
        }
        n
    }

    /// When the next tombstone expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn stone(peer: u8) -> CmTombstone {
        CmTombstone {
            peer_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, peer)),
            remote: Some((0xabc, u32::from(peer))),
            forward: None,
            held: Vec::new(),
            ended: false,
        }
    }

    #[test]
    fn a_full_table_drops_the_one_expiring_first() {
        let mut t = CmTombstones::default();
        let t0 = Instant::from_nanos(0);
        for id in 1..=MAX_CM_TOMBSTONES as u32 {
            let at = t0 + Duration::from_millis(u64::from(id));
            assert_eq!(t.insert(at, id, stone(1)), None);
        }
        let at = t0 + Duration::from_secs(5);
        let new = MAX_CM_TOMBSTONES as u32 + 1;
        assert_eq!(t.insert(at, new, stone(2)), Some(1));
        assert_eq!(t.len(), MAX_CM_TOMBSTONES);
        assert!(!t.contains(1) && t.contains(2) && t.contains(new));
        assert_eq!(t.by_expiry.len(), t.by_id.len());
    }

    #[test]
    fn held_mads_are_bounded_and_given_back_on_forward() {
        let mut t = CmTombstones::default();
        let now = Instant::from_nanos(0);
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        t.insert(now, 7, stone(1));
        for i in 0..MAX_HELD_MADS {
            assert_eq!(
                t.take(now, 7, peer, &[i as u8; MAD_LEN], false),
                Some(Fate::Held)
            );
        }
        assert_eq!(
            t.take(now, 7, peer, &[0; MAD_LEN], false),
            Some(Fate::Dropped)
        );
        let to = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        let held = t.forward(now, 7, to).unwrap();
        assert_eq!(held.len(), MAX_HELD_MADS);
        assert_eq!(held[3][0], 3);
        assert_eq!(
            t.take(now, 7, peer, &[0; MAD_LEN], false),
            Some(Fate::Forward(to))
        );
        assert_eq!(t.take(now, 8, peer, &[0; MAD_LEN], false), None);
    }

    #[test]
    fn the_peer_keeps_a_tombstone_alive_and_strangers_do_not() {
        let mut t = CmTombstones::default();
        let t0 = Instant::from_nanos(0);
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        t.insert(t0, 1, stone(1));
        let mut two = stone(1);
        two.remote = Some((0xabc, 2));
        t.insert(t0, 2, two);
        let later = t0 + Duration::from_secs(300);
        t.take(later, 1, peer, &[0; MAD_LEN], false);
        t.take(later, 2, other, &[0; MAD_LEN], false);
        assert_eq!(t.expire(t0 + CM_TOMBSTONE_TTL), 1);
        assert!(t.contains(1) && !t.contains(2));
        assert_eq!(t.next_expiry(), Some(later + CM_TOMBSTONE_TTL));
        assert_eq!(t.by_remote((0xabc, 1)), Some(1));
        assert_eq!(t.expire(later + CM_TOMBSTONE_TTL), 1);
        assert_eq!(t.len(), 0);
        assert_eq!(t.by_remote((0xabc, 1)), None);
    }

    #[test]
    fn a_forwarded_live_connection_outlives_the_ttl_until_it_ends() {
        let mut t = CmTombstones::default();
        let t0 = Instant::from_nanos(0);
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let to = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        t.insert(t0, 1, stone(1));
        t.forward(t0, 1, to);
        assert_eq!(t.expire(t0 + 2 * CM_TOMBSTONE_TTL), 0);
        // The peer's DREQ, hours later: forwarded, and the end is near.
        let dreq = t0 + Duration::from_secs(5 * 3600);
        let fate = t.take(dreq, 1, peer, &[0; MAD_LEN], true);
        assert_eq!(fate, Some(Fate::Forward(to)));
        assert_eq!(t.next_expiry(), Some(dreq + CM_TOMBSTONE_TTL));
        assert_eq!(t.expire(dreq + CM_TOMBSTONE_TTL), 1);
        // One never ended goes after the long TTL.
        t.insert(t0, 2, stone(2));
        t.forward(t0, 2, to);
        assert_eq!(t.expire(t0 + CM_TOMBSTONE_LIVE_TTL), 1);
    }
}
