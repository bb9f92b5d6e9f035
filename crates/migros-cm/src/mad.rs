//! The common MAD header (IBA vol. 1, 13.4.3) and the constants of the
//! communication management class.
//!
//! A CM MAD is 256 bytes: this 24-byte header, then 232 bytes of
//! attribute data (`msg.rs`). Every CM message uses method Send; the
//! attribute ID says which message it is.

use crate::error::MadError;

/// Bytes of a MAD (no RMPP for the CM class).
pub const MAD_LEN: usize = 256;
/// Bytes of the common header.
pub const MAD_HDR_LEN: usize = 24;
/// Bytes of CM attribute data after the header.
pub const CM_DATA_LEN: usize = MAD_LEN - MAD_HDR_LEN;

/// `BaseVersion` of every MAD.
pub const BASE_VERSION: u8 = 1;
/// Management class of the communication manager.
pub const MGMT_CLASS_CM: u8 = 0x07;
/// `ClassVersion` of the CM class.
pub const CM_CLASS_VERSION: u8 = 2;
/// Method of every CM message.
pub const METHOD_SEND: u8 = 0x03;

/// The common MAD header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MadHeader {
    pub base_version: u8,
    pub mgmt_class: u8,
    pub class_version: u8,
    pub method: u8,
    pub status: u16,
    pub class_specific: u16,
    /// Transaction ID: a response carries the request's.
    pub tid: u64,
    pub attr_id: u16,
    pub attr_mod: u32,
}

impl MadHeader {
    /// The header of a CM message with attribute `attr_id`.
    pub fn cm(attr_id: u16, tid: u64) -> MadHeader {
        MadHeader {
            base_version: BASE_VERSION,
            mgmt_class: MGMT_CLASS_CM,
            class_version: CM_CLASS_VERSION,
            method: METHOD_SEND,
            status: 0,
            class_specific: 0,
            tid,
            attr_id,
            attr_mod: 0,
        }
    }

    /// Reads the first [`MAD_HDR_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<MadHeader, MadError> {
        let b: &[u8; MAD_HDR_LEN] = b
            .get(..MAD_HDR_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(MadError::Truncated(b.len()))?;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        Ok(MadHeader {
            base_version: b[0],
            mgmt_class: b[1],
            class_version: b[2],
            method: b[3],
            status: u16_at(4),
            class_specific: u16_at(6),
            tid: u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
            attr_id: u16_at(16),
            // bytes 18..20 are reserved
            attr_mod: u32::from_be_bytes([b[20], b[21], b[22], b[23]]),
        })
    }

    /// Writes the header into the first [`MAD_HDR_LEN`] bytes of `out`
    /// (the reserved bytes become zero).
    pub fn emit(&self, out: &mut [u8; MAD_LEN]) {
        out[0] = self.base_version;
        out[1] = self.mgmt_class;
        out[2] = self.class_version;
        out[3] = self.method;
        out[4..6].copy_from_slice(&self.status.to_be_bytes());
        out[6..8].copy_from_slice(&self.class_specific.to_be_bytes());
        out[8..16].copy_from_slice(&self.tid.to_be_bytes());
        out[16..18].copy_from_slice(&self.attr_id.to_be_bytes());
        out[18..20].fill(0);
        out[20..24].copy_from_slice(&self.attr_mod.to_be_bytes());
    }

    /// Checks that this is a CM message the agent takes: base version 1,
    /// CM class, class version 2, method Send.
    pub fn check_cm(&self) -> Result<(), MadError> {
        if self.base_version != BASE_VERSION {
            return Err(MadError::BaseVersion(self.base_version));
        }
        if self.mgmt_class != MGMT_CLASS_CM {
            return Err(MadError::NotCm(self.mgmt_class));
        }
        if self.class_version != CM_CLASS_VERSION {
            return Err(MadError::ClassVersion(self.class_version));
        }
        if self.method != METHOD_SEND {
            return Err(MadError::Method(self.method));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let h = MadHeader {
            tid: 0x0102_0304_0506_0708,
            attr_mod: 0xdead_beef,
            ..MadHeader::cm(0x0010, 0)
        };
        let mut b = [0xffu8; MAD_LEN];
        h.emit(&mut b);
        assert_eq!(&b[..4], &[1, 7, 2, 3]);
        assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[16..20], &[0x00, 0x10, 0, 0]);
        assert_eq!(MadHeader::parse(&b), Ok(h));
        assert_eq!(h.check_cm(), Ok(()));
        assert_eq!(MadHeader::parse(&b[..23]), Err(MadError::Truncated(23)));
        let mut other = h;
        other.method = 0x01;
        assert_eq!(other.check_cm(), Err(MadError::Method(1)));
    }
}
