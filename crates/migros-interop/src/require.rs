//! The required-tests rule, in one function the workspace's shared
//! `migros-test-support::require` can replace: when a prerequisite is
//! missing, a test skips and says why, unless `MIGROS_TESTS_REQUIRED=1`
//! (CI), where it fails naming the prerequisite.

/// One prerequisite checked: `Err` says what is missing and how to get it.
pub type Check = Result<(), String>;

/// Whether `MIGROS_TESTS_REQUIRED` asks for every end-to-end test to run.
pub fn required() -> bool {
    std::env::var("MIGROS_TESTS_REQUIRED").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// True when every check passed. Otherwise prints `skipped: …` and returns
/// false, or panics naming what is missing when [`required`].
pub fn require(checks: impl IntoIterator<Item = Check>) -> bool {
    let missing: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if required() {
        panic!("missing prerequisite (MIGROS_TESTS_REQUIRED=1 makes this a failure): {why}");
    }
    println!("skipped: {why}");
    false
}
