#!/usr/bin/env bash
# nbd-delay.sh — an NBD server with added latency per request.
set -euo pipefail
source "$(dirname "$0")/nbd-lib.sh"

usage() {
	cat <<EOF2
usage: $(basename "$0") (-p PORT | -U SOCKET) [-f DISK | -m SIZE] [options]

Starts nbdkit with the delay filter and serves until -T or a signal.
Delays take nbdkit's syntax: a number of seconds (2) or milliseconds (20ms).
A delay longer than mpathfs's per-I/O deadline makes the path a hung path.

  -r DELAY     delay per read (default 20ms)
  -w DELAY     delay per write (default 20ms)
  -z DELAY     delay per zero / trim / flush (default none)
$(nbd_common_usage)

example: $(basename "$0") -U /run/nbd-slow.sock -m 256M -r 200ms -w 50ms
EOF2
}

rd=20ms wr=20ms other=""
while getopts "r:w:z:p:U:f:m:P:T:X:h" opt; do
	case "$opt" in
	r) rd=$OPTARG ;;
	w) wr=$OPTARG ;;
	z) other=$OPTARG ;;
	h) usage; exit 0 ;;
	*) nbd_common_opt "$opt" "${OPTARG:-}" || { usage >&2; exit 2; } ;;
	esac
done
nbd_check
NBD_FILTERS=(--filter=delay)
NBD_PARAMS=("delay-read=$rd" "delay-write=$wr")
if [[ -n $other ]]; then
	NBD_PARAMS+=("delay-zero=$other" "delay-trim=$other" "delay-flush=$other")
fi
nbd_start
nbd_log "read delay $rd, write delay $wr${other:+, zero/trim/flush delay $other}"
nbd_wait
