#!/usr/bin/env bash
# The project's test command (README "Test"): sets up what the tests need,
# then checks formatting and lints and runs every test of the workspace.
# CI runs exactly this (through .ci/run) on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
cargo --version
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" \
    || rustup component add "$component"
done

step "setup"
# System packages the end-to-end tests use (ibverbs-utils, perftest).
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
cargo test --workspace --locked --no-fail-fast
