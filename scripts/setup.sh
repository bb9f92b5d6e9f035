#!/usr/bin/env bash
# Installs what the tests need from the system: the unmodified Debian 12
# programs that run on the drop-in libibverbs (crates/migros-ibverbs).
# Does nothing when they are present; skips (the tests then skip) when
# not root or without apt-get.
set -euo pipefail
pkgs=(ibverbs-utils perftest)
if command -v ibv_devinfo >/dev/null && command -v ib_send_bw >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup: cannot install ${pkgs[*]} (needs root and apt-get); their tests will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${pkgs[@]}" >/dev/null
