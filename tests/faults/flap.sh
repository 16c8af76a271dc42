#!/usr/bin/env bash
# flap.sh [--control S] PATH [PERIOD_SECONDS=2] [COUNT=5]
# Fails PATH (path-failure), waits PERIOD, restores it, waits PERIOD — COUNT times.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "${1:-}" = "-h" ] || [ $# -lt 1 ] && { sed -n 2,3p "$0" | sed 's/^# //'; exit 2; }
path=$1 period=${2:-2} count=${3:-5}
trap 'mp2 fault clear "$path" >/dev/null 2>&1 || true' EXIT
for ((i = 1; i <= count; i++)); do
  log "flap $i/$count: fail $path"; mp2 fault inject "$path" --error path-failure >/dev/null
  sleep "$period"
  log "flap $i/$count: restore $path"; mp2 fault clear "$path" >/dev/null
  sleep "$period"
done
