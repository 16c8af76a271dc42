#!/usr/bin/env bash
# bench/fio-suite.sh TARGET LABEL [SIZE] — the standard fio job set.
#
# Runs the jobs in JOBS, one after the other, against TARGET (a regular file,
# a block device or a FUSE device file such as an mpathfs mount's d0) over its
# first SIZE bytes (fio units, default 1G), and prints one JSON line per job
# on stdout. TARGET may also be an NBD URI (nbd://…, nbd+unix:///?socket=…):
# then fio's nbd engine (libnbd) is the client, with no file, FUSE or kernel
# in between — every job's ioengine becomes nbd at the same iodepth
# (bench/nbdfloor.sh measures the NBD hop's floor this way):
#
#   {"label":LABEL, "job":"randread4k", "target":TARGET, "direct":1,
#    "engine":"psync", "numjobs":1, "iodepth":1, "bs":"4k",
#    "rd_iops":…, "rd_mibs":…, "rd_p50_us":…, "rd_p99_us":…, "rd_max_us":…,
#    "wr_iops":…, "wr_mibs":…, "wr_p50_us":…, "wr_p99_us":…, "wr_max_us":…,
#    "error":0, "verify":null, "note":""}
#
# IOPS are rounded to integers, MiB/s and latencies (fio's completion latency,
# clat, in µs) to one decimal; a side without I/O reports zeros. error is
# fio's error number for the job (0 = none; 1 when fio gave no result at
# all). verify is null except for the verify job: "ok", or "failed" when fio
# reported a mismatch. note explains anything that differs from what was
# asked (an engine or O_DIRECT fallback) and carries fio's first error line.
# The exit status is 0 when every job's error is 0, 1 otherwise; 2 on bad
# usage. Progress and fio's own messages go to stderr.
#
# The jobs are fio job files in bench/jobs/ (NAME.fio), parameterised through
# fio's ${VAR} environment expansion, so any one of them runs by hand too (see
# its header). The jobs:
#   randread4k   4k random read, QD1, psync
#   randwrite4k  4k random write, QD1, psync
#   randrw4k     4k random read/write 50/50, QD32 × 2 jobs, AIO engine
#   seqread1m    1 MiB sequential read, QD8, AIO engine
#   seqwrite1m   1 MiB sequential write, QD8, AIO engine
#   verify       4k–128k random writes over VERIFY_SIZE with crc32c, then
#                read back and checked (not time-based); QD16, AIO engine
#
# Knobs (environment):
#   JOBS         jobs to run, in order [randread4k randwrite4k randrw4k seqread1m seqwrite1m verify]
#                (bench/run.sh runs one job at a time and leaves verify out: it
#                checks correctness, its numbers are not comparable)
#   RUNTIME      seconds per timed job [7]
#   RAMP         seconds of ramp before measuring (fio ramp_time) [1]
#   DIRECT       1 = O_DIRECT [1], 0 = buffered. When TARGET exists and does not
#                take O_DIRECT, the suite runs buffered and says so in note.
#   AIO_ENGINE   engine of the queue-depth jobs [libaio]; when fio lacks it,
#                psync (note says so; iodepth is then 1 in effect)
#   VERIFY_SIZE  region of the verify job [64M, at most SIZE]
#   RAWDIR       when set, keep fio's JSON and stderr per job there
#                (LABEL.JOB.json, LABEL.JOB.err); otherwise they are discarded
#   FIO          fio binary [fio]
#   JOBDIR       directory of the job files [bench/jobs beside this script]
#   FIO_TIMEOUT  seconds before a timed job's fio is killed [RUNTIME+RAMP+60];
#                the verify job gets VERIFY_TIMEOUT [600]
#
# Example: JOBS=randread4k RUNTIME=2 bash bench/fio-suite.sh /dev/shm/t.img t 64M
set -uo pipefail

usage() { echo "usage: ${0##*/} TARGET LABEL [SIZE]   (knobs in the header of this script)" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
TARGET=$1 LABEL=$2 SIZE=${3:-1G}
[ -n "$TARGET" ] && [ -n "$LABEL" ] || usage

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JOBDIR=${JOBDIR:-$HERE/jobs}
JOBS=${JOBS:-"randread4k randwrite4k randrw4k seqread1m seqwrite1m verify"}
RUNTIME=${RUNTIME:-7}
RAMP=${RAMP:-1}
DIRECT=${DIRECT:-1}
AIO_ENGINE=${AIO_ENGINE:-libaio}
VERIFY_SIZE=${VERIFY_SIZE:-64M}
RAWDIR=${RAWDIR:-}
FIO=${FIO:-fio}
FIO_TIMEOUT=${FIO_TIMEOUT:-$((RUNTIME + RAMP + 60))}
VERIFY_TIMEOUT=${VERIFY_TIMEOUT:-600}

say() { printf '%s fio-suite: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for t in jq timeout; do
  command -v "$t" >/dev/null || { say "$t not found"; exit 2; }
done
command -v "$FIO" >/dev/null || { say "fio not found (FIO=$FIO)"; exit 2; }
[ -r "$JOBDIR/common.inc" ] || { say "no job files in $JOBDIR"; exit 2; }
case $DIRECT in 0 | 1) ;; *) say "DIRECT must be 0 or 1, not $DIRECT"; exit 2 ;; esac
case $RUNTIME$RAMP in *[!0-9]*) say "RUNTIME and RAMP are whole seconds"; exit 2 ;; esac

# bytes SIZE: fio's size units (k, m, g, t; with or without i/b; base 1024)
bytes() {
  local s=${1,,}
  s=${s%b}; s=${s%i}
  case $s in
    *k) echo $(( ${s%k} * 1024 )) ;;
    *m) echo $(( ${s%m} * 1024 * 1024 )) ;;
    *g) echo $(( ${s%g} * 1024 * 1024 * 1024 )) ;;
    *t) echo $(( ${s%t} * 1024 * 1024 * 1024 * 1024 )) ;;
    *) echo $(( s )) ;;
  esac
}
size_b=$(bytes "$SIZE" 2>/dev/null) && [ "$size_b" -gt 0 ] || { say "bad SIZE $SIZE"; exit 2; }
vsize_b=$(bytes "$VERIFY_SIZE" 2>/dev/null) && [ "$vsize_b" -gt 0 ] || { say "bad VERIFY_SIZE $VERIFY_SIZE"; exit 2; }
[ "$vsize_b" -gt "$size_b" ] && VERIFY_SIZE=$SIZE

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fio-suite.XXXXXX") || exit 2
FIO_PID=
cleanup() {
  [ -n "$FIO_PID" ] && kill -TERM "$FIO_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
[ -n "$RAWDIR" ] && { mkdir -p "$RAWDIR" || exit 2; }

# The engine of the queue-depth jobs: AIO_ENGINE when this fio has it.
ENGINE=$AIO_ENGINE ENGINE_NOTE=""
if ! "$FIO" --enghelp="$AIO_ENGINE" >/dev/null 2>&1; then
  ENGINE=psync ENGINE_NOTE="engine $AIO_ENGINE not available in this fio: psync"
  say "$ENGINE_NOTE"
fi

# An NBD URI as TARGET: copies of the job files whose ioengine is nbd, with
# the URI as the engine's uri option (fio reads it from NBD_URI). fio's
# filename is then a placeholder: the URI's ":" would split it.
NBD_URI="" FIO_TARGET=$TARGET
case $TARGET in
  nbd://* | nbd+unix://* | nbds://* | nbds+unix://*)
    "$FIO" --enghelp=nbd >/dev/null 2>&1 || { say "TARGET $TARGET needs fio's nbd engine, which this fio lacks"; exit 2; }
    NBD_URI=$TARGET FIO_TARGET=nbd ENGINE=nbd ENGINE_NOTE=""
    mkdir -p "$WORK/jobs" && cp "$JOBDIR"/* "$WORK/jobs/" || exit 2
    # shellcheck disable=SC2016
    sed -i 's|^ioengine=.*|ioengine=nbd\nuri=${NBD_URI}|' "$WORK/jobs/"*.fio
    JOBDIR=$WORK/jobs
    ;;
esac

# O_DIRECT: when the target exists and reads, see that it takes O_DIRECT
# (tmpfs before Linux 6.6 does not); if not, run buffered and say so.
DIRECT_NOTE=""
if [ "$DIRECT" = 1 ] && [ -f "$TARGET" ] &&
  timeout 30 dd if="$TARGET" of=/dev/null bs=4k count=1 status=none 2>/dev/null &&
  ! timeout 30 dd if="$TARGET" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null; then
  DIRECT=0 DIRECT_NOTE="O_DIRECT refused by the target: buffered"
  say "$DIRECT_NOTE"
fi

# opt JOBFILE NAME: an option's value as the job file writes it
opt() { sed -n "s/^$2=//p" "$1" | tail -1; }

# result JOB RAW ERRFILE ENGINE RC: the JSON line of one job
result() {
  local job=$1 raw=$2 errf=$3 eng=$4 rc=$5 jf=$JOBDIR/$1.fio
  local nj qd bs note="" errline
  nj=$(opt "$jf" numjobs); qd=$(opt "$jf" iodepth)
  bs=$(opt "$jf" bs); [ -n "$bs" ] || bs=$(opt "$jf" bsrange)
  [[ $(opt "$jf" ioengine) == psync ]] && eng=psync
  [[ $(opt "$jf" ioengine) == nbd ]] && eng=nbd
  [ "$eng" = psync ] && [ "${qd:-1}" != 1 ] && [ -n "$ENGINE_NOTE" ] && note=$ENGINE_NOTE
  [ -n "$DIRECT_NOTE" ] && note=${note:+$note; }$DIRECT_NOTE
  errline=$(grep -m1 -E 'fio: |verify|error|err=' "$errf" 2>/dev/null | cut -c1-200)
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && errline="fio killed after its timeout${errline:+; $errline}"
  local isverify=false; [ -n "$(opt "$jf" verify)" ] && isverify=true
  # fio may print messages before its JSON; the JSON starts at the first "{".
  local json=$WORK/clean.json
  sed -n '/^{/,$p' "$raw" >"$json" 2>/dev/null
  if jq -e '.jobs[0]' "$json" >/dev/null 2>&1; then
    jq -c --arg lbl "$LABEL" --arg job "$job" --arg target "$TARGET" --argjson direct "$DIRECT" \
      --arg eng "$eng" --argjson nj "${nj:-1}" --argjson qd "${qd:-1}" --arg bs "$bs" \
      --arg note "$note" --arg errline "$errline" --argjson isverify "$isverify" --argjson rc "$rc" '
      def r1: (. * 10 | round) / 10;
      def side(s): {iops: ((s.iops // 0) | round), mibs: ((s.bw_bytes // 0) / 1048576 | r1),
        p50: ((s.clat_ns.percentile["50.000000"] // 0) / 1000 | r1),
        p99: ((s.clat_ns.percentile["99.000000"] // 0) / 1000 | r1),
        max: ((s.clat_ns.max // 0) / 1000 | r1)};
      .jobs[0] as $j | side($j.read) as $r | side($j.write) as $w |
      (if ($j.error // 0) != 0 then $j.error elif $rc != 0 then 1 else 0 end) as $err |
      {label: $lbl, job: $job, target: $target, direct: $direct, engine: $eng, numjobs: $nj,
       iodepth: $qd, bs: $bs,
       rd_iops: $r.iops, rd_mibs: $r.mibs, rd_p50_us: $r.p50, rd_p99_us: $r.p99, rd_max_us: $r.max,
       wr_iops: $w.iops, wr_mibs: $w.mibs, wr_p50_us: $w.p50, wr_p99_us: $w.p99, wr_max_us: $w.max,
       error: $err,
       verify: (if $isverify | not then null
         elif $err == 0 then "ok"
         elif ($errline | test("verify|crc|bad magic|bad header"; "i")) or $err == 84 then "failed"
         else null end),
       note: ([$note, (if $err != 0 then $errline else "" end)] | map(select(. != "")) | join("; "))}' "$json"
  else
    [ -n "$errline" ] || errline="fio gave no result (exit status $rc)"
    jq -cn --arg lbl "$LABEL" --arg job "$job" --arg target "$TARGET" --argjson direct "$DIRECT" \
      --arg eng "$eng" --argjson nj "${nj:-1}" --argjson qd "${qd:-1}" --arg bs "$bs" \
      --arg note "${note:+$note; }$errline" '
      {label: $lbl, job: $job, target: $target, direct: $direct, engine: $eng, numjobs: $nj,
       iodepth: $qd, bs: $bs,
       rd_iops: 0, rd_mibs: 0, rd_p50_us: 0, rd_p99_us: 0, rd_max_us: 0,
       wr_iops: 0, wr_mibs: 0, wr_p50_us: 0, wr_p99_us: 0, wr_max_us: 0,
       error: 1, verify: null, note: $note}'
  fi
}

# unknown JOB: the line of a job that has no job file
unknown() {
  jq -cn --arg lbl "$LABEL" --arg job "$1" --arg target "$TARGET" --argjson direct "$DIRECT" \
    --arg note "no job file $1.fio in $JOBDIR" '
    {label: $lbl, job: $job, target: $target, direct: $direct, engine: null, numjobs: null,
     iodepth: null, bs: null,
     rd_iops: 0, rd_mibs: 0, rd_p50_us: 0, rd_p99_us: 0, rd_max_us: 0,
     wr_iops: 0, wr_mibs: 0, wr_p50_us: 0, wr_p99_us: 0, wr_max_us: 0,
     error: 1, verify: null, note: $note}'
}

failed=0
for job in $JOBS; do
  jf=$JOBDIR/$job.fio
  if [ ! -r "$jf" ]; then
    say "$LABEL: unknown job $job"
    unknown "$job"; failed=1; continue
  fi
  raw=$WORK/$job.json errf=$WORK/$job.err
  limit=$FIO_TIMEOUT
  [ -n "$(opt "$jf" verify)" ] && limit=$VERIFY_TIMEOUT
  if [ "$limit" = "$VERIFY_TIMEOUT" ]; then
    say "$LABEL: $job on $TARGET (first $VERIFY_SIZE written and read back, direct $DIRECT)"
  else
    say "$LABEL: $job on $TARGET (size $SIZE, direct $DIRECT, runtime ${RUNTIME}+${RAMP} s)"
  fi
  TARGET=$FIO_TARGET NBD_URI=$NBD_URI SIZE=$SIZE DIRECT=$DIRECT RUNTIME=$RUNTIME RAMP=$RAMP ENGINE=$ENGINE \
    VERIFY_SIZE=$VERIFY_SIZE timeout -k 10 "$limit" \
    "$FIO" --output-format=json --output="$raw" "$jf" >"$WORK/stdout" 2>"$errf" &
  FIO_PID=$!
  wait "$FIO_PID"; rc=$?
  FIO_PID=
  cat "$WORK/stdout" >>"$errf"
  [ -s "$errf" ] && sed 's/^/  fio: /' "$errf" | head -20 >&2
  line=$(result "$job" "$raw" "$errf" "$ENGINE" "$rc")
  echo "$line"
  [ "$(jq -r '.error' <<<"$line")" = 0 ] || failed=1
  if [ -n "$RAWDIR" ]; then
    safe=$(tr -c 'A-Za-z0-9._-' '_' <<<"$LABEL" | sed 's/_$//')
    cp "$raw" "$RAWDIR/$safe.$job.json" 2>/dev/null
    cp "$errf" "$RAWDIR/$safe.$job.err" 2>/dev/null
  fi
done
exit $failed
