//! The required-tests switch end to end: this test binary runs itself
//! (the `gate_role` test) with a prerequisite that cannot be met, once
//! without and once with `MIGROS_TESTS_REQUIRED=1`, and reads the ledger.

use std::process::Command;

use migros_test_support::require::{self, LEDGER_ENV, REQUIRED_ENV};

const ROLE_ENV: &str = "MIGROS_TEST_SUPPORT_GATE_ROLE";

/// Not a test on its own: the gate the test below runs in a child.
#[test]
fn gate_role() {
    if std::env::var_os(ROLE_ENV).is_none() {
        return;
    }
    let met = require::require([
        Ok(()),
        require::file("/no/such/prerequisite", "made by nothing"),
    ]);
    assert!(!met, "a missing prerequisite never lets the test run");
    println!("GATE RETURNED");
}

fn run_role(required: bool, ledger: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "gate_role", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, "1")
        .env(LEDGER_ENV, ledger)
        .env_remove(REQUIRED_ENV);
    if required {
        cmd.env(REQUIRED_ENV, "1");
    }
    cmd.output().expect("run the gate role")
}

#[test]
fn a_missing_prerequisite_skips_or_fails_as_the_switch_says() {
    let dir = tempfile_dir();
    let ledger = dir.join("ledger");

    let out = run_role(false, &ledger);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("skipped: /no/such/prerequisite (made by nothing)"),
        "{stdout}"
    );
    assert!(stdout.contains("GATE RETURNED"), "{stdout}");

    let out = run_role(true, &ledger);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the switch makes it a failure: {text}"
    );
    assert!(text.contains("missing prerequisite"), "{text}");
    assert!(text.contains("/no/such/prerequisite"), "{text}");
    assert!(!text.contains("GATE RETURNED"), "{text}");

    let lines: Vec<Vec<String>> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0][0], "skipped");
    assert_eq!(lines[1][0], "failed");
    for l in &lines {
        assert!(l[1].ends_with("::gate_role"), "{l:?}");
        assert!(l[2].contains("/no/such/prerequisite"), "{l:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("migros-switch-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
