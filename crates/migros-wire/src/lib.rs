//! RoCE v2 wire format for migros, a user-space RoCE v2 device.
//!
//! This crate is the bottom layer of the workspace: it turns the UDP payload
//! of a RoCE v2 datagram into typed headers and back, and computes the
//! Invariant CRC. It does no I/O and never allocates while parsing or
//! emitting; `migros-transport` builds its RC, UC and UD engines on it.
//!
//! - [`Psn`]: 24-bit packet sequence numbers with wrap-around ordering.
//! - [`Opcode`] and [`OpcodeInfo`]: one `const` table saying, for every
//!   opcode, which extension headers follow the BTH; parse and emit read it.
//! - [`Bth`], [`Reth`], [`Aeth`], [`AtomicEth`], [`AtomicAckEth`],
//!   [`Deth`]: the headers, each with `LEN`, `parse` and `emit`;
//!   [`AckSyndrome`] decodes the AETH syndrome.
//! - [`Packet`]: a whole packet (headers, a borrowed payload and its
//!   opcode's table entry, so a receiver never looks the opcode up again);
//!   [`emit_headers`] for callers that place the payload themselves.
//! - [`icrc()`], [`seal`], [`verify`]: the ICRC, bit-compatible with the Linux
//!   kernel's rxe (tested against packets it sent); [`verify_received`]
//!   checks a packet whose IPv4 identification and flags a UDP socket hid,
//!   recovering them from the CRC ([`crc_algebra`]), and [`reseal_ipv4_id`]
//!   moves a sealed packet to another identification.
//!
//! Input from the network never makes this crate panic: malformed packets
//! become a [`WireError`].
//!
//! migros extends the opcode table with [`Opcode::RC_RESUME`] (BTH + AETH,
//! optional 16-byte address payload) and the AETH syndrome with
//! [`NakCode::Pause`] ([`PAUSE_NAK_SYNDROME`]), used for live migration.

#![warn(missing_docs)]

pub mod crc_algebra;
pub mod error;
pub mod headers;
pub mod icrc;
pub mod opcode;
pub mod packet;
pub mod psn;
pub mod syndrome;

pub use error::WireError;
pub use headers::{Aeth, AtomicAckEth, AtomicEth, Bth, Deth, Reth, IETH_LEN, IMMDT_LEN};
pub use icrc::{
    icrc, reseal_ipv4_id, seal, verify, verify_received, IpContext, ReceivedHeader, ICRC_LEN,
};
pub use opcode::{OpKind, Opcode, OpcodeInfo, Position, ServiceType};
pub use packet::{emit_headers, pad_len, Headers, Packet, RESUME_PAYLOAD_LENS};
pub use psn::Psn;
pub use syndrome::{AckSyndrome, NakCode, PAUSE_NAK_SYNDROME};

/// UDP destination port of RoCE v2.
pub const ROCE_V2_PORT: u16 = 4791;
