#!/usr/bin/env bash
# Installs what the kernel-interoperability tests need (crates/migros-interop,
# scripts/vm/): Debian 12's own 6.1 kernel with rdma_rxe (linux-image-amd64),
# qemu to boot it (TCG), busybox-static for virtme-ng's initramfs, tcpdump for the captures, gcc and libibverbs-dev for
# the test's C program, and virtme-ng (PyPI,
# command `vng`) in a private venv at /opt/migros/vng. See
# ../shared/reference/kernel-rxe-vm.md for why these and how they are used.
# Idempotent and quick when everything is there. Needs root and apt-get;
# otherwise it says so and the VM tests skip (or fail with
# MIGROS_TESTS_REQUIRED=1).
set -euo pipefail

VENV=${MIGROS_VNG_VENV:-/opt/migros/vng}

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-vm: cannot install qemu, the 6.1 kernel and virtme-ng (needs root and apt-get); the VM tests will skip"
  exit 0
fi

pkgs=()
command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-6.1.*-amd64' >/dev/null || pkgs+=(linux-image-amd64)
command -v tcpdump >/dev/null || pkgs+=(tcpdump)
# virtme-ng builds the guest's initramfs (it loads the kernel's modules) from
# the host's statically linked busybox; without it the VM stops at "no
# busybox was found" (virtme-ng 1.42, seen on a fresh machine).
dpkg -s busybox-static >/dev/null 2>&1 || pkgs+=(busybox-static)
command -v ip >/dev/null || pkgs+=(iproute2)
# rdma_check (crates/migros-interop/c), the VM test's C program (built on the host, run in the guest).
command -v cc >/dev/null || pkgs+=(gcc)
[ -f /usr/include/infiniband/verbs.h ] || pkgs+=(libibverbs-dev)
# The venv module of the Python that will run virtme-ng.
python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)
if [ ${#pkgs[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No recommends: linux-image-amd64 would pull firmware and initramfs tools.
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/vng" ]; then
  python3 -m venv "$VENV"
  # Pinned: the version this harness was last proven with (1.42 needs busybox-static).
  "$VENV/bin/pip" install -q --disable-pip-version-check virtme-ng==1.42
fi
echo "setup-vm: $("$VENV/bin/vng" --version), kernel $(basename "$(ls /boot/vmlinuz-6.1.*-amd64 | sort -V | tail -1)")"
