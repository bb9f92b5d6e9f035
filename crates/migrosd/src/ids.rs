//! Random identifiers (see the crate docs for the scheme).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use migros_transport::{Qpn, MAX_QPN};

/// Draws identifiers; callers retry while a value is taken. rkeys are the
/// only protection of remote memory and QPNs and session ids address
/// objects, so they come from a CSPRNG: ChaCha (rand's `StdRng`) seeded
/// from the operating system's (getrandom).
#[derive(Debug)]
pub struct Ids {
    rng: StdRng,
}

/// Draws before giving up on finding a free identifier.
const ATTEMPTS: usize = 64;

impl Ids {
    pub fn new() -> Ids {
        Ids {
            rng: StdRng::from_entropy(),
        }
    }

    /// A QPN in `2..=MAX_QPN` for which `taken` is false.
    pub fn qpn(&mut self, taken: impl Fn(Qpn) -> bool) -> Option<Qpn> {
        (0..ATTEMPTS)
            .map(|_| self.rng.gen_range(2..=MAX_QPN))
            .find(|q| !taken(*q))
    }

    /// A non-zero `u32` for which `taken` is false.
    pub fn u32(&mut self, taken: impl Fn(u32) -> bool) -> Option<u32> {
        (0..ATTEMPTS)
            .map(|_| self.rng.gen_range(1..=u32::MAX))
            .find(|v| !taken(*v))
    }

    /// A non-zero `u64` for which `taken` is false.
    pub fn u64(&mut self, taken: impl Fn(u64) -> bool) -> Option<u64> {
        (0..ATTEMPTS)
            .map(|_| self.rng.gen_range(1..=u64::MAX))
            .find(|v| !taken(*v))
    }
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qpns_are_valid_and_avoid_taken_ones() {
        let mut ids = Ids::new();
        for _ in 0..1000 {
            let q = ids.qpn(|q| q % 2 == 0).unwrap();
            assert!((2..=MAX_QPN).contains(&q) && q % 2 == 1);
        }
        assert_eq!(ids.u32(|_| true), None);
        assert_ne!(ids.u32(|_| false), Some(0));
    }
}
