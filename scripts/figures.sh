#!/usr/bin/env bash
# Measures, side by side in one run, what the issue notes quote: iperf3 TCP
# over loopback, migros bench write-bw and send-bw (64 KiB, --pair), the
# ratio of each to iperf3, send-lat p50 at 64 bytes, and the peer-observed
# pause of a --migrate-to run; with target/ibverbs built (scripts/ibverbs.sh)
# and perftest installed, ib_write_bw and ib_send_lat at the same sizes.
# Needs root and iperf3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
cargo build --quiet --release -p migrosd -p migros
migros=target/release/migros
MIGROS_SOCKET_DIR=$(mktemp -d /tmp/migros-figures.XXXXXX)
export MIGROS_SOCKET_DIR
cleanup() {
  for dev in fig-a fig-b fig-c; do "$migros" dev del "$dev" >/dev/null 2>&1 || true; done
  kill "${iperf_pid:-0}" 2>/dev/null || true
  rm -rf "$MIGROS_SOCKET_DIR"
}
trap cleanup EXIT
mtu=${MTU:-4096}
"$migros" dev add fig-a --addr 127.0.0.71 --mtu "$mtu" >/dev/null
"$migros" dev add fig-b --addr 127.0.0.72 --mtu "$mtu" >/dev/null
"$migros" dev add fig-c --addr 127.0.0.73 --mtu "$mtu" >/dev/null

iperf3 -s -1 -B 127.0.0.1 -p 15201 >/dev/null 2>&1 & iperf_pid=$!
sleep 0.5
tcp=$(iperf3 -c 127.0.0.1 -p 15201 -t 5 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
bench() { "$migros" bench "$@" --pair fig-a fig-b --json; }
write=$(bench write-bw -s 65536 -D 5)
send=$(bench send-bw -s 65536 -D 5)
lat=$(bench send-lat -s 64 -n 5000)
mig=$(bench write-bw -s 65536 -n 20000 --verify --migrate-to fig-c)
"$migros" dev del fig-c >/dev/null
"$migros" dev add fig-c --addr 127.0.0.73 --mtu "$mtu" >/dev/null
fast=$(bench write-bw -s 65536 -n 20000 --migrate-to fig-c)
# The C path: Debian's unmodified perftest on the drop-in libibverbs, same sizes.
perf_write="" perf_lat=""
if command -v ib_write_bw >/dev/null && [ -f target/ibverbs/libibverbs.so.1 ]; then
  perftest() {  # program, args: server on fig-a, client on fig-b
    local prog=$1; shift
    LD_LIBRARY_PATH=$PWD/target/ibverbs timeout 60 "$prog" -d fig-a -x 0 -p 18777 "$@" >/dev/null 2>&1 &
    local srv=$!
    sleep 0.5
    LD_LIBRARY_PATH=$PWD/target/ibverbs timeout 60 "$prog" -d fig-b -x 0 -p 18777 "$@" 127.0.0.71
    wait "$srv" || true
  }
  perf_write=$(perftest ib_write_bw -s 65536 -D 5 --report_gbits | awk '$1 == 65536 {print $4}')
  perf_lat=$(perftest ib_send_lat -s 64 -n 5000 | awk '$1 == 64 {print $5}')
fi
python3 - "$tcp" "$write" "$send" "$lat" "$mig" "$fast" "$perf_write" "$perf_lat" <<'PY'
import json, sys
tcp = float(sys.argv[1])
write, send, lat, mig, fast = (json.loads(a) for a in sys.argv[2:7])
perf_write, perf_lat = sys.argv[7], sys.argv[8]
print(f"iperf3 TCP 127.0.0.1, 5 s          : {tcp:7.2f} Gbit/s")
print(f"migros write-bw 64 KiB, 5 s        : {write['gbps']:7.2f} Gbit/s  ratio {write['gbps']/tcp:.2f}  (retransmits {write['retransmits']})")
if perf_write:
    print(f"ib_write_bw (Debian, drop-in lib)  : {float(perf_write):7.2f} Gbit/s  ({float(perf_write)/write['gbps']:.2f} of migros write-bw)")
print(f"migros send-bw  64 KiB, 5 s        : {send['gbps']:7.2f} Gbit/s  ratio {send['gbps']/tcp:.2f}  (retransmits {send['retransmits']})")
l = lat['lat_us']
print(f"migros send-lat 64 B, 5000 iters   : p50 {l['p50']:.2f} us  p99 {l['p99']:.2f} us  min {l['min']:.2f} us")
if perf_lat:
    print(f"ib_send_lat 64 B (Debian, drop-in) : t_typical {float(perf_lat):.2f} us")
m = mig['migration']
print(f"write-bw --verify --migrate-to     : {mig['gbps']:.2f} Gbit/s verified={mig['verified']} downtime {m['downtime_ms']:.2f} ms, peer pause_ms {mig['pause_ms']:.2f}, image {m['image_bytes']} B")
m = fast['migration']
print(f"write-bw --migrate-to (no verify)  : {fast['gbps']:.2f} Gbit/s downtime {m['downtime_ms']:.2f} ms, peer pause_ms {fast['pause_ms']:.2f}, retransmits {fast['retransmits']}")
PY
