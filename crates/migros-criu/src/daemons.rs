//! Finding the daemons (their admin sockets) and asking them things.

use std::collections::BTreeSet;
use std::ffi::OsString;
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
use migros_proto::paths::ADMIN_DIR_SUFFIX;
/// How long a daemon may take to answer a checkpoint (of many QPs).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to answer anything else (CRIU's own freeze
/// timeout is 10 s by default).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(8);

/// Every admin socket: `*.sock` in the admin directory (see
/// [`migros_proto::paths::admin_dir`]) of `$MIGROS_SOCKET_DIR`,
/// `$MIGROS_RESTORE_SOCKET_DIR`, `/run/migros` and each directory under
/// `/run/migros/nodes/`; or only of the directories of
/// `$MIGROS_CRIU_SOCKET_DIRS` if that is set. Sorted, without duplicates.
pub fn admin_sockets() -> Vec<PathBuf> {
    admin_sockets_with(&|k| std::env::var_os(k), Path::new(NODES_DIR))
}

/// The directories [`admin_sockets`] searches, for messages.
pub fn searched() -> String {
    let (dirs, only) = search(&|k| std::env::var_os(k));
    let mut names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if !only {
        names.push(format!("{NODES_DIR}/*"));
    }
    names.join(", ")
}

type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The directories named by the environment, and whether they are the
/// only ones (`$MIGROS_CRIU_SOCKET_DIRS`).
fn search(env: Env) -> (Vec<PathBuf>, bool) {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(list) = set(SOCKET_DIRS_ENV) {
        return (std::env::split_paths(&list).collect(), true);
    }
    let mut dirs: Vec<PathBuf> = [SOCKET_DIR_ENV, RESTORE_SOCKET_DIR_ENV]
        .iter()
        .filter_map(|k| set(k))
        .map(PathBuf::from)
        .collect();
    dirs.push(PathBuf::from(DEFAULT_SOCKET_DIR));
    (dirs, false)
}

fn admin_sockets_with(env: Env, nodes: &Path) -> Vec<PathBuf> {
    let (mut dirs, only) = search(env);
    if !only {
        if let Ok(entries) = std::fs::read_dir(nodes) {
            dirs.extend(
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| !p.to_string_lossy().ends_with(ADMIN_DIR_SUFFIX)),
            );
        }
    }
    let mut found = BTreeSet::new();
    for dir in dirs {
        found.extend(admin_sockets_in(&dir));
    }
    found.into_iter().collect()
}

fn admin_sockets_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(migros_proto::paths::admin_dir(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
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

/// One request on a fresh admin connection, bounded in time; only to a
/// daemon running as root.
pub fn ask(sock: &Path, req: &AdminRequest) -> Result<AdminResponse, AskError> {
    let mut s = UnixStream::connect(sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound => AskError::Gone(e),
        _ => AskError::Failed(format!("connect: {e}")),
    })?;
    let failed = |e: &dyn std::fmt::Display| AskError::Failed(e.to_string());
    match peer_uid(&s) {
        Ok(0) => {}
        Ok(uid) => {
            return Err(AskError::Failed(format!(
                "served by uid {uid}, not by a root daemon: refused"
            )))
        }
        Err(e) => return Err(failed(&e)),
    }
    let timeout = match req {
        AdminRequest::Checkpoint { .. } => CHECKPOINT_TIMEOUT,
        _ => ADMIN_TIMEOUT,
    };
    s.set_read_timeout(Some(timeout)).map_err(|e| failed(&e))?;
    s.set_write_timeout(Some(timeout)).map_err(|e| failed(&e))?;
    frame::write(&mut s, req).map_err(|e| failed(&e))?;
    frame::read(&mut s).map_err(|e| failed(&e))
}

/// The uid of the process serving `s` (`SO_PEERCRED`).
fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Whether the daemon at `sock` says (in its status) that it has no
/// session of `pid`: then its failure to pause or resume `pid` does not
/// concern us (an older daemon without these requests, say).
pub fn has_nothing_of(sock: &Path, pid: u32) -> bool {
    matches!(ask(sock, &AdminRequest::Status),
        Ok(AdminResponse::Status(st)) if st.sessions.iter().all(|s| s.pid != pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn finds_admin_sockets_where_the_environment_says() {
        let t = tempfile::tempdir().unwrap();
        let t = t.path().canonicalize().unwrap();
        let (env_dir, restore_dir, nodes) = (t.join("env"), t.join("restore"), t.join("nodes"));
        for f in [
            t.join("env.admin/a.sock"),
            env_dir.join("a.sock"),
            env_dir.join("a.admin.sock"),
            t.join("env.admin/notes"),
            t.join("restore.admin/b.sock"),
            nodes.join("n1.admin/rxe0.sock"),
            nodes.join("n2.admin/rxe0.sock"),
            nodes.join("n1/rxe0.sock"),
            nodes.join("n2/rxe0.sock"),
        ] {
            touch(&f);
        }
        let vars: BTreeMap<&str, OsString> = [
            (SOCKET_DIR_ENV, env_dir.clone().into_os_string()),
            (RESTORE_SOCKET_DIR_ENV, restore_dir.clone().into_os_string()),
        ]
        .into_iter()
        .collect();
        let env = |k: &str| vars.get(k).cloned();
        let got = admin_sockets_with(&env, &nodes);
        let want: Vec<PathBuf> = vec![
            t.join("env.admin/a.sock"),
            nodes.join("n1.admin/rxe0.sock"),
            nodes.join("n2.admin/rxe0.sock"),
            t.join("restore.admin/b.sock"),
        ];
        // /run/migros may hold sockets of this machine's daemons too.
        let mine: Vec<PathBuf> = got.into_iter().filter(|p| p.starts_with(&t)).collect();
        assert_eq!(mine, want);

        // The override is the whole list: no nodes, no /run/migros.
        let only = OsString::from(format!(
            "{}:{}",
            restore_dir.display(),
            nodes.join("n1").display()
        ));
        let env = |k: &str| (k == SOCKET_DIRS_ENV).then(|| only.clone());
        assert_eq!(
            admin_sockets_with(&env, &nodes),
            vec![
                nodes.join("n1.admin/rxe0.sock"),
                t.join("restore.admin/b.sock")
            ]
        );
        assert_eq!(search(&env), (vec![restore_dir, nodes.join("n1")], true));
    }
}
