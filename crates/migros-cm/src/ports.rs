//! Port bindings of one device, per port space: which (address, port)
//! pairs are taken, with the kernel RDMA CM's conflict rules
//! (`cma_check_port`): two bindings of one port conflict unless both asked
//! for address reuse; a wildcard address overlaps everything
//! (EADDRNOTAVAIL), equal addresses collide (EADDRINUSE). Port 0 asks for
//! an ephemeral port, drawn at random from Linux's default local range.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rand::Rng;

use crate::cma::PortSpace;
use crate::error::CmError;

/// Linux's default `ip_local_port_range`.
pub const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// Handle of a binding.
pub type BindId = u32;

#[derive(Debug, Clone)]
struct Binding {
    id: BindId,
    /// `None`: the wildcard address.
    addr: Option<IpAddr>,
    reuse: bool,
}

/// Where a binding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub ps: PortSpace,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub owner: u64,
    pub reuse: bool,
}

/// The bindings of a device.
#[derive(Debug, Default)]
pub struct Ports {
    by_port: BTreeMap<(PortSpace, u16), Vec<Binding>>,
    by_id: BTreeMap<BindId, Bound>,
    next_id: BindId,
}

/// Error of a conflict: EADDRNOTAVAIL when a wildcard is involved
/// (reported as [`CmError::NoPort`]), EADDRINUSE otherwise.
fn conflict(a: Option<IpAddr>, b: Option<IpAddr>) -> Option<CmError> {
    match (a, b) {
        (None, _) | (_, None) => Some(CmError::NoPort),
        (Some(x), Some(y)) if x == y => Some(CmError::AddrInUse),
        _ => None,
    }
}

impl Ports {
    pub fn new() -> Ports {
        Ports::default()
    }

    /// Binds `addr:port` (`port` 0: an ephemeral one) in `ps` for `owner`.
    pub fn bind(
        &mut self,
        rng: &mut impl Rng,
        owner: u64,
        ps: PortSpace,
        addr: Option<IpAddr>,
        port: u16,
        reuse: bool,
    ) -> Result<(BindId, u16), CmError> {
        let port = if port == 0 {
            self.ephemeral(rng, ps, addr)?
        } else {
            self.check(ps, addr, port, reuse)?;
            port
        };
        self.next_id = self.next_id.wrapping_add(1).max(1);
        while self.by_id.contains_key(&self.next_id) {
            self.next_id = self.next_id.wrapping_add(1).max(1);
        }
        let id = self.next_id;
        self.insert(id, owner, ps, addr, port, reuse);
        Ok((id, port))
    }

    /// Whether `addr:port` can be bound in `ps` now.
    pub fn check(
        &self,
        ps: PortSpace,
        addr: Option<IpAddr>,
        port: u16,
        reuse: bool,
    ) -> Result<(), CmError> {
        if let Some(list) = self.by_port.get(&(ps, port)) {
            for b in list {
                if reuse && b.reuse {
                    continue;
                }
                if let Some(e) = conflict(addr, b.addr) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Binds with a given handle (a restored binding keeps its handle).
    pub fn bind_as(&mut self, id: BindId, b: Bound) -> Result<(), CmError> {
        if id == 0 || self.by_id.contains_key(&id) {
            return Err(CmError::AddrInUse);
        }
        self.check(b.ps, b.addr, b.port, b.reuse)?;
        self.insert(id, b.owner, b.ps, b.addr, b.port, b.reuse);
        Ok(())
    }

    /// The bindings of `owner`.
    pub fn of_owner(&self, owner: u64) -> Vec<(BindId, Bound)> {
        self.by_id
            .iter()
            .filter(|(_, b)| b.owner == owner)
            .map(|(id, b)| (*id, *b))
            .collect()
    }

    fn insert(
        &mut self,
        id: BindId,
        owner: u64,
        ps: PortSpace,
        addr: Option<IpAddr>,
        port: u16,
        reuse: bool,
    ) {
        self.by_port
            .entry((ps, port))
            .or_default()
            .push(Binding { id, addr, reuse });
        self.by_id.insert(
            id,
            Bound {
                ps,
                addr,
                port,
                owner,
                reuse,
            },
        );
    }

    fn ephemeral(
        &self,
        rng: &mut impl Rng,
        ps: PortSpace,
        addr: Option<IpAddr>,
    ) -> Result<u16, CmError> {
        let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        let start = rng.gen_range(0..span);
        for i in 0..span {
            let port = EPHEMERAL.start() + ((start + i) % span) as u16;
            let free = self
                .by_port
                .get(&(ps, port))
                .is_none_or(|l| l.iter().all(|b| conflict(addr, b.addr).is_none()));
            if free {
                return Ok(port);
            }
        }
        Err(CmError::NoPort)
    }

    /// Where binding `id` is.
    pub fn get(&self, id: BindId) -> Option<Bound> {
        self.by_id.get(&id).copied()
    }

    /// Releases binding `id`.
    pub fn unbind(&mut self, id: BindId) {
        let Some(b) = self.by_id.remove(&id) else {
            return;
        };
        if let Some(list) = self.by_port.get_mut(&(b.ps, b.port)) {
            list.retain(|x| x.id != id);
            if list.is_empty() {
                self.by_port.remove(&(b.ps, b.port));
            }
        }
    }

    /// Releases every binding of `owner`.
    pub fn unbind_owner(&mut self, owner: u64) {
        let ids: Vec<BindId> = self
            .by_id
            .iter()
            .filter(|(_, b)| b.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.unbind(id);
        }
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn conflicts_follow_the_kernel() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let mut p = Ports::new();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let (id, port) = p
            .bind(&mut rng, 1, PortSpace::Tcp, Some(a), 7000, false)
            .unwrap();
        assert_eq!(port, 7000);
        assert_eq!(
            p.bind(&mut rng, 2, PortSpace::Tcp, Some(a), 7000, false),
            Err(CmError::AddrInUse)
        );
        assert_eq!(
            p.bind(&mut rng, 2, PortSpace::Tcp, None, 7000, false),
            Err(CmError::NoPort)
        );
        // Another address, another space: no conflict.
        assert!(p
            .bind(&mut rng, 2, PortSpace::Tcp, Some(b), 7000, false)
            .is_ok());
        assert!(p
            .bind(&mut rng, 2, PortSpace::Udp, Some(a), 7000, false)
            .is_ok());
        // Both reusing: fine.
        p.unbind(id);
        p.bind(&mut rng, 1, PortSpace::Ib, Some(a), 9, true)
            .unwrap();
        assert!(p.bind(&mut rng, 2, PortSpace::Ib, Some(a), 9, true).is_ok());
        // Ephemeral ports are in range and distinct.
        let (_, e1) = p.bind(&mut rng, 3, PortSpace::Tcp, None, 0, false).unwrap();
        let (_, e2) = p.bind(&mut rng, 3, PortSpace::Tcp, None, 0, false).unwrap();
        assert!(EPHEMERAL.contains(&e1) && EPHEMERAL.contains(&e2) && e1 != e2);
        p.unbind_owner(2);
        p.unbind_owner(3);
        assert_eq!(p.len(), 1);
    }
}
