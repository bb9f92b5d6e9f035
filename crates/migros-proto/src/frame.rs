//! Framing on the daemon's sockets: a 4-byte little-endian length, then a
//! postcard-encoded message. Both directions use it.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Largest frame accepted (a checkpoint image of many QPs is the largest:
/// 100,000 connected RC QPs take about 175 MB). A daemon accepts frames
/// this large only from root (see migrosd's `limits.rs`).
pub const MAX_FRAME: usize = 256 << 20;
const LEN_BYTES: usize = 4;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends `msg` as one frame to `out`.
pub fn encode<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    let body = postcard::to_extend(msg, std::mem::take(out))?;
    *out = body;
    let len = out.len() - start - LEN_BYTES;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    out[start..start + LEN_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Writes `msg` as one frame (blocking).
pub fn write<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    encode(msg, &mut buf)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Reads one frame (blocking).
pub fn read<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; LEN_BYTES];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(postcard::from_bytes(&body)?)
}

/// Reassembles frames from a byte stream read without blocking.
///
/// The buffer is initialised once and reused: reading into
/// [`FrameReader::spare`] costs no zero-filling on the hot path (a doorbell
/// is a few bytes, the read chunk may be 64 KiB).
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Initialised storage; bytes `start..end` are received, not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The largest frame accepted (0: [`MAX_FRAME`]).
    limit: usize,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Accepts frames of at most `limit` bytes (at most [`MAX_FRAME`]) from
    /// now on: a larger announced length is an error before its bytes are
    /// buffered.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    fn limit(&self) -> usize {
        if self.limit == 0 {
            MAX_FRAME
        } else {
            self.limit
        }
    }

    /// Room to read into (at least `at_least` bytes): call
    /// [`FrameReader::filled`] with how many bytes were read into it.
    pub fn spare(&mut self, at_least: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end < at_least {
            // Move what is unconsumed to the front before growing.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < at_least {
                self.buf.resize(self.end + at_least, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into the last [`FrameReader::spare`] slice (of
    /// length `spare_len`).
    pub fn filled(&mut self, spare_len: usize, n: usize) {
        debug_assert!(n <= spare_len);
        self.end = (self.end + n.min(spare_len)).min(self.buf.len());
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.spare(bytes.len());
        room[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The next whole message, if one has arrived.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < LEN_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.limit() {
            return Err(FrameError::TooLarge(len));
        }
        if avail.len() < LEN_BYTES + len {
            return Ok(None);
        }
        let msg = postcard::from_bytes(&avail[LEN_BYTES..LEN_BYTES + len]);
        self.start += LEN_BYTES + len;
        Ok(Some(msg?))
    }

    /// Bytes buffered but not yet returned as messages.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }

    /// The bytes buffered but not yet returned as messages (a frame cut
    /// short, when a checkpoint froze its writer).
    pub fn unconsumed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Request;

    #[test]
    fn frames_split_anywhere_reassemble() {
        let msgs = vec![
            Request::AllocPd,
            Request::SqDoorbell {
                qpn: 0x1234,
                pi: 99,
            },
            Request::DeregMr { lkey: 7 },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            encode(m, &mut bytes).unwrap();
        }
        for cut in 0..bytes.len() {
            let mut r = FrameReader::new();
            r.push(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(m) = r.next_message::<Request>().unwrap() {
                got.push(m);
            }
            r.push(&bytes[cut..]);
            while let Some(m) = r.next_message::<Request>().unwrap() {
                got.push(m);
            }
            assert_eq!(got, msgs, "cut at {cut}");
        }
    }

    #[test]
    fn reads_through_spare_reassemble_and_reuse_the_buffer() {
        let mut bytes = Vec::new();
        for qpn in 0..50 {
            encode(&Request::SqDoorbell { qpn, pi: qpn * 2 }, &mut bytes).unwrap();
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            let spare = r.spare(64);
            let len = spare.len();
            spare[..chunk.len()].copy_from_slice(chunk);
            r.filled(len, chunk.len());
            while let Some(m) = r.next_message::<Request>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 50);
        assert_eq!(got[49], Request::SqDoorbell { qpn: 49, pi: 98 });
        assert_eq!(r.pending(), 0);
        assert!(r.buf.len() <= 128, "buffer stays small: {}", r.buf.len());
    }

    #[test]
    fn oversized_length_is_refused() {
        let mut r = FrameReader::new();
        r.push(&u32::MAX.to_le_bytes());
        assert!(matches!(
            r.next_message::<Request>(),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn garbage_body_is_an_error_not_a_panic() {
        let mut r = FrameReader::new();
        r.push(&3u32.to_le_bytes());
        r.push(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            r.next_message::<Request>(),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn blocking_round_trip() {
        let mut buf = Vec::new();
        write(&mut buf, &Request::QueryDevice).unwrap();
        let got: Request = read(&mut buf.as_slice()).unwrap();
        assert_eq!(got, Request::QueryDevice);
        assert!(matches!(
            read::<Request>(&mut [].as_slice()),
            Err(FrameError::Closed)
        ));
    }
}
