//! The one error type of the crate.

/// Why a packet could not be parsed or emitted.
///
/// Parsing errors describe malformed input from the network; emitting errors
/// describe headers that do not fit their opcode or a buffer that is too
/// small. None of them is ever reported by panicking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end before a header, the pad or the ICRC does.
    #[error("packet truncated")]
    Truncated,
    /// The BTH opcode is not in the opcode table.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The pad count does not bring the payload to a multiple of four bytes.
    #[error("bad pad count")]
    BadPad,
    /// The opcode does not carry a payload but the packet has one.
    #[error("unexpected payload")]
    UnexpectedPayload,
    /// A RESUME payload of a length no RESUME message has.
    #[error("bad resume payload length {0}")]
    BadResumePayload(usize),
    /// The BTH transport header version is not 0.
    #[error("unsupported transport header version")]
    BadVersion,
    /// The extension headers given to an emitter do not match the opcode.
    #[error("extension headers do not match the opcode")]
    HeaderMismatch,
    /// A header field does not fit its width on the wire (e.g. a QPN above 24 bits).
    #[error("field {0} out of range")]
    FieldOutOfRange(&'static str),
    /// The output buffer is shorter than the packet to emit.
    #[error("output buffer too small")]
    BufferTooSmall,
}
