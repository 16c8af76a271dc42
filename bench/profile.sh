#!/usr/bin/env bash
# bench/profile.sh — `make bench-profile`: where the CPU goes on the 4k QD1
# and QD32 jobs. perf samples the serving process (cpu-clock, call graphs;
# the Go binaries keep frame pointers, and this VM has no hardware
# counters) while fio runs 4k randread QD1 (psync) and 4k randrw QD32×2
# (libaio) against: mpathfs with two file paths (VMW_PSP_RR iops=1), the
# go-fuse ceiling (bench/fuseceiling) and mpathfs with one NBD path to
# nbdkit on a Unix socket. Writes bench/results/profile.md: the kernel/user
# split, the inclusive share of each layer, the top self symbols.
#
# Knobs (env): PROFILE_SECONDS [8] SIZE [1G] FREQ [999]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
SIZE=${SIZE:-1G}
FREQ=${FREQ:-999}
SECT=${SECT:-$BENCH_DIR/results}
command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null 2>&1 || die "perf not available"; }
perf record -o /dev/null -e cpu-clock -- true >/dev/null 2>&1 || die "perf record does not work here"

bench_setup "$SIZE"

start_mpathfs mp2 "$WORK/mnt/mp2" --path "file://$BACK" --path "file://$BACK" --psp VMW_PSP_RR --psp-option iops=1
T_MP2=("mpathfs-2file-rr" "$MP_PID" "$MP_DEV")
start_fuseceiling fc "$BACK" "$WORK/mnt/fc"
T_FC=("fuseceiling" "$FC_PID" "$FC_DEV")
start_nbdkit nbdkit "$WORK/nbd.sock" file "$BACK"
start_mpathfs mpnbd "$WORK/mnt/mpnbd" --path "nbd+unix:///?socket=$WORK/nbd.sock"
T_NBD=("mpathfs-nbd" "$MP_PID" "$MP_DEV")

# inclusive (children) share of a symbol, in % of the process's samples
share() { # DATA SYMBOL-REGEX
  perf report -i "$1" --children --sort sym --stdio -g none 2>/dev/null |
    awk -v re="$2" '$0 ~ re && $1 ~ /%$/ { sub("%", "", $1); print $1; exit }'
}
LAYERS=(
  "go-fuse read of /dev/fuse|fuse\\.\\(\\*fuseFD\\)\\.readRequest$"
  "go-fuse reply (writev to /dev/fuse)|fuse\\.\\(\\*fuseFD\\)\\.writevFD$"
  "fusedev Read|fusedev\\.\\(\\*devNode\\)\\.Read$"
  "fusedev Write|fusedev\\.\\(\\*devNode\\)\\.Write$"
  "nmp Device.do (routing + I/O)|nmp\\.\\(\\*Device\\)\\.do$"
  "nmp Device.exec|nmp\\.\\(\\*Device\\)\\.exec$"
  "fault decorator ReadAt|fault\\.\\(\\*Backend\\)\\.ReadAt$"
  "fault decorator WriteAt|fault\\.\\(\\*Backend\\)\\.WriteAt$"
  "file pread|unix\\.pread$"
  "file pwrite|unix\\.pwrite$"
  "NBD client (package nbd), any|mpathfs/backends/nbd\\."
  "runtime.sysmon (P retake/handoff)|runtime\\.sysmon$"
  "runtime.schedule|runtime\\.schedule$"
  "runtime.mallocgc|runtime\\.mallocgc$"
  "GC workers|runtime\\.gcBgMarkWorker$"
  "clock_gettime (vdso)|__vdso_clock_gettime$"
)

{
  echo "## CPU profile (bench/profile.sh)"
  echo
  echo "- Date: $STAMP. Machine: $MACHINE. Command: \`make bench-profile\` (PROFILE_SECONDS=$PROFILE_SECONDS)."
  echo "- \`perf record -F $FREQ -e cpu-clock -g -p PID -- sleep $PROFILE_SECONDS\` on the serving process while fio runs"
  echo "  (from 1 s after its start); \`perf report --children\` for the inclusive shares. Shares are % of that process's"
  echo "  samples; kernel time spent in its syscalls is included in the caller's share."
  echo
} >"$SECT/profile.md"

for t in T_MP2 T_FC T_NBD; do
  declare -n T=$t
  label=${T[0]} pid=${T[1]} dev=${T[2]}
  for job in qd1 qd32; do
    if [ $job = qd1 ]; then A=(--rw=randread --ioengine=psync --iodepth=1 --numjobs=1); desc="4k randread QD1"
    else A=(--rw=randrw --ioengine=libaio --iodepth=32 --numjobs=2); desc="4k randrw QD32×2"; fi
    data=$WORK/perf-$label-$job.data
    timeout $((PROFILE_SECONDS + 60)) fio --name=$job --filename="$dev" --direct=1 --bs=4k "${A[@]}" --size="$SIZE" \
      --time_based --runtime=$((PROFILE_SECONDS + 2)) --group_reporting --output-format=json \
      --output="$WORK/fio-$label-$job.json" >/dev/null 2>&1 &
    fpid=$!
    sleep 1
    perf record -F "$FREQ" -e cpu-clock -g -p "$pid" -o "$data" -- sleep "$PROFILE_SECONDS" >/dev/null 2>&1
    wait $fpid
    iops=$(jq -r '.jobs[0] | (.read.iops + .write.iops) | round' "$WORK/fio-$label-$job.json")
    split=$(perf report -i "$data" --sort dso --stdio -g none 2>/dev/null | awk '$1 ~ /%$/ {printf "%s %s; ", $NF, $1}')
    {
      echo "### $label, $desc ($iops IOPS while sampled)"
      echo
      echo "Samples by object: $split"
      echo
      echo "| layer (inclusive) | % |"
      echo "|---|---:|"
      for l in "${LAYERS[@]}"; do
        v=$(share "$data" "${l#*|}")
        [ -n "$v" ] && [ "$v" != "0.00" ] && echo "| ${l%%|*} | $v |"
      done
      echo
      echo "Top self symbols:"
      echo
      echo '```'
      perf report -i "$data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -15
      echo '```'
      echo
    } >>"$SECT/profile.md"
    log "profiled $label $job: $iops IOPS"
  done
  unset -n T
done
stop_all

# GOMAXPROCS experiment: the profile shows the runtime handing Ps between
# threads around the blocking read(2) on /dev/fuse; how does the P count
# change throughput? Interleaved rounds, the same two jobs.
GMP=${GMP:-"1 2 4 8"}
GROUNDS=${GROUNDS:-3}
GRUNTIME=${GRUNTIME:-5}
declare -A GDEV
for g in $GMP; do
  export GOMAXPROCS=$g
  start_mpathfs "gmp$g" "$WORK/mnt/gmp$g" --path "file://$BACK" --path "file://$BACK" --psp VMW_PSP_RR --psp-option iops=1
  GDEV[$g]=$MP_DEV
  unset GOMAXPROCS
done
: >"$WORK/gmp.jsonl"
for r in $(seq "$GROUNDS"); do
  for job in randread4k randrw4k; do
    for g in $GMP; do
      JOBS=$job RUNTIME=$GRUNTIME RAMP=1 timeout 120 bash "$FIO_SUITE" "${GDEV[$g]}" "GOMAXPROCS=$g" "$SIZE" >>"$WORK/gmp.jsonl"
    done
  done
done
stop_all
{
  echo "### mpathfs-2file-rr with GOMAXPROCS set (default here: $(nproc))"
  echo
  echo "Median IOPS of $GROUNDS interleaved rounds, RUNTIME=$GRUNTIME s (fio-suite.sh jobs randread4k = 4k randread QD1, randrw4k = 4k randrw QD32×2):"
  echo
  echo "| GOMAXPROCS | 4k randread QD1 IOPS | p50 µs | 4k randrw QD32×2 IOPS |"
  echo "|---:|---:|---:|---:|"
  jq -rs 'def median: sort | .[length / 2 | floor];
    group_by(.label)[] | . as $g |
    ($g | map(select(.job == "randread4k"))) as $a | ($g | map(select(.job == "randrw4k"))) as $b |
    "| \($g[0].label | ltrimstr("GOMAXPROCS=")) | \($a | map(.rd_iops) | median) | \($a | map(.rd_p50_us) | median) | \($b | map(.rd_iops + .wr_iops) | median) |"' "$WORK/gmp.jsonl"
  echo
} >>"$SECT/profile.md"
cat "$SECT/profile.md" >&2
