#!/usr/bin/env bash
# Prepares Docker for migrating RDMA containers (`migros migrate --engine
# docker`, the seed experiment's own `docker checkpoint` commands):
#  - Debian 12's docker.io (Docker 20.10; its checkpoint support is
#    "experimental"), installed when dockerd is missing;
#  - /etc/docker/daemon.json with experimental on and Docker's iptables
#    rules off (they would set the FORWARD policy to DROP and cut the bridge
#    between migros nodes), written only when the file does not exist;
#  - dockerd started by hand when it is not running (no systemd here), with
#    the CRIU wrapper of scripts/setup-criu.sh first on its PATH; log in
#    /run/migros/state/dockerd.log;
#  - the image `migros-base` (no registry here: `docker import` of a tiny
#    root filesystem; containers bind-mount the host's /usr read-only), and
#    the network `migros-dock` (198.19.240.0/24) on which containers keep
#    their address when they move (`--ip`), as the seed's overlay did.
# Idempotent and quick when everything is there. Needs root.
set -euo pipefail

say() { echo "setup-docker: $*"; }
die() { echo "setup-docker: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
STATE=/run/migros/state
IMAGE=migros-base
NET=migros-dock
SUBNET=198.19.240.0/24

if ! command -v dockerd >/dev/null; then
  command -v apt-get >/dev/null || die "dockerd missing and no apt-get to install docker.io"
  say "installing docker.io from Debian 12"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null || die "apt-get install docker.io failed"
fi

if [ ! -e /etc/docker/daemon.json ]; then
  mkdir -p /etc/docker
  echo '{"experimental": true, "iptables": false, "ip-masq": false}' > /etc/docker/daemon.json
  say "wrote /etc/docker/daemon.json"
elif ! grep -q '"experimental": *true' /etc/docker/daemon.json; then
  if docker info >/dev/null 2>&1; then
    say "warning: /etc/docker/daemon.json lacks \"experimental\": true and dockerd already runs (restart it after adding it)"
  elif command -v python3 >/dev/null; then
    # Keep the file's other settings; turn experimental on.
    python3 - /etc/docker/daemon.json <<'PY' || die "cannot add experimental to /etc/docker/daemon.json"
import json, sys
p = sys.argv[1]
with open(p) as f:
    text = f.read()
d = json.loads(text) if text.strip() else {}
d["experimental"] = True
with open(p, "w") as f:
    json.dump(d, f, indent=2)
PY
    say "turned experimental on in /etc/docker/daemon.json"
  fi
fi
command -v criu >/dev/null || say "warning: criu not on PATH (scripts/setup-criu.sh): docker checkpoint will fail"

if ! docker info >/dev/null 2>&1; then
  mkdir -p "$STATE"
  say "starting dockerd (log: $STATE/dockerd.log)"
  # dockerd outlives this script: it must not inherit the caller's open
  # descriptors (run under `flock /tmp/migros-e2e.lock`, it would hold the
  # lock for as long as it runs).
  (
    for fd in /proc/$BASHPID/fd/*; do
      n=${fd##*/}
      if [ "$n" -gt 2 ] 2>/dev/null; then eval "exec $n>&-"; fi
    done
    PATH=/usr/local/sbin:$PATH exec setsid dockerd >"$STATE/dockerd.log" 2>&1 < /dev/null
  ) &
  for _ in $(seq 1 100); do
    docker info >/dev/null 2>&1 && break
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || die "dockerd did not come up; see $STATE/dockerd.log"
fi
[ "$(docker version --format '{{.Server.Experimental}}' 2>/dev/null)" = true ] \
  || die "dockerd runs without experimental features: docker checkpoint would be refused (add \"experimental\": true to /etc/docker/daemon.json and restart dockerd)"

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  R=$(mktemp -d)
  trap 'rm -rf "$R"' EXIT
  mkdir -p "$R"/{usr,etc,tmp,run/migros,opt/migros/lib,proc,sys,dev,root,var/tmp}
  for l in bin lib lib64 sbin; do ln -s "usr/$l" "$R/$l"; done
  for f in ld.so.cache ld.so.conf passwd group nsswitch.conf services protocols; do
    [ -e "/etc/$f" ] && cp -a "/etc/$f" "$R/etc/"
  done
  [ -d /etc/ld.so.conf.d ] && cp -a /etc/ld.so.conf.d "$R/etc/"
  tar -C "$R" -cf - . | docker import - "$IMAGE" >/dev/null || die "docker import failed"
  say "imported image $IMAGE"
fi

if ! docker network inspect "$NET" >/dev/null 2>&1; then
  docker network create --subnet "$SUBNET" "$NET" >/dev/null || die "cannot create network $NET"
  say "created network $NET ($SUBNET)"
fi
say "ready: $(docker version --format 'server {{.Server.Version}}' 2>/dev/null), image $IMAGE, network $NET"
