# bench/lib.sh — shared by bench/run.sh, bench/failover.sh and bench/soak.sh.
# Sourced, not run. Every process started here is recorded by PID and every
# mount point by path; bench_cleanup (installed as an EXIT/INT/TERM trap)
# stops them by PID (SIGTERM, then SIGKILL) and unmounts (fusermount3 -u,
# lazily as the last resort), so no mount is left behind even on failure.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
MPATHFS=$REPO/bin/mpathfs
FUSECEILING=$REPO/bin/fuseceiling
FIO_SUITE=${FIO_SUITE:-$BENCH_DIR/fio-suite.sh}   # the job set: bench/fio-suite.sh, bench/jobs/*.fio

BENCH_PIDS=()   # processes we started, in start order
BENCH_MNTS=()   # mount points we created mounts on

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# bench_deps installs the Debian packages the benchmarks need, if missing.
bench_deps() {
  local need=() t pkg
  for t in fio:fio jq:jq nbdkit:nbdkit nbdfuse:libnbd-bin fusermount3:fuse3 nbdinfo:libnbd-bin; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
  done
  # the rate filter ships in nbdkit's base package on Debian 12; check anyway
  if command -v nbdkit >/dev/null && ! nbdkit --dump-config >/dev/null 2>&1; then need+=(nbdkit); fi
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages ${need[*]} and not root"
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
      die "apt-get install ${need[*]} failed"
  fi
  [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
  [ -r "$FIO_SUITE" ] || die "fio suite not found at $FIO_SUITE (set FIO_SUITE)"
}

# bench_build builds mpathfs and, when it builds, fuseceiling.
bench_build() {
  (cd "$REPO" && $GO build -o bin/mpathfs ./cmd/mpathfs) || die "go build ./cmd/mpathfs failed"
  if (cd "$REPO" && $GO build -o bin/fuseceiling ./bench/fuseceiling) 2>"$WORK/fuseceiling-build.log"; then
    HAVE_FUSECEILING=1
  else
    HAVE_FUSECEILING=0; log "fuseceiling does not build (see $WORK/fuseceiling-build.log); skipping that target"
  fi
  (cd "$REPO" && $GO build -o bin/benchplot ./bench/plot) || die "go build ./bench/plot failed"
  # Serve from private copies whose names and command lines do not contain
  # "mpathfs": other sessions on this machine stop stray mpathfs processes by
  # name, which must not take the benchmark's mounts with them.
  cp "$REPO/bin/mpathfs" "$WORK/mpb" && MPATHFS=$WORK/mpb
  [ "$HAVE_FUSECEILING" = 1 ] && cp "$REPO/bin/fuseceiling" "$WORK/fcb" && FUSECEILING=$WORK/fcb
}

# bench_workdir makes the in-memory work directory ($WORK).
bench_workdir() {
  local base=/dev/shm
  [ -d "$base" ] && [ -w "$base" ] || base=/tmp
  WORK=${WORK:-$(mktemp -d "$base/mpb.XXXXXX")}
  mkdir -p "$WORK/mnt"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

is_mounted() { grep -qs " $1 " /proc/self/mounts; }

# bench_stop PID [MNT]: SIGTERM, wait up to 8 s, SIGKILL; then unmount MNT.
bench_stop() {
  local pid=$1 mnt=${2:-} i
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "PID $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null; }
    wait "$pid" 2>/dev/null
  fi
  if [ -n "$mnt" ] && is_mounted "$mnt"; then
    timeout 10 fusermount3 -u "$mnt" 2>/dev/null || timeout 10 fusermount3 -uz "$mnt" 2>/dev/null ||
      timeout 10 umount -l "$mnt" 2>/dev/null || log "could not unmount $mnt"
  fi
}

bench_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
    bench_stop "${BENCH_PIDS[$i]}" ""
  done
  for m in "${BENCH_MNTS[@]}"; do
    if is_mounted "$m"; then
      timeout 10 fusermount3 -u "$m" 2>/dev/null || timeout 10 fusermount3 -uz "$m" 2>/dev/null ||
        timeout 10 umount -l "$m" 2>/dev/null || log "could not unmount $m"
    fi
  done
  if [ -n "${WORK:-}" ] && [ "${KEEP_WORK:-0}" != 1 ]; then
    # never rm through a mount point that is still there
    local busy=0; for m in "${BENCH_MNTS[@]}"; do is_mounted "$m" && busy=1; done
    [ $busy = 0 ] && rm -rf "$WORK"
  fi
  exit $rc
}

# wait_for FILE SECONDS [PID]: until FILE exists (and PID is alive).
wait_for() {
  local f=$1 n=$(($2 * 10)) pid=${3:-}
  while [ $n -gt 0 ]; do
    timeout 2 test -e "$f" && return 0
    [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null && return 1
    sleep 0.1; n=$((n - 1))
  done
  return 1
}

# start_mpathfs TAG MNT mount-args... : sets MP_PID, MP_CTL, MP_DEV (device file d0)
start_mpathfs() {
  local tag=$1 mnt=$2; shift 2
  mkdir -p "$mnt"
  MP_CTL=$WORK/$tag.sock
  "$MPATHFS" mount --control "$MP_CTL" --name d0 "$@" "$mnt" >"$WORK/$tag.log" 2>&1 &
  MP_PID=$!; BENCH_PIDS+=("$MP_PID"); BENCH_MNTS+=("$mnt")
  MP_DEV=$mnt/d0
  wait_for "$MP_DEV" 20 "$MP_PID" || { cat "$WORK/$tag.log" >&2; die "mpathfs $tag did not mount"; }
}

# start_fuseceiling TAG BACKING MNT: sets FC_PID, FC_DEV
start_fuseceiling() {
  local tag=$1 back=$2 mnt=$3
  mkdir -p "$mnt"
  "$FUSECEILING" -file "$back" "$mnt" >"$WORK/$tag.log" 2>&1 &
  FC_PID=$!; BENCH_PIDS+=("$FC_PID"); BENCH_MNTS+=("$mnt")
  FC_DEV=$mnt/ceiling
  wait_for "$FC_DEV" 20 "$FC_PID" || { cat "$WORK/$tag.log" >&2; die "fuseceiling did not mount"; }
}

# start_nbdkit TAG SOCKET nbdkit-args...: sets NK_PID
start_nbdkit() {
  local tag=$1 sock=$2; shift 2
  rm -f "$sock" "$WORK/$tag.pid"
  nbdkit -f -U "$sock" -P "$WORK/$tag.pid" "$@" >"$WORK/$tag.log" 2>&1 &
  NK_PID=$!; BENCH_PIDS+=("$NK_PID")
  wait_for "$WORK/$tag.pid" 20 "$NK_PID" || { cat "$WORK/$tag.log" >&2; die "nbdkit $tag did not start"; }
}

# start_nbdfuse TAG MNT SOCKET: sets NF_PID, NF_DEV
start_nbdfuse() {
  local tag=$1 mnt=$2 sock=$3
  mkdir -p "$mnt"
  nbdfuse "$mnt" --unix "$sock" >"$WORK/$tag.log" 2>&1 &
  NF_PID=$!; BENCH_PIDS+=("$NF_PID"); BENCH_MNTS+=("$mnt")
  NF_DEV=$mnt/nbd
  wait_for "$NF_DEV" 20 "$NF_PID" || { cat "$WORK/$tag.log" >&2; die "nbdfuse did not mount"; }
}

# make_backing FILE SIZE: a file in memory filled with incompressible data
make_backing() {
  local f=$1 size=$2
  log "writing backing file $f ($size)"
  fio --name=fill --filename="$f" --size="$size" --rw=write --bs=1M --direct=0 \
    --refill_buffers --fallocate=none --output=/dev/null >/dev/null 2>&1 ||
    head -c "$size" /dev/urandom >"$f"
}

# bench_setup SIZE: the work directory, the tools, the binaries and an
# in-memory backing file $BACK of SIZE; sets STAMP and MACHINE for reports.
bench_setup() {
  bench_workdir
  bench_deps
  bench_build
  BACK=$WORK/backing.img
  make_backing "$BACK" "$1"
  STAMP="$(date -u '+%Y-%m-%d %H:%M UTC')"
  MACHINE=$(machine_line)
}

machine_line() {
  printf '%s, %s cores (nproc), kernel %s, %s, %s' "$(hostname)" "$(nproc)" "$(uname -r)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
    "$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
}

# stop_all: stop every process we started (newest first), unmount everything.
stop_all() {
  local i m
  for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do bench_stop "${BENCH_PIDS[$i]}" ""; done
  for m in "${BENCH_MNTS[@]}"; do bench_stop "" "$m"; done
  BENCH_PIDS=(); BENCH_MNTS=()
}

# load_line: the load average (1, 5, 15 min) and the number of runnable
# tasks, for the results: on a shared machine it says how loaded a run was.
load_line() {
  awk '{printf "%s / %s / %s (runnable/total tasks %s)", $1, $2, $3, $4}' /proc/loadavg
}

# cpu_ticks PID: user+system CPU time of PID (all its threads) in clock
# ticks (utime + stime, fields 14 and 15 of /proc/PID/stat); empty when
# PID is gone.
cpu_ticks() {
  # the command name (field 2) may hold spaces: cut after its ")"
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# ctx_switches PID: context switches (voluntary + involuntary) of all of
# PID's live threads so far; empty when PID is gone.
ctx_switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {n += $2; ok = 1} END {if (ok) print n}'
}
