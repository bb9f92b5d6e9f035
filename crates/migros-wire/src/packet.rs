//! Whole packets: the BTH, the extension headers its opcode calls for, the
//! payload, the pad and room for the ICRC.
//!
//! Layout of a UDP payload, in order: BTH, then DETH | RETH | AtomicETH |
//! AETH | AtomicAckETH | ImmDt | IETH (each only if the opcode's
//! [`OpcodeInfo`] says so), payload, `pad_count` zero bytes, 4-byte ICRC.

use crate::error::WireError;
use crate::headers::{
    parse_u32, Aeth, AtomicAckEth, AtomicEth, Bth, Deth, Reth, IETH_LEN, IMMDT_LEN, MASK_24,
};
use crate::icrc::ICRC_LEN;
use crate::opcode::{OpKind, OpcodeInfo};

/// Payload lengths a RESUME-opcode packet may carry: none (as MigrOS sends
/// it), a 16-byte IPv6 (or IPv4-mapped IPv6) location, that location
/// followed by the sender's 4-byte QPN (older migros), and the messages
/// migros sends now: a key probe (12), a key answer (24), a RESUME carrying
/// the location, the QPN and the connection key (28: a UD announcement, or
/// a connected QP of the previous version) and the same followed by the
/// PSN the sender expects next (32). What each means is the transport's
/// (`migros_transport::resume`); this crate only checks the length.
pub const RESUME_PAYLOAD_LENS: [usize; 7] = [0, 12, 16, 20, 24, 28, 32];

/// All headers of one packet. Which `Option`s are `Some` is fixed by
/// `bth.opcode` (see [`OpcodeInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    /// Base transport header.
    pub bth: Bth,
    /// Datagram ETH (UD).
    pub deth: Option<Deth>,
    /// RDMA ETH.
    pub reth: Option<Reth>,
    /// Atomic ETH.
    pub atomic_eth: Option<AtomicEth>,
    /// ACK ETH.
    pub aeth: Option<Aeth>,
    /// Atomic ACK ETH.
    pub atomic_ack_eth: Option<AtomicAckEth>,
    /// Immediate data, as the big-endian `u32` read from the wire.
    pub immdt: Option<u32>,
    /// Invalidate ETH: the R_Key to invalidate.
    pub ieth: Option<u32>,
}

impl Headers {
    /// Headers with only a BTH; fill in the extension headers the opcode needs.
    pub fn new(bth: Bth) -> Headers {
        Headers {
            bth,
            deth: None,
            reth: None,
            atomic_eth: None,
            aeth: None,
            atomic_ack_eth: None,
            immdt: None,
            ieth: None,
        }
    }

    /// The table entry of `bth.opcode`, checked against the `Option` fields
    /// and the widths of the fields that are narrower than their type.
    pub fn check(&self) -> Result<&'static OpcodeInfo, WireError> {
        let info = self
            .bth
            .opcode
            .info()
            .ok_or(WireError::UnknownOpcode(self.bth.opcode.0))?;
        let matches = info.has_deth == self.deth.is_some()
            && info.has_reth == self.reth.is_some()
            && info.has_atomic_eth == self.atomic_eth.is_some()
            && info.has_aeth == self.aeth.is_some()
            && info.has_atomic_ack_eth == self.atomic_ack_eth.is_some()
            && info.has_immdt == self.immdt.is_some()
            && info.has_ieth == self.ieth.is_some();
        if !matches {
            return Err(WireError::HeaderMismatch);
        }
        if self.bth.tver != 0 {
            return Err(WireError::BadVersion);
        }
        if self.bth.dest_qpn > MASK_24 {
            return Err(WireError::FieldOutOfRange("dest_qpn"));
        }
        if self.deth.is_some_and(|d| d.src_qpn > MASK_24) {
            return Err(WireError::FieldOutOfRange("src_qpn"));
        }
        if self.aeth.is_some_and(|a| a.msn > MASK_24) {
            return Err(WireError::FieldOutOfRange("msn"));
        }
        Ok(info)
    }
}

/// A whole packet: its headers, a view of its payload, and the table entry
/// of its opcode.
///
/// Made by [`Packet::parse`] (from the wire) or [`Packet::new`] (to emit),
/// both of which check that the headers and the payload fit the opcode, so
/// [`Packet::info`] is always the known opcode's entry: a receiver reads
/// the opcode's kind and position from it without looking it up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// All headers.
    pub headers: Headers,
    /// Payload bytes, without the pad and the ICRC.
    pub payload: &'a [u8],
    /// The entry of `headers.bth.opcode`, found when the packet was made.
    info: &'static OpcodeInfo,
}

/// Zero bytes needed after `payload_len` bytes to reach a multiple of 4: `0..=3`.
pub fn pad_len(payload_len: usize) -> usize {
    payload_len.wrapping_neg() & 3
}

/// Checks that an opcode may carry `payload_len` bytes.
fn check_payload(info: &OpcodeInfo, payload_len: usize) -> Result<(), WireError> {
    if payload_len > 0 && !info.has_payload {
        return Err(WireError::UnexpectedPayload);
    }
    if info.kind == OpKind::Resume && !RESUME_PAYLOAD_LENS.contains(&payload_len) {
        return Err(WireError::BadResumePayload(payload_len));
    }
    Ok(())
}

impl<'a> Packet<'a> {
    /// A packet to emit: `headers` must fit their opcode (see
    /// [`Headers::check`]) and the opcode must be allowed to carry
    /// `payload` (a RESUME only one of [`RESUME_PAYLOAD_LENS`]).
    pub fn new(headers: Headers, payload: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let info = headers.check()?;
        check_payload(info, payload.len())?;
        Ok(Packet {
            headers,
            payload,
            info,
        })
    }

    /// The opcode's table entry: its service, kind, position and headers.
    pub fn info(&self) -> &'static OpcodeInfo {
        self.info
    }

    /// Parses a whole UDP payload (BTH .. ICRC).
    ///
    /// Checks that the opcode is known, the transport version is 0, the
    /// headers, pad and ICRC fit, the payload plus pad is a multiple of 4
    /// bytes, and a payload is present only if the opcode may carry one (a
    /// RESUME's only if 0, 16 or 20 bytes). Reserved bits and pad bytes are
    /// ignored. Does **not** verify the ICRC; see [`crate::verify`].
    pub fn parse(udp_payload: &'a [u8]) -> Result<Packet<'a>, WireError> {
        let bth = Bth::parse(udp_payload)?;
        let info = bth
            .opcode
            .info()
            .ok_or(WireError::UnknownOpcode(bth.opcode.0))?;
        if bth.tver != 0 {
            return Err(WireError::BadVersion);
        }
        let body_len = udp_payload
            .len()
            .checked_sub(info.header_len + ICRC_LEN)
            .ok_or(WireError::Truncated)?;
        let pad = usize::from(bth.pad_count);
        let payload_len = body_len.checked_sub(pad).ok_or(WireError::Truncated)?;
        if body_len % 4 != 0 {
            return Err(WireError::BadPad);
        }
        check_payload(info, payload_len)?;

        let mut headers = Headers::new(bth);
        let mut at = Bth::LEN;
        // Each extension header is read from the slice after the previous
        // one; the length check above guarantees they are all there, and the
        // parsers report truncation rather than panic if not.
        let mut rest = |len: usize| {
            let bytes = udp_payload.get(at..).unwrap_or_default();
            at += len;
            bytes
        };
        if info.has_deth {
            headers.deth = Some(Deth::parse(rest(Deth::LEN))?);
        }
        if info.has_reth {
            headers.reth = Some(Reth::parse(rest(Reth::LEN))?);
        }
        if info.has_atomic_eth {
            headers.atomic_eth = Some(AtomicEth::parse(rest(AtomicEth::LEN))?);
        }
        if info.has_aeth {
            headers.aeth = Some(Aeth::parse(rest(Aeth::LEN))?);
        }
        if info.has_atomic_ack_eth {
            headers.atomic_ack_eth = Some(AtomicAckEth::parse(rest(AtomicAckEth::LEN))?);
        }
        if info.has_immdt {
            headers.immdt = Some(parse_u32(rest(IMMDT_LEN))?);
        }
        if info.has_ieth {
            headers.ieth = Some(parse_u32(rest(IETH_LEN))?);
        }
        debug_assert_eq!(at, info.header_len);
        let payload = udp_payload
            .get(info.header_len..info.header_len + payload_len)
            .ok_or(WireError::Truncated)?;
        Ok(Packet {
            headers,
            payload,
            info,
        })
    }

    /// Bytes [`Packet::emit`] writes: headers + payload + pad + ICRC.
    pub fn buffer_len(&self) -> usize {
        self.info.header_len + self.payload.len() + pad_len(self.payload.len()) + ICRC_LEN
    }

    /// Writes headers, payload, zero pad and a zero ICRC into `out` and
    /// returns the bytes written ([`Packet::buffer_len`]). Seal the result
    /// with [`crate::seal`].
    ///
    /// `bth.pad_count` is computed from the payload length, whatever the
    /// field says. Errors (never panics) if the headers were changed since
    /// the packet was made so that they no longer fit its opcode (see
    /// [`Headers::check`]), or `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if self.headers.check()? != self.info {
            return Err(WireError::HeaderMismatch);
        }
        let len = self.buffer_len();
        let out = out.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        let header_len = emit_headers(&self.headers, self.payload.len(), out)?;
        let (payload, tail) = out[header_len..].split_at_mut(self.payload.len());
        payload.copy_from_slice(self.payload);
        tail.fill(0);
        Ok(len)
    }
}

/// Writes only the headers into `out` and returns their length, for callers
/// that copy a `payload_len`-byte payload in place themselves (then zero the
/// [`pad_len`] pad and 4 ICRC bytes after it, and [`crate::seal`]).
///
/// Sets the pad count from `payload_len`. Errors like [`Packet::emit`].
pub fn emit_headers(
    headers: &Headers,
    payload_len: usize,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let info = headers.check()?;
    check_payload(info, payload_len)?;
    let out = out
        .get_mut(..info.header_len)
        .ok_or(WireError::BufferTooSmall)?;

    // `pad_len` is at most 3, so the cast cannot truncate.
    let pad_count = pad_len(payload_len) as u8;
    Bth {
        pad_count,
        ..headers.bth
    }
    .emit(out);
    // `out` is exactly `header_len` long and the table's `header_len` is the
    // sum of the headers present, so every `take` below is in bounds.
    let mut rest = &mut out[Bth::LEN..];
    let mut next = |len: usize| take(&mut rest, len);
    if let Some(deth) = &headers.deth {
        deth.emit(next(Deth::LEN));
    }
    if let Some(reth) = &headers.reth {
        reth.emit(next(Reth::LEN));
    }
    if let Some(atomic_eth) = &headers.atomic_eth {
        atomic_eth.emit(next(AtomicEth::LEN));
    }
    if let Some(aeth) = &headers.aeth {
        aeth.emit(next(Aeth::LEN));
    }
    if let Some(atomic_ack_eth) = &headers.atomic_ack_eth {
        atomic_ack_eth.emit(next(AtomicAckEth::LEN));
    }
    if let Some(immdt) = headers.immdt {
        next(IMMDT_LEN).copy_from_slice(&immdt.to_be_bytes());
    }
    if let Some(ieth) = headers.ieth {
        next(IETH_LEN).copy_from_slice(&ieth.to_be_bytes());
    }
    debug_assert!(rest.is_empty());
    Ok(info.header_len)
}

/// Splits the first `len` bytes off `rest`.
fn take<'b>(rest: &mut &'b mut [u8], len: usize) -> &'b mut [u8] {
    let (head, tail) = std::mem::take(rest).split_at_mut(len);
    *rest = tail;
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opcode::{Opcode, Position};
    use crate::psn::Psn;

    /// BTH of an RC SEND to QP 0x20 at PSN 0x100, then `rest`.
    fn bytes(opcode: Opcode, byte1: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![opcode.0, byte1, 0xff, 0xff, 0, 0, 0, 0x20, 0, 0, 1, 0];
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn pad_len_values() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad_len), [0, 3, 2, 1, 0, 3]);
    }

    #[test]
    fn parse_errors() {
        let icrc = [0u8; 4];
        assert_eq!(Packet::parse(&[]), Err(WireError::Truncated));
        assert_eq!(
            Packet::parse(&bytes(Opcode(0x18), 0, &icrc)),
            Err(WireError::UnknownOpcode(0x18))
        );
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_SEND_ONLY, 0x01, &icrc)),
            Err(WireError::BadVersion)
        );
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_SEND_ONLY, 0, &[0; 3])),
            Err(WireError::Truncated)
        );
        // Needs an AETH.
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_ACKNOWLEDGE, 0, &icrc)),
            Err(WireError::Truncated)
        );
        // Pad count 1 but nothing to pad.
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_SEND_ONLY, 0x10, &icrc)),
            Err(WireError::Truncated)
        );
        // 5 bytes of payload with pad count 0.
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_SEND_ONLY, 0, &[0; 9])),
            Err(WireError::BadPad)
        );
        // An ACK carrying 4 bytes.
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_ACKNOWLEDGE, 0, &[0; 12])),
            Err(WireError::UnexpectedPayload)
        );
        assert_eq!(
            Packet::parse(&bytes(Opcode::RC_RESUME, 0, &[0; 16])),
            Err(WireError::BadResumePayload(8))
        );
    }

    #[test]
    fn parse_pads_and_resume() {
        // 3 payload bytes, pad 1, ICRC.
        let p = bytes(Opcode::RC_SEND_ONLY, 0x10, &[1, 2, 3, 0, 9, 9, 9, 9]);
        let packet = Packet::parse(&p);
        assert_eq!(packet.map(|p| p.payload), Ok(&[1, 2, 3][..]));

        let mut resume = bytes(Opcode::RC_RESUME, 0, &[0x65, 0, 0, 7]);
        resume.extend_from_slice(&[0xab; 16]);
        resume.extend_from_slice(&[0; 4]);
        let packet = Packet::parse(&resume);
        assert_eq!(
            packet.map(|p| (p.headers.aeth, p.payload.len())),
            Ok((
                Some(Aeth {
                    syndrome: 0x65,
                    msn: 7
                }),
                16
            ))
        );
    }

    #[test]
    fn new_and_emit_errors() {
        let bth = Bth::new(Opcode::RC_SEND_ONLY, 0x20, Psn::new(0x100));
        let mut out = [0u8; 64];
        let payload = [0u8; 4];

        let missing_reth = Headers::new(Bth {
            opcode: Opcode::RC_RDMA_WRITE_ONLY,
            ..bth
        });
        assert_eq!(
            Packet::new(missing_reth, &payload),
            Err(WireError::HeaderMismatch)
        );

        let extra_aeth = Headers {
            aeth: Some(Aeth {
                syndrome: 0,
                msn: 0,
            }),
            ..Headers::new(bth)
        };
        assert_eq!(
            Packet::new(extra_aeth, &payload),
            Err(WireError::HeaderMismatch)
        );

        let ack = Headers {
            aeth: Some(Aeth {
                syndrome: 0,
                msn: 0,
            }),
            ..Headers::new(Bth {
                opcode: Opcode::RC_ACKNOWLEDGE,
                ..bth
            })
        };
        assert_eq!(
            Packet::new(ack, &payload),
            Err(WireError::UnexpectedPayload)
        );
        assert_eq!(
            Packet::new(Headers::new(Bth { tver: 1, ..bth }), &payload),
            Err(WireError::BadVersion)
        );

        let wide_qpn = Headers::new(Bth {
            dest_qpn: 0x0100_0000,
            ..bth
        });
        assert_eq!(
            emit_headers(&wide_qpn, 0, &mut out),
            Err(WireError::FieldOutOfRange("dest_qpn"))
        );
        let unknown = Headers::new(Bth {
            opcode: Opcode(0xff),
            ..bth
        });
        assert_eq!(
            emit_headers(&unknown, 0, &mut out),
            Err(WireError::UnknownOpcode(0xff))
        );
        assert_eq!(
            Packet::new(unknown, &[]),
            Err(WireError::UnknownOpcode(0xff))
        );
        assert_eq!(
            emit_headers(&Headers::new(bth), 0, &mut out[..11]),
            Err(WireError::BufferTooSmall)
        );
        let packet = Packet::new(Headers::new(bth), &payload);
        let packet = packet.expect("a SEND ONLY with 4 bytes is valid");
        assert_eq!(packet.emit(&mut out[..19]), Err(WireError::BufferTooSmall));
        assert_eq!(packet.emit(&mut out[..20]), Ok(20));

        // Headers changed after the packet was made to another opcode's
        // shape: the kept table entry no longer matches, emit refuses.
        let mut changed = packet;
        changed.headers.bth.opcode = Opcode::RC_SEND_ONLY_WITH_IMMEDIATE;
        changed.headers.immdt = Some(7);
        assert_eq!(changed.emit(&mut out), Err(WireError::HeaderMismatch));
        changed.headers.immdt = None;
        assert_eq!(changed.emit(&mut out), Err(WireError::HeaderMismatch));
    }

    #[test]
    fn packet_keeps_its_opcode_info() {
        let p = bytes(Opcode::RC_RDMA_READ_REQUEST, 0, &[0; 20]);
        let info = Packet::parse(&p).map(|p| p.info());
        assert_eq!(
            info.map(|i| (i.name, i.kind, i.position)),
            Ok(("RC_RDMA_READ_REQUEST", OpKind::ReadRequest, Position::Only))
        );
        let bth = Bth::new(Opcode::UC_SEND_FIRST, 1, Psn::new(0));
        let made = Packet::new(Headers::new(bth), &[1; 8]);
        assert_eq!(
            made.as_ref().map(|p| (p.info().name, p.buffer_len())),
            Ok(("UC_SEND_FIRST", 12 + 8 + 4))
        );
    }

    #[test]
    fn emit_overrides_pad_count() {
        let bth = Bth {
            pad_count: 3,
            ..Bth::new(Opcode::UC_SEND_ONLY, 0x20, Psn::new(0x100))
        };
        let payload = [7; 6];
        let packet = Packet::new(Headers::new(bth), &payload).expect("a UC SEND ONLY is valid");
        let mut out = [0xaa; 24];
        assert_eq!(packet.buffer_len(), 24);
        assert_eq!(packet.emit(&mut out), Ok(24));
        assert_eq!(out[1], 0x20);
        assert_eq!(out[18..], [0, 0, 0, 0, 0, 0]);
    }
}
