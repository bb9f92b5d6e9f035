#!/usr/bin/env bash
# Runs inside the VM booted by scripts/vm/run.sh (Debian 12's 6.1 kernel, the
# host's filesystem read-only, OUT writable): the kernel's SoftRoCE (rxk, on
# veth vk, 198.18.10.1, root namespace) against migros devices in network
# namespace `mig` (rxe0 at 198.18.10.2 on the veth's other end; rxe1 at
# 198.18.10.3 for migros<->migros), and unmodified programs across.
#
#   guest.sh OUT PLAN
#
# PLAN has one case a line:  NAME SERVER CLIENT PROGRAM [ARGS...]
# with SERVER and CLIENT one of k (kernel rxk), m (migros rxe0), n (migros
# rxe1). `-d`, the GID index (`-g` for ibv_* and rdma_check, `-x` for
# perftest), the port and the server's address are added here; programs of
# the RDMA CM (rping, ucmatose, udaddy, perftest's -R) get the address and
# port their way. rdma_check
# is the test's own C program, built by run.sh into OUT/bin. Lines `netem ARGS...` and
# `netem off` change the veth's qdisc (inside the VM) for the cases after;
# `stop AFTER SECONDS` makes the next case stop daemon rxe0 (SIGSTOP)
# AFTER seconds into it for SECONDS: what a kernel peer sees of a migros
# endpoint that goes silent (a migration), and whether it survives.
# `pause AFTER SECONDS` makes the next case pause the sessions of rxe0
# (PAUSE_TOOL, interop-pause: the admin Pause, then Resume) AFTER seconds
# into it for SECONDS: what a kernel peer does with the pause NAK and RESUME.
#
# Writes OUT/results.tsv, one line per case:
#   NAME  pass|fail  SECONDS  KERNEL_ERRS  MIGROS_ERRS  LOST  INFO
# KERNEL_ERRS / MIGROS_ERRS: the error counters that moved during the case
# (name=delta,…; "-" when none), LOST: kernel rcvd_pkts vs migros tx_packets
# and the reverse (datagrams one side sent that the other did not take),
# INFO: the client's result line (perftest's figures, pingpong's rate).
# Plus OUT/logs/ (each program's output, counters), OUT/veth.pcap (the
# kernel<->migros traffic, headers only), OUT/dmesg.txt, OUT/done.
set -uo pipefail

OUT=$1
PLAN=$2
# run.sh runs a copy of this script and says where the work tree is.
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
REL=$ROOT/target/release
export PATH="$OUT/bin:$PATH"
LIB=$ROOT/target/ibverbs
# The CLI reads the daemons' counters before and after each case: a copy
# in the guest's memory starts faster than one read through 9p each time.
cp "${MIGROS_CLI:-$ROOT/target/debug/migros}" /tmp/migros-cli
MIGROS=/tmp/migros-cli
SOCK=/tmp/migros-sock
LOGS=$OUT/logs
mkdir -p "$LOGS" "$SOCK"
: >"$OUT/results.tsv"
exec 2>"$OUT/guest.stderr"

say() { echo "[$(date +%T)] $*" >>"$OUT/guest.log"; }
fail_setup() { say "setup failed: $*"; echo "setup failed: $*" >"$OUT/setup-error"; touch "$OUT/done"; exit 1; }

# ---- network and devices ----
modprobe veth || fail_setup "modprobe veth"
modprobe rdma_rxe || fail_setup "modprobe rdma_rxe"
# The kernel side's librdmacm talks to /dev/infiniband/rdma_cm (no udev in
# the VM loads it on demand).
modprobe rdma_ucm || fail_setup "modprobe rdma_ucm"
ip link set lo up
ip netns add mig || fail_setup "ip netns add"
ip link add vk mtu 9000 type veth peer name vm mtu 9000 || fail_setup "veth"
ip link set vm netns mig
ip addr add 198.18.10.1/24 dev vk
ip link set vk up
ip -n mig link set lo up
ip -n mig addr add 198.18.10.2/24 dev vm
ip -n mig addr add 198.18.10.3/24 dev vm
ip -n mig link set vm up
# A veth hands each packet to the backlog of the CPU that sent it, so a
# sender that moves between the 2 vCPUs gets its packets reordered, which a
# wire never does: steer each end's receive processing to one CPU (RPS), as
# a NIC's receive queue would.
echo 1 >/sys/class/net/vk/queues/rx-0/rps_cpus
ip netns exec mig sh -c 'echo 1 >/sys/class/net/vm/queues/rx-0/rps_cpus'
# In 6.1 rxe works only on an interface of the initial namespace.
rdma link add rxk type rxe netdev vk || fail_setup "rdma link add"
# The daemons are the NIC: the kernel's rxe runs in softirq, ahead of the
# programs (which busy-poll their CQs on 2 vCPUs); nice -10 gives the
# daemons a comparable claim to the CPU when a packet wakes them.
for d in "rxe0 198.18.10.2" "rxe1 198.18.10.3"; do
  set -- $d
  ip netns exec mig nice -n -10 "$REL/migrosd" --name "$1" --addr "$2" --mtu 4096 --socket-dir "$SOCK" \
    >"$LOGS/migrosd-$1.log" 2>&1 &
  # ip netns exec and nice exec the daemon: the same pid.
  [ "$1" = rxe0 ] && RXE0_PID=$!
done
STOP=""
PAUSE=""
for _ in $(seq 100); do
  [ -S "$SOCK/rxe0.sock" ] && [ -S "$SOCK/rxe1.sock" ] && break
  sleep 0.1
done
[ -S "$SOCK/rxe0.sock" ] && [ -S "$SOCK/rxe1.sock" ] || fail_setup "migrosd did not start"
# A veth never lets a GSO batch through split: the kernel's rxe socket
# splits it on receive, as a NIC would on send, so the test sees what a
# real link shows.
tcpdump -i vk -n -s 160 -w "$OUT/veth.pcap" udp port 4791 >/dev/null 2>&1 &
TCPDUMP=$!
sleep 1
{
  ibv_devinfo -d rxk
  ip netns exec mig env LD_LIBRARY_PATH="$LIB" MIGROS_SOCKET_DIR="$SOCK" ibv_devinfo -v -d rxe0
  ip -d link show vk
} >"$LOGS/devices.txt" 2>&1
say "setup done"

# ---- counters ----
kernel_counters() {
  # One process: forks are slow under TCG.
  grep -H '' /sys/class/infiniband/rxk/ports/1/hw_counters/* | sed 's|.*/||; s|:| |'
}
migros_counters() {
  ip netns exec mig env MIGROS_SOCKET_DIR="$SOCK" "$MIGROS" stat rxe0 2>>"$LOGS/stat.err" \
    | awk 'NR == 1 { for (i = 3; i < NF; i += 2) print $i, $(i + 1) }'
}
# summary KB KA MB MA KM: the kernel's and migros' error counters that
# moved (kernel before/after, migros before/after) as "name=delta,…" or "-",
# and, when KM (kernel<->migros traffic), the datagrams one side sent that
# the other did not count as received. One awk: forks are slow under TCG.
summary() {
  awk -v kerr="${KERNEL_ERRORS[*]}" -v merr="${MIGROS_ERRORS[*]}" -v km="$5" '
    FILENAME == ARGV[1] { kb[$1] = $2 } FILENAME == ARGV[2] { ka[$1] = $2 }
    FILENAME == ARGV[3] { mb[$1] = $2 } FILENAME == ARGV[4] { ma[$1] = $2 }
    function moved(list, b, a,   n, names, i, d, out) {
      n = split(list, names, " ")
      out = ""
      for (i = 1; i <= n; i++) {
        d = a[names[i]] - b[names[i]]
        if (d != 0) out = out (out == "" ? "" : ",") names[i] "=" d
      }
      return out == "" ? "-" : out
    }
    END {
      lost = "-"
      if (km) lost = sprintf("to_kernel=%d,to_migros=%d", \
        (ma["tx_packets"] - mb["tx_packets"]) - (ka["rcvd_pkts"] - kb["rcvd_pkts"]), \
        (ka["sent_pkts"] - kb["sent_pkts"]) - (ma["rx_packets"] - mb["rx_packets"]))
      printf "%s\t%s\t%s\n", moved(kerr, kb, ka), moved(merr, mb, ma), lost
    }' "$1" "$2" "$3" "$4"
}
KERNEL_ERRORS=(duplicate_request out_of_seq_request rcvd_rnr_err send_rnr_err rcvd_seq_err
  retry_exceeded_err retry_rnr_exceeded_err completer_retry_err send_err link_downed)
MIGROS_ERRORS=(rx_icrc_errors rx_malformed rx_unknown_qp rx_tombstone retransmits
  naks_sent naks_received rnr_naks_sent rnr_naks_received rx_dropped)

# ---- one case ----
side_dev() { case $1 in k) echo rxk ;; m) echo rxe0 ;; n) echo rxe1 ;; esac; }
side_addr() { case $1 in k) echo 198.18.10.1 ;; m) echo 198.18.10.2 ;; n) echo 198.18.10.3 ;; esac; }
side_gid() { case $1 in k) echo 1 ;; *) echo 0 ;; esac; }
# on SIDE CMD...: runs CMD as a program of that side would
on() {
  local side=$1
  shift
  case $side in
    k) "$@" ;;
    *) ip netns exec mig env LD_LIBRARY_PATH="$LIB" MIGROS_SOCKET_DIR="$SOCK" "$@" ;;
  esac
}
listening() { # SIDE PORT
  local ns=()
  [ "$1" != k ] && ns=(ip netns exec mig)
  "${ns[@]}" ss -Hltn "sport = :$2" 2>/dev/null | grep -q .
}

# cm_listening SIDE PORT PID: waits for an RDMA CM server (PID) to listen
# on PORT. The kernel lists its CM IDs (`rdma resource show cm_id`); a
# migros server gets CM_SERVER_START seconds (its listen is visible only
# inside its daemon).
CM_SERVER_START=${CM_SERVER_START:-3}
cm_listening() {
  if [ "$1" = k ]; then
    for _ in $(seq 300); do
      rdma resource show cm_id 2>/dev/null | grep -q "LISTEN.*:$2 " && return
      kill -0 "$3" 2>/dev/null || return
      sleep 0.1
    done
  else
    sleep "$CM_SERVER_START"
  fi
}

PORT=19000
LAST_KA="" LAST_MA=""
# A hung pair costs at most this; the whole plan at most GUEST_BUDGET
# seconds (cases past it are not run, and the test says so).
CASE_TIMEOUT=${CASE_TIMEOUT:-60}
PAUSE_CASE_TIMEOUT=${PAUSE_CASE_TIMEOUT:-25}
GUEST_BUDGET=${GUEST_BUDGET:-720}
run_case() {
  local name=$1 srv=$2 cli=$3 prog=$4
  shift 4
  local gidflag=-x
  case $prog in ibv_* | rdma_check) gidflag=-g ;; esac
  PORT=$((PORT + 1))
  local saddr sargs cargs cm="" serving="" port=$PORT
  saddr=$(side_addr "$srv")
  # Programs that connect through the RDMA CM find the device from the
  # address (no -d, no GID index) and listen on no TCP port.
  case $prog in
    rping)
      cm=1
      sargs=(rping -s -a "$saddr" -p "$PORT" "$@")
      cargs=(rping -c -a "$saddr" -p "$PORT" "$@")
      ;;
    ucmatose)
      cm=1
      sargs=(ucmatose -b "$saddr" -p "$PORT" "$@")
      cargs=(ucmatose -s "$saddr" -p "$PORT" "$@")
      ;;
    udaddy)
      # Its port is fixed.
      cm=1 port=7174
      sargs=(udaddy -b "$saddr" "$@")
      cargs=(udaddy -s "$saddr" "$@")
      ;;
    cmtime)
      # Its server serves for ever: stopped once the client is done.
      cm=1 serving=1
      sargs=(cmtime -b "$saddr" -p "$PORT" "$@")
      cargs=(cmtime -s "$saddr" -p "$PORT" "$@")
      ;;
    *)
      if [[ " $* " == *" -R "* ]]; then
        # perftest over the RDMA CM: -d picks the device, the CM the GID.
        cm=1
        sargs=("$prog" -d "$(side_dev "$srv")" -p "$PORT" "$@")
        cargs=("$prog" -d "$(side_dev "$cli")" -p "$PORT" "$@" "$saddr")
      else
        sargs=("$prog" -d "$(side_dev "$srv")" "$gidflag" "$(side_gid "$srv")" -p "$PORT" "$@")
        cargs=("$prog" -d "$(side_dev "$cli")" "$gidflag" "$(side_gid "$cli")" -p "$PORT" "$@" "$saddr")
      fi
      ;;
  esac
  local kb=$LOGS/$name.kernel.before ka=$LOGS/$name.kernel.after
  local mb=$LOGS/$name.migros.before ma=$LOGS/$name.migros.after
  # The counters read after the case before serve as this one's "before"
  # (nothing runs in between): one `migros stat` per case, not two, which
  # under TCG on a loaded host is seconds per case.
  if [ -n "$LAST_KA" ]; then
    cp "$LAST_KA" "$kb"
    cp "$LAST_MA" "$mb"
  else
    kernel_counters >"$kb"
    migros_counters >"$mb"
  fi
  say "case $name: counters read"
  local t0=$SECONDS
  say "case $name: server $srv: ${sargs[*]}; client $cli: ${cargs[*]}"
  # A pause case is an observation: a peer that hangs after it is an
  # outcome, told sooner.
  local limit=$CASE_TIMEOUT
  [ -n "$PAUSE" ] && limit=$PAUSE_CASE_TIMEOUT
  on "$srv" timeout "$limit" "${sargs[@]}" </dev/null >"$LOGS/$name.server" 2>&1 &
  local spid=$!
  if [ -n "$cm" ]; then
    cm_listening "$srv" "$port" "$spid"
  else
    for _ in $(seq 300); do
      listening "$srv" "$PORT" && break
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  local stopper=""
  if [ -n "$STOP" ]; then
    set -- $STOP
    (sleep "$1"; kill -STOP "$RXE0_PID"; say "rxe0 stopped"; sleep "$2"; kill -CONT "$RXE0_PID"; say "rxe0 continued") &
    stopper=$!
    STOP=""
  fi
  if [ -n "$PAUSE" ]; then
    set -- $PAUSE
    (sleep "$1"; say "rxe0 pausing"
      MIGROS_SOCKET_DIR="$SOCK" "${PAUSE_TOOL:-interop-pause}" rxe0 "$2" >"$LOGS/$name.pause" 2>&1
      say "rxe0 resumed: $(tail -n 1 "$LOGS/$name.pause")") &
    stopper=$!
    PAUSE=""
  fi
  on "$cli" timeout "$limit" "${cargs[@]}" </dev/null >"$LOGS/$name.client" 2>&1
  local crc=$?
  [ -n "$stopper" ] && wait "$stopper"
  local src
  if [ -n "$serving" ] && kill -0 "$spid" 2>/dev/null; then
    # Still serving after its client: what it should be doing.
    pkill -TERM -f "${sargs[*]}"
    wait "$spid"
    src=0
  else
    wait "$spid"
    src=$?
  fi
  local secs=$((SECONDS - t0))
  # Let late ACKs land before the counters are read.
  sleep 0.5
  kernel_counters >"$ka"
  migros_counters >"$ma"
  LAST_KA=$ka LAST_MA=$ma
  local status=pass
  [ "$crc" = 0 ] && [ "$src" = 0 ] || status=fail
  local km="" sums kerr merr lost info
  [ "$srv$cli" = km ] || [ "$srv$cli" = mk ] && km=1
  sums=$(summary "$kb" "$ka" "$mb" "$ma" "$km")
  IFS=$'\t' read -r kerr merr lost <<<"$sums"
  info=$(result_line "$prog" "$LOGS/$name.client")
  [ "$status" = fail ] && info="exit server=$src client=$crc; $info"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$kerr" "$merr" "$lost" "$info" \
    >>"$OUT/results.tsv"
  say "case $name: $status in ${secs}s kernel $kerr migros $merr lost $lost"
}
# The figures line of a program's output.
result_line() {
  case $1 in
    ib_*) awk '/^ *[0-9]+[ \t]+[0-9]+[ \t]+[0-9.]+/ { l = $0 } END { gsub(/[ \t]+/, " ", l); print l }' "$2" ;;
    rping) echo "$(grep -c '^ping data: rdma-ping-' "$2") pings verified" ;;
    ucmatose | udaddy) grep -E 'data transfers complete|return status' "$2" | tr '\n' ' ' | sed 's/  */ /g' ;;
    cmtime) grep -E '^connect ' "$2" | sed 's/  */ /g' ;;
    rdma_check) grep -E '^(result|check failed|rnr_retry|rounds)' "$2" | tr '\n' ' ' | sed 's/  */ /g' ;;
    *) grep -E 'iters in|bytes in' "$2" | tr '\n' ' ' | sed 's/  */ /g' ;;
  esac
}

netem() {
  if [ "$1" = off ]; then
    tc qdisc del dev vk root 2>/dev/null
    ip netns exec mig tc qdisc del dev vm root 2>/dev/null
  else
    tc qdisc replace dev vk root netem "$@"
    ip netns exec mig tc qdisc replace dev vm root netem "$@"
  fi
  say "netem $*"
}

while read -r -a line; do
  [ ${#line[@]} -eq 0 ] && continue
  case ${line[0]} in
    \#*) ;;
    netem) netem "${line[@]:1}" ;;
    stop) STOP="${line[*]:1}" ;;
    pause) PAUSE="${line[*]:1}" ;;
    *)
      if [ "$SECONDS" -gt "$GUEST_BUDGET" ]; then
        say "budget of ${GUEST_BUDGET}s spent: ${line[0]} not run"
      else
        run_case "${line[@]}"
        # perftest calibrates its cycle counter against the clock before it
        # runs; under TCG that can fail ("Can't produce a report", exit 1)
        # whatever the transfer did (r^2 of its samples below 0.9; in one
        # CI-mode run six cases needed a second try and atomic_bw_b.m_k
        # failed three in a row). Such a case runs again, up to four times
        # more, after a pause that lets the previous case's traffic die
        # down.
        for again in 1 2 3 4; do
          tail -n 1 "$OUT/results.tsv" | grep -q $'\tfail\t' || break
          grep -qs "Can't produce a report" "$LOGS/${line[0]}.server" "$LOGS/${line[0]}.client" || break
          say "${line[0]}: perftest could not calibrate its clock; again ($again)"
          sleep 2
          mv "$LOGS/${line[0]}.server" "$LOGS/${line[0]}.server.uncalibrated$again"
          mv "$LOGS/${line[0]}.client" "$LOGS/${line[0]}.client.uncalibrated$again"
          sed -i '$d' "$OUT/results.tsv"
          run_case "${line[@]}"
        done
      fi
      ;;
  esac
done <"$PLAN"

kill "$TCPDUMP" 2>/dev/null
wait "$TCPDUMP" 2>/dev/null
dmesg >"$OUT/dmesg.txt"
ip netns exec mig env MIGROS_SOCKET_DIR="$SOCK" "$MIGROS" stat >"$LOGS/migros-stat-final.txt" 2>&1
kernel_counters >"$LOGS/kernel-counters-final.txt"
say "done"
touch "$OUT/done"
