//! Per-iteration data patterns and their byte-exact check.
//!
//! Message `seq` of stream `stream` (a QP index) is a sequence of 64-bit
//! splitmix words; any byte lost, duplicated, reordered or taken from
//! another iteration fails the check. Latency tests that poll memory set
//! the last byte to a [`marker`] that differs between consecutive
//! iterations, as perftest's write_lat does.

/// Fills `buf` with message `seq` of `stream`.
pub fn fill(buf: &mut [u8], stream: u64, seq: u64) {
    let base = seed(stream, seq);
    let mut chunks = buf.chunks_exact_mut(8);
    let mut i = 0u64;
    for c in &mut chunks {
        c.copy_from_slice(&word(base, i).to_le_bytes());
        i += 1;
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    rest.copy_from_slice(&word(base, i).to_le_bytes()[..n]);
}

/// Where a buffer first differs from its pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub offset: usize,
    pub want: u8,
    pub got: u8,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "byte {} is {:#04x}, expected {:#04x}",
            self.offset, self.got, self.want
        )
    }
}

/// Checks that `buf` holds message `seq` of `stream`.
pub fn check(buf: &[u8], stream: u64, seq: u64) -> Result<(), Mismatch> {
    let base = seed(stream, seq);
    for (i, c) in buf.chunks(8).enumerate() {
        let w = word(base, i as u64).to_le_bytes();
        if c != &w[..c.len()] {
            let j = c
                .iter()
                .zip(w.iter())
                .position(|(a, b)| a != b)
                .unwrap_or(0); // the chunks differ, so some byte does
            return Err(Mismatch {
                offset: i * 8 + j,
                want: w[j],
                got: c[j],
            });
        }
    }
    Ok(())
}

/// The last byte of latency message `seq`: never 0, never the previous one's.
pub fn marker(seq: u64) -> u8 {
    (seq % 255) as u8 + 1
}

/// [`fill`], then the [`marker`] in the last byte.
pub fn fill_marked(buf: &mut [u8], stream: u64, seq: u64) {
    fill(buf, stream, seq);
    if let Some(last) = buf.last_mut() {
        *last = marker(seq);
    }
}

/// [`check`] for [`fill_marked`] buffers.
pub fn check_marked(buf: &[u8], stream: u64, seq: u64) -> Result<(), Mismatch> {
    let Some((last, head)) = buf.split_last() else {
        return Ok(());
    };
    check(head, stream, seq)?;
    if *last != marker(seq) {
        return Err(Mismatch {
            offset: head.len(),
            want: marker(seq),
            got: *last,
        });
    }
    Ok(())
}

/// Whether the values returned by fetch-and-adds of 1 on a counter that
/// started at 0 are exactly 0..n, each once (every atomic executed once).
pub fn exactly_once(returned: &mut [u64]) -> Result<(), String> {
    returned.sort_unstable();
    for (i, v) in returned.iter().enumerate() {
        if *v != i as u64 {
            return Err(format!(
                "fetch-and-add results: position {i} holds {v} (an atomic executed twice or not at all)"
            ));
        }
    }
    Ok(())
}

fn seed(stream: u64, seq: u64) -> u64 {
    splitmix(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ splitmix(seq))
}

fn word(base: u64, i: u64) -> u64 {
    splitmix(base.wrapping_add(i))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_sizes() {
        for size in [0usize, 1, 2, 7, 8, 9, 63, 64, 4096, 65537] {
            let mut b = vec![0u8; size];
            fill(&mut b, 3, 17);
            assert_eq!(check(&b, 3, 17), Ok(()), "size {size}");
            fill_marked(&mut b, 3, 17);
            assert_eq!(check_marked(&b, 3, 17), Ok(()), "size {size}");
        }
    }

    #[test]
    fn detects_every_single_byte_change() {
        let mut b = vec![0u8; 300];
        fill(&mut b, 1, 2);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            let m = check(&c, 1, 2).unwrap_err();
            assert_eq!((m.offset, m.want, m.got), (i, b[i], c[i]));
        }
    }

    #[test]
    fn iterations_and_streams_differ() {
        let mut a = vec![0u8; 16];
        let mut b = vec![0u8; 16];
        fill(&mut a, 0, 0);
        fill(&mut b, 0, 1);
        assert_ne!(a, b);
        assert!(check(&a, 0, 1).is_err());
        fill(&mut b, 1, 0);
        assert_ne!(a, b);
        // A stale zeroed buffer never passes.
        assert!(check(&[0u8; 16], 0, 0).is_err());
    }

    #[test]
    fn markers_change_every_iteration() {
        for s in 0..1000u64 {
            assert_ne!(marker(s), 0);
            assert_ne!(marker(s), marker(s + 1));
        }
        let mut b = vec![0u8; 2];
        fill_marked(&mut b, 0, 5);
        assert_eq!(b[1], marker(5));
        b[1] = marker(4);
        assert_eq!(check_marked(&b, 0, 5).unwrap_err().offset, 1);
    }

    #[test]
    fn exactly_once_proof() {
        let mut v = vec![3, 0, 2, 1];
        assert!(exactly_once(&mut v).is_ok());
        assert!(exactly_once(&mut [0, 1, 1]).is_err());
        assert!(exactly_once(&mut [0, 2]).is_err());
        assert!(exactly_once(&mut []).is_ok());
    }
}
