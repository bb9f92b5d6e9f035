#!/usr/bin/env bash
# Boots Debian 12's 6.1 kernel under qemu/TCG with virtme-ng (the host's
# filesystem read-only, OUT writable) and runs scripts/vm/guest.sh there:
# the kernel's SoftRoCE against migros devices, the cases of PLAN (format in
# guest.sh). Results in OUT/results.tsv.
#
#   run.sh OUT PLAN
#
# Needs target/release/migrosd, target/debug/migros and target/ibverbs
# (crates/migros-interop builds them) and scripts/setup-vm.sh's packages;
# builds crates/migros-interop/c/*.c (rdma_check) into OUT/bin (the guest runs
# it from there on both sides). MIGROS_PAUSE_TOOL: the interop-pause
# binary, for the plan's `pause` lines.
# Exits 77 with "skip: REASON" on stdout when the VM cannot be booted here.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$(realpath "$1")
PLAN=$(realpath "$2")
VENV=${MIGROS_VNG_VENV:-/opt/migros/vng}
export PATH="$VENV/bin:$PATH"

skip() { echo "skip: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (the VM's network set-up and the daemons)"
command -v vng >/dev/null || skip "no virtme-ng (vng): run scripts/setup-vm.sh"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64: run scripts/setup-vm.sh"
KERNEL=${MIGROS_VM_KERNEL:-$(ls /boot/vmlinuz-6.1.*-amd64 2>/dev/null | sort -V | tail -1)}
[ -n "$KERNEL" ] && [ -f "$KERNEL" ] || skip "no /boot/vmlinuz-6.1.*-amd64 (Debian's linux-image-amd64): run scripts/setup-vm.sh"
[ -d "/lib/modules/$(basename "$KERNEL" | sed 's/^vmlinuz-//')" ] || skip "no modules for $KERNEL"
command -v cc >/dev/null || skip "no C compiler for rdma_check: run scripts/setup-vm.sh"
[ -f /usr/include/infiniband/verbs.h ] || skip "no libibverbs-dev for rdma_check: run scripts/setup-vm.sh"
for f in target/release/migrosd target/debug/migros target/ibverbs/libibverbs.so.1; do
  [ -e "$ROOT/$f" ] || { echo "missing $ROOT/$f (build it first)" >&2; exit 2; }
done

mkdir -p "$OUT/bin"
cc -O2 -Wall -Wextra -Werror -o "$OUT/bin/rdma_check" "$ROOT"/crates/migros-interop/c/*.c -libverbs \
  || { echo "cc rdma_check failed" >&2; exit 2; }
rm -f "$OUT/done" "$OUT/setup-error" "$OUT/results.tsv"
# bash reads a script as it runs: the guest runs a copy, so editing the
# work tree meanwhile cannot change a run under way.
cp "$ROOT/scripts/vm/guest.sh" "$OUT/guest.sh"
# KVM is there but hangs on these machines: TCG. 2 vCPUs (one for each
# side), 3 GiB. The host's timeout bounds a hung guest.
start=$SECONDS
timeout --kill-after=10 "${MIGROS_VM_TIMEOUT:-1020}" \
  vng --disable-kvm -r "$KERNEL" --user root --memory 3G --cpus 2 --rwdir "$OUT" \
  -- "ROOT=$ROOT PAUSE_TOOL=${MIGROS_PAUSE_TOOL:-} bash $OUT/guest.sh $OUT $PLAN" </dev/null >"$OUT/vm-console.log" 2>&1 || true
echo "vm: $((SECONDS - start)) s"
[ -e "$OUT/done" ] || { echo "the VM did not finish (see $OUT/vm-console.log, $OUT/guest.log)" >&2; exit 3; }
[ ! -e "$OUT/setup-error" ] || { echo "VM setup failed: $(cat "$OUT/setup-error")" >&2; exit 4; }
