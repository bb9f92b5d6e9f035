//! CRC-32 as arithmetic in GF(2)[x] modulo the IEEE polynomial, for
//! changing or recovering a few bits of a message under its CRC without
//! reading the message again.
//!
//! The CRC is affine in its input: for messages `a` and `e` of equal length,
//! `crc(a ^ e) = crc(a) ^ crc0(e)`, where `crc0` is the CRC without the
//! initial value and final xor. If `e` is zero except for four bytes `f` at
//! `tail` bytes from the end, `crc0(e) = f(x) · x^(32 + 8·tail) mod P`:
//! leading zero bytes do not move a zero register, four bytes load it, and
//! each trailing zero byte multiplies it by `x^8`. Since `P(0) = 1`, `x` is
//! invertible modulo `P`, so the four bytes follow back from a CRC
//! difference: `f(x) = Δ · x^-(32 + 8·tail) mod P`.
//!
//! Polynomials are `u32`s in the reflected order of the IEEE CRC-32 (zlib,
//! crc32fast): bit 31 is the coefficient of `x^0`, bit 0 that of `x^31`.
//! Four message bytes `[b0, b1, b2, b3]` are the polynomial
//! `u32::from_le_bytes([b0, b1, b2, b3])`.

/// The IEEE polynomial without its `x^32` term, reflected.
const POLY: u32 = 0xedb8_8320;
/// `x^0` (the multiplicative identity).
const ONE: u32 = 1 << 31;
/// `x^-1 mod P`: `x^31 + (P + 1 - x^32)/x`. In reflected order dropping
/// `x^0` and dividing by `x` is a shift left; `x^31` is bit 0.
const X_INVERSE: u32 = ((POLY & !ONE) << 1) | 1;
/// `x^8` (a byte's worth of shifting).
const X8: u32 = ONE >> 8;

/// `a · b mod P`.
pub const fn mul(a: u32, b: u32) -> u32 {
    let mut product = 0;
    let mut b = b;
    let mut i = 0;
    while i < 32 {
        // Bit 31 - i of `a` is the coefficient of x^i; `b` is b·x^i here.
        if a & (ONE >> i) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
        i += 1;
    }
    product
}

/// `base^(2^i)` for i in 0..32, by repeated squaring.
const fn squarings(base: u32) -> [u32; 32] {
    let mut table = [0u32; 32];
    let mut p = base;
    let mut i = 0;
    while i < 32 {
        table[i] = p;
        p = mul(p, p);
        i += 1;
    }
    table
}

/// `x^(8·2^i)`.
const X8_POW2: [u32; 32] = squarings(X8);
/// `x^-(8·2^i)`.
const X_INV8_POW2: [u32; 32] = squarings(mul_pow(X_INVERSE, 8));

const fn mul_pow(base: u32, mut n: u32) -> u32 {
    let mut acc = ONE;
    let mut b = base;
    while n != 0 {
        if n & 1 != 0 {
            acc = mul(acc, b);
        }
        b = mul(b, b);
        n >>= 1;
    }
    acc
}

fn pow_from(table: &[u32; 32], mut n: u32) -> u32 {
    let mut acc = ONE;
    let mut i = 0;
    while n != 0 {
        if n & 1 != 0 {
            acc = mul(acc, table[i]);
        }
        n >>= 1;
        i += 1;
    }
    acc
}

/// The CRC difference made by xoring `bytes` into a message at `tail` bytes
/// before its end (`tail` counts the bytes after the four).
pub fn difference(bytes: [u8; 4], tail: u32) -> u32 {
    // Loading four bytes into a zero register and shifting 32 bits is x^32.
    mul(u32::from_le_bytes(bytes), FORWARD.with(|c| c.factor(tail)))
}

/// The four bytes that, xored into a message at `tail` bytes before its
/// end, change its CRC by `delta`: the inverse of [`difference`].
pub fn bytes_for(delta: u32, tail: u32) -> [u8; 4] {
    mul(delta, INVERSE.with(|c| c.factor(tail))).to_le_bytes()
}

/// `x^±(32 + 8·tail)` for the last few tails asked for: packets of one
/// size share it, so a stream of them costs one product each instead of
/// a dozen.
struct FactorCache {
    /// `x^±8·2^i`.
    table: &'static [u32; 32],
    /// `x^±32`.
    load: u32,
    recent: std::cell::Cell<[(u32, u32); 4]>,
    next: std::cell::Cell<usize>,
}

impl FactorCache {
    const fn new(table: &'static [u32; 32], load: u32) -> FactorCache {
        FactorCache {
            table,
            load,
            // tail u32::MAX never occurs (datagrams are under 64 KiB).
            recent: std::cell::Cell::new([(u32::MAX, 0); 4]),
            next: std::cell::Cell::new(0),
        }
    }

    fn factor(&self, tail: u32) -> u32 {
        let mut recent = self.recent.get();
        if let Some(&(_, f)) = recent.iter().find(|(t, _)| *t == tail) {
            return f;
        }
        let f = mul(self.load, pow_from(self.table, tail));
        let i = self.next.get();
        recent[i] = (tail, f);
        self.recent.set(recent);
        self.next.set((i + 1) % recent.len());
        f
    }
}

thread_local! {
    static FORWARD: FactorCache = const { FactorCache::new(&X8_POW2, X8_POW2[2]) };
    static INVERSE: FactorCache = const { FactorCache::new(&X_INV8_POW2, X_INV8_POW2[2]) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(data: &[u8]) -> u32 {
        crc32fast::hash(data)
    }

    #[test]
    fn inverse_of_x() {
        assert_eq!(mul(X_INVERSE, ONE >> 1), ONE);
        assert_eq!(mul(X_INV8_POW2[0], X8), ONE);
        assert_eq!(mul(X_INV8_POW2[5], X8_POW2[5]), ONE);
    }

    #[test]
    fn difference_matches_the_crc() {
        let mut msg: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
        let base = crc(&msg);
        for (at, bytes) in [
            (0usize, [1u8, 0, 0, 0]),
            (12, [0x2e, 0xb5, 0x40, 0x00]),
            (100, [0xff, 0xff, 0xff, 0xff]),
            (296, [0, 0, 0, 0x80]),
        ] {
            let tail = (msg.len() - at - 4) as u32;
            for (m, b) in msg[at..at + 4].iter_mut().zip(bytes) {
                *m ^= b;
            }
            let changed = crc(&msg);
            for (m, b) in msg[at..at + 4].iter_mut().zip(bytes) {
                *m ^= b;
            }
            assert_eq!(base ^ changed, difference(bytes, tail), "at {at}");
            assert_eq!(bytes_for(base ^ changed, tail), bytes, "at {at}");
        }
    }

    #[test]
    fn long_tails() {
        for tail in [0u32, 1, 7, 255, 4096, 65535, 1 << 20] {
            let d = difference([0x12, 0x34, 0x56, 0x78], tail);
            assert_eq!(bytes_for(d, tail), [0x12, 0x34, 0x56, 0x78], "tail {tail}");
        }
    }
}
