//! What each hook does (safe Rust; `lib.rs` wraps these for C).
//!
//! Dump (one CRIU process): PAUSE_DEVICES asks every daemon to pause the
//! task, CHECKPOINT_DEVICES collects the daemons' session images and writes
//! them, DUMP_UNIX_SK records each of the task's daemon connections (what
//! it had not read yet, its fd flags), `exit` rolls back a failed dump.
//! Restore: RESTORE_UNIX_SK, inside the restored task, opens a new
//! connection to the daemon and restores the session or channel through
//! it; RESUME_DEVICES_LATE, in CRIU's process, starts the restored sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::c_int;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::frame;
use migros_proto::msg::{Request, Response, PROTOCOL_VERSION};

use crate::daemons::{self, AskError, RESTORE_SOCKET_DIR_ENV};
use crate::ffi;
use crate::image::{self, SocketFile, SocketKind};
use crate::sock;

/// Env var: comma-separated hooks that fail on purpose after doing their
/// work (`pause`, `checkpoint`, `dump_unix_sk`, `restore_unix_sk`,
/// `resume`); for tests of CRIU's error paths.
pub const FAIL_ENV: &str = "MIGROS_CRIU_FAIL";
/// The plugin's name (CR_PLUGIN_DESC, CRIU's inventory).
pub const PLUGIN_NAME: &std::ffi::CStr = c"migros";
/// Env var: `<hook>:<milliseconds>[,…]`: hooks that sleep that long after
/// their work (before a failure injected by [`FAIL_ENV`]); for tests that
/// kill CRIU in the middle.
pub const SLEEP_ENV: &str = "MIGROS_CRIU_SLEEP";

/// Logs a line at CRIU's info level (its log shows it with `-v3` and more).
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::plugin::log_line($crate::ffi::LOG_INFO, &format!($($arg)*))
    };
}
pub(crate) use log;

/// Logs a line at CRIU's error level (always shown, and what runc reports).
macro_rules! log_error {
    ($($arg:tt)*) => {
        $crate::plugin::log_line($crate::ffi::LOG_ERROR, &format!("error: {}", format_args!($($arg)*)))
    };
}
pub(crate) use log_error;

/// Logs a line at CRIU's warning level.
macro_rules! log_warn {
    ($($arg:tt)*) => {
        $crate::plugin::log_line($crate::ffi::LOG_WARN, &format!("warning: {}", format_args!($($arg)*)))
    };
}

/// One line `migros-criu: <msg>` into CRIU's log, or to stderr outside CRIU.
pub fn log_line(level: u32, msg: &str) {
    let line = format!("migros-criu: {}\n", msg.replace('\0', " "));
    let c = std::ffi::CString::new(line.clone()).unwrap_or_default();
    if !ffi::criu_log(level, &c) {
        eprint!("{line}");
    }
}

/// A hook's failure: its message is logged, `errno` returned negated.
pub struct Failure {
    pub errno: c_int,
    pub message: String,
}

fn fail(errno: c_int, message: impl Into<String>) -> Failure {
    Failure {
        errno,
        message: message.into(),
    }
}

pub type HookResult<T> = Result<T, Failure>;

/// A socket of the dumped task that a daemon told us about.
#[derive(Debug, Clone)]
struct Claim {
    kind: SocketKind,
    session: u64,
    device: String,
    path: String,
    /// What the daemon held back for this socket.
    outbox: Vec<u8>,
}

/// What one dump learns (CRIU runs the dump hooks in one process).
#[derive(Default)]
struct Dump {
    /// Per task: the daemons that answered Pause, and how many sessions
    /// of the task each has.
    paused: BTreeMap<c_int, Vec<(PathBuf, u32)>>,
    /// Socket inode -> what it is.
    claims: BTreeMap<u64, Claim>,
    /// Inodes DUMP_UNIX_SK recorded.
    dumped: BTreeSet<u64>,
    /// Whether the inventory names us (a restore needs the plugin).
    in_inventory: bool,
}

static DUMP: Mutex<Option<Dump>> = Mutex::new(None);

fn with_dump<T>(f: impl FnOnce(&mut Dump) -> T) -> T {
    let mut g = DUMP.lock().unwrap_or_else(PoisonError::into_inner);
    f(g.get_or_insert_with(Dump::default))
}

fn injected(hook: &str) -> HookResult<()> {
    if let Ok(v) = std::env::var(SLEEP_ENV) {
        for (h, ms) in v.split(',').filter_map(|e| e.split_once(':')) {
            if h.trim() == hook {
                let ms: u64 = ms.trim().parse().unwrap_or(0);
                log!("{hook}: sleeping {ms} ms ({SLEEP_ENV}={v})");
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
    }
    let Ok(v) = std::env::var(FAIL_ENV) else {
        return Ok(());
    };
    if v.split(',').any(|h| h.trim() == hook) {
        return Err(fail(
            libc::EIO,
            format!("{hook}: failure injected ({FAIL_ENV}={v})"),
        ));
    }
    Ok(())
}

pub fn init(stage: c_int) -> HookResult<()> {
    *DUMP.lock().unwrap_or_else(PoisonError::into_inner) = None;
    let stage_name = match stage {
        ffi::STAGE_DUMP => "dump",
        ffi::STAGE_PRE_DUMP => "pre-dump",
        ffi::STAGE_RESTORE => "restore",
        _ => "unknown",
    };
    log!(
        "init (stage {stage}: {stage_name}), version {}",
        env!("CARGO_PKG_VERSION")
    );
    if stage == ffi::STAGE_RESTORE {
        // A dump that checkpointed sessions named us in its inventory;
        // CRIU fails the restore unless we take our name off the list.
        match ffi::check_and_remove_inventory_plugin(PLUGIN_NAME) {
            Some(true) => log!("the images hold migros sessions"),
            Some(false) => log!("the images hold no migros session"),
            None => {}
        }
    }
    Ok(())
}

pub fn exit(stage: c_int, ret: c_int) {
    let dump = DUMP.lock().unwrap_or_else(PoisonError::into_inner).take();
    log!("exit (stage {stage}, ret {ret})");
    let Some(dump) = dump else { return };
    let rollback = stage == ffi::STAGE_PRE_DUMP || (stage == ffi::STAGE_DUMP && ret != 0);
    if rollback {
        // The tasks run on: their sessions must too.
        for (pid, daemons) in &dump.paused {
            for (sock, _) in daemons {
                match daemons::ask(sock, &AdminRequest::Resume { pid: *pid as u32 }) {
                    Ok(AdminResponse::Resumed { sessions }) if sessions > 0 => log!(
                        "dump did not complete: rolled back {sessions} session(s) of pid {pid} on {}",
                        sock.display()
                    ),
                    Ok(AdminResponse::Resumed { .. }) | Err(AskError::Gone(_)) => {}
                    Ok(other) => log_error!(
                        "rollback of pid {pid} on {}: {}",
                        sock.display(),
                        describe(&other)
                    ),
                    Err(e) => log_error!("rollback of pid {pid} on {}: {e}", sock.display()),
                }
            }
        }
    } else if stage == ffi::STAGE_DUMP {
        for (ino, claim) in &dump.claims {
            if !dump.dumped.contains(ino) {
                log_warn!(
                    "socket {ino} of session {:#x} ({:?}) was never handed to the plugin: \
                     it is not in the images",
                    claim.session,
                    claim.kind
                );
            }
        }
    }
}

pub fn pause_devices(pid: c_int) -> HookResult<()> {
    let socks = daemons::admin_sockets();
    if socks.is_empty() {
        log!("pause pid {pid}: no migros daemon found");
    }
    let mut answered = Vec::new();
    let mut errors = Vec::new();
    for sock in socks {
        match ask_sessions(&sock, pid, Verb::Pause) {
            Ok(Some(sessions)) => answered.push((sock, sessions)),
            Ok(None) => {}
            Err(error) => {
                errors.push(error);
                // It may hold something of the task: roll it back too.
                answered.push((sock, 0));
            }
        }
    }
    with_dump(|d| d.paused.insert(pid, answered));
    if !errors.is_empty() {
        return Err(fail(
            libc::EIO,
            format!("pause pid {pid} failed: {}", errors.join("; ")),
        ));
    }
    injected("pause")
}

pub fn checkpoint_devices(pid: c_int) -> HookResult<()> {
    let daemons = with_dump(|d| d.paused.get(&pid).cloned().unwrap_or_default());
    let dir = image_dir()?;
    let mut total = 0;
    for (sock, _) in daemons {
        let images = match daemons::ask(&sock, &AdminRequest::Checkpoint { pid: pid as u32 }) {
            Ok(AdminResponse::Checkpointed(images)) => images,
            Ok(other) => {
                return Err(fail(
                    libc::EIO,
                    format!(
                        "checkpoint of pid {pid} on {}: {}",
                        sock.display(),
                        describe(&other)
                    ),
                ))
            }
            Err(e) => {
                return Err(fail(
                    libc::EIO,
                    format!("checkpoint of pid {pid} on {}: {e}", sock.display()),
                ))
            }
        };
        for img in images {
            let name = image::session_file_name(img.session);
            image::write_at(dir, &name, &image::encode_session(&img))
                .map_err(|e| fail(libc::EIO, format!("writing {e}")))?;
            log!(
                "checkpointed session {:#x} of pid {pid} on {} ({} QPs, {} channel(s), \
                 {} bytes of objects, {} bytes held back): {name}",
                img.session,
                sock.display(),
                img.qpns.len(),
                img.channels.len(),
                img.objects.len(),
                img.outbox.len()
            );
            total += 1;
            with_dump(|d| {
                d.claims.insert(
                    img.inode,
                    Claim {
                        kind: SocketKind::Session,
                        session: img.session,
                        device: img.device.clone(),
                        path: img.path.clone(),
                        outbox: img.outbox.clone(),
                    },
                );
                for ch in &img.channels {
                    d.claims.insert(
                        ch.inode,
                        Claim {
                            kind: SocketKind::Channel(ch.channel),
                            session: img.session,
                            device: img.device.clone(),
                            path: img.path.clone(),
                            outbox: ch.outbox.clone(),
                        },
                    );
                }
            });
        }
    }
    let cm = checkpoint_cm(pid, dir)?;
    if total == 0 && cm == 0 {
        log!("checkpoint pid {pid}: no migros session");
    } else if !with_dump(|d| std::mem::replace(&mut d.in_inventory, true)) {
        // A restore without this plugin would fail obscurely on the
        // daemon sockets: let CRIU say "Missing required plugin: migros".
        if ffi::add_inventory_plugin(PLUGIN_NAME) == Some(false) {
            return Err(fail(libc::ENOMEM, "could not add migros to the inventory"));
        }
    }
    injected("checkpoint")
}

/// The librdmacm connections of `pid` on the daemons that answered Pause:
/// their images written and their sockets claimed; how many.
fn checkpoint_cm(pid: c_int, dir: c_int) -> HookResult<usize> {
    let daemons = with_dump(|d| d.paused.get(&pid).cloned().unwrap_or_default());
    let mut total = 0;
    for (sock, _) in daemons {
        let images = match daemons::ask(&sock, &AdminRequest::CheckpointCm { pid: pid as u32 }) {
            Ok(AdminResponse::CmCheckpointed(images)) => images,
            // A daemon older than CheckpointCm: it cannot move librdmacm
            // connections (DUMP_UNIX_SK warns about such a socket).
            Ok(AdminResponse::Error { errno, message })
                if [libc::EPROTO, libc::ENOSYS, libc::EINVAL].contains(&errno) =>
            {
                log!(
                    "{} does not checkpoint librdmacm connections: {message} (errno {errno})",
                    sock.display()
                );
                continue;
            }
            Ok(other) => {
                return Err(fail(
                    libc::EIO,
                    format!(
                        "checkpoint of pid {pid}'s librdmacm connections on {}: {}",
                        sock.display(),
                        describe(&other)
                    ),
                ))
            }
            Err(e) => {
                return Err(fail(
                    libc::EIO,
                    format!(
                        "checkpoint of pid {pid}'s librdmacm connections on {}: {e}",
                        sock.display()
                    ),
                ))
            }
        };
        for img in images {
            let name = image::cm_file_name(img.owner);
            image::write_at(dir, &name, &image::encode_cm(&img))
                .map_err(|e| fail(libc::EIO, format!("writing {e}")))?;
            log!(
                "checkpointed librdmacm connection {:#x} of pid {pid} on {} ({} connection(s), \
                 {} bytes of state, {} bytes held back): {name}",
                img.owner,
                sock.display(),
                img.qpns.len(),
                img.image.len(),
                img.outbox.len()
            );
            total += 1;
            with_dump(|d| {
                d.claims.insert(
                    img.inode,
                    Claim {
                        kind: SocketKind::Cm,
                        session: img.owner,
                        device: img.device.clone(),
                        path: img.path.clone(),
                        outbox: img.outbox.clone(),
                    },
                )
            });
        }
    }
    Ok(total)
}

/// `Ok(false)`: not one of ours (-ENOTSUP).
pub fn dump_unix_sk(fd: RawFd, id: c_int) -> HookResult<bool> {
    let ino = id as u32 as u64;
    let Some(claim) = with_dump(|d| d.claims.get(&ino).cloned()) else {
        if let Some(peer) = sock::peer_path(fd).filter(|p| p.ends_with(".sock")) {
            log_warn!(
                "socket {ino} is connected to {peer}, but no migros daemon reported it in \
                 a checkpoint: if that is a migros device, its admin socket is not in the \
                 searched directories ({}; {} overrides them) or the daemon does not know \
                 this socket",
                daemons::searched(),
                daemons::SOCKET_DIRS_ENV
            );
        }
        return Ok(false);
    };
    let err = |what: &str, e: &dyn std::fmt::Display| {
        fail(
            libc::EIO,
            format!("socket {ino} of session {:#x}: {what}: {e}", claim.session),
        )
    };
    let queued = sock::peek_all(fd).map_err(|e| err("peeking its receive queue", &e))?;
    let (status_flags, fd_flags) = sock::fd_flags(fd).map_err(|e| err("fcntl", &e))?;
    let mut replay = queued;
    let in_queue = replay.len();
    replay.extend_from_slice(&claim.outbox);
    let file = SocketFile {
        kind: claim.kind,
        session: claim.session,
        device: claim.device,
        path: claim.path,
        status_flags,
        fd_flags,
        replay,
    };
    let name = image::socket_file_name(ino);
    image::write_at(image_dir()?, &name, &image::encode_socket(&file))
        .map_err(|e| fail(libc::EIO, format!("writing {e}")))?;
    with_dump(|d| d.dumped.insert(ino));
    log!(
        "socket {ino}: {:?} of session {:#x} ({}), {} bytes to replay ({in_queue} queued, {} held back): {name}",
        file.kind,
        file.session,
        file.path,
        file.replay.len(),
        file.replay.len() - in_queue
    );
    injected("dump_unix_sk")?;
    Ok(true)
}

/// `Ok(None)`: not one of ours (-ENOTSUP).
pub fn restore_unix_sk(id: c_int) -> HookResult<Option<RawFd>> {
    let ino = id as u32 as u64;
    let dir = image_dir()?;
    let name = image::socket_file_name(ino);
    let bad_image =
        |e: image::ImageError| fail(libc::EINVAL, format!("restore of socket {ino}: {e}"));
    let Some(bytes) = image::read_at(dir, &name).map_err(bad_image)? else {
        return Ok(None);
    };
    let sk = image::decode_socket(&name, &bytes).map_err(bad_image)?;
    let path = restore_path(&sk.path);
    let what = match sk.kind {
        SocketKind::Session => format!("session {:#x}", sk.session),
        SocketKind::Channel(c) => format!("channel {c} of session {:#x}", sk.session),
        SocketKind::Cm => format!("librdmacm connection {:#x}", sk.session),
    };
    let read_image = |name: &str| {
        image::read_at(dir, name)
            .map_err(bad_image)?
            .ok_or_else(|| {
                fail(
                    libc::ENOENT,
                    format!("restore of {what}: {name} is missing"),
                )
            })
    };
    // The session's objects, read and checked before the daemon is asked.
    let objects = match sk.kind {
        SocketKind::Session => {
            let sname = image::session_file_name(sk.session);
            let sbytes = read_image(&sname)?;
            let img = image::decode_session(&sname, &sbytes).map_err(bad_image)?;
            if img.session != sk.session {
                return Err(fail(
                    libc::EINVAL,
                    format!(
                        "restore of {what}: {sname} holds session {:#x}",
                        img.session
                    ),
                ));
            }
            img.objects
        }
        SocketKind::Cm => {
            let cname = image::cm_file_name(sk.session);
            let cbytes = read_image(&cname)?;
            let img = image::decode_cm(&cname, &cbytes).map_err(bad_image)?;
            if img.owner != sk.session {
                return Err(fail(
                    libc::EINVAL,
                    format!("restore of {what}: {cname} holds owner {:#x}", img.owner),
                ));
            }
            img.image
        }
        SocketKind::Channel(_) => Vec::new(),
    };
    let io = |step: &str, e: &dyn std::fmt::Display| {
        fail(
            libc::EIO,
            format!("restore of {what} at {path}: {step}: {e}"),
        )
    };
    let mut s = sock::connect(&path).map_err(|e| io("connect", &e))?;
    let inode = sock::inode(s.as_raw_fd()).map_err(|e| io("fstat", &e))?;
    let req = match sk.kind {
        SocketKind::Session => Request::RestoreSession {
            version: PROTOCOL_VERSION,
            session: sk.session,
            path: path.clone(),
            inode,
            image: objects,
            replay: sk.replay.clone(),
        },
        SocketKind::Channel(channel) => Request::RestoreChannel {
            version: PROTOCOL_VERSION,
            session: sk.session,
            channel,
            inode,
            replay: sk.replay.clone(),
        },
        SocketKind::Cm => Request::RestoreCm {
            version: PROTOCOL_VERSION,
            owner: sk.session,
            inode,
            image: objects,
            replay: sk.replay.clone(),
        },
    };
    frame::write(&mut s, &req).map_err(|e| io("send", &e))?;
    // Exactly one frame: what follows is the replay, the process's to read.
    let resp: Response = frame::read(&mut s).map_err(|e| io("reading the answer", &e))?;
    match (&sk.kind, resp) {
        (SocketKind::Session | SocketKind::Cm, Response::Welcome { session, .. })
            if session == sk.session => {}
        (SocketKind::Channel(_), Response::Ok) => {}
        (_, Response::Error { errno, message }) => {
            return Err(fail(
                if errno > 0 { errno } else { libc::EIO },
                format!(
                    "restore of {what} at {path}: the daemon refused: {message} (errno {errno})"
                ),
            ))
        }
        (_, other) => {
            return Err(io("unexpected answer", &format_args!("{other:?}")));
        }
    }
    sock::finish_handshake(&s).map_err(|e| io("clearing timeouts", &e))?;
    sock::set_fd_flags(s.as_raw_fd(), sk.status_flags, sk.fd_flags).map_err(|e| io("fcntl", &e))?;
    log!(
        "restored {what} of pid {} at {path} as socket {inode} ({} bytes replayed)",
        std::process::id(),
        sk.replay.len()
    );
    injected("restore_unix_sk")?;
    Ok(Some(s.into_raw_fd()))
}

pub fn resume_devices_late(pid: c_int) -> HookResult<()> {
    let mut errors = Vec::new();
    for sock in daemons::admin_sockets() {
        if let Err(error) = ask_sessions(&sock, pid, Verb::Resume) {
            errors.push(error);
        }
    }
    if !errors.is_empty() {
        return Err(fail(
            libc::EIO,
            format!("resume pid {pid} failed: {}", errors.join("; ")),
        ));
    }
    injected("resume")
}

/// Where a restored connection goes: the recorded path, or the same
/// socket name in `$MIGROS_RESTORE_SOCKET_DIR`.
/// What [`ask_sessions`] asks a daemon to do with a process's sessions.
#[derive(Clone, Copy)]
enum Verb {
    Pause,
    Resume,
}

/// Asks the daemon at `sock` to pause or resume `pid`'s sessions: how many
/// it did; `None` if the daemon is gone, or failed but holds nothing of
/// `pid` (logged and ignored); otherwise the error, naming the socket.
fn ask_sessions(sock: &Path, pid: c_int, verb: Verb) -> Result<Option<u32>, String> {
    let pid32 = pid as u32;
    let (request, name, done) = match verb {
        Verb::Pause => (AdminRequest::Pause { pid: pid32 }, "pause", "paused"),
        Verb::Resume => (AdminRequest::Resume { pid: pid32 }, "resume", "resumed"),
    };
    let error = match (verb, daemons::ask(sock, &request)) {
        (Verb::Pause, Ok(AdminResponse::Paused { sessions }))
        | (Verb::Resume, Ok(AdminResponse::Resumed { sessions })) => {
            if sessions > 0 {
                log!(
                    "{done} {sessions} session(s) of pid {pid} on {}",
                    sock.display()
                );
            }
            return Ok(Some(sessions));
        }
        (_, Err(AskError::Gone(_))) => return Ok(None),
        (_, Ok(other)) => describe(&other),
        (_, Err(e)) => e.to_string(),
    };
    if daemons::has_nothing_of(sock, pid32) {
        log_warn!(
            "ignoring {}, which has no session of pid {pid}: {name}: {error}",
            sock.display()
        );
        return Ok(None);
    }
    Err(format!("{}: {error}", sock.display()))
}

fn restore_path(recorded: &str) -> String {
    restore_path_in(recorded, std::env::var_os(RESTORE_SOCKET_DIR_ENV))
}

fn restore_path_in(recorded: &str, dir: Option<std::ffi::OsString>) -> String {
    match (
        dir.filter(|v| !v.is_empty()),
        Path::new(recorded).file_name(),
    ) {
        (Some(dir), Some(base)) => Path::new(&dir).join(base).to_string_lossy().into_owned(),
        _ => recorded.to_owned(),
    }
}

fn image_dir() -> HookResult<c_int> {
    ffi::image_dir_fd().ok_or_else(|| {
        fail(
            libc::ENOSYS,
            "criu_get_image_dir() is not available (not running inside CRIU 4.x?)",
        )
    })
}

fn describe(r: &AdminResponse) -> String {
    match r {
        AdminResponse::Error { errno, message } => format!("{message} (errno {errno})"),
        other => format!("unexpected answer {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_paths() {
        let rec = "/run/migros/rxe0.sock";
        assert_eq!(restore_path_in(rec, None), rec);
        assert_eq!(restore_path_in(rec, Some("".into())), rec);
        assert_eq!(
            restore_path_in(rec, Some("/tmp/x/b".into())),
            "/tmp/x/b/rxe0.sock"
        );
    }
}
