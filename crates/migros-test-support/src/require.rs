//! The required-tests switch: one place that decides whether an
//! end-to-end test whose prerequisites are missing skips or fails.
//!
//! ```no_run
//! use migros_test_support::require::{self, program, root};
//! # fn test() {
//! if !require::require([root(), program("criu", "scripts/setup-criu.sh installs it")]) {
//!     return;
//! }
//! // … the test proper
//! # }
//! ```
//!
//! - Without `MIGROS_TESTS_REQUIRED=1`, a missing prerequisite makes
//!   [`require`] print `skipped: <what is missing>` and return false: a
//!   developer without root (or without Docker) still gets a green run
//!   that says what it left out.
//! - With it (`scripts/test.sh` sets it when `CI` is set), [`require`]
//!   panics instead, naming the prerequisite: CI cannot go green with an
//!   end-to-end test skipped.
//! - Either way the decision is appended, as one line, to the file named
//!   by `MIGROS_TESTS_LEDGER` (when set): `ran`, `skipped` or `failed`, the
//!   test, and what was missing. One `write` per line on a file opened for
//!   appending, so test threads and test processes never mix lines.
//!   `scripts/test.sh` summarises the ledger at the end of the run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// `1` (or `true`): missing prerequisites fail the tests that need them.
pub const REQUIRED_ENV: &str = "MIGROS_TESTS_REQUIRED";
/// A file each end-to-end test appends its decision to.
pub const LEDGER_ENV: &str = "MIGROS_TESTS_LEDGER";

/// One prerequisite checked: `Err` says what is missing and how to get it.
pub type Check = Result<(), String>;

/// Whether the switch is on.
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The process runs as root.
pub fn root() -> Check {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err("root (network namespaces, process_vm_readv, CRIU)".into())
    }
}

/// `name` is a program on PATH; `hint` says how to get it.
pub fn program(name: &str, hint: &str) -> Check {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Ok(())
    } else {
        Err(format!("{name} on PATH ({hint})"))
    }
}

/// `path` is a file; `hint` says how to get it.
pub fn file(path: impl AsRef<Path>, hint: &str) -> Check {
    let path = path.as_ref();
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("{} ({hint})", path.display()))
    }
}

/// The Debian program `/usr/bin/<name>` (scripts/setup.sh installs it).
pub fn installed(name: &str) -> Check {
    file(
        Path::new("/usr/bin").join(name),
        "scripts/setup.sh installs it",
    )
}

/// Decides whether the calling test runs: true when every check passed.
/// Otherwise skips (prints why, returns false) or, with
/// [`REQUIRED_ENV`] set, panics naming every missing prerequisite. Call it
/// once per end-to-end test, before the test starts anything.
pub fn require(checks: impl IntoIterator<Item = Check>) -> bool {
    let missing: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    let test = test_name();
    if missing.is_empty() {
        record("ran", &test, "");
        return true;
    }
    let why = missing.join("; ");
    if required() {
        record("failed", &test, &why);
        panic!("{test}: missing prerequisite ({REQUIRED_ENV}=1 makes this a failure): {why}");
    }
    record("skipped", &test, &why);
    println!("skipped: {why}");
    eprintln!("{test}: skipped: {why}");
    false
}

/// `<test binary>::<test>`: libtest names each test's thread after it.
fn test_name() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            // cargo names test binaries `<target>-<16 hex digits>`.
            Some(match stem.rsplit_once('-') {
                Some((name, hash)) if hash.len() == 16 => name.to_owned(),
                _ => stem,
            })
        })
        .unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// Appends `outcome<TAB>test<TAB>why` to the ledger, if there is one.
fn record(outcome: &str, test: &str, why: &str) {
    let Some(path) = std::env::var_os(LEDGER_ENV) else {
        return;
    };
    let line = format!("{outcome}\t{test}\t{}\n", why.replace(['\t', '\n'], " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        // The summary would miss this test: make that loud.
        panic!(
            "cannot append to {LEDGER_ENV}={}: {e}",
            Path::new(&path).display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_what_is_missing() {
        assert!(program("sh", "").is_ok());
        let e = program("no-such-program-here", "install it").unwrap_err();
        assert!(
            e.contains("no-such-program-here") && e.contains("install it"),
            "{e}"
        );
        let e = file("/no/such/file", "build it").unwrap_err();
        assert!(e.contains("/no/such/file") && e.contains("build it"), "{e}");
        assert!(file("/proc/self/status", "").is_ok());
    }

    #[test]
    fn names_the_test_after_its_thread() {
        let name = std::thread::Builder::new()
            .name("a_test".into())
            .spawn(test_name)
            .unwrap()
            .join()
            .unwrap();
        assert!(name.ends_with("::a_test"), "{name}");
        assert!(!name.contains(char::is_whitespace), "{name}");
    }
}
