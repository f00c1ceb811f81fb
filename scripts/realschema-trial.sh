#!/usr/bin/env bash
# The new user's trial on a public schema with its own data: loads the
# given SQL files on a source database, RESHARDs it through the admin
# server into 2 shards to streaming, streams writes, and compares source
# and shards with its own SQL (tests/trial_test.go, TestRealSchemaTrial).
# Other projects' files are never part of this repository: point the
# variables at your own copies.
#
#   RESHARD_TRIAL_SQL=schema.sql:data.sql RESHARD_TRIAL_RULES=customer_id \
#   RESHARD_TRIAL_WRITES=scripts/trial/pagila-writes.sql scripts/realschema-trial.sh
#
# RESHARD_TRIAL_LOAD names a pgbench script run on the source during the
# copy (until 2 s into streaming); RESHARD_TRIAL_SCHEMAS limits the
# comparison to some schemas;
# RESHARD_TRIAL_REPORT names a file for the figures; RESHARD_TRIAL_GENERAL
# adds lines to [general] (resharding_ddl = "replicate" for writes with DDL).
# Relative paths are taken from the directory the script is run in.
set -euo pipefail
: "${RESHARD_TRIAL_SQL:?files to load, separated by :}"
: "${RESHARD_TRIAL_RULES:?sharding rules: column or table.column, comma-separated, each with :data_type unless bigint}"
# The test runs in tests/: make the paths absolute first.
abs() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
files=""
IFS=: read -ra parts <<<"$RESHARD_TRIAL_SQL"
for f in "${parts[@]}"; do files="${files:+$files:}$(abs "$f")"; done
RESHARD_TRIAL_SQL=$files
[ -n "${RESHARD_TRIAL_WRITES:-}" ] && RESHARD_TRIAL_WRITES=$(abs "$RESHARD_TRIAL_WRITES") && export RESHARD_TRIAL_WRITES
[ -n "${RESHARD_TRIAL_REPORT:-}" ] && RESHARD_TRIAL_REPORT=$(abs "$RESHARD_TRIAL_REPORT") && export RESHARD_TRIAL_REPORT
[ -n "${RESHARD_TRIAL_LOAD:-}" ] && RESHARD_TRIAL_LOAD=$(abs "$RESHARD_TRIAL_LOAD") && export RESHARD_TRIAL_LOAD
[ -n "${RESHARD_TRIAL_CUTOVER_WRITES:-}" ] && RESHARD_TRIAL_CUTOVER_WRITES=$(abs "$RESHARD_TRIAL_CUTOVER_WRITES") && export RESHARD_TRIAL_CUTOVER_WRITES
export RESHARD_TRIAL_SQL RESHARD_TRIAL_RULES
cd "$(dirname "$0")/.."
exec go test -count=1 -timeout 60m -run '^TestRealSchemaTrial$' -v ./tests
