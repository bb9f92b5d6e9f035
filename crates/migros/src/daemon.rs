//! Starting and stopping `migrosd` processes: where the binary is, how it is
//! detached, the pid file, and waiting for its socket to answer.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use migros_proto::paths;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::DevAddArgs;

/// How long `dev add` waits for the daemon's socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `dev del` waits for the daemon to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

pub fn log_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// `$MIGROSD` if set, else the `migrosd` next to this executable, else the
/// first on `PATH`.
pub fn find_daemon() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MIGROSD").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("MIGROSD={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("locating the migros executable")?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("migrosd"));
        // `cargo test` runs binaries from target/<profile>/deps.
        if let Some(up) = dir.parent() {
            candidates.push(up.join("migrosd"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("migrosd")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("migrosd not found next to migros nor on PATH")
}

/// The daemon's command line for `args`.
pub fn daemon_args(dir: &Path, args: &DevAddArgs) -> Vec<String> {
    let mut v = vec![
        "--name".to_string(),
        args.name.clone(),
        "--addr".to_string(),
        args.addr.to_string(),
        "--socket-dir".to_string(),
        dir.display().to_string(),
    ];
    if let Some(mtu) = args.mtu {
        v.extend(["--mtu".to_string(), mtu.to_string()]);
    }
    if let Some(f) = &args.fault {
        v.extend(["--fault".to_string(), f.clone()]);
    }
    v
}

/// Whether something accepts connections on device `name`'s socket.
pub fn answers(dir: &Path, name: &str) -> bool {
    UnixStream::connect(paths::device_socket(dir, name)).is_ok()
}

/// Starts a detached daemon and waits until its socket answers.
pub fn start(dir: &Path, args: &DevAddArgs) -> Result<u32> {
    let bin = find_daemon()?;
    let mut cmd = Command::new(&bin);
    cmd.args(daemon_args(dir, args));
    spawn(
        cmd,
        dir,
        &args.name,
        &log_file(dir, &args.name),
        &pid_file(dir, &args.name),
    )
    .with_context(|| format!("starting {}", bin.display()))
}

/// Spawns `cmd` (a migrosd, or a command that execs one) detached, its
/// output in `log_path`, its pid in `pid_file`, and waits until device
/// `name` answers in `dir`; the pid. On failure the pid file goes.
pub fn spawn(
    mut cmd: Command,
    dir: &Path,
    name: &str,
    log_path: &Path,
    pid_file: &Path,
) -> Result<u32> {
    let log = File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let log_err = log.try_clone().context("duplicating the log descriptor")?;
    cmd.env(paths::SOCKET_DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    crate::sys::detach(&mut cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id();
    std::fs::write(pid_file, format!("{pid}\n")).context("writing the pid file")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if answers(dir, name) {
            // Detached (its own session): init reaps it after we exit.
            return Ok(pid);
        }
        let failed = if let Some(status) = child.try_wait().context("waiting for migrosd")? {
            format!("migrosd exited ({status})")
        } else if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            format!(
                "migrosd did not answer on {} within {START_TIMEOUT:?}",
                paths::device_socket(dir, name).display()
            )
        } else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = std::fs::remove_file(pid_file);
        bail!("{failed}; its log ends with:\n{}", log_tail(log_path));
    }
}

/// The pid recorded by `dev add`.
pub fn recorded_pid(dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(pid_file(dir, name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Stops the daemon of `name`: admin Shutdown, else SIGTERM to the pid
/// recorded by `dev add`; waits for it to exit.
pub fn stop(dir: &Path, name: &str) -> Result<()> {
    let pid = recorded_pid(dir, name);
    if crate::admin::shutdown(dir, name).is_err() {
        let Some(pid) = pid else {
            bail!(
                "device {name}: no admin socket answers and no pid file in {}",
                dir.display()
            );
        };
        if alive(pid) {
            kill(Pid::from_raw(pid), Signal::SIGTERM)
                .with_context(|| format!("signalling pid {pid}"))?;
        }
    }
    match pid {
        Some(pid) => wait_gone(pid, dir, name),
        None => {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while answers(dir, name) {
                if Instant::now() >= deadline {
                    bail!("device {name} still answers after shutdown");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        }
    }
}

/// Waits until `pid` has exited, then removes the pid file.
pub fn wait_gone(pid: i32, dir: &Path, name: &str) -> Result<()> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) {
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(pid_file(dir, name));
    // A daemon killed hard leaves its sockets behind.
    if !answers(dir, name) {
        let _ = std::fs::remove_file(paths::device_socket(dir, name));
        let _ = std::fs::remove_file(paths::admin_socket(dir, name));
    }
    Ok(())
}

/// The last lines of a log file (at most 4 KiB).
pub fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return "(no log)".into();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_command_line() {
        let args = DevAddArgs {
            name: "d0".into(),
            addr: "127.0.0.3".parse().unwrap(),
            mtu: Some(1024),
            fault: Some("drop=0.1".into()),
        };
        assert_eq!(
            daemon_args(Path::new("/tmp/s"), &args).join(" "),
            "--name d0 --addr 127.0.0.3 --socket-dir /tmp/s --mtu 1024 --fault drop=0.1"
        );
    }

    #[test]
    fn log_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        let tail = log_tail(&p);
        assert!(
            tail.starts_with("line 80") && tail.ends_with("line 99"),
            "{tail}"
        );
        assert_eq!(log_tail(&dir.path().join("none")), "(no log)");
    }
}
