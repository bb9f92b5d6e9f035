//! A container's cgroup-v1 freezer, reached directly.
//!
//! The final dump freezes the container from CRIU's `pre-dump` action
//! (see `spec::ACTION_SCRIPT`): runc and CRIU start while it still runs,
//! and CRIU finds the cgroup frozen, so it neither polls the freezer (every
//! 100 ms) nor needs `runc pause` first. The script learns the freezer's
//! state file from [`FREEZE_ENV`] and writes the time it asked the freeze
//! (seconds since the epoch) to the file [`FROZEN_AT_ENV`] names.
//!
//! A cgroup-v2 machine has no such file: the engine then runs `runc pause`
//! and `runc resume` as before.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};

/// Env var of `runc checkpoint`: the freezer state file the `pre-dump`
/// action freezes.
pub const FREEZE_ENV: &str = "MIGROS_FREEZE";
/// Env var of `runc checkpoint`: where the `pre-dump` action writes when it
/// asked the freeze (`date +%s.%N`).
pub const FROZEN_AT_ENV: &str = "MIGROS_FROZEN_AT";

/// Where cgroup-v1 hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The `freezer.state` file of process `pid`'s cgroup-v1 freezer, if it
/// has one.
pub fn state_file(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = freezer_cgroup(&text)?;
    let f = Path::new(CGROUP_ROOT)
        .join("freezer")
        .join(path.trim_start_matches('/'))
        .join("freezer.state");
    f.is_file().then_some(f)
}

/// The freezer hierarchy's cgroup in a `/proc/<pid>/cgroup` text
/// (`<id>:<controllers>:<path>` lines; the freezer may share its line).
fn freezer_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "freezer")
            .then_some(path)
    })
}

/// Thaws the freezer whose state file is `state` (a restored container
/// comes back frozen when it was dumped frozen); true if it was frozen.
pub fn thaw(state: &Path) -> Result<bool> {
    let now =
        std::fs::read_to_string(state).with_context(|| format!("reading {}", state.display()))?;
    if now.trim() == "THAWED" {
        return Ok(false);
    }
    std::fs::write(state, "THAWED").with_context(|| format!("thawing {}", state.display()))?;
    let got = std::fs::read_to_string(state)?;
    if got.trim() != "THAWED" {
        bail!("{} still says {} after THAWED", state.display(), got.trim());
    }
    Ok(true)
}

/// When the `pre-dump` action asked the freeze, from what it wrote to
/// `file`, as an [`Instant`] of this process.
pub fn frozen_at(file: &Path) -> Option<Instant> {
    let text = std::fs::read_to_string(file).ok()?;
    let then = parse_epoch(&text)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let ago = now.checked_sub(then)?;
    Instant::now().checked_sub(ago)
}

/// `date +%s.%N` output as a duration since the epoch.
fn parse_epoch(text: &str) -> Option<Duration> {
    let (s, ns) = text.trim().split_once('.')?;
    let ns = format!("{ns:0<9}");
    Some(Duration::new(s.parse().ok()?, ns.get(..9)?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_freezer_line() {
        let text = "12:name=systemd:/\n\
                    6:freezer:/fsrv.0\n\
                    5:devices:/fsrv.0\n\
                    0::/\n";
        assert_eq!(freezer_cgroup(text), Some("/fsrv.0"));
        assert_eq!(
            freezer_cgroup("3:cpu,freezer:/a/b\n"),
            Some("/a/b"),
            "a freezer sharing its hierarchy"
        );
        // cgroup v2 only: no freezer hierarchy.
        assert_eq!(freezer_cgroup("0::/user.slice/x.scope\n"), None);
        assert_eq!(freezer_cgroup("garbage\n"), None);
    }

    #[test]
    fn reads_date_output() {
        assert_eq!(
            parse_epoch("1733448000.123456789\n"),
            Some(Duration::new(1_733_448_000, 123_456_789))
        );
        assert_eq!(parse_epoch("17.5"), Some(Duration::new(17, 500_000_000)));
        assert_eq!(parse_epoch("17"), None);
        assert_eq!(parse_epoch("x.1"), None);
        assert_eq!(parse_epoch(""), None);
    }

    #[test]
    fn a_time_just_written_is_just_before_now() {
        let dir = std::env::temp_dir().join(format!("migros-frozen-at-{}", std::process::id()));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        std::fs::write(
            &dir,
            format!("{}.{:09}\n", now.as_secs(), now.subsec_nanos()),
        )
        .unwrap();
        let at = frozen_at(&dir).expect("parsed");
        let _ = std::fs::remove_file(&dir);
        assert!(at.elapsed() < Duration::from_secs(60), "{:?}", at.elapsed());
        assert!(frozen_at(Path::new("/nonexistent/frozen-at")).is_none());
    }
}
