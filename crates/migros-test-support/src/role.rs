//! A test that runs its own binary again as a second process: the child
//! runs one test (its "role", which does nothing unless an environment
//! variable is set) and talks to the parent through lines on its stdout.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

/// Starts this test binary again running only the test named `role`
/// (exact name, one thread, output not captured) with `env` set to
/// `value`, its stdin and stdout piped. Returns the child and what
/// follows `CHILD ` in each line of its stdout that has it. The harness
/// may print "test … " before the child's own output on the same line;
/// lines are read on a thread so no wait on them is unbounded.
pub fn spawn_role(role: &str, env: &str, value: impl AsRef<OsStr>) -> (Child, Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", role, "--nocapture", "--test-threads=1"])
        .env(env, value)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(at) = l.find("CHILD ") {
                if tx.send(l[at + 6..].to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    (child, lines)
}
