//! One device's connection to its daemon's connection manager: a unix
//! socket that starts with `CmHello`, then carries requests one at a time
//! (each waits for its reply) and, interleaved with the replies, events.
//! A reader thread takes every frame: replies go to the waiting request,
//! events to [`crate::registry::route`].
//!
//! When the daemon goes away (the socket closes), a waiting request fails
//! with ENODEV, later ones at once, and every id on the device gets
//! `RDMA_CM_EVENT_DEVICE_REMOVAL`: nothing waits forever.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use migros_proto::cm::{CmDown, CmRequest, CmResponse};
use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};

use crate::util::lock;

/// A librdmacm connection to one daemon.
pub(crate) struct CmConn {
    /// The writing half (requests are written under `serial`).
    stream: UnixStream,
    /// Held by a request from its write until its reply.
    serial: Mutex<()>,
    slot: Mutex<Slot>,
    cv: Condvar,
}

#[derive(Default)]
struct Slot {
    reply: Option<CmResponse>,
    dead: bool,
}

/// Writes all of `buf` without SIGPIPE (a daemon that is gone is an error).
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: writing from a live buffer to our socket.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e == libc::EINTR {
                continue;
            }
            return Err(libc::ENODEV);
        }
        if n == 0 {
            return Err(libc::ENODEV);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

impl CmConn {
    /// Connects to the daemon socket at `path` and starts the reader of
    /// device `dev`. ENODEV when nobody answers there.
    pub fn open(path: &Path, dev: usize) -> Result<Arc<CmConn>, i32> {
        let mut stream = UnixStream::connect(path).map_err(|_| libc::ENODEV)?;
        let inode = {
            use std::os::unix::fs::MetadataExt;
            stream
                .try_clone()
                .ok()
                .and_then(|s| {
                    std::fs::File::from(std::os::fd::OwnedFd::from(s))
                        .metadata()
                        .ok()
                })
                .map_or(0, |m| m.ino())
        };
        let mut buf = Vec::new();
        frame::encode(
            &Request::CmHello {
                version: PROTOCOL_VERSION,
                inode,
            },
            &mut buf,
        )
        .map_err(|_| libc::EINVAL)?;
        send_all(&stream, &buf)?;
        match frame::read::<Response>(&mut stream) {
            Ok(Response::Welcome { .. }) => {}
            Ok(Response::Error { errno, .. }) => return Err(errno),
            _ => return Err(libc::ENODEV),
        }
        let reader = stream.try_clone().map_err(|_| libc::EMFILE)?;
        let conn = Arc::new(CmConn {
            stream,
            serial: Mutex::new(()),
            slot: Mutex::new(Slot::default()),
            cv: Condvar::new(),
        });
        let c = conn.clone();
        std::thread::Builder::new()
            .name("migros-rdmacm".into())
            .spawn(move || c.read_loop(reader, dev))
            .map_err(|_| libc::EAGAIN)?;
        Ok(conn)
    }

    fn read_loop(&self, mut reader: UnixStream, dev: usize) {
        loop {
            match frame::read::<CmDown>(&mut reader) {
                Ok(CmDown::Reply(r)) => {
                    lock(&self.slot).reply = Some(r);
                    self.cv.notify_all();
                }
                Ok(CmDown::Event(ev)) => crate::registry::route(dev, ev),
                Err(_) => {
                    lock(&self.slot).dead = true;
                    self.cv.notify_all();
                    crate::registry::device_gone(dev);
                    return;
                }
            }
        }
    }

    /// Whether the daemon is gone.
    pub fn is_dead(&self) -> bool {
        lock(&self.slot).dead
    }

    /// Sends `req` and waits for its reply; `Error` replies become their
    /// errno, a daemon that is gone ENODEV.
    pub fn request(&self, req: &CmRequest) -> Result<CmResponse, i32> {
        let _serial = lock(&self.serial);
        {
            let mut s = lock(&self.slot);
            if s.dead {
                return Err(libc::ENODEV);
            }
            s.reply = None;
        }
        let mut buf = Vec::new();
        frame::encode(req, &mut buf).map_err(|_| libc::EINVAL)?;
        send_all(&self.stream, &buf)?;
        let mut s = lock(&self.slot);
        loop {
            if let Some(r) = s.reply.take() {
                return match r {
                    CmResponse::Error { errno, .. } => Err(errno),
                    other => Ok(other),
                };
            }
            if s.dead {
                return Err(libc::ENODEV);
            }
            s = self
                .cv
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}
