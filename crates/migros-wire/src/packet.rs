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

/// Payload lengths a RESUME may carry: none, or a 16-byte IPv6 (or
/// IPv4-mapped IPv6) address.
pub const RESUME_PAYLOAD_LENS: [usize; 2] = [0, 16];

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

/// A parsed packet: its headers and a view of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// All headers.
    pub headers: Headers,
    /// Payload bytes, without the pad and the ICRC.
    pub payload: &'a [u8],
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
    /// Parses a whole UDP payload (BTH .. ICRC).
    ///
    /// Checks that the opcode is known, the transport version is 0, the
    /// headers, pad and ICRC fit, the payload plus pad is a multiple of 4
    /// bytes, and a payload is present only if the opcode may carry one (a
    /// RESUME's only if 0 or 16 bytes). Reserved bits and pad bytes are
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
        Ok(Packet { headers, payload })
    }

    /// Bytes [`Packet::emit`] writes: headers + payload + pad + ICRC.
    ///
    /// For an unknown opcode this counts the BTH only; `emit` rejects it.
    pub fn buffer_len(&self) -> usize {
        let header_len = self
            .headers
            .bth
            .opcode
            .info()
            .map_or(Bth::LEN, |info| info.header_len);
        header_len + self.payload.len() + pad_len(self.payload.len()) + ICRC_LEN
    }

    /// Writes headers, payload, zero pad and a zero ICRC into `out` and
    /// returns the bytes written ([`Packet::buffer_len`]). Seal the result
    /// with [`crate::seal`].
    ///
    /// `bth.pad_count` is computed from the payload length, whatever the
    /// field says. Errors (never panics) if the headers do not fit the
    /// opcode (see [`Headers::check`]), the opcode may not carry this
    /// payload, or `out` is too short.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
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
