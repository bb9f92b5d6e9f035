//! 24-bit packet sequence numbers with wrap-around ordering.

use serde::{Deserialize, Serialize};

/// A packet sequence number: 24 bits that wrap from `0xff_ffff` to `0`.
///
/// Ordering is modular (like rxe's `psn_compare` or smoltcp's `SeqNumber`),
/// so `Psn` deliberately has no `PartialOrd`/`Ord`: compare with
/// [`Psn::is_before`], [`Psn::is_after`] or [`Psn::distance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Psn(u32);

impl Psn {
    /// The 24 bits a PSN occupies.
    pub const MASK: u32 = 0x00ff_ffff;

    /// Makes a PSN from the low 24 bits of `v`; higher bits are dropped.
    pub fn new(v: u32) -> Psn {
        Psn(v & Self::MASK)
    }

    /// The PSN as an integer in `0..=0xff_ffff`.
    pub fn value(self) -> u32 {
        self.0
    }

    /// `self + n`, wrapping at 24 bits.
    #[allow(clippy::should_implement_trait)] // the name is part of the agreed API
    pub fn add(self, n: u32) -> Psn {
        Psn::new(self.0.wrapping_add(n))
    }

    /// `self - n`, wrapping at 24 bits.
    #[allow(clippy::should_implement_trait)] // the name is part of the agreed API
    pub fn sub(self, n: u32) -> Psn {
        Psn::new(self.0.wrapping_sub(n))
    }

    /// The signed distance `self - other`, in `-2^23..2^23`.
    ///
    /// Computed as rxe's `psn_compare`: the 24-bit difference sign-extended,
    /// so a difference of exactly `2^23` counts as negative.
    pub fn distance(self, other: Psn) -> i32 {
        // Shift the 24-bit difference into the top of an i32, then shift it
        // back arithmetically to sign-extend.
        ((self.0.wrapping_sub(other.0) << 8) as i32) >> 8
    }

    /// Whether `self` comes before `other` in sequence order.
    pub fn is_before(self, other: Psn) -> bool {
        self.distance(other) < 0
    }

    /// Whether `self` comes after `other` in sequence order.
    pub fn is_after(self, other: Psn) -> bool {
        self.distance(other) > 0
    }
}

impl std::fmt::Display for Psn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#08x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_masks_to_24_bits() {
        assert_eq!(Psn::new(0x1ff_ffff).value(), 0xff_ffff);
        assert_eq!(Psn::new(0x0100_0000).value(), 0);
    }

    #[test]
    fn wraps_at_24_bits() {
        let last = Psn::new(0xff_ffff);
        assert_eq!(last.add(1), Psn::new(0));
        assert_eq!(last.add(3), Psn::new(2));
        assert_eq!(Psn::new(0).sub(1), last);
        assert_eq!(Psn::new(1).sub(3), Psn::new(0xff_fffe));
    }

    #[test]
    fn ordering_across_wrap() {
        let last = Psn::new(0xff_ffff);
        let zero = Psn::new(0);
        assert!(last.is_before(zero));
        assert!(zero.is_after(last));
        assert_eq!(zero.distance(last), 1);
        assert_eq!(last.distance(zero), -1);
        assert!(!zero.is_before(zero) && !zero.is_after(zero));
        assert_eq!(Psn::new(5).distance(Psn::new(0xff_fffb)), 10);
    }

    #[test]
    fn distance_range_edges() {
        let zero = Psn::new(0);
        assert_eq!(Psn::new(0x7f_ffff).distance(zero), 0x7f_ffff);
        assert_eq!(Psn::new(0x80_0000).distance(zero), -0x80_0000);
        assert!(Psn::new(0x80_0001).is_before(zero));
    }

    #[test]
    fn display_is_hex() {
        let p = Psn::new(0x123456);
        assert_eq!(format!("{p}"), "0x123456");
    }
}
