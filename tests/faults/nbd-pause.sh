#!/usr/bin/env bash
# nbd-pause.sh — a hung (not dead) NBD server: requests stop being answered
# for a while, then complete.
set -euo pipefail
source "$(dirname "$0")/nbd-lib.sh"

usage() {
	cat <<EOF2
usage: $(basename "$0") (-p PORT | -U SOCKET) [-f DISK | -m SIZE] [options]

Starts nbdkit, then COUNT times: RUN seconds normal service, HANG seconds
hung, then resumes. Two ways to hang:
  stop    kill -STOP / kill -CONT of the server process (default): nothing
          is answered, not even new connections
  filter  nbdkit's pause filter over a control socket (needs nc from
          netcat-openbsd, or socat): requests in flight drain, new ones
          are held until resume

  -M MODE      stop or filter (default stop)
  -r RUN       seconds of normal service per cycle (default 5)
  -s HANG      seconds hung per cycle (default 3)
  -n COUNT     cycles (default 1; 0 = until -T or a signal)
$(nbd_common_usage)

example: $(basename "$0") -p 10809 -f disk.img -M filter -r 2 -s 10
EOF2
}

mode=stop run=5 hang=3 count=1
while getopts "M:r:s:n:p:U:f:m:P:T:X:h" opt; do
	case "$opt" in
	M) mode=$OPTARG ;;
	r) run=$OPTARG ;;
	s) hang=$OPTARG ;;
	n) count=$OPTARG ;;
	h) usage; exit 0 ;;
	*) nbd_common_opt "$opt" "${OPTARG:-}" || { usage >&2; exit 2; } ;;
	esac
done
nbd_check
ctl="$NBD_TMP/pause.sock"
send() { # send p|r over the pause filter's control socket
	if command -v nc >/dev/null; then
		echo "$1" | nc -U -N "$ctl"
	elif command -v socat >/dev/null; then
		echo "$1" | socat - "UNIX-CONNECT:$ctl"
	else
		nbd_die "-M filter needs nc (apt-get install netcat-openbsd) or socat"
	fi
}
case "$mode" in
stop) ;;
filter)
	command -v nc >/dev/null || command -v socat >/dev/null || nbd_die "-M filter needs nc (apt-get install netcat-openbsd) or socat"
	NBD_FILTERS=(--filter=pause)
	NBD_PARAMS=("pause-control=$ctl")
	;;
*) nbd_die "unknown mode $mode (stop or filter)" ;;
esac
nbd_start

resume() {
	if [[ $mode == stop ]]; then
		kill -CONT "$(nbd_pid)" 2>/dev/null || true
	else
		send r >/dev/null || true
	fi
}
trap 'resume; nbd_cleanup' EXIT

cycle=0
while ((count == 0 || cycle < count)); do
	nbd_sleep "$run" || exit 0
	if [[ $mode == stop ]]; then
		kill -STOP "$(nbd_pid)"
		nbd_log "server pid $(nbd_pid) stopped (SIGSTOP): hung for ${hang}s"
	else
		nbd_log "pause filter answered: $(send p)"
		nbd_log "server paused: hung for ${hang}s"
	fi
	ok=0
	nbd_sleep "$hang" || ok=1
	resume
	nbd_log "server resumed"
	((ok == 0)) || exit 0
	cycle=$((cycle + 1))
done
nbd_deadline_passed || nbd_wait
