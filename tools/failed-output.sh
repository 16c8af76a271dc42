#!/usr/bin/env bash
# failed-output.sh LOG: prints, for every test that failed in a `go test
# -v` log, every line from its "=== RUN" to its "--- FAIL" (the log lines
# the summary filter of `make test-e2e` leaves out: an oracle's findings,
# a server's stderr), so a CI failure explains itself.
set -euo pipefail
log=${1:?usage: failed-output.sh GO-TEST-V-LOG}
grep -E '^\s*--- FAIL: ' "$log" | sed -E 's/^\s*--- FAIL: ([^ ]+).*/\1/' | sort -u | while read -r name; do
	echo "===== output of $name ====="
	awk -v n="$name" '
		$0 ~ "^=== (RUN|CONT)   " n "$" { on = 1 }
		on { print }
		$0 ~ "^\\s*--- (FAIL|PASS|SKIP): " n " " { on = 0 }
	' "$log" | tail -n 400
done
