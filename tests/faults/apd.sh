#!/usr/bin/env bash
# apd.sh [--control S] DEVICE SECONDS
# All paths of DEVICE down (path-failure) for SECONDS, then back.
# Below the device's APD timeout the application sees no error; above it, EIO.
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ "${1:-}" = "-h" ] || [ $# -lt 2 ] && { sed -n 2,4p "$0" | sed 's/^# //'; exit 2; }
dev=$1 secs=$2
mapfile -t paths < <(paths_of "$dev")
trap 'for p in "${paths[@]}"; do mp2 fault clear "$p" >/dev/null 2>&1 || true; done' EXIT
log "all ${#paths[@]} paths of $dev down for ${secs}s"
for p in "${paths[@]}"; do mp2 fault inject "$p" --error path-failure >/dev/null; done
sleep "$secs"
log "paths back"
