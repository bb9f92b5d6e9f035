//! Byte strings inside messages (images, replays, outboxes), for
//! `#[serde(with = "crate::bytes")]` on a `Vec<u8>` field.
//!
//! postcard writes them exactly as it writes a plain `Vec<u8>` (a varint
//! length, then the bytes), so the wire format does not change; but serde's
//! default for `Vec<u8>` is a sequence of `u8`, encoded and decoded one
//! byte at a time, and the image of a session with a thousand QPs is over
//! a megabyte. Decoding also accepts a sequence (formats without bytes).

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Serializer;

pub fn serialize<S: Serializer>(v: &impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v.as_ref())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The hint comes from the input: trust it only so far.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        a: u32,
        v: Vec<u8>,
        b: u8,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Bytes {
        a: u32,
        #[serde(with = "crate::bytes")]
        v: Vec<u8>,
        b: u8,
    }

    #[test]
    fn same_wire_format_as_a_plain_vec() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let plain = Plain {
                a: 9,
                v: v.clone(),
                b: 3,
            };
            let bytes = Bytes { a: 9, v, b: 3 };
            let p = postcard::to_stdvec(&plain).unwrap();
            assert_eq!(p, postcard::to_stdvec(&bytes).unwrap());
            assert_eq!(postcard::from_bytes::<Bytes>(&p).unwrap(), bytes);
            assert_eq!(postcard::from_bytes::<Plain>(&p).unwrap(), plain);
        }
    }
}
