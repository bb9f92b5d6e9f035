//! The AETH syndrome byte: ACK with credits, RNR NAK, NAK.

/// The NAK codes of an AETH syndrome `0b011x_xxxx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NakCode {
    /// PSN sequence error.
    PsnSequenceError = 0,
    /// Invalid request.
    InvalidRequest = 1,
    /// Remote access error.
    RemoteAccessError = 2,
    /// Remote operational error.
    RemoteOperationalError = 3,
    /// Invalid RD request.
    InvalidRdRequest = 4,
    /// migros extension: the QP is migrating; wait for its RESUME.
    Pause = 5,
}

/// The syndrome byte of a NAK with [`NakCode::Pause`].
pub const PAUSE_NAK_SYNDROME: u8 = 0x65;

/// A decoded AETH syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckSyndrome {
    /// ACK with a 5-bit credit count (`0x1f`: invalid/unlimited).
    Ack {
        /// Credit count, 5 bits.
        credits: u8,
    },
    /// Receiver-not-ready NAK with a 5-bit timer code.
    RnrNak {
        /// Minimum RNR NAK timer code, 5 bits.
        timer: u8,
    },
    /// NAK.
    Nak(NakCode),
    /// A syndrome this crate does not know, kept whole.
    Reserved(u8),
}

impl AckSyndrome {
    /// Decodes a syndrome byte; unknown values become [`AckSyndrome::Reserved`].
    pub fn decode(syndrome: u8) -> AckSyndrome {
        let low = syndrome & 0x1f;
        match syndrome >> 5 {
            0b000 => AckSyndrome::Ack { credits: low },
            0b001 => AckSyndrome::RnrNak { timer: low },
            0b011 => match low {
                0 => AckSyndrome::Nak(NakCode::PsnSequenceError),
                1 => AckSyndrome::Nak(NakCode::InvalidRequest),
                2 => AckSyndrome::Nak(NakCode::RemoteAccessError),
                3 => AckSyndrome::Nak(NakCode::RemoteOperationalError),
                4 => AckSyndrome::Nak(NakCode::InvalidRdRequest),
                5 => AckSyndrome::Nak(NakCode::Pause),
                _ => AckSyndrome::Reserved(syndrome),
            },
            _ => AckSyndrome::Reserved(syndrome),
        }
    }

    /// Encodes to a syndrome byte; credit and timer values are truncated to 5 bits.
    pub fn encode(self) -> u8 {
        match self {
            AckSyndrome::Ack { credits } => credits & 0x1f,
            AckSyndrome::RnrNak { timer } => 0x20 | (timer & 0x1f),
            AckSyndrome::Nak(code) => 0x60 | code as u8,
            AckSyndrome::Reserved(byte) => byte,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(
            AckSyndrome::decode(0x1f),
            AckSyndrome::Ack { credits: 0x1f }
        );
        assert_eq!(AckSyndrome::decode(0x00), AckSyndrome::Ack { credits: 0 });
        assert_eq!(
            AckSyndrome::decode(0x2e),
            AckSyndrome::RnrNak { timer: 0x0e }
        );
        assert_eq!(
            AckSyndrome::decode(0x60),
            AckSyndrome::Nak(NakCode::PsnSequenceError)
        );
        assert_eq!(
            AckSyndrome::decode(0x63),
            AckSyndrome::Nak(NakCode::RemoteOperationalError)
        );
        assert_eq!(
            AckSyndrome::decode(PAUSE_NAK_SYNDROME),
            AckSyndrome::Nak(NakCode::Pause)
        );
        assert_eq!(
            AckSyndrome::Nak(NakCode::Pause).encode(),
            PAUSE_NAK_SYNDROME
        );
        assert_eq!(AckSyndrome::decode(0x40), AckSyndrome::Reserved(0x40));
        assert_eq!(AckSyndrome::decode(0x66), AckSyndrome::Reserved(0x66));
    }

    #[test]
    fn every_byte_round_trips() {
        for byte in 0..=255u8 {
            assert_eq!(AckSyndrome::decode(byte).encode(), byte, "{byte:#04x}");
        }
    }
}
