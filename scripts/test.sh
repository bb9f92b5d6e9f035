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
# One line per test decision: outcome<TAB>test<TAB>what was missing. A test
# counts once; failed (a missing prerequisite under the switch) wins over
# skipped, skipped over ran.
summary=$(awk -F '\t' '
  { rank = ($1 == "failed") ? 3 : ($1 == "skipped") ? 2 : 1
    if (rank > best[$2]) { best[$2] = rank; why[$2] = $3 } }
  END {
    for (t in best) {
      n[best[t]]++
      if (best[t] > 1) printf "  %s %s: %s\n", (best[t] == 3 ? "FAILED" : "skipped"), t, why[t] | "sort"
    }
    close("sort")
    printf "end-to-end tests: %d ran, %d skipped, %d failed for a missing prerequisite\n", n[1], n[2], n[3]
  }' "$MIGROS_TESTS_LEDGER")
echo "$summary"
ran=$(echo "$summary" | sed -n 's/^end-to-end tests: \([0-9]*\) ran.*/\1/p')
skipped=$(echo "$summary" | sed -n 's/^end-to-end tests: [0-9]* ran, \([0-9]*\) skipped.*/\1/p')
case "${MIGROS_TESTS_REQUIRED:-}" in
  1|true|TRUE)
    if [ "${ran:-0}" = 0 ] || [ "${skipped:-0}" != 0 ]; then
      echo "tests: FAILED: with MIGROS_TESTS_REQUIRED every end-to-end test must run" >&2
      status=1
    fi ;;
esac
exit "$status"
