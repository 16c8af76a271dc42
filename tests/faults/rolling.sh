#!/usr/bin/env bash
# rolling.sh [--control S] DEVICE [HOLD_SECONDS=3] [ROUNDS=1]
# Fails each path of DEVICE in turn for HOLD seconds, restoring it before the next:
# a rolling failure across all paths (one path down at a time).
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "${1:-}" = "-h" ] || [ $# -lt 1 ] && { sed -n 2,4p "$0" | sed 's/^# //'; exit 2; }
dev=$1 hold=${2:-3} rounds=${3:-1}
mapfile -t paths < <(paths_of "$dev")
[ ${#paths[@]} -gt 1 ] || { echo "rolling.sh: device $dev needs at least two paths" >&2; exit 1; }
cur=""
trap '[ -n "$cur" ] && mp2 fault clear "$cur" >/dev/null 2>&1 || true' EXIT
for ((r = 1; r <= rounds; r++)); do
  for p in "${paths[@]}"; do
    cur=$p; log "round $r: fail $p"; mp2 fault inject "$p" --error path-failure >/dev/null
    sleep "$hold"
    log "round $r: restore $p"; mp2 fault clear "$p" >/dev/null; cur=""
    sleep 1
  done
done
