#!/usr/bin/env bash
# Compares migrosd builds side by side in one run: `migros bench write-bw`
# (64 KiB, --pair, 5 s) against each daemon in turn, ROUNDS times
# (alternating, so that the machine's load falls on all of them), the
# bench running as an unprivileged user (nobody), as applications do.
# Prints each run and the median per daemon.
#
#   scripts/figures-daemons.sh before=/tmp/migrosd-old after=target/release/migrosd
#
# Needs root. ROUNDS (3), SECONDS_EACH (5), SIZE (65536), MTU (4096) and
# BENCH_USER (nobody) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: $0 name=path/to/migrosd ..." >&2; exit 1; }
for a in "$@"; do
  [ -x "${a#*=}" ] || { echo "${a#*=} is not an executable" >&2; exit 1; }
done
cargo build --quiet --release -p migros
migros=$PWD/target/release/migros
rounds=${ROUNDS:-3} secs=${SECONDS_EACH:-5} size=${SIZE:-65536} mtu=${MTU:-4096}
user=${BENCH_USER:-nobody}
uid=$(id -u "$user") gid=$(id -g "$user")
MIGROS_SOCKET_DIR=$(mktemp -d /tmp/migros-daemons.XXXXXX)
chmod 755 "$MIGROS_SOCKET_DIR"
export MIGROS_SOCKET_DIR
results=$(mktemp)
cleanup() {
  for dev in cmp-a cmp-b; do "$migros" dev del "$dev" >/dev/null 2>&1 || true; done
  rm -rf "$MIGROS_SOCKET_DIR" "$results"
}
trap cleanup EXIT
for round in $(seq "$rounds"); do
  for a in "$@"; do
    name=${a%%=*} daemon=$(realpath "${a#*=}")
    MIGROSD=$daemon "$migros" dev add cmp-a --addr 127.0.0.74 --mtu "$mtu" >/dev/null
    MIGROSD=$daemon "$migros" dev add cmp-b --addr 127.0.0.75 --mtu "$mtu" >/dev/null
    gbps=$(setpriv --reuid="$uid" --regid="$gid" --clear-groups \
      "$migros" bench write-bw -s "$size" -D "$secs" --pair cmp-a cmp-b --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["gbps"])')
    "$migros" dev del cmp-a >/dev/null
    "$migros" dev del cmp-b >/dev/null
    echo "round $round $name: write-bw $size B, $secs s: $gbps Gbit/s"
    echo "$name $gbps" >>"$results"
  done
done
python3 - "$results" "$@" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, gbps = line.split()
    runs.setdefault(name, []).append(float(gbps))
names = [a.split("=", 1)[0] for a in sys.argv[2:]]
first = statistics.median(runs[names[0]])
for n in names:
    m = statistics.median(runs[n])
    print(f"{n:>12}: median {m:7.2f} Gbit/s ({m / first * 100:5.1f} % of {names[0]})  runs {runs[n]}")
PY
