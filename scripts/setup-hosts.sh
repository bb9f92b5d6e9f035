#!/usr/bin/env bash
# Prepares this machine for simulated hosts (`migros host`, `migros demo
# --swarm`, crates/migros/tests/multihost.rs and swarm.rs):
#  - openssh-server (each host runs its own sshd; key-based root login
#    between hosts) and debootstrap, from Debian 12, installed without
#    starting the machine's own sshd (no policy-rc.d start);
#  - the image `migros-bookworm` in the machine's dockerd: a minimal Debian 12
#    root file system (debootstrap --variant=minbase), imported as Docker Hub's
#    debian images are made; the seed's perftest image
#    (scripts/seed/Dockerfile) is built FROM it.
# Needs root, scripts/setup-docker.sh first. Idempotent and quick when done.
set -euo pipefail
say() { echo "setup-hosts: $*"; }
die() { echo "setup-hosts: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
BASE=migros-bookworm

if ! [ -x /usr/sbin/sshd ] || ! command -v debootstrap >/dev/null; then
  command -v apt-get >/dev/null || die "sshd or debootstrap missing and no apt-get"
  say "installing openssh-server and debootstrap from Debian 12"
  export DEBIAN_FRONTEND=noninteractive
  # Do not start the machine's own sshd: hosts start theirs.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq openssh-server debootstrap >/dev/null || {
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    die "apt-get install openssh-server debootstrap failed"
  }
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

docker info >/dev/null 2>&1 || die "dockerd does not answer (run scripts/setup-docker.sh first)"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  R=$(mktemp -d /var/tmp/migros-bookworm.XXXXXX)
  trap 'rm -rf "$R"' EXIT
  say "debootstrap --variant=minbase bookworm (a minute or two)"
  debootstrap --variant=minbase bookworm "$R" http://deb.debian.org/debian >"$R.log" 2>&1 \
    || { tail -20 "$R.log" >&2; rm -f "$R.log"; die "debootstrap failed"; }
  rm -f "$R.log"
  rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
  tar -C "$R" -cf - . | docker import -c 'CMD ["bash"]' - "$BASE" >/dev/null || die "docker import failed"
  say "imported image $BASE ($(docker image inspect -f '{{.Size}}' "$BASE") bytes)"
fi
say "ready: sshd $(/usr/sbin/sshd -V 2>&1 | head -1 || true), image $BASE"
