//! BTH opcodes and the one table that says which headers each one carries.
//!
//! [`Opcode::info`] looks an opcode up in a `const` table built from
//! [`ENTRIES`]; the parser and the emitters in [`crate::packet`] read nothing
//! else to know which extension headers follow the BTH.

use std::fmt;

use crate::headers::{Aeth, AtomicAckEth, AtomicEth, Bth, Deth, Reth};

/// The opcode byte of a Base Transport Header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

/// Transport service an opcode belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    /// Reliable connected.
    Rc,
    /// Unreliable connected.
    Uc,
    /// Unreliable datagram.
    Ud,
}

/// What an opcode does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// SEND (all positions, with or without immediate or invalidate).
    Send,
    /// RDMA WRITE (all positions, with or without immediate).
    RdmaWrite,
    /// RDMA READ request.
    ReadRequest,
    /// RDMA READ response.
    ReadResponse,
    /// ACKNOWLEDGE (ACK or NAK).
    Ack,
    /// ATOMIC ACKNOWLEDGE.
    AtomicAck,
    /// Atomic compare and swap.
    CompareSwap,
    /// Atomic fetch and add.
    FetchAdd,
    /// ATOMIC WRITE: 8 bytes stored at once (RETH + payload), answered by
    /// a zero-length RDMA READ response.
    AtomicWrite,
    /// migros extension: a migrated QP announces its new location.
    Resume,
}

/// Where a packet sits in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// First packet of a multi-packet message.
    First,
    /// Neither first nor last.
    Middle,
    /// Last packet of a multi-packet message.
    Last,
    /// The whole message; also every single-packet operation.
    Only,
}

/// Everything the wire format needs to know about one opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpcodeInfo {
    /// Name as in the IBA spec, e.g. `"RC_SEND_ONLY"`.
    pub name: &'static str,
    /// Transport service.
    pub service: ServiceType,
    /// Operation.
    pub kind: OpKind,
    /// Position in the message ([`Position::Only`] for single-packet ops).
    pub position: Position,
    /// RDMA extended transport header follows the BTH.
    pub has_reth: bool,
    /// ACK extended transport header present.
    pub has_aeth: bool,
    /// Atomic extended transport header present.
    pub has_atomic_eth: bool,
    /// Atomic ACK extended transport header present.
    pub has_atomic_ack_eth: bool,
    /// Immediate data present.
    pub has_immdt: bool,
    /// Invalidate extended transport header present.
    pub has_ieth: bool,
    /// Datagram extended transport header present.
    pub has_deth: bool,
    /// The packet may carry payload bytes.
    pub has_payload: bool,
    /// BTH plus all extension headers, in bytes.
    pub header_len: usize,
}

impl OpcodeInfo {
    /// Whether a requester sends this opcode to a responder: SEND, RDMA
    /// WRITE, READ request, the atomics and ATOMIC WRITE.
    ///
    /// RESUME is neither a request nor a response.
    pub fn is_request(&self) -> bool {
        matches!(
            self.kind,
            OpKind::Send
                | OpKind::RdmaWrite
                | OpKind::ReadRequest
                | OpKind::CompareSwap
                | OpKind::FetchAdd
                | OpKind::AtomicWrite
        )
    }

    /// Whether a responder sends this opcode back to a requester: READ
    /// response, ACKNOWLEDGE and ATOMIC ACKNOWLEDGE.
    ///
    /// RESUME is neither a request nor a response.
    pub fn is_response(&self) -> bool {
        matches!(
            self.kind,
            OpKind::ReadResponse | OpKind::Ack | OpKind::AtomicAck
        )
    }
}

const RETH: u8 = 1 << 0;
const AETH: u8 = 1 << 1;
const ATOMIC: u8 = 1 << 2;
const ATOMIC_ACK: u8 = 1 << 3;
const IMM: u8 = 1 << 4;
const IETH: u8 = 1 << 5;
const DETH: u8 = 1 << 6;
const PAYLOAD: u8 = 1 << 7;

const fn has(flags: u8, bit: u8) -> bool {
    flags & bit != 0
}

const fn len_if(flags: u8, bit: u8, len: usize) -> usize {
    if has(flags, bit) {
        len
    } else {
        0
    }
}

const fn op(
    name: &'static str,
    service: ServiceType,
    kind: OpKind,
    position: Position,
    flags: u8,
) -> OpcodeInfo {
    OpcodeInfo {
        name,
        service,
        kind,
        position,
        has_reth: has(flags, RETH),
        has_aeth: has(flags, AETH),
        has_atomic_eth: has(flags, ATOMIC),
        has_atomic_ack_eth: has(flags, ATOMIC_ACK),
        has_immdt: has(flags, IMM),
        has_ieth: has(flags, IETH),
        has_deth: has(flags, DETH),
        has_payload: has(flags, PAYLOAD),
        header_len: Bth::LEN
            + len_if(flags, DETH, Deth::LEN)
            + len_if(flags, RETH, Reth::LEN)
            + len_if(flags, ATOMIC, AtomicEth::LEN)
            + len_if(flags, AETH, Aeth::LEN)
            + len_if(flags, ATOMIC_ACK, AtomicAckEth::LEN)
            + len_if(flags, IMM, 4)
            + len_if(flags, IETH, 4),
    }
}

macro_rules! opcodes {
    ($($name:ident = $value:expr => ($service:ident, $kind:ident, $pos:ident, $flags:expr);)*) => {
        impl Opcode {
            $(
                #[doc = concat!("`", stringify!($name), "`.")]
                pub const $name: Opcode = Opcode($value);
            )*
        }

        /// Every known opcode with its description, in opcode order.
        pub const ENTRIES: &[(Opcode, OpcodeInfo)] = &[
            $((
                Opcode($value),
                op(
                    stringify!($name),
                    ServiceType::$service,
                    OpKind::$kind,
                    Position::$pos,
                    $flags,
                ),
            ),)*
        ];
    };
}

opcodes! {
    RC_SEND_FIRST = 0x00 => (Rc, Send, First, PAYLOAD);
    RC_SEND_MIDDLE = 0x01 => (Rc, Send, Middle, PAYLOAD);
    RC_SEND_LAST = 0x02 => (Rc, Send, Last, PAYLOAD);
    RC_SEND_LAST_WITH_IMMEDIATE = 0x03 => (Rc, Send, Last, IMM | PAYLOAD);
    RC_SEND_ONLY = 0x04 => (Rc, Send, Only, PAYLOAD);
    RC_SEND_ONLY_WITH_IMMEDIATE = 0x05 => (Rc, Send, Only, IMM | PAYLOAD);
    RC_RDMA_WRITE_FIRST = 0x06 => (Rc, RdmaWrite, First, RETH | PAYLOAD);
    RC_RDMA_WRITE_MIDDLE = 0x07 => (Rc, RdmaWrite, Middle, PAYLOAD);
    RC_RDMA_WRITE_LAST = 0x08 => (Rc, RdmaWrite, Last, PAYLOAD);
    RC_RDMA_WRITE_LAST_WITH_IMMEDIATE = 0x09 => (Rc, RdmaWrite, Last, IMM | PAYLOAD);
    RC_RDMA_WRITE_ONLY = 0x0a => (Rc, RdmaWrite, Only, RETH | PAYLOAD);
    RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE = 0x0b => (Rc, RdmaWrite, Only, RETH | IMM | PAYLOAD);
    RC_RDMA_READ_REQUEST = 0x0c => (Rc, ReadRequest, Only, RETH);
    RC_RDMA_READ_RESPONSE_FIRST = 0x0d => (Rc, ReadResponse, First, AETH | PAYLOAD);
    RC_RDMA_READ_RESPONSE_MIDDLE = 0x0e => (Rc, ReadResponse, Middle, PAYLOAD);
    RC_RDMA_READ_RESPONSE_LAST = 0x0f => (Rc, ReadResponse, Last, AETH | PAYLOAD);
    RC_RDMA_READ_RESPONSE_ONLY = 0x10 => (Rc, ReadResponse, Only, AETH | PAYLOAD);
    RC_ACKNOWLEDGE = 0x11 => (Rc, Ack, Only, AETH);
    RC_ATOMIC_ACKNOWLEDGE = 0x12 => (Rc, AtomicAck, Only, AETH | ATOMIC_ACK);
    RC_COMPARE_SWAP = 0x13 => (Rc, CompareSwap, Only, ATOMIC);
    RC_FETCH_ADD = 0x14 => (Rc, FetchAdd, Only, ATOMIC);
    RC_SEND_LAST_WITH_INVALIDATE = 0x16 => (Rc, Send, Last, IETH | PAYLOAD);
    RC_SEND_ONLY_WITH_INVALIDATE = 0x17 => (Rc, Send, Only, IETH | PAYLOAD);
    RC_RESUME = 0x19 => (Rc, Resume, Only, AETH | PAYLOAD);
    RC_ATOMIC_WRITE = 0x1d => (Rc, AtomicWrite, Only, RETH | PAYLOAD);
    UC_SEND_FIRST = 0x20 => (Uc, Send, First, PAYLOAD);
    UC_SEND_MIDDLE = 0x21 => (Uc, Send, Middle, PAYLOAD);
    UC_SEND_LAST = 0x22 => (Uc, Send, Last, PAYLOAD);
    UC_SEND_LAST_WITH_IMMEDIATE = 0x23 => (Uc, Send, Last, IMM | PAYLOAD);
    UC_SEND_ONLY = 0x24 => (Uc, Send, Only, PAYLOAD);
    UC_SEND_ONLY_WITH_IMMEDIATE = 0x25 => (Uc, Send, Only, IMM | PAYLOAD);
    UC_RDMA_WRITE_FIRST = 0x26 => (Uc, RdmaWrite, First, RETH | PAYLOAD);
    UC_RDMA_WRITE_MIDDLE = 0x27 => (Uc, RdmaWrite, Middle, PAYLOAD);
    UC_RDMA_WRITE_LAST = 0x28 => (Uc, RdmaWrite, Last, PAYLOAD);
    UC_RDMA_WRITE_LAST_WITH_IMMEDIATE = 0x29 => (Uc, RdmaWrite, Last, IMM | PAYLOAD);
    UC_RDMA_WRITE_ONLY = 0x2a => (Uc, RdmaWrite, Only, RETH | PAYLOAD);
    UC_RDMA_WRITE_ONLY_WITH_IMMEDIATE = 0x2b => (Uc, RdmaWrite, Only, RETH | IMM | PAYLOAD);
    UD_SEND_ONLY = 0x64 => (Ud, Send, Only, DETH | PAYLOAD);
    UD_SEND_ONLY_WITH_IMMEDIATE = 0x65 => (Ud, Send, Only, DETH | IMM | PAYLOAD);
}

/// `ENTRIES` spread over all 256 opcode values, for O(1) lookup.
static TABLE: [Option<OpcodeInfo>; 256] = build_table();

const fn build_table() -> [Option<OpcodeInfo>; 256] {
    let mut table = [None; 256];
    let mut i = 0;
    while i < ENTRIES.len() {
        let (opcode, info) = ENTRIES[i];
        table[opcode.0 as usize] = Some(info);
        i += 1;
    }
    table
}

impl Opcode {
    /// The table entry of this opcode, or `None` if it is not one we know.
    pub fn info(self) -> Option<&'static OpcodeInfo> {
        TABLE[usize::from(self.0)].as_ref()
    }

    /// The name from the table, or `None` for an unknown opcode.
    pub fn name(self) -> Option<&'static str> {
        self.info().map(|info| info.name)
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "UNKNOWN({:#04x})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_entries() {
        let known = (0..=255u8).filter(|&b| Opcode(b).info().is_some()).count();
        assert_eq!(known, ENTRIES.len());
        for (opcode, info) in ENTRIES {
            assert_eq!(opcode.info(), Some(info));
        }
        assert_eq!(Opcode(0x15).info(), None);
        assert_eq!(Opcode(0x18).info(), None);
        assert_eq!(Opcode(0xff).info(), None);
    }

    #[test]
    fn header_lengths() {
        let len = |op: Opcode| op.info().map(|i| i.header_len);
        assert_eq!(len(Opcode::RC_SEND_ONLY), Some(12));
        assert_eq!(len(Opcode::RC_SEND_ONLY_WITH_IMMEDIATE), Some(16));
        assert_eq!(len(Opcode::RC_RDMA_WRITE_ONLY_WITH_IMMEDIATE), Some(32));
        assert_eq!(len(Opcode::RC_RDMA_READ_REQUEST), Some(28));
        assert_eq!(len(Opcode::RC_RDMA_READ_RESPONSE_FIRST), Some(16));
        assert_eq!(len(Opcode::RC_RDMA_READ_RESPONSE_MIDDLE), Some(12));
        assert_eq!(len(Opcode::RC_ACKNOWLEDGE), Some(16));
        assert_eq!(len(Opcode::RC_ATOMIC_ACKNOWLEDGE), Some(24));
        assert_eq!(len(Opcode::RC_COMPARE_SWAP), Some(40));
        assert_eq!(len(Opcode::RC_SEND_LAST_WITH_INVALIDATE), Some(16));
        assert_eq!(len(Opcode::RC_RESUME), Some(16));
        assert_eq!(len(Opcode::RC_ATOMIC_WRITE), Some(28));
        assert_eq!(len(Opcode::UD_SEND_ONLY), Some(20));
        assert_eq!(len(Opcode::UD_SEND_ONLY_WITH_IMMEDIATE), Some(24));
    }

    #[test]
    fn names_and_classes() {
        assert_eq!(Opcode::UC_SEND_ONLY, Opcode(0x24));
        assert_eq!(Opcode::RC_RESUME.to_string(), "RC_RESUME");
        assert_eq!(Opcode(0x99).to_string(), "UNKNOWN(0x99)");
        let info = |op: Opcode| op.info().copied();
        assert!(info(Opcode::RC_SEND_FIRST).is_some_and(|i| i.is_request()));
        assert!(info(Opcode::RC_ACKNOWLEDGE).is_some_and(|i| i.is_response()));
        assert!(info(Opcode::RC_RESUME).is_some_and(|i| !i.is_request() && !i.is_response()));
        for (opcode, info) in ENTRIES {
            let service = match opcode.0 >> 5 {
                0 => ServiceType::Rc,
                1 => ServiceType::Uc,
                _ => ServiceType::Ud,
            };
            assert_eq!(info.service, service, "{opcode}");
            assert!(info.is_request() != info.is_response() || info.kind == OpKind::Resume);
        }
    }
}
