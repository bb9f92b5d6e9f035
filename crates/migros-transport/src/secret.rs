//! The device's secrets: the connection key of each QP (what a RESUME must
//! carry, see [`crate::resume`]) and the nonces of key probes. They come
//! from a ChaCha generator (rand's `StdRng`) seeded by whoever builds the
//! device: the daemon seeds it from the operating system's CSPRNG, the
//! simulator from its run's seed (runs stay reproducible). The transport
//! itself reads no entropy, as it reads no clock.

use std::fmt;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// The 32-byte seed of a device's secrets. Its `Debug` hides the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct SecretSeed(pub [u8; 32]);

impl fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSeed(..)")
    }
}

/// Draws connection keys and nonces.
pub(crate) struct Secrets(StdRng);

impl Secrets {
    pub fn new(seed: SecretSeed) -> Secrets {
        Secrets(StdRng::from_seed(seed.0))
    }

    /// A non-zero 64-bit secret (0 means "none" in images).
    pub fn draw(&mut self) -> u64 {
        loop {
            let v = self.0.next_u64();
            if v != 0 {
                return v;
            }
        }
    }
}

impl Default for Secrets {
    fn default() -> Secrets {
        Secrets::new(SecretSeed::default())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(..)")
    }
}
