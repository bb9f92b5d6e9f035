#!/usr/bin/env bash
# Installs what the container-migration work needs:
#  - CRIU 4.1.x from Debian 13 ("trixie") into a private prefix, without
#    touching the system's libc (Debian 12's CRIU 3.17 fails on kernels >= 6.13;
#    see the project's criu.md): the trixie .debs of criu, its libraries and
#    libcriu-dev (for criu-plugin.h) are fetched by apt-get with a private source
#    list, state and cache, unpacked with `dpkg -x` into the prefix, and run
#    through the prefix's own loader by a wrapper script `criu`;
#  - runc and iptables (CRIU runs iptables-restore) from Debian 12, the normal way;
#  - a compatibility library the wrapper preloads (tools/criu-compat): CRIU 4.1.1
#    cannot dump inet sockets on kernels >= 6.16 (SO_PASSCRED/SO_PASSSEC became
#    unix-only; upstream criu#2705), see the library's source;
#  - /etc/criu/runc.conf with "tcp-established" when it does not exist, so
#    checkpoints driven by runc (and Docker, which has no such option) keep TCP
#    connections.
#
# Prefix: $MIGROS_CRIU_PREFIX, default /opt/migros/criu. Result:
#   <prefix>/bin/criu                          wrapper (symlinked from /usr/local/sbin/criu)
#   <prefix>/usr/sbin/criu, usr/lib/...         the unpacked trixie packages
#   <prefix>/usr/include/criu/criu-plugin.h    plugin ABI header (libcriu-dev)
#   <prefix>/lib/sockopt_compat.so             the preloaded compatibility library
#   <prefix>/.installed                        "criu <version>" once complete
# Idempotent: a quick no-op when the installed version is 4.1.x and the wrapper
# runs. MIGROS_CRIU_FORCE=1 reinstalls. Needs root, apt-get, dpkg, amd64.
set -euo pipefail

P="${MIGROS_CRIU_PREFIX:-/opt/migros/criu}"
WANT="4.1."                       # accepted upstream version prefix
LINK=/usr/local/sbin/criu
LIBDIR=usr/lib/x86_64-linux-gnu
DEB12_PKGS=(runc iptables)
# criu and the libraries it needs (criu.md); the dependency closure computed by
# apt against trixie is added to these, so a changed dependency is not missed.
TRIXIE_PKGS=(criu libcriu-dev libcompel1 libc6 libgnutls30t64 libnftables1
  libnl-3-200 libprotobuf-c1 libnet1 libbsd0 libuuid1 libmd0 libidn2-0
  libunistring5 libtasn1-6 libnettle8t64 libhogweed6t64 libgmp10 libp11-kit0
  libffi8 libjansson4 libmnl0 libnftnl11 libxtables12 libedit2 libbpf1
  libelf1t64 zlib1g libzstd1 libtinfo6 libgcc-s1 libcap2)

say() { echo "setup-criu: $*"; }
die() { echo "setup-criu: ERROR: $*" >&2; exit 1; }

# ---- fast path ------------------------------------------------------------
installed_ok() {
  [ -f "$P/.installed" ] && [ -x "$P/bin/criu" ] && [ -f "$P/usr/include/criu/criu-plugin.h" ] || return 1
  local v; v=$(awk '$1=="criu"{print $2}' "$P/.installed")
  case "$v" in "$WANT"*) ;; *) return 1 ;; esac
  "$P/bin/criu" --version 2>/dev/null | grep -q "^Version: $WANT" || return 1
  [ "$(readlink "$LINK" 2>/dev/null)" = "$P/bin/criu" ] || return 1
  command -v runc >/dev/null && command -v iptables-restore >/dev/null
}
# ---- the wrapper, its compatibility library and runc.conf (every run) -------
HERE=$(cd "$(dirname "$0")/.." && pwd)
install_wrapper() {
  local src="$HERE/tools/criu-compat/sockopt_compat.c" so="$P/lib/sockopt_compat.so"
  local ver; ver=$(awk '$1=="criu"{print $2}' "$P/.installed")
  mkdir -p "$P/lib" "$P/bin"
  if [ ! -f "$so" ] || [ "$src" -nt "$so" ]; then
    command -v cc >/dev/null || die "needs a C compiler (cc) for $src"
    cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$so.new" "$src" || die "cannot build $src"
    mv "$so.new" "$so"
  fi
  cat > "$P/bin/criu.new" <<WRAP
#!/bin/sh
# CRIU $ver from Debian trixie, run through its own loader and libraries,
# with sockopt_compat.so preloaded (installed by migros scripts/setup-criu.sh).
P='$P'
exec "\$P/$LIBDIR/ld-linux-x86-64.so.2" --library-path "\$P/$LIBDIR" --preload "\$P/lib/sockopt_compat.so" "\$P/usr/sbin/criu" "\$@"
WRAP
  chmod 755 "$P/bin/criu.new"; mv "$P/bin/criu.new" "$P/bin/criu"
  mkdir -p "$(dirname "$LINK")"
  ln -sfn "$P/bin/criu" "$LINK"
  if [ ! -e /etc/criu/runc.conf ]; then
    mkdir -p /etc/criu
    printf '%s\n' "# written by migros scripts/setup-criu.sh: keep TCP connections in runc/Docker checkpoints" \
      "tcp-established" > /etc/criu/runc.conf
  fi
}

if [ "${MIGROS_CRIU_FORCE:-0}" != 1 ] && installed_ok; then
  [ "$(id -u)" = 0 ] || die "must run as root"
  install_wrapper
  say "already installed: $(cat "$P/.installed") in $P, $(runc --version | head -1)"
  exit 0
fi

# ---- preconditions --------------------------------------------------------
[ "$(id -u)" = 0 ] || die "must run as root (installs into $P, $LINK and Debian 12 packages)"
command -v apt-get >/dev/null && command -v dpkg >/dev/null || die "needs apt-get and dpkg (a Debian system)"
[ "$(dpkg --print-architecture)" = amd64 ] || die "only amd64 is supported (the wrapper uses the x86_64 loader)"
if [ -r /etc/os-release ]; then
  . /etc/os-release
  [ "${ID:-}" = debian ] || say "warning: not Debian (ID=${ID:-?}); continuing"
fi
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

# ---- Debian 12 packages: runc, iptables, a keyring that knows trixie --------
KEYRING=/usr/share/keyrings/debian-archive-trixie-stable.gpg
missing=()
command -v runc >/dev/null || missing+=(runc)
command -v iptables-restore >/dev/null || missing+=(iptables)
[ -f "$KEYRING" ] || missing+=(debian-archive-keyring)   # deb12u1+ ships the trixie keys
if [ ${#missing[@]} -gt 0 ]; then
  say "installing from Debian 12: ${missing[*]}"
  apt-get update -qq || die "apt-get update (system sources) failed"
  apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
else
  say "Debian 12 packages present: ${DEB12_PKGS[*]}"
fi
[ -f "$KEYRING" ] || die "no trixie archive key ($KEYRING); upgrade debian-archive-keyring"

# ---- private apt for trixie -----------------------------------------------
A="$P/.apt"
mkdir -p "$A/etc/sources.list.d" "$A/etc/preferences.d" "$A/lists/partial" \
         "$A/cache/archives/partial" "$A/debs"
cat > "$A/etc/sources.list" <<EOF
deb [signed-by=$KEYRING] http://deb.debian.org/debian trixie main
EOF
: > "$A/status"      # an empty dpkg status: resolve against trixie alone
APT_OPTS=(-q -oDir::Etc::SourceList="$A/etc/sources.list"
  -oDir::Etc::SourceParts="$A/etc/sources.list.d"
  -oDir::Etc::Preferences="$A/etc/preferences"
  -oDir::Etc::PreferencesParts="$A/etc/preferences.d"
  -oDir::State::Lists="$A/lists" -oDir::State::status="$A/status"
  -oDir::Cache="$A/cache" -oAPT::Architecture=amd64 -oAPT::Architectures=amd64
  -oAPT::Get::List-Cleanup=0 -oAcquire::Languages=none -oAPT::Sandbox::User=root)
say "apt-get update with private trixie source list ($A/etc/sources.list)"
apt-get "${APT_OPTS[@]}" update >/dev/null || die "apt-get update of the private trixie source list failed"

ver=$(apt-cache "${APT_OPTS[@]}" show criu 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$ver" ] || die "criu not found in trixie package lists"
case "${ver#*:}" in "$WANT"*) ;; *) die "trixie offers criu $ver, expected $WANT*" ;; esac
say "trixie criu version: $ver"

# dependency closure (Depends/PreDepends only) of criu, plus the explicit list
closure=$(apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances criu 2>/dev/null \
  | grep -v '^ ' | grep -v '^<' | sort -u)
pkgs=$(printf '%s\n' "${TRIXIE_PKGS[@]}" $closure | sort -u)
say "downloading $(echo "$pkgs" | wc -l) trixie packages: $(echo $pkgs)"
rm -f "$A/debs"/*.deb
( cd "$A/debs" && apt-get "${APT_OPTS[@]}" download $pkgs >/dev/null ) \
  || die "apt-get download from trixie failed"

# ---- unpack into the prefix -----------------------------------------------
# Unpack into a fresh staging directory and move it into place, so an
# interrupted run never leaves a half-installed prefix that looks complete.
S="$P.new"
rm -rf "$S"; mkdir -p "$S"
for d in "$A/debs"/*.deb; do
  dpkg -x "$d" "$S" || die "dpkg -x $d failed"
done
[ -x "$S/usr/sbin/criu" ] || die "usr/sbin/criu missing after unpacking"
[ -e "$S/$LIBDIR/ld-linux-x86-64.so.2" ] || die "$LIBDIR/ld-linux-x86-64.so.2 missing after unpacking"
[ -f "$S/usr/include/criu/criu-plugin.h" ] || die "usr/include/criu/criu-plugin.h missing (libcriu-dev)"
# Every shared library criu links against must resolve inside the prefix.
notfound=$("$S/$LIBDIR/ld-linux-x86-64.so.2" --library-path "$S/$LIBDIR" --list "$S/usr/sbin/criu" \
  | grep 'not found' || true)
[ -z "$notfound" ] || die "libraries missing from the prefix: $notfound"

echo "criu $ver" > "$S/.installed"

# swap into place, keeping the apt state (lists, cached .debs) for the next run
mv "$A" "$S/.apt"
rm -rf "$P.old"; [ -e "$P" ] && mv "$P" "$P.old"
mv "$S" "$P"; rm -rf "$P.old"
install_wrapper
say "installed criu $ver into $P; $LINK -> $P/bin/criu"

# ---- check ------------------------------------------------------------------
"$LINK" --version | grep -q "^Version: $WANT" || die "installed criu does not report version $WANT*"
say "$("$LINK" --version | head -1); $(runc --version | head -1); $(iptables-restore --version)"
say "done in $(( $(date +%s) - start ))s"
