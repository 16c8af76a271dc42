#!/usr/bin/env bash
# bench/nbdcost.sh — `make bench-nbdcost`: what one 4k QD1 I/O costs over NBD,
# mpathfs (one NBD path) against nbdfuse (the peer), both over the same
# `nbdkit file` on a Unix socket. For each interleaved round and job (4k
# randread and randwrite, psync, QD1), fio runs for NC_SECONDS+2 s and
# `perf stat -e task-clock,context-switches` counts, over NC_SECONDS from 1 s
# in, the FUSE daemon and nbdkit separately. Reported per I/O: CPU time and
# context switches (voluntary sleeps plus preemptions) of each process, and
# the latency. Software counters only, so it works in VMs without PMU.
# Writes bench/results/nbdcost.md and re-assembles docs/benchmarks.md.
#
# Knobs (env): NC_ROUNDS [3] NC_SECONDS [6] SIZE [1G]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
NC_ROUNDS=${NC_ROUNDS:-3}
NC_SECONDS=${NC_SECONDS:-6}
SIZE=${SIZE:-1G}
SECT=${SECT:-$BENCH_DIR/results}
mkdir -p "$SECT"
command -v perf >/dev/null || { apt-get install -y -qq linux-perf >/dev/null 2>&1 || die "perf not available"; }
perf stat -e task-clock -- true >/dev/null 2>&1 || die "perf stat does not work here"

bench_setup "$SIZE"

start_nbdkit nbdkit "$WORK/nbd.sock" file "$BACK"
NK=$NK_PID
start_mpathfs mpnbd "$WORK/mnt/mpnbd" --path "nbd+unix:///?socket=$WORK/nbd.sock"
T_MP=("mpathfs-nbd" "$MP_PID" "$MP_DEV")
start_nbdfuse nbdfuse "$WORK/mnt/nf" "$WORK/nbd.sock"
T_NF=("nbdfuse" "$NF_PID" "$NF_DEV")

# pstat PID OUT: task-clock (ms) and context switches of PID over NC_SECONDS
pstat() {
  perf stat -x, -e task-clock,context-switches -p "$1" -o "$2" -- sleep "$NC_SECONDS" >/dev/null 2>&1
}
val() { awk -F, -v ev="$2" '$3 ~ ev {print $1; exit}' "$1"; }

OUTJ=$WORK/nbdcost.jsonl
: >"$OUTJ"
for r in $(seq "$NC_ROUNDS"); do
  for job in randwrite randread; do
    for t in T_MP T_NF; do
      declare -n T=$t
      label=${T[0]} pid=${T[1]} dev=${T[2]}
      timeout $((NC_SECONDS + 60)) fio --name=c --filename="$dev" --direct=1 --bs=4k --rw=$job --ioengine=psync \
        --iodepth=1 --size="$SIZE" --time_based --runtime=$((NC_SECONDS + 2)) --output-format=json \
        --output="$WORK/fio.json" >/dev/null 2>&1 &
      fpid=$!
      sleep 1
      pstat "$pid" "$WORK/d.stat" & a=$!
      pstat "$NK" "$WORK/k.stat" & b=$!
      wait $a $b; wait $fpid
      jq -c --arg l "$label" --arg j "$job" --argjson r "$r" --argjson s "$NC_SECONDS" \
        --argjson dms "$(val "$WORK/d.stat" task-clock)" --argjson dcs "$(val "$WORK/d.stat" context-switches)" \
        --argjson kms "$(val "$WORK/k.stat" task-clock)" --argjson kcs "$(val "$WORK/k.stat" context-switches)" \
        '.jobs[0] | (.read.iops + .write.iops) as $iops | ($iops * $s) as $n |
         {label: $l, job: $j, round: $r, iops: $iops,
          p50_us: (([.read.clat_ns.percentile["50.000000"], .write.clat_ns.percentile["50.000000"]] | max) / 1000),
          daemon_cpu_us: ($dms * 1000 / $n), daemon_cs: ($dcs / $n),
          nbdkit_cpu_us: ($kms * 1000 / $n), nbdkit_cs: ($kcs / $n)}' "$WORK/fio.json" >>"$OUTJ"
      log "$label $job round $r: $(tail -1 "$OUTJ")"
      unset -n T
    done
  done
done
stop_all
cp "$OUTJ" "$SECT/nbdcost.jsonl"

{
  echo "## What a 4k QD1 I/O costs over NBD (bench/nbdcost.sh)"
  echo
  echo "- Date: $STAMP. Machine: $MACHINE. Command: \`make bench-nbdcost\` (NC_ROUNDS=$NC_ROUNDS NC_SECONDS=$NC_SECONDS)."
  echo "- One \`nbdkit -U S file BACKING\` (1G in /dev/shm) serves both: mpathfs-nbd = \`mpathfs mount --path nbd+unix:///?socket=S\`"
  echo "  (connections=4 by multi-conn; at QD1 one connection carries the I/O), nbdfuse = \`nbdfuse MNT --unix S\`."
  echo "  fio 4k psync QD1; \`perf stat -e task-clock,context-switches -p PID\` on the daemon and on nbdkit for"
  echo "  ${NC_SECONDS} s from 1 s in; per I/O = count / (IOPS × ${NC_SECONDS} s). Medians of $NC_ROUNDS interleaved rounds."
  echo
  echo "| job | target | IOPS | p50 µs | daemon CPU µs/I/O | daemon switches/I/O | nbdkit CPU µs/I/O | nbdkit switches/I/O |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  jq -rs 'def median: sort | .[length / 2 | floor]; def r1: (. * 10 | round) / 10; def r2: (. * 100 | round) / 100;
    group_by(.job + " " + .label)[] | . as $g |
    "| 4k \($g[0].job) QD1 | \($g[0].label) | \($g | map(.iops) | median | round) | \($g | map(.p50_us) | median | r1) | \($g | map(.daemon_cpu_us) | median | r1) | \($g | map(.daemon_cs) | median | r2) | \($g | map(.nbdkit_cpu_us) | median | r1) | \($g | map(.nbdkit_cs) | median | r2) |"' "$OUTJ"
  echo
  echo "Raw per-round lines: bench/results/nbdcost.jsonl."
} >"$SECT/nbdcost.md"
cat "$SECT/nbdcost.md" >&2
# re-assemble docs/benchmarks.md only from the real sections (as soak.sh)
if [ "$SECT" = "$BENCH_DIR/results" ]; then
  OUT=$REPO/docs/benchmarks.md bash "$BENCH_DIR/run.sh" --assemble-only
fi
