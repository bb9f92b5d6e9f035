#!/usr/bin/env bash
# The main job (README "Run"). Until the daemon exists: the simulated
# live-migration demo, in virtual time.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p migros-sim --example migration_demo
