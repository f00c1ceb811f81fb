#!/usr/bin/env bash
# Installs what reshard's build and tests need and the machine lacks:
# gcc (cgo for pg_query_go), PostgreSQL 15 server binaries (the test harness
# starts throwaway instances), the PostgreSQL client tools (psql, pg_dump)
# and tmux (the CLI's progress display is tested in a tmux pseudo-terminal).
# Debian/Ubuntu only; uses apt-get as root or through sudo.
set -euo pipefail

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
[ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ] || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v pg_dump >/dev/null 2>&1 || missing+=(postgresql-client-15)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)

if ! command -v go >/dev/null 2>&1; then
  echo "deps: the Go toolchain (1.26 or newer) is not on PATH; install it from https://go.dev/dl" >&2
  exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
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
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed ${missing[*]}" >&2
