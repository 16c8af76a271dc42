#!/usr/bin/env bash
# nbd-kill-restart.sh — path death and recovery: kill -9 an NBD server by
# its pid file and restart it on the same port or socket.
set -euo pipefail
source "$(dirname "$0")/nbd-lib.sh"

usage() {
	cat <<EOF2
usage: $(basename "$0") (-p PORT | -U SOCKET) [-f DISK | -m SIZE] [options]

Starts nbdkit, then COUNT times: waits UP seconds, kills the server with
kill -9 (PID from its pid file; clients see the connection die), waits DOWN
seconds, and restarts it with the same arguments on the same port or socket
(nbdkit sets SO_REUSEADDR). Clients must reconnect: existing connections do
not come back. Serve a file (-f) so data survives; a memory disk (-m) comes
back empty.

  -u UP        seconds up before each kill (default 5)
  -d DOWN      seconds down before the restart (default 3)
  -n COUNT     kill/restart cycles (default 1; 0 = until -T or a signal)
  -F FILTER    an nbdkit filter with its parameters as further -X args,
               e.g. -F delay -X delay-read=10ms (repeatable)
$(nbd_common_usage)

example: $(basename "$0") -p 10809 -f /var/tmp/disk.img -u 10 -d 5 -n 3
EOF2
}

up=5 down=3 count=1
while getopts "u:d:n:F:p:U:f:m:P:T:X:h" opt; do
	case "$opt" in
	u) up=$OPTARG ;;
	d) down=$OPTARG ;;
	n) count=$OPTARG ;;
	F) NBD_FILTERS+=("--filter=$OPTARG") ;;
	h) usage; exit 0 ;;
	*) nbd_common_opt "$opt" "${OPTARG:-}" || { usage >&2; exit 2; } ;;
	esac
done
nbd_check
# Filter parameters (key=value) go after the plugin; other -X before it.
extra=("${NBD_EXTRA[@]}")
NBD_EXTRA=()
for a in "${extra[@]}"; do
	if [[ $a == *=* && $a != -* ]]; then NBD_PARAMS+=("$a"); else NBD_EXTRA+=("$a"); fi
done
nbd_start

cycle=0
while ((count == 0 || cycle < count)); do
	nbd_sleep "$up" || exit 0
	pid=$(cat "$NBD_PIDFILE")
	kill -9 "$pid"
	wait "$NBD_CHILD" 2>/dev/null || true
	NBD_CHILD=""
	nbd_log "killed nbdkit pid $pid with SIGKILL; down for ${down}s"
	sleep "$down"
	nbd_start
	nbd_log "restarted"
	cycle=$((cycle + 1))
done
nbd_deadline_passed || nbd_wait
