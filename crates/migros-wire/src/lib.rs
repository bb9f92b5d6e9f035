//! RoCE v2 wire format (placeholder until the codec lands).

/// UDP destination port of RoCE v2.
pub const ROCE_V2_PORT: u16 = 4791;
