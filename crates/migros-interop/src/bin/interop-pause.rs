//! `interop-pause DEVICE SECONDS`: pauses every session of migros device
//! DEVICE for SECONDS (the admin requests a migration's source daemon gets:
//! `Pause`, then `Resume` to roll back), so the VM test can show what an
//! unmodified kernel peer does with the pause NAK and the RESUME
//! handshake. The daemon's sockets are in `MIGROS_SOCKET_DIR`. Prints each
//! request and its answer.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use migros_proto::admin::{AdminRequest, AdminResponse};
use migros_proto::{frame, paths};

fn ask(device: &str, req: &AdminRequest) -> Result<AdminResponse, String> {
    let path = paths::admin_socket(&paths::socket_dir(), device);
    let mut s = UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    frame::write(&mut s, req).map_err(|e| format!("{req:?}: {e}"))?;
    let resp = frame::read(&mut s).map_err(|e| format!("{req:?}: {e}"))?;
    println!("{req:?} -> {resp:?}");
    match resp {
        AdminResponse::Error { errno, message } => Err(format!("{message} (errno {errno})")),
        r => Ok(r),
    }
}

fn run(device: &str, seconds: f64) -> Result<(), String> {
    let AdminResponse::Status(status) = ask(device, &AdminRequest::Status)? else {
        return Err("Status: unexpected answer".into());
    };
    let mut pids: Vec<u32> = status.sessions.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    if pids.is_empty() {
        return Err(format!("{device} has no sessions to pause"));
    }
    for &pid in &pids {
        ask(device, &AdminRequest::Pause { pid })?;
    }
    std::thread::sleep(Duration::from_secs_f64(seconds));
    for &pid in &pids {
        ask(device, &AdminRequest::Resume { pid })?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(device), Some(Ok(seconds)), 2) = (
        args.first(),
        args.get(1).map(|s| s.parse::<f64>()),
        args.len(),
    ) else {
        eprintln!("usage: interop-pause DEVICE SECONDS");
        return ExitCode::from(2);
    };
    if !(0.0..=3600.0).contains(&seconds) {
        eprintln!("interop-pause: SECONDS must be within 0..=3600");
        return ExitCode::from(2);
    }
    match run(device, seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("interop-pause: {e}");
            ExitCode::FAILURE
        }
    }
}
