//! The crate's error type and its errno mapping for the C API.

use migros_proto::frame::FrameError;

/// Why a verbs call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No daemon answers at the device's socket.
    #[error("device {0} not found (no daemon socket)")]
    NoDevice(String),
    /// The daemon refused the request.
    #[error("{message} (errno {errno})")]
    Daemon { errno: i32, message: String },
    /// A queue is full (ENOMEM in the C API).
    #[error("queue full")]
    QueueFull,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The device does not do this (EOPNOTSUPP in the C API).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The connection to the daemon broke.
    #[error("daemon connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// errno values (Linux) of the C API.
mod errno {
    pub const ENOMEM: i32 = 12;
    pub const EINVAL: i32 = 22;
    pub const ENODEV: i32 = 19;
    pub const EIO: i32 = 5;
    pub const EPROTO: i32 = 71;
    pub const EOPNOTSUPP: i32 = 95;
}

impl Error {
    /// The errno the C API reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NoDevice(_) => errno::ENODEV,
            Error::Daemon { errno, .. } => *errno,
            Error::QueueFull => errno::ENOMEM,
            Error::InvalidArgument(_) => errno::EINVAL,
            Error::Unsupported(_) => errno::EOPNOTSUPP,
            Error::Io(_) => errno::EIO,
            Error::Protocol(_) => errno::EPROTO,
        }
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        match e {
            FrameError::Io(io) => Error::Io(io),
            FrameError::Closed => Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "daemon closed the connection",
            )),
            other => Error::Protocol(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A list of work requests posted in part: the first `posted` went to the
/// device, the next one failed with `error` and it and the rest did not
/// (`ibv_post_send`'s `bad_wr` points at WR number `posted`).
#[derive(Debug, thiserror::Error)]
#[error("{error} (work request {posted} of the list; the ones before it were posted)")]
pub struct PostError {
    pub posted: usize,
    pub error: Error,
}

impl From<PostError> for Error {
    fn from(e: PostError) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let daemon = Error::Daemon {
            errno: 16,
            message: "busy".into(),
        };
        assert_eq!(daemon.errno(), 16);
        assert_eq!(Error::QueueFull.errno(), 12);
        assert_eq!(Error::InvalidArgument("x".into()).errno(), 22);
        assert_eq!(Error::Unsupported("x".into()).errno(), 95);
        assert_eq!(Error::NoDevice("d".into()).errno(), 19);
        assert_eq!(Error::Io(std::io::Error::other("x")).errno(), 5);
        assert_eq!(Error::Protocol("x".into()).errno(), 71);
        assert_eq!(Error::from(FrameError::Closed).errno(), 5);
        assert_eq!(Error::from(FrameError::TooLarge(1 << 30)).errno(), 71);
    }
}
