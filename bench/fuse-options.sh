#!/usr/bin/env bash
# fuse-options.sh [ROUNDS]
#
# Measures fusedev's FUSE option sets against each other and against the
# go-fuse ceiling (bench/fuseceiling), interleaved: every round mounts each
# configuration in turn over the same in-memory backing file and runs
# bench/fio-suite.sh on its device file. Prints fio-suite's JSON
# lines (label = configuration, plus "round") to stdout and to $OUT, then a
# per-configuration median table on stderr.
#
# Environment:
#   CONFIGS   configurations to run, in order (default: all below)
#   ROUNDS    rounds [2] (also the first argument)
#   JOBS      fio-suite jobs [randread4k randwrite4k randrw4k seqread1m seqwrite1m]
#   RUNTIME   seconds per fio job [4]
#   DIRECT    1 = fio O_DIRECT, 0 = buffered [1]
#   SIZE      backing file size [256M]
#   BACKDIR   directory of the backing file [/dev/shm] (tmpfs: the file in memory)
#   OUT       JSON lines file [/tmp/fuse-options-<time>.jsonl]
#   FIO_SUITE path of fio-suite.sh [bench/fio-suite.sh]
#
# Configurations:
#   fusedev            fusedev defaults (the production choice)
#   fusedev-keepcache  page cache kept across opens (FOPEN_KEEP_CACHE)
#   fusedev-pagecache  page cache dropped at each open (no FOPEN_* flag)
#   fusedev-noasyncdio without CAP_ASYNC_DIO
#   fusedev-mw128k     MaxWrite 128 KiB
#   ceiling            raw go-fuse, same options (fusedev.MountOptions)
#   ceiling-splice     raw go-fuse, go-fuse's splice attempt left on
set -u
ROUNDS=${1:-${ROUNDS:-2}}
CONFIGS=${CONFIGS:-"fusedev fusedev-keepcache fusedev-noasyncdio fusedev-mw128k ceiling ceiling-splice"}
export JOBS=${JOBS:-"randread4k randwrite4k randrw4k seqread1m seqwrite1m"}
export RUNTIME=${RUNTIME:-4}
export DIRECT=${DIRECT:-1}
SIZE=${SIZE:-256M}
BACKDIR=${BACKDIR:-/dev/shm}
OUT=${OUT:-/tmp/fuse-options-$(date +%Y%m%d-%H%M%S).jsonl}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIO_SUITE=${FIO_SUITE:-$ROOT/bench/fio-suite.sh}

for tool in fio jq go; do
  command -v $tool >/dev/null || { echo "fuse-options: $tool not found" >&2; exit 2; }
done
[ -e /dev/fuse ] || { echo "fuse-options: /dev/fuse missing" >&2; exit 2; }

WORK=$(mktemp -d /tmp/fuse-options.XXXXXX)
MP=$WORK/mnt
BACKING=$(mktemp "$BACKDIR/fuse-options.XXXXXX.img")
mkdir -p "$MP"
PID=
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null; sleep 1; kill -KILL "$PID" 2>/dev/null; fi
  if grep -q " $MP " /proc/self/mountinfo; then
    timeout 10 fusermount3 -u "$MP" 2>/dev/null || timeout 10 fusermount3 -u -z "$MP"
  fi
  rm -rf "$WORK" "$BACKING"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(cd "$ROOT" && go build -o "$WORK/fuse-options" ./bench/fuse-options && go build -o "$WORK/fuseceiling" ./bench/fuseceiling) || exit 1
# Real data in the backing file, not holes.
dd if=/dev/urandom of="$BACKING" bs=1M count=$(( $(numfmt --from=iec "$SIZE") / 1048576 )) status=none conv=fsync || exit 1

start() { # CONFIG -> sets PID and TARGET
  local c=$1
  case $c in
    fusedev)            "$WORK/fuse-options" -file "$BACKING" "$MP" & TARGET=$MP/disk0 ;;
    fusedev-keepcache)  "$WORK/fuse-options" -file "$BACKING" -cache keep-cache "$MP" & TARGET=$MP/disk0 ;;
    fusedev-pagecache)  "$WORK/fuse-options" -file "$BACKING" -cache page-cache "$MP" & TARGET=$MP/disk0 ;;
    fusedev-noasyncdio) "$WORK/fuse-options" -file "$BACKING" -no-async-dio "$MP" & TARGET=$MP/disk0 ;;
    fusedev-mw128k)     "$WORK/fuse-options" -file "$BACKING" -maxwrite 131072 "$MP" & TARGET=$MP/disk0 ;;
    ceiling)            "$WORK/fuseceiling" -file "$BACKING" "$MP" & TARGET=$MP/ceiling ;;
    ceiling-splice)     "$WORK/fuseceiling" -file "$BACKING" -splice "$MP" & TARGET=$MP/ceiling ;;
    *) echo "fuse-options: unknown configuration $c" >&2; return 1 ;;
  esac
  PID=$!
  for _ in $(seq 100); do
    if grep -q " $MP " /proc/self/mountinfo && timeout 5 test -e "$TARGET"; then return 0; fi
    sleep 0.1
  done
  echo "fuse-options: $c did not mount" >&2
  return 1
}

stop() {
  kill -TERM "$PID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$PID" 2>/dev/null
  wait "$PID" 2>/dev/null
  PID=
  if grep -q " $MP " /proc/self/mountinfo; then
    echo "fuse-options: mount left behind, detaching" >&2
    timeout 10 fusermount3 -u -z "$MP"
  fi
}

echo "fuse-options: rounds=$ROUNDS direct=$DIRECT runtime=$RUNTIME size=$SIZE backing=$BACKDIR out=$OUT" >&2
: >"$OUT"
for round in $(seq "$ROUNDS"); do
  for c in $CONFIGS; do
    start "$c" || exit 1
    echo "fuse-options: round $round: $c" >&2
    bash "$FIO_SUITE" "$TARGET" "$c" "$SIZE" | jq -c --argjson r "$round" '. + {round:$r}' | tee -a "$OUT"
    stop
  done
done

# Medians per configuration and job: IOPS for 4k, MiB/s for 1 MiB.
jq -rs '
  def median: sort | if length == 0 then null
    else (.[(length-1)/2|floor] + .[length/2|floor]) / 2 | . * 10 | round / 10 end;
  group_by(.label + " " + .job) | map({
    label: .[0].label, job: .[0].job,
    val: (if (.[0].bs == "1M") then map(.rd_mibs + .wr_mibs) else map(.rd_iops + .wr_iops) end | median),
    p50: (map(if .rd_iops > 0 then .rd_p50_us else .wr_p50_us end) | median),
    err: (map(.error) | add)
  }) | .[] | "\(.label)\t\(.job)\t\(.val)\t\(.p50)\t\(.err)"' "$OUT" |
  (printf 'config\tjob\tIOPS|MiB/s\tp50us\terrors\n'; cat) | column -t >&2
