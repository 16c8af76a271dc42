# nbd-lib.sh — shared by the nbd-*.sh fault scripts. Source it; do not run it.
# It starts one nbdkit server in the foreground of the calling script (so it
# dies with the script: -f --exit-with-parent), waits for its pid file as the
# readiness signal, and stops it by PID when the script exits.

NBD_PORT="" NBD_SOCK="" NBD_DISK="" NBD_SIZE="64M" NBD_PIDFILE="" NBD_DURATION=""
NBD_EXTRA=() NBD_FILTERS=() NBD_PARAMS=() NBD_CHILD=""
NBD_TMP="$(mktemp -d "${TMPDIR:-/tmp}/nbd-fault.XXXXXX")"

nbd_log() { printf '%s %s: %s\n' "$(date +%T.%3N)" "$(basename "$0")" "$*" >&2; }
nbd_die() { nbd_log "error: $*"; exit 2; }

nbd_common_usage() {
	cat <<'EOF2'
Where the server listens (one of):
  -p PORT      TCP on 127.0.0.1:PORT (loopback only)
  -U SOCKET    a Unix socket
What it serves:
  -f DISK      this file (file plugin); survives restarts
  -m SIZE      a memory disk of SIZE (memory plugin), default 64M
Other:
  -P PIDFILE   nbdkit's pid file (default: in a temp dir); written once the
               server accepts connections
  -T SECONDS   stop after this long (default: run until SIGINT/SIGTERM)
  -X ARG       one more nbdkit argument (repeatable), e.g. -X -r (read-only),
               -X --filter=multi-conn -X multi-conn-mode=disable
  -h           this help
EOF2
}

# nbd_common_opt OPT OPTARG: handles a common option; returns 1 if unknown.
nbd_common_opt() {
	case "$1" in
	p) NBD_PORT="$2" ;;
	U) NBD_SOCK="$2" ;;
	f) NBD_DISK="$2" ;;
	m) NBD_SIZE="$2" ;;
	P) NBD_PIDFILE="$2" ;;
	T) NBD_DURATION="$2" ;;
	X) NBD_EXTRA+=("$2") ;;
	*) return 1 ;;
	esac
}

nbd_check() {
	command -v nbdkit >/dev/null || nbd_die "nbdkit not found (apt-get install nbdkit)"
	if [[ -n $NBD_PORT && -n $NBD_SOCK ]] || [[ -z $NBD_PORT && -z $NBD_SOCK ]]; then
		nbd_die "give exactly one of -p PORT or -U SOCKET (see -h)"
	fi
	if [[ -n $NBD_PORT ]] && ! [[ $NBD_PORT =~ ^[0-9]+$ ]]; then
		nbd_die "bad port $NBD_PORT"
	fi
	if [[ -n $NBD_DISK && ! -e $NBD_DISK ]]; then
		nbd_die "disk $NBD_DISK does not exist (create it: truncate -s 64M $NBD_DISK)"
	fi
	[[ -n $NBD_PIDFILE ]] || NBD_PIDFILE="$NBD_TMP/nbdkit.pid"
}

nbd_uri() {
	if [[ -n $NBD_SOCK ]]; then
		echo "nbd+unix:///?socket=$NBD_SOCK"
	else
		echo "nbd://127.0.0.1:$NBD_PORT/"
	fi
}

# nbd_start: starts nbdkit with NBD_FILTERS and NBD_PARAMS and waits until
# it is ready.
nbd_start() {
	local listen=() plugin=()
	if [[ -n $NBD_SOCK ]]; then
		rm -f "$NBD_SOCK"
		listen=(-U "$NBD_SOCK")
	else
		listen=(-i 127.0.0.1 -p "$NBD_PORT")
	fi
	if [[ -n $NBD_DISK ]]; then
		plugin=(file "$NBD_DISK")
	else
		plugin=(memory "size=$NBD_SIZE")
	fi
	rm -f "$NBD_PIDFILE"
	nbdkit -f --exit-with-parent -P "$NBD_PIDFILE" "${listen[@]}" "${NBD_EXTRA[@]}" \
		"${NBD_FILTERS[@]}" "${plugin[@]}" "${NBD_PARAMS[@]}" &
	NBD_CHILD=$!
	local i
	for ((i = 0; i < 1000; i++)); do
		if [[ -s $NBD_PIDFILE ]]; then
			nbd_log "nbdkit pid $(cat "$NBD_PIDFILE") serving $(nbd_uri) (pid file $NBD_PIDFILE)"
			return 0
		fi
		kill -0 "$NBD_CHILD" 2>/dev/null || nbd_die "nbdkit exited before it was ready (port in use? bad filter parameter?)"
		sleep 0.01
	done
	nbd_die "nbdkit not ready after 10 s"
}

nbd_pid() { cat "$NBD_PIDFILE" 2>/dev/null || echo "$NBD_CHILD"; }

# nbd_stop: stops the server this script started, by PID.
nbd_stop() {
	if [[ -n $NBD_CHILD ]] && kill -0 "$NBD_CHILD" 2>/dev/null; then
		kill -CONT "$NBD_CHILD" 2>/dev/null || true
		kill -TERM "$NBD_CHILD" 2>/dev/null || true
		wait "$NBD_CHILD" 2>/dev/null || true
		nbd_log "nbdkit pid $NBD_CHILD stopped"
	fi
	NBD_CHILD=""
}

nbd_cleanup() {
	nbd_stop
	rm -rf "$NBD_TMP"
}
trap nbd_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nbd_deadline_passed: true once -T SECONDS have passed since the start.
NBD_T0=$SECONDS
nbd_deadline_passed() { [[ -n $NBD_DURATION ]] && ((SECONDS - NBD_T0 >= NBD_DURATION)); }

# nbd_sleep SECS: sleeps, but no longer than the -T deadline; returns 1 when
# the deadline has passed.
nbd_sleep() {
	if [[ -n $NBD_DURATION ]]; then
		local left=$((NBD_DURATION - (SECONDS - NBD_T0)))
		((left > 0)) || return 1
		if awk -v a="$1" -v b="$left" 'BEGIN{exit !(a > b)}'; then
			sleep "$left"
			return 1
		fi
	fi
	sleep "$1"
	! nbd_deadline_passed
}

# nbd_wait: runs until the deadline or a signal, keeping the server up.
nbd_wait() {
	if [[ -n $NBD_DURATION ]]; then
		nbd_sleep "$NBD_DURATION" || true
	else
		wait "$NBD_CHILD" || true
	fi
}
