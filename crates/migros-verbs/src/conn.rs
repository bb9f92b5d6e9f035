//! One connection to a daemon: connect, Hello, synchronous requests, and
//! fire-and-forget doorbells.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use migros_proto::frame;
use migros_proto::msg::{DeviceInfo, Request, Response, PROTOCOL_VERSION};

use crate::error::{Error, Result};

/// A client session's socket.
pub(crate) struct Conn {
    stream: UnixStream,
    /// The socket path connected to (sent in Hello).
    path: String,
    /// Reused frame buffer (doorbells are on the hot path).
    wbuf: Vec<u8>,
}

impl Conn {
    /// Connects to the socket of device `name` in `dir` (no Hello yet).
    pub(crate) fn connect(dir: &Path, name: &str) -> Result<Conn> {
        if !migros_proto::paths::valid_device_name(name) {
            return Err(Error::NoDevice(name.to_owned()));
        }
        let path = migros_proto::paths::device_socket(dir, name);
        let stream = UnixStream::connect(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                Error::NoDevice(name.to_owned())
            }
            _ => Error::Io(e),
        })?;
        Ok(Conn {
            stream,
            path: path.to_string_lossy().into_owned(),
            wbuf: Vec::new(),
        })
    }

    /// The inode of this end of the socket: the id CRIU knows it by.
    pub(crate) fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let fd = self.stream.as_fd().try_clone_to_owned()?;
        Ok(std::fs::File::from(fd).metadata()?.ino())
    }

    /// Connects and says Hello: the session id and the device.
    pub(crate) fn open(dir: &Path, name: &str) -> Result<(Conn, u64, DeviceInfo)> {
        let mut conn = Conn::connect(dir, name)?;
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
            path: conn.path.clone(),
            inode: conn.inode()?,
        };
        match conn.request(&hello)? {
            Response::Welcome { session, device } => Ok((conn, session, device)),
            other => Err(unexpected("Hello", &other)),
        }
    }

    /// Sends `req` and waits for its response; `Response::Error` becomes
    /// [`Error::Daemon`].
    pub(crate) fn request(&mut self, req: &Request) -> Result<Response> {
        self.send(req)?;
        match frame::read::<Response>(&mut self.stream)? {
            Response::Error { errno, message } => Err(Error::Daemon { errno, message }),
            other => Ok(other),
        }
    }

    /// Sends a frame that gets no response (doorbells, channel attach).
    pub(crate) fn send(&mut self, req: &Request) -> Result<()> {
        self.wbuf.clear();
        frame::encode(req, &mut self.wbuf)?;
        send_all(&self.stream, &self.wbuf)
    }

    /// Whether the daemon closed the connection (hang-up or a socket
    /// error). Never blocks.
    pub(crate) fn closed_by_peer(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout};
        // The peer's close shows as POLLRDHUP (nix has no name for it).
        let rdhup = PollFlags::from_bits_retain(nix::libc::POLLRDHUP);
        let mut fds = [PollFd::new(self.stream.as_fd(), rdhup)];
        // Only hang-up and error conditions can be reported (POLLIN is not
        // asked for), so any ready descriptor means the daemon is gone.
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => n > 0,
            Err(e) => e != nix::errno::Errno::EINTR,
        }
    }

    /// Takes the socket (completion channels keep only the stream).
    pub(crate) fn into_stream(self) -> UnixStream {
        self.stream
    }
}

/// Writes all of `buf` with `MSG_NOSIGNAL`: a daemon that is gone makes
/// this an [`Error::Io`] (EPIPE), never a SIGPIPE that would kill the
/// program.
pub(crate) fn send_all(stream: &UnixStream, mut buf: &[u8]) -> Result<()> {
    use nix::errno::Errno;
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        match send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => {
                return Err(Error::Io(std::io::Error::from(
                    std::io::ErrorKind::WriteZero,
                )))
            }
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::Io(e.into())),
        }
    }
    Ok(())
}

/// The error for a response of the wrong kind.
pub(crate) fn unexpected(what: &str, got: &Response) -> Error {
    Error::Protocol(format!("unexpected answer to {what}: {got:?}"))
}

/// Locks `m`, ignoring poisoning: every critical section of this crate
/// leaves its data consistent before anything that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
