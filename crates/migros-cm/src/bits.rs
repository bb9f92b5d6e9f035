//! Bit fields as the InfiniBand specification numbers them: a field starts
//! at `Byte[Bit]`, bit 0 being the most significant bit of the byte, and
//! runs `width` bits towards the less significant ones, possibly into the
//! following bytes (IBA vol. 1, chapter 12 tables; the kernel's
//! `IBA_FIELD*_LOC` macros describe the same fields).
//!
//! One [`Field`] table per message (see `msg.rs`) is read by the parser and
//! written by the emitter, so the two cannot disagree.

/// A field of at most 64 bits inside a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// First byte.
    pub byte: usize,
    /// First bit inside that byte, 0 = most significant.
    pub bit: u8,
    /// Width in bits, 1..=64.
    pub width: u8,
}

impl Field {
    /// A field starting on a byte boundary.
    pub const fn at(byte: usize, width: u8) -> Field {
        Field {
            byte,
            bit: 0,
            width,
        }
    }

    /// A field starting at `Byte[Bit]`.
    pub const fn bits(byte: usize, bit: u8, width: u8) -> Field {
        Field { byte, bit, width }
    }

    /// Largest value the field holds.
    pub const fn max(self) -> u64 {
        if self.width >= 64 {
            u64::MAX
        } else {
            (1u64 << self.width) - 1
        }
    }

    /// Bytes the field touches: `byte..end()`.
    pub const fn end(self) -> usize {
        self.byte + (self.bit as usize + self.width as usize).div_ceil(8)
    }

    /// Reads the field; `None` if `buf` is too short.
    pub fn get(self, buf: &[u8]) -> Option<u64> {
        let bytes = buf.get(self.byte..self.end())?;
        let mut acc: u128 = 0;
        for b in bytes {
            acc = (acc << 8) | u128::from(*b);
        }
        let total = bytes.len() * 8;
        let shift = total - self.bit as usize - self.width as usize;
        Some(((acc >> shift) as u64) & self.max())
    }

    /// Writes `value` (truncated to the width) and leaves the other bits of
    /// the touched bytes alone; `false` if `buf` is too short.
    pub fn set(self, buf: &mut [u8], value: u64) -> bool {
        let Some(bytes) = buf.get_mut(self.byte..self.end()) else {
            return false;
        };
        let total = bytes.len() * 8;
        let shift = total - self.bit as usize - self.width as usize;
        let mask = u128::from(self.max()) << shift;
        let mut acc: u128 = 0;
        for b in bytes.iter() {
            acc = (acc << 8) | u128::from(*b);
        }
        acc = (acc & !mask) | ((u128::from(value & self.max()) << shift) & mask);
        for (i, b) in bytes.iter_mut().rev().enumerate() {
            *b = (acc >> (8 * i)) as u8;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_layouts() {
        // CM_REQ_LOCAL_QPN is FIELD32_LOC(32, 24): the top 24 bits of the
        // big-endian word at 32; byte 35 is someone else's.
        let mut b = [0u8; 40];
        b[35] = 0xaa;
        Field::at(32, 24).set(&mut b, 0x12_3456);
        assert_eq!(&b[32..36], &[0x12, 0x34, 0x56, 0xaa]);
        // CM_REQ_TRANSPORT_SERVICE_TYPE is BLOC(43, 5, 2): bits 2..1.
        let mut b = [0xffu8; 44];
        Field::bits(43, 5, 2).set(&mut b, 0);
        assert_eq!(b[43], 0b1111_1001);
        assert_eq!(Field::bits(43, 0, 5).get(&b), Some(0b11111));
        // CM_REQ_PRIMARY_FLOW_LABEL is FIELD32_LOC(88, 20): spans 2.5 bytes.
        let mut b = [0u8; 92];
        Field::at(88, 20).set(&mut b, 0xabcde);
        assert_eq!(&b[88..92], &[0xab, 0xcd, 0xe0, 0]);
        assert_eq!(Field::at(88, 20).get(&b), Some(0xabcde));
        // 64-bit fields (service id) and short buffers.
        let mut b = [0u8; 16];
        Field::at(8, 64).set(&mut b, 0x0000_0000_0106_4a4b);
        assert_eq!(&b[8..16], &[0, 0, 0, 0, 1, 6, 0x4a, 0x4b]);
        assert_eq!(Field::at(8, 64).get(&b[..15]), None);
        assert!(!Field::at(8, 64).set(&mut b[..15], 1));
    }

    proptest! {
        #[test]
        fn set_then_get(byte in 0usize..8, bit in 0u8..8, width in 1u8..=56, v: u64, fill: u8) {
            let f = Field::bits(byte, bit, width);
            let mut b = [fill; 24];
            let before = b;
            prop_assert!(f.set(&mut b, v));
            prop_assert_eq!(f.get(&b), Some(v & f.max()));
            // Bits outside the field are untouched.
            let mut again = b;
            f.set(&mut again, before_value(&before, f));
            prop_assert_eq!(again, before);
        }
    }

    fn before_value(b: &[u8], f: Field) -> u64 {
        f.get(b).unwrap()
    }
}
