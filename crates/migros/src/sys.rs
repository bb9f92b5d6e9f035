//! What nodes, containers and migrations share: where their state lives,
//! running system programs (`ip`, `runc`) with their errors, a global lock,
//! records as JSON files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Root of everything nodes and containers keep (sockets and state).
pub const ROOT: &str = "/run/migros";

/// Replaces [`state_dir`] (`migros __remote runc` sets it for itself
/// and its supervisors).
pub const STATE_DIR_ENV: &str = "MIGROS_STATE_DIR";

/// `/run/migros/state` (or `$MIGROS_STATE_DIR`): records, logs, bundles,
/// images.
pub fn state_dir() -> PathBuf {
    match std::env::var_os(STATE_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(ROOT).join("state"),
    }
}

/// The socket directory of node `name` (`/run/migros/nodes/<name>`), where
/// the CRIU plugin looks for daemons.
pub fn node_socket_dir(name: &str) -> PathBuf {
    Path::new(ROOT).join("nodes").join(name)
}

/// Fails unless this process runs as root.
pub fn need_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (network namespaces, runc, CRIU)");
    }
    Ok(())
}

/// Whether `name` is usable for a node or a container: lowercase letters,
/// digits, `-`, `_`, starting with a letter or digit, 1 to `max` bytes (it
/// becomes part of interface names, limited to 15 bytes).
pub fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Runs a program to completion; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes `cmd`'s process the leader of a new session, so it outlives this
/// one and no terminal signal reaches it, and closes at its exec every
/// descriptor it would inherit besides 0, 1 and 2: a daemon that keeps the
/// caller's descriptors keeps their locks (`flock LOCK cmd`) for ever.
pub fn detach(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: setsid and close_range are async-signal-safe system calls
    // and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            // CLOSE_RANGE_CLOEXEC: closed at exec, so std's own
            // exec-error pipe still works; ENOSYS on old kernels: keep them.
            let _ = nix::libc::syscall(
                nix::libc::SYS_close_range,
                3u32,
                u32::MAX,
                nix::libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
}

/// `ip args…`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// `ip -n <netns> args…`.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    let mut v = vec!["-n", netns];
    v.extend_from_slice(args);
    ip(&v)
}

/// Whether the network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Deletes a network namespace if it exists.
pub fn netns_del(name: &str) -> Result<()> {
    if netns_exists(name) {
        ip(&["netns", "del", name])?;
    }
    Ok(())
}

/// Sets a sysctl inside a network namespace.
pub fn sysctl_in(netns: &str, key: &str, value: &str) -> Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            netns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ],
    )
    .map(|_| ())
}

/// An exclusive lock over all node and container state, held until dropped
/// (concurrent `migros` commands change routes on every node).
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

pub fn lock() -> Result<Lock> {
    let dir = state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = File::create(dir.join("lock")).context("creating the lock file")?;
    let l = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking the state")?;
    Ok(Lock(l))
}

/// Writes `v` as JSON, atomically (temporary file + rename).
pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The records `<dir>/<name>/<file>` that parse, in the order of their
/// names (nodes and containers are directories named after them).
pub fn read_records<T: DeserializeOwned>(dir: &Path, file: &str) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| read_json(&p.join(file)).ok())
        .collect()
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// `pid` and its descendants (every thread's children).
pub fn process_tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.filter_map(|t| t.ok()) {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// Total size in bytes of the regular files under `dir` (symlinks not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Copies a directory tree, keeping symlinks as symlinks.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_dir() {
            copy_tree(&src, &dst)?;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)
                .with_context(|| format!("linking {}", dst.display()))?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Bytes in a human unit.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("a", 12));
        assert!(valid_name("node-1_x", 12));
        assert!(!valid_name("", 12));
        assert!(!valid_name("-a", 12));
        assert!(!valid_name("A", 12));
        assert!(!valid_name("a.b", 12));
        assert!(!valid_name("a/b", 12));
        assert!(!valid_name("abcdefghijklm", 12));
    }

    #[test]
    fn sizes_and_copies() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::write(a.join("x"), [0u8; 1000]).unwrap();
        std::fs::write(a.join("sub/y"), [0u8; 24]).unwrap();
        std::os::unix::fs::symlink("../x", a.join("sub/l")).unwrap();
        assert_eq!(dir_size(&a), 1024);
        let b = d.path().join("b");
        copy_tree(&a, &b).unwrap();
        assert_eq!(dir_size(&b), 1024);
        assert_eq!(
            std::fs::read_link(b.join("sub/l")).unwrap(),
            Path::new("../x")
        );
        let records: Vec<u32> = read_records(d.path(), "x");
        assert!(records.is_empty());
        for (name, v) in [("b", 2), ("a", 1), ("c", 3)] {
            std::fs::create_dir_all(d.path().join("r").join(name)).unwrap();
            write_json(&d.path().join("r").join(name).join("rec.json"), &v).unwrap();
        }
        std::fs::write(d.path().join("r/b/rec.json"), "garbage").unwrap();
        let records: Vec<u32> = read_records(&d.path().join("r"), "rec.json");
        assert_eq!(records, [1, 3]);
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn a_process_tree_holds_the_children() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let tree = process_tree(me);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], me);
        assert!(tree.contains(&(child.id() as i32)), "{tree:?}");
    }
}
