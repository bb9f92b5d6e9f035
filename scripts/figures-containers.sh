#!/usr/bin/env bash
# Container-migration figures, measured in one run (root, after
# scripts/setup.sh): three nodes fa/fb/fc (198.18.3.1-3), containers on
# 198.19.3.x, release binaries.
#  1. the seed experiment: ib_send_bw -b -n 100000 server on fa, client on
#     fb, server moved to fc: the migrate timeline and the pause the
#     client's QP saw (its counters);
#  2. the same kind of container without RDMA (a bash TCP echo pair):
#     its migrate timeline, so the RDMA-added downtime shows;
#  3. `migros bench write-bw -q N` (N = 1, 100, 1000) server moved: the
#     timeline's restore line for N QPs;
#  4. the daemons' side alone: crates/migrosd/examples/restore_time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
cargo build --quiet --release -p migrosd -p migros
./scripts/ibverbs.sh >/dev/null
export MIGROSD=$PWD/target/release/migrosd
m=$PWD/target/release/migros
bin=""
cleanup() {
  for c in fsrv fcli ftcps ftcpc qsrv qcli; do "$m" rm -f "$c" >/dev/null 2>&1 || true; done
  for n in fa fb fc; do "$m" node del "$n" >/dev/null 2>&1 || true; done
  [ -z "$bin" ] || rm -rf "$bin"
}
trap cleanup EXIT
cleanup
bin=$(mktemp -d /tmp/migros-fig-bin.XXXXXX)
cp "$m" "$bin/migros"
"$m" node add fa --addr 198.18.3.1 >/dev/null
"$m" node add fb --addr 198.18.3.2 >/dev/null
"$m" node add fc --addr 198.18.3.3 >/dev/null

# Waits until `name`'s log contains `pattern`.
wait_log() {
  for _ in $(seq 1 300); do
    "$m" logs "$1" 2>/dev/null | grep -q "$2" && return 0
    sleep 0.1
  done
  echo "timeout waiting for '$2' in $1" >&2; return 1
}
# Pause counters of the QPs on node $1 (JSON of migros stat).
pauses() {
  MIGROS_SOCKET_DIR=/run/migros/nodes/$1 "$m" stat rxe0 --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
qps = d[0]["qps"] if isinstance(d, list) else d["qps"]
for q in qps:
    c = q["counters"]
    qpn, last = q["qpn"], c["last_pause_nanos"] / 1e6
    p, r, rt, to = c["pauses"], c["resumes"], c["retransmits"], c["timeouts"]
    print(f"  QP {qpn:#08x}: pauses {p}, resumes {r}, last pause {last:.2f} ms, "
          f"retransmits {rt}, timeouts {to}")
'
}
move() {  # container, destination: prints the timeline
  "$m" migrate "$1" --to "$2" 2>/dev/null
}

if [ "${SKIP_SEED:-0}" != 1 ]; then
echo "== 1. seed experiment: ib_send_bw -d rxe0 -b -n 100000, server fa -> fc, client on fb"
pt=(stdbuf -oL ib_send_bw -d rxe0 -x 0 -b -n 100000)
"$m" run --node fa --name fsrv --ip 198.19.3.1 -- "${pt[@]}" >/dev/null
sleep 0.5
"$m" run --node fb --name fcli --ip 198.19.3.2 -- "${pt[@]}" 198.19.3.1 >/dev/null
wait_log fcli "remote address"
sleep 1.5
move fsrv fc
sleep 0.3   # the RESUME handshake
echo "  the client's QP (node fb), read while it runs:"
pauses fb
"$m" wait fsrv --timeout 120 >/dev/null && "$m" wait fcli --timeout 120 >/dev/null \
  && echo "  both exited 0:" && "$m" logs fcli | awk '$1 == 65536'
"$m" rm -f fsrv >/dev/null; "$m" rm -f fcli >/dev/null
fi

echo
if [ "${SKIP_TCP:-0}" != 1 ]; then
echo "== 2. without RDMA: a bash TCP echo pair, server fa -> fc, client on fb"
"$m" run --node fa --name ftcps --ip 198.19.3.3 -- python3 -c '
import socket
s = socket.socket(); s.bind(("0.0.0.0", 7000)); s.listen(1)
c, _ = s.accept(); f = c.makefile("rwb", buffering=0)
for line in f: f.write(line)
' >/dev/null
sleep 0.5
"$m" run --node fb --name ftcpc --ip 198.19.3.4 -- bash -c '
exec 3<>/dev/tcp/198.19.3.3/7000
for i in $(seq 1 400); do echo "$i" >&3; read -r l <&3; [ "$l" = "$i" ] || exit 1; sleep 0.01; done
echo echoed 400' >/dev/null
sleep 1
move ftcps fc
"$m" wait ftcpc --timeout 60 >/dev/null && echo "  client: $("$m" logs ftcpc | tail -1)"
"$m" rm -f ftcps >/dev/null; "$m" rm -f ftcpc >/dev/null
fi

echo
if [ "${SKIP_QPS:-0}" != 1 ]; then
echo "== 3. restore of N QPs: migros bench write-bw -q N -s 4096, server fa -> fc"
for n in 1 100 1000; do
  b=(/opt/bin/migros bench write-bw -d rxe0 -q "$n" -s 4096 -t 16 -D 8)
  "$m" run --node fa --name qsrv --ip 198.19.3.5 -v "$bin:/opt/bin:ro" -- "${b[@]}" >/dev/null
  sleep 0.5
  "$m" run --node fb --name qcli --ip 198.19.3.6 -v "$bin:/opt/bin:ro" -- "${b[@]}" 198.19.3.5 >/dev/null
  wait_log qsrv "connected"
  sleep 1
  echo "-- $n QP(s)"
  move qsrv fc | grep -E "restore|downtime|total"
  "$m" wait qcli --timeout 120 >/dev/null && echo "  client exited 0"
  "$m" rm -f qsrv >/dev/null; "$m" rm -f qcli >/dev/null
done

echo
echo "== 4. the daemons' side alone (crates/migrosd/examples/restore_time)"
cargo run --quiet --release -p migrosd --example restore_time -- 1 100 1000
fi
