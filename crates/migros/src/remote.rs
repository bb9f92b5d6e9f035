//! Reaching another machine: [`Ssh`] (OpenSSH's client, key-based, no
//! prompts) and [`Host`], the machine a node lives on, local or over ssh.
//! Every command a container engine or the node code runs on a node's
//! machine goes through a `Host`; on an ssh node the remote end is a
//! shell, so arguments are quoted with [`quote`].

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::node::Node;
use serde::{Deserialize, Serialize};

/// Where migros keeps its programs and daemon files on an ssh node.
pub const REMOTE_DIR: &str = "/var/lib/migros";
/// Test only: `MIGROS_FAULT=transfer` kills the ssh of a machine-to-machine
/// transfer mid-copy (its far end waits a second before reading).
pub const FAULT_ENV: &str = "MIGROS_FAULT";

/// migros' libibverbs on an ssh node (`bin/../lib/migros`, where its
/// `migros` looks: `crate::env::lib_dir`).
pub const REMOTE_LIB: &str = "/var/lib/migros/lib/migros";
/// The `migros` program on an ssh node (installed by `node add --ssh`).
pub const REMOTE_MIGROS: &str = "/var/lib/migros/bin/migros";

/// An ssh destination: `[user@]host[:port]`, and an ssh configuration
/// file (`ssh -F`) for the identity and known hosts, if not the user's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ssh {
    /// `user@host` or `host`.
    pub target: String,
    pub port: Option<u16>,
    pub config: Option<PathBuf>,
}

impl Ssh {
    /// Parses `[user@]host[:port]`.
    pub fn parse(s: &str, config: Option<PathBuf>) -> Result<Ssh> {
        let (target, port) = match s.rsplit_once(':') {
            Some((t, p)) => (
                t,
                Some(
                    p.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .with_context(|| format!("--ssh {s:?}: bad port {p:?}"))?,
                ),
            ),
            None => (s, None),
        };
        let host = target.rsplit_once('@').map_or(target, |(_, h)| h);
        let user_ok = target
            .split_once('@')
            .is_none_or(|(u, _)| !u.is_empty() && u.bytes().all(safe_byte));
        if host.is_empty() || !host.bytes().all(safe_byte) || !user_ok || host.starts_with('-') {
            bail!("--ssh {s:?} is not [user@]host[:port]");
        }
        Ok(Ssh {
            target: target.to_string(),
            port,
            config,
        })
    }

    /// The host part (name or address).
    pub fn host(&self) -> &str {
        self.target
            .rsplit_once('@')
            .map_or(self.target.as_str(), |(_, h)| h)
    }

    /// `ssh <options> <target>`, ready for the remote command.
    fn base(&self) -> Command {
        let mut c = Command::new("ssh");
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        if let Some(p) = self.port {
            c.args(["-p", &p.to_string()]);
        }
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .arg("--")
            .arg(&self.target);
        c
    }

    /// The command running `argv` on the remote machine.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = self.base();
        c.arg(argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "));
        c
    }

    /// The command running a shell `script` on the remote machine.
    pub fn shell(&self, script: &str) -> Command {
        let mut c = self.base();
        c.arg(script);
        c
    }
}

impl std::fmt::Display for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.target),
            None => f.write_str(&self.target),
        }
    }
}

fn safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._".contains(&b)
}

/// `s` quoted for a POSIX shell (unchanged when it needs nothing).
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| safe_byte(b) || b"/=:,@+%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The machine a node lives on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// This machine.
    Local,
    Ssh(Ssh),
}

impl Host {
    /// Runs `program args…` there; its stdout, or an error with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        match self {
            Host::Local => crate::sys::run(program, args),
            Host::Ssh(s) => {
                let mut argv = vec![program];
                argv.extend_from_slice(args);
                output(
                    s.command(&argv),
                    &format!("{program} {}", args.join(" ")),
                    s,
                )
            }
        }
    }

    /// Runs `program args…` there; its whole output, whatever its status.
    pub fn output(&self, program: &str, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = match self {
            Host::Local => {
                let mut c = Command::new(program);
                c.args(args);
                c
            }
            Host::Ssh(s) => {
                let mut argv = vec![program];
                argv.extend_from_slice(args);
                s.command(&argv)
            }
        };
        cmd.stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}{}", self.at()))
    }

    /// Runs a shell script there.
    pub fn sh(&self, script: &str) -> Result<String> {
        match self {
            Host::Local => crate::sys::run("sh", &["-c", script]),
            Host::Ssh(s) => output(s.shell(script), script, s),
        }
    }

    /// ` on <target>` for error messages ("" here).
    pub fn at(&self) -> String {
        match self {
            Host::Local => String::new(),
            Host::Ssh(s) => format!(" on {s}"),
        }
    }

    /// Copies the local file `from` to `to` there (mode 0755), unless the
    /// same content is already there; whether it copied.
    pub fn install(&self, from: &Path, to: &str) -> Result<bool> {
        let Host::Ssh(s) = self else {
            bail!("install is for ssh hosts");
        };
        let mine = sha256(from)?;
        let theirs = self
            .sh(&format!("sha256sum {} 2>/dev/null || true", quote(to)))
            .unwrap_or_default();
        if theirs.split_whitespace().next() == Some(mine.as_str()) {
            return Ok(false);
        }
        let dir = Path::new(to)
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "/".into());
        let tmp = format!("{to}.tmp");
        let script = format!(
            "mkdir -p {d} && cat > {t} && chmod 755 {t} && mv -f {t} {to}",
            d = quote(&dir),
            t = quote(&tmp),
            to = quote(to)
        );
        let file =
            std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
        let out = s
            .shell(&script)
            .stdin(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running ssh")?;
        if !out.status.success() {
            bail!(
                "copying {} to {s}:{to} failed ({}): {}",
                from.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(true)
    }
}

fn output(mut cmd: Command, what: &str, s: &Ssh) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("running ssh (openssh-client)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // 255: ssh itself failed (connection, authentication).
        if out.status.code() == Some(255) {
            bail!("ssh {s} failed: {}", err.trim());
        }
        bail!(
            "{} failed on {s} ({}): {}",
            what.chars().take(200).collect::<String>(),
            out.status,
            err.trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Streams directory `from` on `src`'s machine to `to` on `dst`'s (tar
/// over ssh), run where this machine is not in between unless it is one
/// of the two; the bytes of `from` (one ssh connection: the transfer is
/// downtime).
pub fn stream(src: &Node, from: &Path, dst: &Node, to: &Path) -> Result<u64> {
    let parent = |p: &Path| path(p.parent().unwrap_or(Path::new("/")));
    let leaf = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let fault = std::env::var(FAULT_ENV).is_ok_and(|v| v == "transfer");
    let unpack = format!(
        "{}mkdir -p {d} && tar -C {d} -xf - && test {d}/{l} -ef {d}/{l}",
        if fault { "sleep 1; " } else { "" },
        d = quote(&parent(to)),
        l = quote(&leaf(to)),
    );
    let pack = format!(
        "tar -C {} -cf - {}",
        quote(&parent(from)),
        quote(&leaf(from))
    );
    match (&src.ssh, &dst.ssh) {
        (Some(_), Some(d)) => {
            // On the source: its own ssh to the destination.
            let peer = format!(
                "ssh -o BatchMode=yes{} {} {}",
                d.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
                quote(&d.target),
                quote(&unpack)
            );
            let size = format!("du -sb {}", quote(&path(from)));
            let script = if fault {
                format!("set -o pipefail; {pack} | {{ {peer} & s=$!; sleep 0.3; kill -9 $s; wait $s; }} && {size}")
            } else {
                format!("set -o pipefail; {pack} | {peer} && {size}")
            };
            let out = src.host().run("bash", &["-c", &script])?;
            Ok(out
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0))
        }
        (None, Some(d)) => pipe(
            std::process::Command::new("sh").args(["-c", &pack]),
            &mut d.shell(&unpack),
        )
        .map(|_| crate::sys::dir_size(from)),
        (Some(s), None) => pipe(
            &mut s.shell(&pack),
            std::process::Command::new("sh").args(["-c", &unpack]),
        )
        .map(|_| crate::sys::dir_size(to)),
        (None, None) => bail!("both nodes are on this machine"),
    }
    .with_context(|| format!("streaming {} from node {} to node {}", from.display(), src.name, dst.name))
}

/// `a | b`, both run here; fails unless both succeed.
fn pipe(a: &mut std::process::Command, b: &mut std::process::Command) -> Result<()> {
    use std::process::Stdio;
    let mut pa = a.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let out = pa.stdout.take().context("pipe")?;
    let pb = b
        .stdin(Stdio::from(out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let (ra, rb) = (pa.wait_with_output()?, pb.wait_with_output()?);
    if !ra.status.success() || !rb.status.success() {
        bail!(
            "{} / {}",
            String::from_utf8_lossy(&ra.stderr).trim(),
            String::from_utf8_lossy(&rb.stderr).trim()
        );
    }
    Ok(())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The SHA-256 of a local file (coreutils' sha256sum).
fn sha256(path: &Path) -> Result<String> {
    let p = path.to_str().context("non-UTF-8 path")?;
    let out = crate::sys::run("sha256sum", &[p])?;
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed nothing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_targets_parse() {
        let s = Ssh::parse("root@198.18.64.11:2222", None).unwrap();
        assert_eq!(
            (s.target.as_str(), s.port, s.host()),
            ("root@198.18.64.11", Some(2222), "198.18.64.11")
        );
        assert_eq!(s.to_string(), "root@198.18.64.11:2222");
        let s = Ssh::parse("h1", None).unwrap();
        assert_eq!((s.target.as_str(), s.port, s.host()), ("h1", None, "h1"));
        for bad in [
            "",
            "@h",
            "root@",
            "h:0",
            "h:x",
            "-oProxyCommand=x",
            "a b",
            "h;rm",
        ] {
            assert!(Ssh::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("docker"), "docker");
        assert_eq!(quote("/run/migros:/run/migros"), "/run/migros:/run/migros");
        assert_eq!(quote("{{.Id}}"), "'{{.Id}}'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        let c = Ssh::parse("root@h", Some("/c".into()))
            .unwrap()
            .command(&["echo", "a b"]);
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args.first().map(|a| a.as_ref()), Some("-F"));
        assert_eq!(args.last().map(|a| a.as_ref()), Some("echo 'a b'"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the argument, the remote shell gets it back unchanged.
        #[test]
        fn quoted_arguments_reach_the_shell_unchanged(s in "[^\\x00]{0,40}") {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {}", quote(&s))])
                .output()
                .unwrap();
            proptest::prop_assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }

        /// A target either parses into a safe one or is refused; no panic.
        #[test]
        fn ssh_targets_parse_or_are_refused(s in ".{0,40}") {
            if let Ok(t) = Ssh::parse(&s, None) {
                proptest::prop_assert!(!t.host().is_empty() && !t.target.starts_with('-'));
                proptest::prop_assert_eq!(quote(&t.target), t.target.clone());
            }
        }
    }
}
