#!/usr/bin/env bash
# The main job (README "Run"): MigrOS's seed experiment on this machine.
# Sets up what it needs (scripts/setup.sh: perftest, CRIU, runc, the migros
# CRIU plugin), builds in release, then `migros demo`: three nodes (network
# namespaces with a migrosd each), the unmodified `ib_send_bw -b` server in a
# runc container on node a and its client on node b; the server's container
# is live-migrated to node c mid-run; both finish normally; a plot of the
# client's bandwidth with the pause marked is written (migros-demo.svg).
# Arguments go to `migros demo` (e.g. -n 200000, --out FILE, --keep).
#   scripts/demo.sh --process   the same story without containers: a verified
#                               RDMA WRITE benchmark whose server end moves
#                               between daemons (Context::migrate_to)
#   scripts/demo.sh --sim       the story in the deterministic simulator (no root)
#   scripts/demo.sh --swarm     the seed's own set-up: three simulated hosts (own
#                               dockerd, containerd, sshd, migrosd) in a Docker
#                               Swarm, the overlay rdma-net, the seed's image and
#                               scripts (`migros demo --swarm`; --move client too)
# Run it as root (no sudo needed: these machines have none).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--sim" ]; then
  exec cargo run --quiet --release -p migros-sim --example migration_demo
fi
if [ "$(id -u)" != 0 ]; then
  echo "the demo needs root: network namespaces, containers, CRIU, and daemons that" >&2
  echo "reach the benchmark's memory with process_vm_readv: run it as root" >&2
  echo "(sudo ./scripts/demo.sh where sudo exists; without root: scripts/demo.sh --sim)" >&2
  exit 1
fi

if [ "${1:-}" = "--process" ]; then
  shift
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
  echo
  echo "== RDMA WRITE, 64 KiB messages, every byte verified; the server end (demo-a)"
  echo "   moves to demo-c halfway through (6 s) while the client on demo-b keeps going;"
  echo "   the client end reads its counters: the steady state before and after the move"
  "$migros" bench write-bw --pair demo-a demo-b -s 65536 -D 6 --verify \
    --migrate-to demo-c --migrate-at 0.5
  echo
  echo "== counters of the device the server end moved to"
  "$migros" stat demo-c
  exit 0
fi

echo "== set-up (packages, CRIU, runc, the migros CRIU plugin, Docker, hosts)"
./scripts/setup.sh
echo "== build (release)"
cargo build --quiet --release -p migrosd -p migros
./scripts/ibverbs.sh >/dev/null
echo "== the seed experiment"
exec target/release/migros demo "$@"
