//! The process's daemon sockets: what is queued in them at dump, their fd
//! flags, and new connections at restore.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long a daemon may take to answer a RestoreSession/RestoreChannel.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything in `fd`'s receive queue, left in place (MSG_PEEK, never
/// blocking). The peek offset (SO_PEEK_OFF) is disabled while peeking and
/// put back afterwards, so the bytes are read from the start of the queue.
pub fn peek_all(fd: RawFd) -> io::Result<Vec<u8>> {
    let orig = sockopt(fd, libc::SO_PEEK_OFF)?;
    if orig != -1 {
        set_sockopt(fd, libc::SO_PEEK_OFF, -1)?;
    }
    let peeked = peek(fd);
    if orig != -1 {
        set_sockopt(fd, libc::SO_PEEK_OFF, orig)?;
    }
    peeked
}

fn peek(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut queued: c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // One byte more than announced: a full buffer means there may be more.
    let mut size = (queued.max(0) as usize).max(4096) + 1;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: recv into a buffer of `size` bytes.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                size,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(Vec::new()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        let n = n as usize;
        if n < size {
            buf.truncate(n);
            return Ok(buf);
        }
        size *= 2;
    }
}

/// `(fcntl(F_GETFL), fcntl(F_GETFD))` of `fd`.
pub fn fd_flags(fd: RawFd) -> io::Result<(i32, i32)> {
    // SAFETY: fcntl queries on an fd number.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    let fd_fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if fl < 0 || fd_fl < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fl, fd_fl))
}

/// Sets what [`fd_flags`] returned (F_SETFL keeps the flags it can change:
/// O_NONBLOCK, O_APPEND, O_ASYNC…).
pub fn set_fd_flags(fd: RawFd, status: i32, fd_flags: i32) -> io::Result<()> {
    // SAFETY: fcntl settings on an fd number.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, status) } < 0
        // SAFETY: as above.
        || unsafe { libc::fcntl(fd, libc::F_SETFD, fd_flags) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The inode of a socket fd: the id CRIU knows it by.
pub fn inode(fd: RawFd) -> io::Result<u64> {
    // SAFETY: fstat fills a zeroed stat struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_ino)
}

/// The path of the socket `fd` is connected to (for a connection to a
/// daemon: its listening socket); `None` if unnamed or not a unix socket.
pub fn peer_path(fd: RawFd) -> Option<String> {
    // SAFETY: getpeername into a zeroed sockaddr_un of the given length.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: as above.
    if unsafe { libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) } < 0
        || addr.sun_family != libc::AF_UNIX as libc::sa_family_t
    {
        return None;
    }
    let n = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
    let bytes: Vec<u8> = addr.sun_path[..n.min(addr.sun_path.len())]
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// A blocking connection to `path` with a bounded handshake; call
/// [`finish_handshake`] before handing it to the process.
pub fn connect(path: &str) -> io::Result<UnixStream> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(RESTORE_TIMEOUT))?;
    s.set_write_timeout(Some(RESTORE_TIMEOUT))?;
    Ok(s)
}

/// Clears the handshake's timeouts (SO_RCVTIMEO/SO_SNDTIMEO would stay on
/// the process's socket otherwise).
pub fn finish_handshake(s: &UnixStream) -> io::Result<()> {
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    debug_assert!(s.as_raw_fd() >= 0);
    Ok(())
}

fn sockopt(fd: RawFd, opt: c_int) -> io::Result<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt of one int.
    if unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn set_sockopt(fd: RawFd, opt: c_int, v: c_int) -> io::Result<()> {
    // SAFETY: setsockopt of one int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn peek_takes_everything_and_leaves_it() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        assert_eq!(peek_all(b.as_raw_fd()).unwrap(), b"");
        // Many writes (many skbs), more than the first buffer.
        let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7) as u8).collect();
        for chunk in data.chunks(1000) {
            a.write_all(chunk).unwrap();
        }
        // A peek offset left enabled by someone else does not shift it.
        set_sockopt(b.as_raw_fd(), libc::SO_PEEK_OFF, 10).unwrap();
        assert_eq!(peek_all(b.as_raw_fd()).unwrap(), data);
        assert_eq!(sockopt(b.as_raw_fd(), libc::SO_PEEK_OFF).unwrap(), 10);
        set_sockopt(b.as_raw_fd(), libc::SO_PEEK_OFF, -1).unwrap();
        let mut got = vec![0u8; data.len()];
        b.read_exact(&mut got).unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn flags_round_trip() {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (fl, fdfl) = fd_flags(a.as_raw_fd()).unwrap();
        assert!(fl & libc::O_NONBLOCK != 0);
        assert!(fdfl & libc::FD_CLOEXEC != 0);
        set_fd_flags(a.as_raw_fd(), fl & !libc::O_NONBLOCK, 0).unwrap();
        let (fl2, fdfl2) = fd_flags(a.as_raw_fd()).unwrap();
        assert_eq!((fl2 & libc::O_NONBLOCK, fdfl2), (0, 0));
        assert!(inode(a.as_raw_fd()).unwrap() > 0);
        assert_eq!(peer_path(a.as_raw_fd()), None);
    }

    #[test]
    fn peer_path_names_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sock");
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let s = UnixStream::connect(&path).unwrap();
        assert_eq!(peer_path(s.as_raw_fd()).as_deref(), path.to_str());
    }
}
