//! Finding the daemons (their admin sockets) and asking them things.

use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::frame;
use migros_proto::paths::{DEFAULT_SOCKET_DIR, SOCKET_DIR_ENV};

/// Env var: the socket directory a plain `criu restore` (same mount
/// namespace as the dump) reconnects to instead of the recorded one.
pub const RESTORE_SOCKET_DIR_ENV: &str = "MIGROS_RESTORE_SOCKET_DIR";
/// Env var: a colon-separated list of socket directories that replaces
/// the search below (tests and unusual setups).
pub const SOCKET_DIRS_ENV: &str = "MIGROS_CRIU_SOCKET_DIRS";
/// Subdirectories of this one hold the sockets of `migros` nodes.
const NODES_DIR: &str = "/run/migros/nodes";
const ADMIN_SUFFIX: &str = ".admin.sock";
/// How long a daemon may take to answer a checkpoint (of many QPs).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to answer anything else (CRIU's own freeze
/// timeout is 10 s by default).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(8);

/// Every admin socket: `*.admin.sock` in `$MIGROS_SOCKET_DIR`,
/// `$MIGROS_RESTORE_SOCKET_DIR`, `/run/migros` and each directory under
/// `/run/migros/nodes/`; or only in the directories of
/// `$MIGROS_CRIU_SOCKET_DIRS` if that is set. Sorted, without duplicates.
pub fn admin_sockets() -> Vec<PathBuf> {
    let mut found = BTreeSet::new();
    if let Some(list) = std::env::var_os(SOCKET_DIRS_ENV).filter(|v| !v.is_empty()) {
        for dir in std::env::split_paths(&list) {
            found.extend(admin_sockets_in(&dir));
        }
        return found.into_iter().collect();
    }
    let mut dirs: Vec<PathBuf> = [SOCKET_DIR_ENV, RESTORE_SOCKET_DIR_ENV]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .collect();
    dirs.push(PathBuf::from(DEFAULT_SOCKET_DIR));
    if let Ok(nodes) = std::fs::read_dir(NODES_DIR) {
        dirs.extend(nodes.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for dir in dirs {
        found.extend(admin_sockets_in(&dir));
    }
    found.into_iter().collect()
}

/// The directories [`admin_sockets`] searches, for messages.
pub fn searched() -> String {
    if let Some(list) = std::env::var_os(SOCKET_DIRS_ENV).filter(|v| !v.is_empty()) {
        return list.to_string_lossy().into_owned();
    }
    let mut dirs: Vec<String> = [SOCKET_DIR_ENV, RESTORE_SOCKET_DIR_ENV]
        .iter()
        .filter_map(std::env::var_os)
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    dirs.push(DEFAULT_SOCKET_DIR.to_owned());
    dirs.push(format!("{NODES_DIR}/*"));
    dirs.join(", ")
}

fn admin_sockets_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(ADMIN_SUFFIX))
        .map(|e| e.path().canonicalize().unwrap_or_else(|_| e.path()))
        .collect()
}

/// Why a daemon could not answer.
#[derive(Debug)]
pub enum AskError {
    /// Nobody listens there (a stale socket file): that daemon is gone,
    /// so it holds nothing of anyone.
    Gone(std::io::Error),
    /// It listens but the exchange failed.
    Failed(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Gone(e) => write!(f, "not running ({e})"),
            AskError::Failed(e) => f.write_str(e),
        }
    }
}

/// One request on a fresh admin connection, bounded in time.
pub fn ask(sock: &Path, req: &AdminRequest) -> Result<AdminResponse, AskError> {
    let mut s = UnixStream::connect(sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => AskError::Gone(e),
        _ => AskError::Failed(format!("connect: {e}")),
    })?;
    let failed = |e: &dyn std::fmt::Display| AskError::Failed(e.to_string());
    let timeout = match req {
        AdminRequest::Checkpoint { .. } => CHECKPOINT_TIMEOUT,
        _ => ADMIN_TIMEOUT,
    };
    s.set_read_timeout(Some(timeout)).map_err(|e| failed(&e))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| failed(&e))?;
    frame::write(&mut s, req).map_err(|e| failed(&e))?;
    frame::read(&mut s).map_err(|e| failed(&e))
}

/// Whether the daemon at `sock` says (in its status) that it has no
/// session of `pid`: then its failure to pause or resume `pid` does not
/// concern us (an older daemon without these requests, say).
pub fn has_nothing_of(sock: &Path, pid: u32) -> bool {
    matches!(ask(sock, &AdminRequest::Status),
        Ok(AdminResponse::Status(st)) if st.sessions.iter().all(|s| s.pid != pid))
}
