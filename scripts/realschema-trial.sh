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
# RESHARD_TRIAL_SCHEMAS limits the comparison to some schemas;
# RESHARD_TRIAL_REPORT names a file for the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RESHARD_TRIAL_SQL:?files to load, separated by :}"
: "${RESHARD_TRIAL_RULES:?sharding rules: column or table.column, comma-separated}"
export RESHARD_TRIAL_SQL RESHARD_TRIAL_RULES
exec go test -count=1 -timeout 60m -run '^TestRealSchemaTrial$' -v ./tests
