#!/usr/bin/env bash
# Installs what the tests need from the system:
#  - the unmodified Debian 12 programs and libraries that run on the drop-in
#    libibverbs and librdmacm (crates/migros-ibverbs, crates/migros-rdmacm):
#    ibverbs-utils, perftest, rdmacm-utils, python3-pyverbs, and
#    libibverbs-dev (the C test's <infiniband/verbs.h>), and the HPC stack
#    on top of verbs: UCX (ucx-utils, libucx0) and Open MPI (openmpi-bin,
#    libopenmpi-dev, which bring libfabric), whose imports the stubs cover;
#  - for containers and their live migration (crates/migros/tests/containers/):
#    CRIU 4.1.x, runc and iptables (scripts/setup-criu.sh), and the migros CRIU
#    plugin in /usr/lib/criu (scripts/install-criu-plugin.sh);
#  - Docker with experimental checkpoints (scripts/setup-docker.sh);
#  - qemu, Debian's 6.1 kernel and virtme-ng for the tests against the
#    kernel's SoftRoCE (scripts/setup-vm.sh).
# Idempotent and quick when everything is there.
#
# A step that cannot be done (not root, no apt-get, a script that fails) is
# reported. With MIGROS_TESTS_REQUIRED=1 (scripts/test.sh sets it in CI) the
# script then exits non-zero, naming every failed step, so CI stops here;
# without it the tests that need the missing piece skip, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
fail() { echo "setup: WARNING: $*" >&2; failed+=("$*"); }
is_root() { [ "$(id -u)" = 0 ]; }
can_install() { is_root && command -v apt-get >/dev/null; }

# Each package and what shows it is installed.
have_pkg() {
  case $1 in
    ibverbs-utils) command -v ibv_devinfo >/dev/null ;;
    perftest) command -v ib_send_bw >/dev/null ;;
    python3-pyverbs) [ -f /usr/lib/python3/dist-packages/pyverbs/__init__.py ] ;;
    libibverbs-dev) [ -f /usr/include/infiniband/verbs.h ] ;;
    rdmacm-utils) command -v rping >/dev/null ;;
    ucx-utils) command -v ucx_perftest >/dev/null ;;
    libucx0) [ -f /usr/lib/x86_64-linux-gnu/ucx/libuct_ib.so.0 ] ;;
    openmpi-bin) command -v mpirun >/dev/null ;;
    libopenmpi-dev) command -v mpicc >/dev/null ;;
  esac
}
pkgs=(ibverbs-utils perftest rdmacm-utils python3-pyverbs libibverbs-dev ucx-utils libucx0 openmpi-bin
  libopenmpi-dev)
missing=()
for p in "${pkgs[@]}"; do have_pkg "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if can_install; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } \
      || fail "apt-get install ${missing[*]} failed"
    for p in "${missing[@]}"; do have_pkg "$p" || fail "$p is still missing after apt-get install"; done
  else
    fail "cannot install ${missing[*]} (needs root and apt-get); the tests using them need them"
  fi
fi

# setup_with CHECK CANNOT SCRIPT WHY...: when CHECK (is_root, can_install)
# passes, runs each scripts/SCRIPT, a failure reported with its WHY;
# otherwise reports CANNOT.
setup_with() {
  local check=$1 cannot=$2
  shift 2
  if ! "$check"; then
    fail "$cannot"
    return
  fi
  while [ $# -gt 0 ]; do
    "./scripts/$1" || fail "scripts/$1 failed ($2)"
    shift 2
  done
}

setup_with can_install "cannot install CRIU and runc (needs root and apt-get); the container tests need them" \
  setup-criu.sh "CRIU, runc: the container tests need them"

# Docker for the Docker migration tests (crates/migros/tests/docker.rs):
# dockerd with experimental checkpoints, image migros-base, network migros-dock.
setup_with is_root "cannot install the CRIU plugin or start dockerd (needs root)" \
  install-criu-plugin.sh "the RDMA container tests need the plugin" \
  setup-docker.sh "the Docker migration tests need dockerd"

# The kernel-interoperability VM (crates/migros-interop): qemu, Debian's 6.1
# kernel with rdma_rxe, tcpdump, virtme-ng.
setup_with can_install "cannot install qemu and the 6.1 kernel (needs root and apt-get); the kernel interoperability tests need them" \
  setup-vm.sh "the kernel interoperability tests need the VM"

# Simulated hosts for the multi-host tests (crates/migros/tests/multihost.rs,
# swarm.rs) and `migros demo --swarm`: openssh-server, debootstrap, image
# migros-bookworm (scripts/setup-hosts.sh).
setup_with is_root "cannot set up the simulated hosts (needs root)" \
  setup-hosts.sh "the multi-host tests need it"

if [ ${#failed[@]} -gt 0 ]; then
  case "${MIGROS_TESTS_REQUIRED:-}" in
    1|true|TRUE)
      echo "setup: FAILED with MIGROS_TESTS_REQUIRED=${MIGROS_TESTS_REQUIRED} (every end-to-end test must run):" >&2
      printf 'setup:   - %s\n' "${failed[@]}" >&2
      exit 1 ;;
    *)
      echo "setup: ${#failed[@]} step(s) failed; the tests that need them will skip, saying why" >&2 ;;
  esac
fi
