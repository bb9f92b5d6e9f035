#!/usr/bin/env bash
# The main job (README "Run"): three migros devices on loopback addresses;
# a verified RDMA WRITE benchmark between two of them while the server end's
# QPs migrate to the third device halfway through. Builds what it needs.
# `scripts/demo.sh --sim` runs the same story in the simulator instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--sim" ]; then
  exec cargo run --quiet --release -p migros-sim --example migration_demo
fi
if [ "$(id -u)" != 0 ]; then
  echo "the demo needs root: the daemons reach the benchmark's memory with process_vm_readv" >&2
  echo "(without root: scripts/demo.sh --sim)" >&2
  exit 1
fi

cargo build --quiet --release -p migrosd -p migros
migros=target/release/migros
MIGROS_SOCKET_DIR=$(mktemp -d /tmp/migros-demo.XXXXXX)
export MIGROS_SOCKET_DIR
cleanup() {
  for dev in demo-a demo-b demo-c; do "$migros" dev del "$dev" >/dev/null 2>&1 || true; done
  rm -rf "$MIGROS_SOCKET_DIR"
}
trap cleanup EXIT

echo "== three devices (one migrosd each) on loopback addresses"
"$migros" dev add demo-a --addr 127.0.0.61
"$migros" dev add demo-b --addr 127.0.0.62
"$migros" dev add demo-c --addr 127.0.0.63
"$migros" dev list

echo
echo "== RDMA WRITE, 64 KiB messages, every byte verified; the server end (demo-a)"
echo "   moves to demo-c halfway through while the client on demo-b keeps going"
"$migros" bench write-bw --pair demo-a demo-b -s 65536 -n 20000 --verify \
  --migrate-to demo-c --migrate-at 0.5
"$migros" bench write-bw --pair demo-a demo-b -s 65536 -n 20000 --verify \
  --migrate-to demo-c --migrate-at 0.5 --json > "$MIGROS_SOCKET_DIR/run.json"
echo
echo "== the same as JSON (second run)"
cat "$MIGROS_SOCKET_DIR/run.json"
echo
echo "== counters of the device the server end moved to"
"$migros" stat demo-c
