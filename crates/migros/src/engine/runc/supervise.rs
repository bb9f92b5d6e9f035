//! The supervisor of one incarnation of a container (`migros __supervise`,
//! detached): it becomes a child subreaper, starts the container with
//! `runc run -d` (or `runc restore -d`), so the container's init is
//! re-parented to it, copies the container's output (a pipe) to the log,
//! and records the outcome in the incarnation's directory:
//! `started` (the init's host pid), `failed` (runc's error), `exit` (the
//! exit status, 128+signal when killed). runc keeps no exit status.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{gen_dir, log_path, runc_id, runc_root};

/// How the incarnation starts.
pub enum Start<'a> {
    Run,
    Restore { image: &'a Path },
}

pub fn run(name: &str, gen: u32, restore: Option<PathBuf>) -> Result<()> {
    let dir = gen_dir(name, gen);
    let start = match &restore {
        Some(image) => Start::Restore { image },
        None => Start::Run,
    };
    match supervise(name, gen, &dir, &start) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::write(dir.join("failed"), format!("{e:#}\n"));
            Err(e)
        }
    }
}

fn supervise(name: &str, gen: u32, dir: &Path, start: &Start) -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let (rd, wr) = nix::unistd::pipe().context("making the output pipe")?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(name))
        .context("opening the container log")?;
    let copier = std::thread::spawn(move || copy(rd, log));
    let id = runc_id(name, gen);
    let pid_file = dir.join("pid");
    let mut cmd = Command::new("runc");
    cmd.arg("--root")
        .arg(runc_root())
        .arg("--log")
        .arg(dir.join("runc.log"));
    match start {
        Start::Run => {
            cmd.args(["run", "-d", "--bundle"]).arg(dir);
        }
        Start::Restore { image } => {
            cmd.args(["restore", "-d", "--tcp-established", "--bundle"])
                .arg(dir)
                .arg("--image-path")
                .arg(image)
                .arg("--work-path")
                .arg(dir.join("work"));
            std::fs::create_dir_all(dir.join("work"))?;
        }
    }
    cmd.arg("--pid-file").arg(&pid_file).arg(&id);
    let wr_err = wr.try_clone()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(wr))
        .stderr(Stdio::from(wr_err))
        .status()
        .context("running runc")?;
    // The container holds the pipe's write end now; `cmd` keeps copies.
    drop(cmd);
    if !status.success() {
        let log = std::fs::read_to_string(dir.join("runc.log")).unwrap_or_default();
        let last = log.lines().rev().take(3).collect::<Vec<_>>();
        bail!(
            "runc {} failed ({status}): {}",
            if matches!(start, Start::Run) {
                "run"
            } else {
                "restore"
            },
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .context("reading runc's pid file")?
        .trim()
        .parse()
        .context("parsing runc's pid file")?;
    std::fs::write(dir.join("started"), format!("{pid}\n"))?;
    let code = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => break c,
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => break 128 + s as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("waiting for the container (pid {pid}): {e}"),
        }
    };
    // Give the copier a moment for the output's end, then record the status.
    for _ in 0..50 {
        if copier.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(dir.join("exit"), format!("{code}\n"))?;
    let _ = Command::new("runc")
        .arg("--root")
        .arg(runc_root())
        .args(["delete", "-f", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(())
}

fn copy(rd: OwnedFd, mut log: File) {
    let mut rd = File::from(rd);
    let _ = std::io::copy(&mut rd, &mut log);
    let _ = log.flush();
}
