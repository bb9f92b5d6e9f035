//! The Base Transport Header and the extended transport headers.
//!
//! Each header is a plain `Copy` struct with its wire length `LEN`, a `parse`
//! that reads the first `LEN` bytes of a slice and an `emit` that writes
//! them. All multi-byte fields are big-endian on the wire. Reserved bits are
//! ignored by `parse` and written as zero by `emit`.

use crate::error::WireError;
use crate::opcode::Opcode;
use crate::psn::Psn;

/// Mask of a 24-bit field (QPN, MSN).
pub const MASK_24: u32 = 0x00ff_ffff;

/// The first `N` bytes of `bytes` as an array, or [`WireError::Truncated`].
fn prefix<const N: usize>(bytes: &[u8]) -> Result<&[u8; N], WireError> {
    bytes
        .get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(WireError::Truncated)
}

fn be_u32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Base Transport Header, 12 bytes, first in every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bth {
    /// Opcode.
    pub opcode: Opcode,
    /// Solicited event (SE).
    pub solicited: bool,
    /// Migration request (M).
    pub mig_req: bool,
    /// Pad count, 2 bits: bytes of zero pad after the payload.
    pub pad_count: u8,
    /// Transport header version, 4 bits; always 0.
    pub tver: u8,
    /// Partition key.
    pub pkey: u16,
    /// Forward explicit congestion notification.
    pub fecn: bool,
    /// Backward explicit congestion notification.
    pub becn: bool,
    /// Destination QP number, 24 bits.
    pub dest_qpn: u32,
    /// Acknowledge request (A).
    pub ack_req: bool,
    /// Packet sequence number.
    pub psn: Psn,
}

impl Bth {
    /// Length on the wire.
    pub const LEN: usize = 12;
    /// The default partition key.
    pub const DEFAULT_PKEY: u16 = 0xffff;

    /// A BTH with the default P_Key, every flag clear and pad count 0.
    pub fn new(opcode: Opcode, dest_qpn: u32, psn: Psn) -> Bth {
        Bth {
            opcode,
            solicited: false,
            mig_req: false,
            pad_count: 0,
            tver: 0,
            pkey: Self::DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qpn,
            ack_req: false,
            psn,
        }
    }

    /// Reads the first [`Bth::LEN`] bytes. Does not check the opcode or version.
    pub fn parse(bytes: &[u8]) -> Result<Bth, WireError> {
        let b = prefix::<{ Self::LEN }>(bytes)?;
        Ok(Bth {
            opcode: Opcode(b[0]),
            solicited: b[1] & 0x80 != 0,
            mig_req: b[1] & 0x40 != 0,
            pad_count: (b[1] >> 4) & 0x3,
            tver: b[1] & 0x0f,
            pkey: u16::from_be_bytes([b[2], b[3]]),
            fecn: b[4] & 0x80 != 0,
            becn: b[4] & 0x40 != 0,
            dest_qpn: be_u32([0, b[5], b[6], b[7]]),
            ack_req: b[8] & 0x80 != 0,
            psn: Psn::new(be_u32([0, b[9], b[10], b[11]])),
        })
    }

    /// Writes the first [`Bth::LEN`] bytes of `out`. Fields wider than their
    /// wire width are truncated (pad count 2 bits, version 4, QPN 24).
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`Bth::LEN`].
    pub fn emit(&self, out: &mut [u8]) {
        let out = &mut out[..Self::LEN];
        out[0] = self.opcode.0;
        out[1] = u8::from(self.solicited) << 7
            | u8::from(self.mig_req) << 6
            | (self.pad_count & 0x3) << 4
            | (self.tver & 0x0f);
        out[2..4].copy_from_slice(&self.pkey.to_be_bytes());
        out[4..8].copy_from_slice(&(self.dest_qpn & MASK_24).to_be_bytes());
        out[4] = u8::from(self.fecn) << 7 | u8::from(self.becn) << 6;
        out[8..12].copy_from_slice(&self.psn.value().to_be_bytes());
        out[8] = u8::from(self.ack_req) << 7;
    }
}

/// RDMA Extended Transport Header, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reth {
    /// Remote virtual address.
    pub va: u64,
    /// Remote key.
    pub rkey: u32,
    /// Length of the whole RDMA operation in bytes.
    pub dma_len: u32,
}

impl Reth {
    /// Length on the wire.
    pub const LEN: usize = 16;

    /// Reads the first [`Reth::LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Reth, WireError> {
        let b = prefix::<{ Self::LEN }>(bytes)?;
        Ok(Reth {
            va: be_u64(b, 0),
            rkey: be_u32([b[8], b[9], b[10], b[11]]),
            dma_len: be_u32([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Writes the first [`Reth::LEN`] bytes of `out`.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`Reth::LEN`].
    pub fn emit(&self, out: &mut [u8]) {
        let out = &mut out[..Self::LEN];
        out[0..8].copy_from_slice(&self.va.to_be_bytes());
        out[8..12].copy_from_slice(&self.rkey.to_be_bytes());
        out[12..16].copy_from_slice(&self.dma_len.to_be_bytes());
    }
}

/// ACK Extended Transport Header, 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aeth {
    /// Syndrome byte; decode it with [`crate::AckSyndrome::decode`].
    pub syndrome: u8,
    /// Message sequence number, 24 bits.
    pub msn: u32,
}

impl Aeth {
    /// Length on the wire.
    pub const LEN: usize = 4;

    /// Reads the first [`Aeth::LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Aeth, WireError> {
        let b = prefix::<{ Self::LEN }>(bytes)?;
        Ok(Aeth {
            syndrome: b[0],
            msn: be_u32([0, b[1], b[2], b[3]]),
        })
    }

    /// Writes the first [`Aeth::LEN`] bytes of `out`; the MSN is truncated to 24 bits.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`Aeth::LEN`].
    pub fn emit(&self, out: &mut [u8]) {
        let out = &mut out[..Self::LEN];
        out.copy_from_slice(&(self.msn & MASK_24).to_be_bytes());
        out[0] = self.syndrome;
    }
}

/// Atomic Extended Transport Header, 28 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicEth {
    /// Remote virtual address (8-byte aligned).
    pub va: u64,
    /// Remote key.
    pub rkey: u32,
    /// Swap value (compare and swap) or addend (fetch and add).
    pub swap_add: u64,
    /// Compare value (compare and swap only).
    pub compare: u64,
}

impl AtomicEth {
    /// Length on the wire.
    pub const LEN: usize = 28;

    /// Reads the first [`AtomicEth::LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<AtomicEth, WireError> {
        let b = prefix::<{ Self::LEN }>(bytes)?;
        Ok(AtomicEth {
            va: be_u64(b, 0),
            rkey: be_u32([b[8], b[9], b[10], b[11]]),
            swap_add: be_u64(b, 12),
            compare: be_u64(b, 20),
        })
    }

    /// Writes the first [`AtomicEth::LEN`] bytes of `out`.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`AtomicEth::LEN`].
    pub fn emit(&self, out: &mut [u8]) {
        let out = &mut out[..Self::LEN];
        out[0..8].copy_from_slice(&self.va.to_be_bytes());
        out[8..12].copy_from_slice(&self.rkey.to_be_bytes());
        out[12..20].copy_from_slice(&self.swap_add.to_be_bytes());
        out[20..28].copy_from_slice(&self.compare.to_be_bytes());
    }
}

/// Atomic ACK Extended Transport Header, 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomicAckEth {
    /// The value at the remote address before the atomic operation.
    pub orig: u64,
}

impl AtomicAckEth {
    /// Length on the wire.
    pub const LEN: usize = 8;

    /// Reads the first [`AtomicAckEth::LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<AtomicAckEth, WireError> {
        let b = prefix::<{ Self::LEN }>(bytes)?;
        Ok(AtomicAckEth {
            orig: u64::from_be_bytes(*b),
        })
    }

    /// Writes the first [`AtomicAckEth::LEN`] bytes of `out`.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`AtomicAckEth::LEN`].
    pub fn emit(&self, out: &mut [u8]) {
        out[..Self::LEN].copy_from_slice(&self.orig.to_be_bytes());
    }
}

/// Datagram Extended Transport Header, 8 bytes (UD only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Deth {
    /// Queue key.
    pub qkey: u32,
    /// Source QP number, 24 bits.
    pub src_qpn: u32,
}

impl Deth {
    /// Length on the wire.
    pub const LEN: usize = 8;

    /// Reads the first [`Deth::LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Deth, WireError> {
        let b = prefix::<{ Self::LEN }>(bytes)?;
        Ok(Deth {
            qkey: be_u32([b[0], b[1], b[2], b[3]]),
            src_qpn: be_u32([0, b[5], b[6], b[7]]),
        })
    }

    /// Writes the first [`Deth::LEN`] bytes of `out`; the QPN is truncated to 24 bits.
    ///
    /// # Panics
    ///
    /// If `out` is shorter than [`Deth::LEN`].
    pub fn emit(&self, out: &mut [u8]) {
        let out = &mut out[..Self::LEN];
        out[0..4].copy_from_slice(&self.qkey.to_be_bytes());
        out[4..8].copy_from_slice(&(self.src_qpn & MASK_24).to_be_bytes());
    }
}

/// Length of the Immediate Data header and of the IETH: one big-endian u32.
pub const IMMDT_LEN: usize = 4;
/// Length of the Invalidate Extended Transport Header.
pub const IETH_LEN: usize = 4;

/// Reads a 4-byte ImmDt or IETH as a big-endian `u32`.
pub fn parse_u32(bytes: &[u8]) -> Result<u32, WireError> {
    prefix::<4>(bytes).map(|b| u32::from_be_bytes(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<const N: usize, H: PartialEq + std::fmt::Debug>(
        golden: [u8; N],
        header: H,
        parse: fn(&[u8]) -> Result<H, WireError>,
        emit: fn(&H, &mut [u8]),
    ) {
        let mut out = [0xaa; N];
        emit(&header, &mut out);
        assert_eq!(out, golden);
        assert_eq!(parse(&golden[..N - 1]), Err(WireError::Truncated));
        assert_eq!(parse(&golden), Ok(header));
    }

    #[test]
    fn bth_golden() {
        // Packet 1 of the kernel capture, then every flag set.
        round_trip(
            [
                0x04, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x20, 0x80, 0x00, 0x01, 0x00,
            ],
            Bth {
                ack_req: true,
                ..Bth::new(Opcode::RC_SEND_ONLY, 0x20, Psn::new(0x100))
            },
            Bth::parse,
            Bth::emit,
        );
        round_trip(
            [
                0x11, 0xe3, 0x12, 0x34, 0xc0, 0xab, 0xcd, 0xef, 0x00, 0xfe, 0xdc, 0xba,
            ],
            Bth {
                opcode: Opcode::RC_ACKNOWLEDGE,
                solicited: true,
                mig_req: true,
                pad_count: 2,
                tver: 3,
                pkey: 0x1234,
                fecn: true,
                becn: true,
                dest_qpn: 0xab_cdef,
                ack_req: false,
                psn: Psn::new(0xfe_dcba),
            },
            Bth::parse,
            Bth::emit,
        );
    }

    #[test]
    fn bth_ignores_reserved_bits() {
        let bytes = [0x04, 0x00, 0xff, 0xff, 0x3f, 0, 0, 0x20, 0x7f, 0, 1, 0];
        let bth = Bth::parse(&bytes);
        assert_eq!(
            bth,
            Ok(Bth::new(Opcode::RC_SEND_ONLY, 0x20, Psn::new(0x100)))
        );
    }

    #[test]
    fn reth_golden() {
        round_trip(
            [
                0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x10, 0x00, 0xab, 0xcd, 0x12, 0x34, 0x00, 0x00,
                0x09, 0xc4,
            ],
            Reth {
                va: 0x7f00_0000_1000,
                rkey: 0xabcd_1234,
                dma_len: 2500,
            },
            Reth::parse,
            Reth::emit,
        );
    }

    #[test]
    fn aeth_golden() {
        round_trip(
            [0x65, 0x12, 0x34, 0x56],
            Aeth {
                syndrome: 0x65,
                msn: 0x12_3456,
            },
            Aeth::parse,
            Aeth::emit,
        );
    }

    #[test]
    fn atomic_eth_golden() {
        round_trip(
            [
                0x00, 0x00, 0x7f, 0x00, 0x00, 0x00, 0x20, 0x00, 0xab, 0xcd, 0x12, 0x34, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,
            ],
            AtomicEth {
                va: 0x7f00_0000_2000,
                rkey: 0xabcd_1234,
                swap_add: 9,
                compare: 5,
            },
            AtomicEth::parse,
            AtomicEth::emit,
        );
    }

    #[test]
    fn atomic_ack_eth_golden() {
        round_trip(
            [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            AtomicAckEth {
                orig: 0x0123_4567_89ab_cdef,
            },
            AtomicAckEth::parse,
            AtomicAckEth::emit,
        );
    }

    #[test]
    fn deth_golden() {
        round_trip(
            [0x11, 0x11, 0x11, 0x11, 0x00, 0x00, 0x00, 0x1a],
            Deth {
                qkey: 0x1111_1111,
                src_qpn: 0x1a,
            },
            Deth::parse,
            Deth::emit,
        );
        // The reserved byte before the source QPN is ignored.
        let bytes = [0, 0, 0, 1, 0xff, 0, 0, 2];
        assert_eq!(
            Deth::parse(&bytes),
            Ok(Deth {
                qkey: 1,
                src_qpn: 2
            })
        );
    }

    #[test]
    fn immdt_golden() {
        assert_eq!(parse_u32(&[0x44, 0x33, 0x22, 0x11]), Ok(0x4433_2211));
        assert_eq!(parse_u32(&[0x44, 0x33, 0x22]), Err(WireError::Truncated));
    }
}
