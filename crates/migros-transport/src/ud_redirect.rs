//! Where UD QPs that migrated went, as this device learned it: keyed by the
//! (address, QPN) a sender addresses, so a redirect only ever changes sends
//! to the node that told it (the tombstone on the QP's old node), bounded
//! in number and expiring (the tombstone tells again after that).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::time::Instant;
use migros_proto::verbs::Qpn;

/// Most redirects a device keeps.
pub(crate) const MAX_UD_REDIRECTS: usize = 1024;

/// (old address, QPN) → (new address, expiry).
#[derive(Debug, Default)]
pub(crate) struct UdRedirects {
    map: BTreeMap<(IpAddr, Qpn), (IpAddr, Instant)>,
}

impl UdRedirects {
    /// Where a send to `qpn` at `addr` goes instead, if it was redirected.
    pub fn lookup(&self, now: Instant, addr: IpAddr, qpn: Qpn) -> Option<IpAddr> {
        self.map
            .get(&(addr, qpn))
            .filter(|(_, expires)| *expires > now)
            .map(|(to, _)| *to)
    }

    /// Learns that `qpn` at `from` now lives at `to`, for `ttl`. False
    /// when the table is full of live entries.
    pub fn learn(
        &mut self,
        now: Instant,
        from: IpAddr,
        qpn: Qpn,
        to: IpAddr,
        ttl: Duration,
    ) -> bool {
        let key = (from, qpn);
        if !self.map.contains_key(&key) && self.map.len() >= MAX_UD_REDIRECTS {
            self.map.retain(|_, (_, expires)| *expires > now);
            if self.map.len() >= MAX_UD_REDIRECTS {
                return false;
            }
        }
        self.map.insert(key, (to, now + ttl));
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, i])
    }

    #[test]
    fn redirects_are_per_address_bounded_and_expire() {
        let mut r = UdRedirects::default();
        let ttl = Duration::from_secs(1);
        assert!(r.learn(Instant::ZERO, addr(1), 7, addr(2), ttl));
        assert_eq!(r.lookup(Instant::ZERO, addr(1), 7), Some(addr(2)));
        assert_eq!(
            r.lookup(Instant::ZERO, addr(3), 7),
            None,
            "keyed by address too"
        );
        assert_eq!(r.lookup(Instant::ZERO + ttl, addr(1), 7), None, "expired");
        for i in 0..MAX_UD_REDIRECTS as u32 {
            r.learn(Instant::ZERO, addr(9), 100 + i, addr(2), ttl);
        }
        assert_eq!(r.len(), MAX_UD_REDIRECTS);
        assert!(!r.learn(Instant::ZERO, addr(9), 1, addr(2), ttl), "full");
        // Once they expire, room is made.
        assert!(r.learn(Instant::ZERO + ttl, addr(9), 1, addr(2), ttl));
        assert_eq!(r.len(), 1);
    }
}
