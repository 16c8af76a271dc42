# Sourced by the fault scripts: finds the mpathfs binary and the control socket.
MPATHFS=${MPATHFS:-$(command -v mpathfs || echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/bin/mpathfs")}
[ -x "$MPATHFS" ] || { echo "$(basename "$0"): mpathfs binary not found (build it with make build or set MPATHFS)" >&2; exit 2; }
command -v jq >/dev/null || { echo "$(basename "$0"): jq is needed (apt-get install jq)" >&2; exit 2; }
CTL=()
if [ "${1:-}" = "--control" ]; then CTL=(--control "$2"); shift 2; fi
mp() { "$MPATHFS" "$@" "${CTL[@]}"; }
mp2() { local a=$1 b=$2; shift 2; "$MPATHFS" "$a" "$b" "${CTL[@]}" "$@"; }
paths_of() { mp status --json | jq -r --arg d "$1" '.devices[] | select(.name==$d) | .paths[].name'; }
log() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*"; }
