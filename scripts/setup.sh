#!/usr/bin/env bash
# Installs what the tests need from the system:
#  - the unmodified Debian 12 programs that run on the drop-in libibverbs
#    (crates/migros-ibverbs): ibverbs-utils, perftest;
#  - for containers and their live migration (crates/migros/tests/containers.rs):
#    CRIU 4.1.x, runc and iptables (scripts/setup-criu.sh), and the migros CRIU
#    plugin in /usr/lib/criu (scripts/install-criu-plugin.sh);
#  - Docker with experimental checkpoints (scripts/setup-docker.sh).
# Idempotent and quick when everything is there; skips (the tests then skip,
# saying why) when not root or without apt-get. A failed CRIU setup is
# reported and does not stop the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

pkgs=(ibverbs-utils perftest)
if ! { command -v ibv_devinfo && command -v ib_send_bw; } >/dev/null; then
  if can_install; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    echo "setup: cannot install ${pkgs[*]} (needs root and apt-get); their tests will skip"
  fi
fi

if [ -x scripts/setup-criu.sh ]; then
  if can_install; then
    ./scripts/setup-criu.sh \
      || echo "setup: WARNING: scripts/setup-criu.sh failed; the container migration tests will skip"
  else
    echo "setup: cannot install CRIU and runc (needs root and apt-get); the container tests will skip"
  fi
fi

if [ -x scripts/install-criu-plugin.sh ]; then
  if [ "$(id -u)" = 0 ]; then
    ./scripts/install-criu-plugin.sh \
      || echo "setup: WARNING: scripts/install-criu-plugin.sh failed; the RDMA container migration tests will skip"
  else
    echo "setup: cannot install the CRIU plugin (needs root); the RDMA container migration tests will skip"
  fi
fi

# Docker for the Docker migration tests (crates/migros/tests/docker.rs): dockerd with experimental checkpoints, image migros-base, network migros-dock.
if [ "$(id -u)" = 0 ]; then ./scripts/setup-docker.sh || echo "setup: WARNING: scripts/setup-docker.sh failed; the Docker migration tests will skip"; fi

# Simulated hosts for the multi-host tests (crates/migros/tests/multihost.rs,
# swarm.rs) and `migros demo --swarm`: openssh-server, debootstrap, image
# migros-bookworm (scripts/setup-hosts.sh).
if [ "$(id -u)" = 0 ]; then ./scripts/setup-hosts.sh || echo "setup: WARNING: scripts/setup-hosts.sh failed; the multi-host tests will skip"; fi
