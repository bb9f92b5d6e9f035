#!/bin/sh
# Builds the migros CRIU plugin (crates/migros-criu) in release mode and
# installs it as /usr/lib/criu/migros_criu.so, where CRIU (and runc or
# Docker through it) loads every plugin from. Idempotent: running it again
# replaces the file with the current build (atomically, by rename).
# Usage: scripts/install-criu-plugin.sh [destination dir, default /usr/lib/criu]
set -eu
cd "$(dirname "$0")/.."
dest="${1:-/usr/lib/criu}"
cargo build --release -q -p migros-criu --lib
so=target/release/libmigros_criu.so
[ -f "$so" ] || { echo "install-criu-plugin: $so was not built" >&2; exit 1; }
mkdir -p "$dest"
cp "$so" "$dest/.migros_criu.so.new"
mv -f "$dest/.migros_criu.so.new" "$dest/migros_criu.so"
echo "installed $dest/migros_criu.so"
