//! The daemon's local endpoints: the client socket `<dev>.sock`, the
//! root-only admin socket `<dev>.admin.sock`, and the signal fd that turns
//! SIGTERM and SIGINT into a clean exit. Dropping them removes the socket
//! files.

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
        std::fs::create_dir_all(&cfg.socket_dir).map_err(io_err(format!(
            "cannot create {}",
            cfg.socket_dir.display()
        )))?;
        let client_path = paths::device_socket(&cfg.socket_dir, &cfg.name);
        let admin_path = paths::admin_socket(&cfg.socket_dir, &cfg.name);
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()
            .map_err(|e| io_err("cannot block signals")(e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| io_err("cannot create a signalfd")(e.into()))?;
        let client = bind_unix(&client_path, 0o666)?;
        let admin = bind_unix(&admin_path, 0o600)?;
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
    /// peer's pid and uid; `WouldBlock` when there is none.
    pub(super) fn accept(&self, admin: bool) -> io::Result<(UnixStream, Option<(i32, u32)>)> {
        let listener = if admin { &self.admin } else { &self.client };
        let (stream, _) = listener.accept()?;
        let cred = getsockopt(&stream.as_fd(), PeerCredentials)
            .ok()
            .map(|c| (c.pid(), c.uid()));
        Ok((stream, cred))
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
    }
}

/// Binds a unix listener at `path` (replacing a stale socket) with `mode`.
fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
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
    let l = UnixListener::bind(path).map_err(io_err(format!("cannot bind {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("cannot chmod {}", path.display())))?;
    Ok(l)
}
