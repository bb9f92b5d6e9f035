#!/usr/bin/env bash
# The steady state after a daemon-to-daemon move (issue 15, goal 4):
# MOVES runs of `migros bench TEST -D SECONDS_EACH --pair st-a st-b
# --migrate-to st-c` (the server's end moves halfway through, a fresh st-c
# each run). The end that stays reads its QPs' counters every 20 ms; the
# bench prints the rate over the 1 s before the pause and the 1 s after the
# RESUME, their ratio, when a 100 ms rate was back within 5 %, and the same
# ratio for the two seconds before the pause (the noise without a move). Prints
# each run and the median ratio.
#
#   scripts/figures-steady.sh              # write-bw, 5 moves of 6 s runs
#   TEST=send-bw MOVES=3 scripts/figures-steady.sh
#
# Needs root. TEST (write-bw), MOVES (5), SECONDS_EACH (6), SIZE (65536),
# MTU (4096) and EXTRA (more bench options, e.g. "-q 4" or "-b") may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
cargo build --quiet --release -p migrosd -p migros
migros=$PWD/target/release/migros
test=${TEST:-write-bw} moves=${MOVES:-5} secs=${SECONDS_EACH:-6}
size=${SIZE:-65536} mtu=${MTU:-4096}
MIGROS_SOCKET_DIR=$(mktemp -d /tmp/migros-steady.XXXXXX)
export MIGROS_SOCKET_DIR
results=$(mktemp)
cleanup() {
  for dev in st-a st-b st-c; do "$migros" dev del "$dev" >/dev/null 2>&1 || true; done
  rm -rf "$MIGROS_SOCKET_DIR" "$results"
}
trap cleanup EXIT
for run in $(seq "$moves"); do
  "$migros" dev add st-a --addr 127.0.0.91 --mtu "$mtu" >/dev/null
  "$migros" dev add st-b --addr 127.0.0.92 --mtu "$mtu" >/dev/null
  "$migros" dev add st-c --addr 127.0.0.93 --mtu "$mtu" >/dev/null
  # shellcheck disable=SC2086
  "$migros" bench "$test" -s "$size" -D "$secs" ${EXTRA:-} --pair st-a st-b \
    --migrate-to st-c --migrate-at 0.5 --json >>"$results"
  for dev in st-a st-b st-c; do "$migros" dev del "$dev" >/dev/null; done
done
python3 - "$results" "$test" "$size" "$secs" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
test, size, secs = sys.argv[2:5]
ratios, quiet = [], []
for i, v in enumerate(runs, 1):
    st, m = v.get("steady"), v["migration"]
    head = f"move {i}: {test} {size} B, {secs} s, {v['gbps']:.2f} Gbit/s, downtime {m['downtime_ms']:.2f} ms, retransmits {v['retransmits']}"
    if not st:
        print(f"{head}: steady state not measured ({v.get('steady_error')})")
        continue
    rec = st["recovery_ms"]
    rec = f"{rec:.0f} ms" if rec is not None else "never"
    print(f"{head}: before {st['before_gbps']:.2f} after {st['after_gbps']:.2f} Gbit/s"
          f" ratio {st['ratio']:.3f}, pause {st['pause_ms']:.2f} ms, back within 5 % after {rec}")
    ratios.append(st["ratio"])
    if st.get("ratio_without_move") is not None:
        quiet.append(st["ratio_without_move"])
        print(f"        without a move (1 s before the pause / the 1 s before that): ratio {st['ratio_without_move']:.3f}")
if ratios:
    print(f"median ratio (1 s after the RESUME / 1 s before the pause) over {len(ratios)} moves:"
          f" {statistics.median(ratios):.3f}  min {min(ratios):.3f}  max {max(ratios):.3f}")
if quiet:
    print(f"median ratio without a move (two seconds before the pause) over {len(quiet)} runs:"
          f" {statistics.median(quiet):.3f}  min {min(quiet):.3f}  max {max(quiet):.3f}")
PY
