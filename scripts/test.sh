#!/usr/bin/env bash
# The project's test command (README "Test"): sets up what the tests need,
# then checks formatting and lints and runs every test of the workspace.
# CI runs exactly this (through .ci/run, with CI=true) on a fresh clone.
#
# The required-tests switch: with CI set (or MIGROS_TESTS_REQUIRED=1 set by
# hand), a failed setup step fails the run, and every end-to-end test whose
# prerequisite is missing (root, CRIU, runc, Docker, perftest, …) fails,
# naming it, instead of skipping. Without it such tests skip and say why.
# Either way the run ends with how many end-to-end tests ran and skipped
# (each test appends its decision to $MIGROS_TESTS_LEDGER; see
# crates/migros-test-support and TESTING.md).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

if [ -n "${CI:-}" ] && [ -z "${MIGROS_TESTS_REQUIRED:-}" ]; then
  export MIGROS_TESTS_REQUIRED=1
fi
echo "MIGROS_TESTS_REQUIRED=${MIGROS_TESTS_REQUIRED:-} (1: a missing prerequisite fails the run)"

step "toolchain"
cargo --version
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" \
    || rustup component add "$component"
done

step "setup"
# System packages, CRIU, runc, the CRIU plugin, Docker (scripts/setup.sh).
./scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
# The end-to-end tests start the daemon and the CLI as separate processes.
cargo build --workspace --bins --locked
# Nodes started through the CLI (container tests: the seed experiment moves
# 13 GB) run the release daemon, as users do; the other tests start the
# debug build directly.
cargo build --release --locked -p migrosd
export MIGROSD="$PWD/target/release/migrosd"

step "tests"
MIGROS_TESTS_LEDGER=$(mktemp "${TMPDIR:-/tmp}/migros-tests-ledger.XXXXXX")
export MIGROS_TESTS_LEDGER
trap 'rm -f "$MIGROS_TESTS_LEDGER"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast || status=$?

step "end-to-end tests"
./scripts/e2e-summary.sh "$MIGROS_TESTS_LEDGER" || status=1
exit "$status"
