#!/usr/bin/env bash
# fail-active.sh [--control S] DEVICE [SECONDS=0]
# Fails the path of DEVICE that carried the most I/O over the last second.
# With SECONDS > 0, restores it after that long.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "${1:-}" = "-h" ] || [ $# -lt 1 ] && { sed -n 2,4p "$0" | sed 's/^# //'; exit 2; }
dev=$1 hold=${2:-0}
io() { mp status --json | jq -r --arg d "$dev" '.devices[] | select(.name==$d) | .paths[] | "\(.name) \(.reads + .writes)"'; }
a=$(io); sleep 1; b=$(io)
victim=$(join <(sort <<<"$a") <(sort <<<"$b") | awk '{print $3-$2, $1}' | sort -rn | head -1 | cut -d' ' -f2)
[ -n "$victim" ] || { echo "fail-active.sh: device $dev has no paths" >&2; exit 1; }
log "failing the busiest path $victim"
mp2 fault inject "$victim" --error path-failure
if [ "$hold" != 0 ]; then sleep "$hold"; log "restoring $victim"; mp2 fault clear "$victim"; fi
