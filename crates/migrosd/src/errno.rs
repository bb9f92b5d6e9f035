//! Errors of the daemon's request handling, and the errno each maps to.

use migros_transport::VerbsError;

/// Why a client request failed: an errno (what the C API reports) and a
/// lowercase message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReqError {
    pub errno: i32,
    pub message: String,
}

impl ReqError {
    pub fn new(errno: i32, message: impl Into<String>) -> ReqError {
        ReqError {
            errno,
            message: message.into(),
        }
    }

    pub fn inval(message: impl Into<String>) -> ReqError {
        ReqError::new(libc::EINVAL, message)
    }

    pub fn noent(message: impl Into<String>) -> ReqError {
        ReqError::new(libc::ENOENT, message)
    }

    pub fn nomem(message: impl Into<String>) -> ReqError {
        ReqError::new(libc::ENOMEM, message)
    }

    pub fn busy(message: impl Into<String>) -> ReqError {
        ReqError::new(libc::EBUSY, message)
    }
}

/// The errno of a transport error.
pub fn errno_of(e: &VerbsError) -> i32 {
    match e {
        VerbsError::InvalidArgument(_) => libc::EINVAL,
        VerbsError::NotFound { .. } => libc::ENOENT,
        VerbsError::AlreadyExists { .. } => libc::EEXIST,
        VerbsError::QueueFull => libc::ENOMEM,
        VerbsError::WrongState { .. } => libc::EINVAL,
        VerbsError::Busy(_) => libc::EBUSY,
        VerbsError::BadSnapshot(_) => libc::EINVAL,
    }
}

impl From<VerbsError> for ReqError {
    fn from(e: VerbsError) -> ReqError {
        ReqError::new(errno_of(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_errors_map_to_errnos() {
        assert_eq!(errno_of(&VerbsError::QueueFull), libc::ENOMEM);
        assert_eq!(errno_of(&VerbsError::Busy("x".into())), libc::EBUSY);
        let e: ReqError = VerbsError::NotFound { kind: "qp", id: 3 }.into();
        assert_eq!(e.errno, libc::ENOENT);
        assert_eq!(e.message, "no such qp 3");
    }
}
