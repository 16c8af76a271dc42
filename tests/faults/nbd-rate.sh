#!/usr/bin/env bash
# nbd-rate.sh — an NBD server with a bandwidth cap that can change live.
set -euo pipefail
source "$(dirname "$0")/nbd-lib.sh"

usage() {
	cat <<EOF2
usage: $(basename "$0") (-p PORT | -U SOCKET) [-f DISK | -m SIZE] [options]

Starts nbdkit with the rate filter (a cap in BITS per second, e.g. 80M) and a
rate file it re-reads at run time. Change the cap by hand with
  echo 160M > RATEFILE.new && mv RATEFILE.new RATEFILE
or give a schedule with -s.

  -r RATE      initial cap for the whole server (default 80M bits/s)
  -c RATE      cap per connection (optional)
  -R RATEFILE  rate file (default: in a temp dir; printed at start)
  -s SCHEDULE  comma list of RATE:SECONDS steps applied in a loop,
               e.g. 80M:10,8M:5 (10 s at 80 Mbit/s, then 5 s at 8 Mbit/s)
$(nbd_common_usage)

example: $(basename "$0") -p 10810 -f disk.img -r 400M -s 400M:10,4M:5 -T 60
EOF2
}

rate=80M conn="" ratefile="" schedule=""
while getopts "r:c:R:s:p:U:f:m:P:T:X:h" opt; do
	case "$opt" in
	r) rate=$OPTARG ;;
	c) conn=$OPTARG ;;
	R) ratefile=$OPTARG ;;
	s) schedule=$OPTARG ;;
	h) usage; exit 0 ;;
	*) nbd_common_opt "$opt" "${OPTARG:-}" || { usage >&2; exit 2; } ;;
	esac
done
nbd_check
[[ -n $ratefile ]] || ratefile="$NBD_TMP/rate"
set_rate() {
	echo "$1" >"$ratefile.new"
	mv "$ratefile.new" "$ratefile"
	nbd_log "rate cap now $1 bits/s"
}
echo "$rate" >"$ratefile"
NBD_FILTERS=(--filter=rate)
NBD_PARAMS=("rate=$rate" "rate-file=$ratefile")
[[ -z $conn ]] || NBD_PARAMS+=("connection-rate=$conn")
nbd_start
nbd_log "rate file $ratefile (initial cap $rate bits/s)"

if [[ -z $schedule ]]; then
	nbd_wait
	exit 0
fi
IFS=, read -ra steps <<<"$schedule"
for s in "${steps[@]}"; do
	[[ $s =~ ^[0-9]+[kKMG]?:[0-9.]+$ ]] || nbd_die "bad schedule step $s (want RATE:SECONDS)"
done
while true; do
	for s in "${steps[@]}"; do
		set_rate "${s%%:*}"
		nbd_sleep "${s#*:}" || exit 0
	done
done
