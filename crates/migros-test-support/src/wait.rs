//! Bounded waits: every wait of a test has a deadline and says what it
//! waited for when it runs out.

use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Polls `f` (every millisecond at first, backing off to 20 ms) until it
/// holds; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    if !poll_until(limit, &mut f) {
        panic!("timed out after {limit:?} waiting for {what}");
    }
}

/// Polls `f` until it holds or `limit` passed; whether it held.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    let mut pause = Duration::from_millis(1);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit, at most `limit`; its status, or `None` if it
/// still runs.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    poll_until(limit, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

/// The output of a child spawned with piped stdout and stderr, once it
/// exited; kills it and panics (with what it printed) after `limit`.
/// `what` names the command in the message.
pub fn output_within(mut child: Child, limit: Duration, what: &str) -> Output {
    // Large outputs must not block the child on a full pipe: read them on
    // threads while waiting.
    let out = child.stdout.take().map(reader);
    let err = child.stderr.take().map(reader);
    let status = wait_child(&mut child, limit);
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let status = child.wait().expect("reap a killed child");
            let (o, e) = (collect(out), collect(err));
            panic!(
                "{what} timed out after {limit:?} ({status})\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
    };
    Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

type Reader = std::thread::JoinHandle<Vec<u8>>;

fn reader(mut r: impl std::io::Read + Send + 'static) -> Reader {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn collect(r: Option<Reader>) -> Vec<u8> {
    r.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Milliseconds with one decimal, for messages.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn polls_until_true_or_the_limit() {
        let mut n = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert!(!poll_until(Duration::from_millis(30), || false));
    }

    #[test]
    fn output_of_a_quick_command() {
        let child = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(child, Duration::from_secs(10), "sh");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    #[should_panic(expected = "timed out")]
    fn a_hung_command_is_killed_and_reported() {
        let child = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        output_within(child, Duration::from_millis(100), "sleep");
    }
}
