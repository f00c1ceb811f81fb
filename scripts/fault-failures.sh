#!/usr/bin/env bash
# fault-failures.sh LOG: for each test of a `go test -v` log that failed,
# the last lines of its own output (its failure messages and the reshard
# output it dumped), which make test-fault's summary filter leaves out.
set -euo pipefail
log=${1:?usage: fault-failures.sh LOG}
lines=${FAULT_FAILURE_LINES:-150}
for t in $(grep -oE '^--- FAIL: [A-Za-z0-9_/]+' "$log" | awk '{print $3}' | sort -u); do
	echo "=== output of $t (last $lines lines; full log: $log)"
	awk -v t="$t" '
		$0 == "=== RUN   " t || $0 == "=== CONT  " t { on = 1; next }
		/^=== (RUN|CONT|PAUSE|NAME) / { on = 0 }
		/^--- (PASS|FAIL|SKIP): / { if (on && index($0, " " t " ")) { on = 0 } }
		on { print }
	' "$log" | tail -n "$lines"
done
