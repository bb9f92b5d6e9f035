#!/usr/bin/env bash
# Issue 17's measured prototype, in one run: the one-way latency of
#  - the machine's UDP floor (../shared/tools/udp-pingpong.c, busy-poll and
#    blocking, 20,000 round trips),
#  - the transport in the application's thread (the inthread_lat example of
#    migrosd: two processes, real RoCE v2 packets with ICRC on UDP 4791,
#    busy-polling): SEND and WRITE ping-pong, SEND with both processes
#    on one address steered by QPN (SO_REUSEPORT + BPF), and SEND with each
#    ACK sent before the application's answer (--acks-first),
#  - the steering the design recommends (tools/reuseport-steer/steer.c: an
#    eBPF program choosing among SO_REUSEPORT sockets by QPN, with a
#    SOCKHASH and with a REUSEPORT_SOCKARRAY; right or wrong, and its cost),
#  - the daemon path (`migros bench send-lat -s 64 --pair`, two migrosd),
# with the ratios, and the load (uptime) before and after. Starts daemons:
# run it under the shared lock, `flock -o /tmp/migros-e2e.lock
# scripts/figures-inthread.sh`. ITERS (default 100000) sets the in-thread
# round trips, DAEMON_ITERS (default 20000) the daemon's; SHARED_DIR the
# folder holding tools/udp-pingpong.c (default ../shared). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
shared=${SHARED_DIR:-../shared}
pp_src=$shared/tools/udp-pingpong.c
[ -f "$pp_src" ] || { echo "no $pp_src (set SHARED_DIR)" >&2; exit 1; }
iters=${ITERS:-100000}
daemon_iters=${DAEMON_ITERS:-20000}
nice -n 19 cargo build --quiet --release -p migrosd -p migros
nice -n 19 cargo build --quiet --release -p migrosd --example inthread_lat
migros=target/release/migros
inthread=target/release/examples/inthread_lat
work=$(mktemp -d /tmp/migros-figures-inthread.XXXXXX)
MIGROS_SOCKET_DIR=$work/sock
mkdir -p "$MIGROS_SOCKET_DIR"
export MIGROS_SOCKET_DIR
cleanup() {
  for dev in fig17-a fig17-b; do "$migros" dev del "$dev" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -o "$work/pp" "$pp_src"
gcc -O2 -o "$work/steer" tools/reuseport-steer/steer.c

echo "load before: $(uptime)"
busy=$("$work/pp" 1)
blocking=$("$work/pp" 0)
send=$("$inthread" --op send -s 64 -n "$iters" --json)
write=$("$inthread" --op write -s 64 -n "$iters" --json)
steer=$("$inthread" --op send -s 64 -n "$iters" --steer --addr 127.0.0.99 --json)
acks_first=$("$inthread" --op send -s 64 -n "$iters" --acks-first --json)
# The production steering: an eBPF program and a map by QPN (both maps).
steer_hash=$("$work/steer" 127.0.0.89 | tail -3)
steer_array=$("$work/steer" 127.0.0.89 array | tail -3)
"$migros" dev add fig17-a --addr 127.0.0.97 >/dev/null
"$migros" dev add fig17-b --addr 127.0.0.98 >/dev/null
daemon=$("$migros" bench send-lat -s 64 -n "$daemon_iters" --pair fig17-a fig17-b --json)
echo "load after:  $(uptime)"
echo "$steer_hash"
echo "$steer_array"

python3 - "$busy" "$blocking" "$send" "$write" "$steer" "$daemon" "$acks_first" "$iters" "$daemon_iters" <<'PY'
import json, re, sys
def pp(line):
    m = re.search(r"p50 ([0-9.]+) us p99 ([0-9.]+) us min ([0-9.]+)", line)
    return dict(zip(("p50", "p99", "min"), map(float, m.groups())))
busy, blocking = pp(sys.argv[1]), pp(sys.argv[2])
send, write, steer, daemon, acks_first = (json.loads(a) for a in sys.argv[3:8])
iters, daemon_iters = sys.argv[8], sys.argv[9]
rows = [
    ("UDP busy-poll (udp-pingpong 1), 20000", busy),
    ("UDP blocking (udp-pingpong 0), 20000", blocking),
    (f"in-thread SEND 64 B, {iters}", send["lat_us"]),
    (f"in-thread WRITE 64 B, {iters}", write["lat_us"]),
    (f"in-thread SEND 64 B steered, {iters}", steer["lat_us"]),
    (f"in-thread SEND 64 B ACKs first, {iters}", acks_first["lat_us"]),
    (f"daemon send-lat 64 B, {daemon_iters}", daemon["lat_us"]),
]
for name, l in rows:
    print(f"{name:40s}: one-way p50 {l['p50']:7.2f} us  p99 {l['p99']:7.2f} us  min {l['min']:6.2f} us")
for name, r in (("in-thread SEND", send), ("in-thread WRITE", write), ("in-thread SEND steered", steer), ("ACKs first", acks_first)):
    assert r["rx_unknown_qp"] == 0 and r["rx_icrc_errors"] == 0, r
b, s = busy["p50"], send["lat_us"]["p50"]
print(f"ratio in-thread SEND p50 / UDP busy-poll p50 : {s / b:.2f}  (goal <= 2)")
print(f"ratio in-thread WRITE p50 / UDP busy-poll p50: {write['lat_us']['p50'] / b:.2f}")
print(f"ratio steered SEND p50 / unsteered SEND p50  : {steer['lat_us']['p50'] / s:.2f}")
print(f"ratio ACKs-first SEND p50 / SEND p50          : {acks_first['lat_us']['p50'] / s:.2f}")
print(f"ratio daemon send-lat p50 / in-thread SEND p50: {daemon['lat_us']['p50'] / s:.2f}")
print(f"ratio daemon send-lat p50 / UDP busy-poll p50 : {daemon['lat_us']['p50'] / b:.2f}")
print(f"ratio UDP blocking p50 / UDP busy-poll p50    : {blocking['p50'] / b:.2f}")
PY
