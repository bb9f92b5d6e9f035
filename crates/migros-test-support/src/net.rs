//! Network set-up for tests that make namespaces and links.

use std::process::Command;

/// Runs `ip args…` (iproute2).
///
/// # Panics
/// If `ip` cannot run or fails; the message names the arguments and
/// carries its stderr.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
