//! A client of a daemon's admin socket (`<dir>.admin/<device>.sock`, root
//! only): status, every QP's counters, shutdown. It talks only to a
//! daemon running as root (`SO_PEERCRED`): a socket file someone else
//! bound there gets no request.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use migros_proto::admin::{AdminRequest, AdminResponse, DaemonStatus, QpStats};
use migros_proto::counters::DeviceCounters;
use migros_proto::{frame, paths};

/// Sends one request and reads its response.
pub fn request(dir: &Path, name: &str, req: &AdminRequest) -> Result<AdminResponse> {
    let resp = request_raw(dir, name, req)?;
    if let AdminResponse::Error { errno, message } = &resp {
        bail!("{message} (errno {errno})");
    }
    Ok(resp)
}

/// Sends one request and reads its response, errors included.
pub fn request_raw(dir: &Path, name: &str, req: &AdminRequest) -> Result<AdminResponse> {
    let path = paths::admin_socket(dir, name);
    let mut s =
        UnixStream::connect(&path).with_context(|| format!("connecting to {}", path.display()))?;
    let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
        .with_context(|| format!("peer credentials of {}", path.display()))?;
    if cred.uid() != 0 {
        bail!(
            "{} is served by uid {} (pid {}), not by a root daemon: refusing to talk to it",
            path.display(),
            cred.uid(),
            cred.pid()
        );
    }
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    frame::write(&mut s, req).context("writing to the admin socket")?;
    frame::read(&mut s).context("reading from the admin socket")
}

pub fn status(dir: &Path, name: &str) -> Result<DaemonStatus> {
    match request(dir, name, &AdminRequest::Status)? {
        AdminResponse::Status(s) => Ok(s),
        r => bail!("unexpected admin response {r:?}"),
    }
}

pub fn stats(dir: &Path, name: &str) -> Result<(DeviceCounters, Vec<QpStats>)> {
    match request(dir, name, &AdminRequest::Stats)? {
        AdminResponse::Stats { device, qps } => Ok((device, qps)),
        r => bail!("unexpected admin response {r:?}"),
    }
}

pub fn shutdown(dir: &Path, name: &str) -> Result<()> {
    match request(dir, name, &AdminRequest::Shutdown)? {
        AdminResponse::Ok => Ok(()),
        r => bail!("unexpected admin response {r:?}"),
    }
}
