#!/usr/bin/env bash
# Installs what Cellar needs on a Debian 12 machine: the data-plane packages and npm dependencies.
# Idempotent; run as root (or with sudo) for the apt part.
set -euo pipefail
cd "$(dirname "$0")/.."
# postgresql-15 carries the contrib modules on Debian 12 (postgresql-contrib-15 is only a
# virtual package: dpkg never reports it installed, so it would re-run apt at every start).
PACKAGES=(postgresql-15 postgresql-client-15 patroni etcd-server etcd-client
  pgbackrest pgbouncer haproxy nftables iproute2 openssl procps util-linux e2fsprogs)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # apt must not start the Debian services: Cellar starts every process itself.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Test runs started together must not install at the same time (npm ci removes node_modules).
exec 9>"${TMPDIR:-/tmp}/cellar-setup-npm.lock"
flock 9
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi
flock -u 9
