//! Errors: malformed MADs from the network ([`MadError`]) and refused
//! requests from the agent's users ([`CmError`], each with the errno the
//! RDMA CM reports for it).

/// Why bytes from the network are not a CM message this agent takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MadError {
    #[error("mad of {0} bytes (a CM mad has 256)")]
    Truncated(usize),
    #[error("mad base version {0} (want 1)")]
    BaseVersion(u8),
    #[error("management class {0:#04x} is not the CM")]
    NotCm(u8),
    #[error("CM class version {0} (want 2)")]
    ClassVersion(u8),
    #[error("mad method {0:#04x} (CM messages use Send)")]
    Method(u8),
    #[error("unknown CM attribute {0:#06x}")]
    Attribute(u16),
    #[error("private data of {len} bytes exceeds the {max} the message carries")]
    PrivateData { len: usize, max: usize },
    #[error("not a GSI datagram: {0}")]
    Gsi(&'static str),
    #[error("GSI datagram with a bad ICRC")]
    Icrc,
    #[error("bad RDMA CM private data header")]
    CmaHeader,
}

/// Why the agent refused a request. [`CmError::errno`] is what librdmacm
/// returns for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmError {
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("address in use")]
    AddrInUse,
    #[error("no free port")]
    NoPort,
    #[error("no such CM id")]
    NoId,
    #[error("private data of {len} bytes exceeds the {max} allowed")]
    PrivateData { len: usize, max: usize },
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    #[error("already connected")]
    IsConnected,
}

impl CmError {
    /// The errno the C API reports.
    pub fn errno(&self) -> i32 {
        const EINVAL: i32 = 22;
        const EADDRINUSE: i32 = 98;
        const EADDRNOTAVAIL: i32 = 99;
        const EOPNOTSUPP: i32 = 95;
        const EISCONN: i32 = 106;
        match self {
            CmError::Invalid(_) | CmError::NoId | CmError::PrivateData { .. } => EINVAL,
            CmError::AddrInUse => EADDRINUSE,
            CmError::NoPort => EADDRNOTAVAIL,
            CmError::Unsupported(_) => EOPNOTSUPP,
            CmError::IsConnected => EISCONN,
        }
    }
}
