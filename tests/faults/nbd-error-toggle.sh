#!/usr/bin/env bash
# nbd-error-toggle.sh — an NBD server whose requests fail while a trigger
# file exists; the trigger is toggled on and off on a schedule.
set -euo pipefail
source "$(dirname "$0")/nbd-lib.sh"

usage() {
	cat <<EOF2
usage: $(basename "$0") (-p PORT | -U SOCKET) [-f DISK | -m SIZE] [options]

Starts nbdkit with the error filter (error=ERRNO error-rate=100%
error-file=TRIGGER): every request fails with ERRNO while TRIGGER exists.
The script then toggles TRIGGER: absent for OFF seconds, present for ON
seconds, COUNT times (0 = forever), then leaves it absent and keeps serving
until -T or a signal.

  -e ERRNO     error to inject: EIO (default; a path failure to mpathfs),
               ENOSPC, EPERM, ... (device errors)
  -t TRIGGER   trigger file (default: in a temp dir; printed at start)
  -o OFF       seconds healthy per cycle (default 5)
  -i ON        seconds failing per cycle (default 2)
  -n COUNT     cycles (default 0 = until -T or a signal)
  -O OPS       fail only these operations: a comma list of pread, pwrite,
               zero, trim, flush (default: all)
$(nbd_common_usage)

example: $(basename "$0") -p 10809 -f /var/tmp/disk.img -o 3 -i 1 -n 5
EOF2
}

errno=EIO trigger="" off=5 on=2 count=0 ops=""
while getopts "e:t:o:i:n:O:p:U:f:m:P:T:X:h" opt; do
	case "$opt" in
	e) errno=$OPTARG ;;
	t) trigger=$OPTARG ;;
	o) off=$OPTARG ;;
	i) on=$OPTARG ;;
	n) count=$OPTARG ;;
	O) ops=$OPTARG ;;
	h) usage; exit 0 ;;
	*) nbd_common_opt "$opt" "${OPTARG:-}" || { usage >&2; exit 2; } ;;
	esac
done
nbd_check
[[ -n $trigger ]] || trigger="$NBD_TMP/inject"
rm -f "$trigger"

NBD_FILTERS=(--filter=error)
if [[ -z $ops ]]; then
	NBD_PARAMS=("error=$errno" "error-rate=100%" "error-file=$trigger")
else
	IFS=, read -ra list <<<"$ops"
	for op in "${list[@]}"; do
		case "$op" in pread | pwrite | zero | trim | flush) ;; *) nbd_die "unknown operation $op" ;; esac
		NBD_PARAMS+=("error-$op=$errno" "error-$op-rate=100%" "error-$op-file=$trigger")
	done
fi
nbd_start
nbd_log "trigger file $trigger (touch it to fail requests with $errno, remove it to heal)"

cycle=0
while ((count == 0 || cycle < count)); do
	nbd_sleep "$off" || break
	touch "$trigger"
	nbd_log "trigger ON: requests fail with $errno"
	ok=0
	nbd_sleep "$on" || ok=1
	rm -f "$trigger"
	nbd_log "trigger OFF: healthy"
	((ok == 0)) || break
	cycle=$((cycle + 1))
done
rm -f "$trigger"
nbd_deadline_passed || nbd_wait
