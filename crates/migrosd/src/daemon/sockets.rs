//! The daemon's local endpoints: the client socket `<dev>.sock` in the
//! socket directory, the root-only admin socket `<dev>.sock` in the admin
//! directory beside it (never inside what containers get mounted, see
//! [`migros_proto::paths`]), and the signal fd that turns SIGTERM and
//! SIGINT into a clean exit. Dropping them removes the socket files.
//!
//! Both directories must belong to the daemon's user and be writable by
//! nobody else (the admin one not even readable), or another user could
//! replace the socket files; the sockets get their mode from the umask at
//! bind time, so there is no moment where a path has a wider mode.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use migros_proto::paths;

use super::{io_err, DaemonError};
use crate::config::Config;
use crate::conn::Peer;

/// The listeners and the signal fd.
pub(super) struct Sockets {
    client: UnixListener,
    admin: UnixListener,
    signals: SignalFd,
    client_path: PathBuf,
    admin_path: PathBuf,
}

impl Sockets {
    /// Takes SIGTERM and SIGINT over, then binds both sockets (replacing
    /// stale ones): whoever sees a socket may send SIGTERM and expects a
    /// clean exit.
    pub(super) fn bind(cfg: &Config) -> Result<Sockets, DaemonError> {
        let admin_dir = paths::admin_dir(&cfg.socket_dir);
        secure_dir(&cfg.socket_dir, 0o755, 0o022)?;
        secure_dir(&admin_dir, 0o700, 0o077)?;
        let client_path = paths::device_socket(&cfg.socket_dir, &cfg.name);
        let admin_path = paths::admin_socket(&cfg.socket_dir, &cfg.name);
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()
            .map_err(|e| io_err("cannot block signals")(e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_err("cannot create a signalfd")(e.into()))?;
        let client = bind_unix(&client_path, 0o111)?;
        let admin = bind_unix(&admin_path, 0o177)?;
        Ok(Sockets {
            client,
            admin,
            signals,
            client_path,
            admin_path,
        })
    }

    /// Registers the listeners and the signal fd with the loop's poll.
    pub(super) fn register(
        &mut self,
        reg: &Registry,
        client: Token,
        admin: Token,
        signal: Token,
    ) -> Result<(), DaemonError> {
        reg.register(&mut self.client, client, Interest::READABLE)
            .map_err(io_err("register listener"))?;
        reg.register(&mut self.admin, admin, Interest::READABLE)
            .map_err(io_err("register admin listener"))?;
        reg.register(
            &mut SourceFd(&self.signals.as_raw_fd()),
            signal,
            Interest::READABLE,
        )
        .map_err(io_err("register signalfd"))
    }

    pub(super) fn client_path(&self) -> &Path {
        &self.client_path
    }

    /// The next connection on the client (or admin) socket with its
    /// peer; `WouldBlock` when there is none.
    pub(super) fn accept(&self, admin: bool) -> io::Result<(UnixStream, Option<Peer>)> {
        let listener = if admin { &self.admin } else { &self.client };
        let (stream, _) = listener.accept()?;
        let peer = getsockopt(&stream.as_fd(), PeerCredentials)
            .ok()
            .map(|c| Peer {
                pid: c.pid(),
                uid: c.uid(),
                gid: c.gid(),
                pidfd: peer_pidfd(stream.as_raw_fd()),
            });
        Ok((stream, peer))
    }

    /// The signals received since last asked (their numbers).
    pub(super) fn signals(&mut self) -> Vec<u32> {
        let mut got = Vec::new();
        while let Ok(Some(info)) = self.signals.read_signal() {
            got.push(info.ssi_signo);
        }
        got
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.client_path);
        let _ = std::fs::remove_file(&self.admin_path);
        // The admin directory goes with its last socket.
        if let Some(dir) = self.admin_path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The connecting process's pidfd (`SO_PEERPIDFD`, Linux 6.5), if the
/// kernel gives one.
fn peer_pidfd(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into `pidfd`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel made a new fd that nothing else owns.
    (r == 0 && pidfd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd) })
}

/// Creates directory `dir` with `mode` if it is missing, then checks that
/// it is a directory (not a symlink) of the daemon's user with none of the
/// `forbidden` mode bits.
fn secure_dir(dir: &Path, mode: u32, forbidden: u32) -> Result<(), DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("cannot create {}", parent.display())))?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(format!("cannot create {}", dir.display()))(e)),
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(io_err(format!("cannot stat {}", dir.display())))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let refuse = |why: String| DaemonError::Io {
        what: format!("{} {why}", dir.display()),
        source: io::ErrorKind::PermissionDenied.into(),
    };
    if !meta.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    if meta.uid() != me {
        return Err(refuse(format!(
            "belongs to uid {}, not to the daemon's user {me}",
            meta.uid()
        )));
    }
    if meta.mode() & forbidden != 0 {
        return Err(refuse(format!(
            "has mode {:o}; the daemon needs none of {forbidden:o}",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Binds a unix listener at `path` (replacing a stale socket), created
/// with `umask` in effect (the socket's mode is 0777 without its bits).
fn bind_unix(path: &Path, umask: u32) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::Io {
                    what: format!("{} is in use by a running daemon", path.display()),
                    source: io::ErrorKind::AddrInUse.into(),
                });
            }
            let _ = std::fs::remove_file(path);
        } else {
            return Err(DaemonError::Io {
                what: format!("{} exists and is not a socket", path.display()),
                source: io::ErrorKind::AlreadyExists.into(),
            });
        }
    }
    // The daemon is single-threaded here: the process-wide umask cannot
    // affect another thread's files.
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(umask as libc::mode_t) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    l.map_err(io_err(format!("cannot bind {}", path.display())))
}
