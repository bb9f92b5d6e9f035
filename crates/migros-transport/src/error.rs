//! Errors returned to the users of a device (the verbs layer).

use thiserror::Error;

use migros_proto::verbs::{QpState, Qpn};

/// Why a verbs call on a device failed. Each maps to an errno in the C layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerbsError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("no such {kind} {id}")]
    NotFound { kind: &'static str, id: u64 },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: u64 },
    #[error("queue full")]
    QueueFull,
    #[error("qp {qpn} is in state {state:?}, which does not allow this")]
    WrongState { qpn: Qpn, state: QpState },
    #[error("object is in use: {0}")]
    Busy(String),
    #[error("snapshot rejected: {0}")]
    BadSnapshot(String),
}
