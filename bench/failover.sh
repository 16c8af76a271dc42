#!/usr/bin/env bash
# bench/failover.sh — failover measured, per PSP (part of `make bench`).
#
# For each PSP and each fault (an injected path failure; a hung path caught
# by the per-I/O deadline, --io-timeout 1s): mpathfs over NPATHS file paths to
# one in-memory file, fio 4k randrw QD16 (libaio, direct) with a per-I/O
# completion-latency log; FAULT_AT seconds in, the busiest path is faulted
# (`mpathfs fault inject PATH --error path-failure` or `--hang`). `mpathfs
# status --json` is sampled every 50 ms (per-path I/O counters) and every I/O
# is traced (`--trace`). bench/plot (benchplot) reduces each run to: IOPS per
# second, max completion latency in [fault-1 s, fault+3 s], the longest gap
# between completions, the time to the first good I/O on another path, and
# draws docs/failover-path-failure.svg and docs/failover-hang.svg.
#
# `bash bench/failover.sh --hedge` runs bench/hedge.sh instead.
# Knobs (env): PSPS, FAULTS [path-failure hang], NPATHS [3], FO_RUNTIME [10],
#   FAULT_AT [4], IO_TIMEOUT [1s], SECT (section dir) [bench/results],
#   SVGDIR [docs], FO_QUICK=1 (shorter runs; SVGs into SECT).
set -uo pipefail
# --hedge: the hedged-reads mode (4k randread QD16, hang on the busiest path,
# hedging off vs on per PSP) lives in bench/hedge.sh.
[ "${1:-}" = --hedge ] && exec bash "$(dirname "$0")/hedge.sh"
source "$(dirname "$0")/lib.sh"

QUICK=${FO_QUICK:-0}
PSPS=${PSPS:-"VMW_PSP_FIXED VMW_PSP_MRU VMW_PSP_RR queue-length service-time"}
FAULTS=${FAULTS:-"path-failure hang"}
NPATHS=${NPATHS:-3}
if [ "$QUICK" = 1 ]; then FO_RUNTIME=${FO_RUNTIME:-7}; FAULT_AT=${FAULT_AT:-3}
else FO_RUNTIME=${FO_RUNTIME:-10}; FAULT_AT=${FAULT_AT:-4}; fi
IO_TIMEOUT=${IO_TIMEOUT:-1s}
SECT=${SECT:-$BENCH_DIR/results}
if [ "$QUICK" = 1 ]; then SVGDIR=${SVGDIR:-$SECT}; else SVGDIR=${SVGDIR:-$REPO/docs}; fi
STAMP=${STAMP:-$(date -u '+%Y-%m-%d %H:%M UTC')}
CMDLINE=${CMDLINE:-bash bench/failover.sh}
mkdir -p "$SECT" "$SVGDIR"

SUM=$SECT/failover.jsonl
SERIES=$SECT/failover-series   # per-run time series, kept so the SVGs can be redrawn
REPORT_ONLY=0
[ "${1:-}" = --report-only ] && REPORT_ONLY=1
if [ $REPORT_ONLY = 1 ]; then
  # shellcheck disable=SC1091
  source "$SECT/failover.meta" || die "no $SECT/failover.meta: run bench/failover.sh first"
  (cd "$REPO" && $GO build -o bin/benchplot ./bench/plot) || die "go build ./bench/plot failed"
else
bench_workdir
bench_deps
bench_build
BACK=$WORK/fo.img
make_backing "$BACK" 256M
MACHINE=$(machine_line)
: >"$SUM"
rm -rf "$SERIES"; mkdir -p "$SERIES"
declare -p STAMP MACHINE CMDLINE NPATHS FO_RUNTIME FAULT_AT IO_TIMEOUT PSPS FAULTS >"$SECT/failover.meta"

busiest() { # CTL: the path with the most I/O over the last 0.5 s
  local a b
  a=$(timeout 5 "$MPATHFS" status --json --control "$1" | jq -r '.devices[0].paths[] | "\(.name) \(.reads + .writes)"')
  sleep 0.5
  b=$(timeout 5 "$MPATHFS" status --json --control "$1" | jq -r '.devices[0].paths[] | "\(.name) \(.reads + .writes)"')
  join <(sort <<<"$a") <(sort <<<"$b") | awk '{print $3 - $2, $1}' | sort -rn | head -1 | cut -d' ' -f2
}

# The background: the same fio, no fault, on the bare go-fuse ceiling program
# (same FUSE options, no nmp): how large the machine's own stalls are.
if [ "$HAVE_FUSECEILING" = 1 ]; then
  start_fuseceiling foceil "$BACK" "$WORK/mnt/foceil"
  timeout $((FO_RUNTIME + 60)) fio --name=fo --filename="$FC_DEV" --direct=1 --rw=randrw --bs=4k \
    --ioengine=libaio --iodepth=16 --numjobs=1 --size=256M --time_based --runtime="$FO_RUNTIME" \
    --randrepeat=0 --allow_file_create=0 --fallocate=none --output-format=json --output="$WORK/foceil.fio.json" >/dev/null 2>&1
  jq -c '.jobs[0] | {iops: (.read.iops + .write.iops), max_clat_ms: ([.read.clat_ns.max, .write.clat_ns.max] | max / 1e6),
    p9999_ms: (.read.clat_ns.percentile["99.990000"] / 1e6)}' "$WORK/foceil.fio.json" >"$SECT/failover-ceiling.json" 2>/dev/null
  stop_all
fi

for fault in $FAULTS; do
  for psp in $PSPS; do
    tag=fo-$psp-$fault
    for attempt in 1 2; do
    args=()
    for i in $(seq "$NPATHS"); do args+=(--path "file://$BACK"); done
    start_mpathfs "$tag" "$WORK/mnt/fo" "${args[@]}" --psp "$psp" --io-timeout "$IO_TIMEOUT" --trace "$WORK/$tag.trace"
    ctl=$MP_CTL
    # status sampler, every 50 ms
    ( while :; do
        s=$(timeout 2 "$MPATHFS" status --json --control "$ctl" 2>/dev/null | tr -d '\n')
        [ -n "$s" ] && printf '%s\t%s\n' "$(date +%s%N)" "$s"
        sleep 0.05
      done ) >"$WORK/$tag.status" &
    SAMPLER=$!; BENCH_PIDS+=("$SAMPLER")
    timeout $((FO_RUNTIME + 60)) fio --name=fo --filename="$MP_DEV" --direct=1 --rw=randrw --bs=4k \
      --ioengine=libaio --iodepth=16 --numjobs=1 --size=256M --time_based --runtime="$FO_RUNTIME" \
      --randrepeat=0 --allow_file_create=0 --fallocate=none \
      --write_lat_log="$WORK/$tag" --log_avg_msec=0 --log_unix_epoch=1 \
      --output-format=json --output="$WORK/$tag.fio.json" >/dev/null 2>"$WORK/$tag.fio.err" &
    FIO=$!; BENCH_PIDS+=("$FIO")
    sleep $((FAULT_AT - 1))
    victim=$(busiest "$ctl")
    sleep 0.5
    fault_ns=$(date +%s%N)
    if [ "$fault" = hang ]; then
      timeout 5 "$MPATHFS" fault inject --control "$ctl" "$victim" --hang >/dev/null
    else
      timeout 5 "$MPATHFS" fault inject --control "$ctl" "$victim" --error path-failure >/dev/null
    fi
    log "$psp $fault: faulted $victim"
    wait "$FIO"; fio_rc=$?
    fio_err=$(jq -r '.jobs[0].error // "?"' "$WORK/$tag.fio.json" 2>/dev/null || echo "?")
    bench_stop "$SAMPLER" ""
    timeout 5 "$MPATHFS" fault clear --control "$ctl" "$victim" >/dev/null 2>&1
    alive=1; kill -0 "$MP_PID" 2>/dev/null || alive=0
    stop_all
    [ $alive = 1 ] && break
    log "$psp $fault: mpathfs was stopped from outside during the run; running it again"
    done
    note="faulted $victim; fio rc=$fio_rc error=$fio_err"
    "$REPO/bin/benchplot" analyze -title "$psp — $fault" -note "$note" -fault-ns "$fault_ns" -victim "$victim" \
      -clat "$WORK/${tag}_clat.1.log" -status "$WORK/$tag.status" -trace "$WORK/$tag.trace" \
      -series "$SERIES/$tag.json" |
      jq -c --arg psp "$psp" --arg fault "$fault" --argjson rc "$fio_rc" --arg ferr "$fio_err" \
        '. + {psp: $psp, fault: $fault, fio_rc: $rc, fio_error: $ferr}' | tee -a "$SUM" | cut -c1-400 >&2
    rm -f "$WORK/$tag.trace" "$WORK/${tag}"_*lat.1.log
  done
done
fi

for fault in $FAULTS; do
  series=()
  for psp in $PSPS; do [ -s "$SERIES/fo-$psp-$fault.json" ] && series+=("$SERIES/fo-$psp-$fault.json"); done
  [ ${#series[@]} -gt 0 ] && "$REPO/bin/benchplot" svg -o "$SVGDIR/failover-$fault.svg" \
    -title "mpathfs failover, $fault on the busiest of $NPATHS file paths (fio 4k randrw QD16, io-timeout $IO_TIMEOUT)" "${series[@]}"
done

svgrel() { if [ "$SVGDIR" = "$REPO/docs" ]; then echo "failover-$1.svg"; else echo "$SVGDIR/failover-$1.svg"; fi; }
{
  echo "## Failover (bench/failover.sh)"
  echo
  echo "- Date: $STAMP. Machine: $MACHINE. Command: \`$CMDLINE\` (bench/failover.sh; knobs NPATHS=$NPATHS FO_RUNTIME=$FO_RUNTIME FAULT_AT=$FAULT_AT)."
  echo "- \`mpathfs mount --path file://F\` ×$NPATHS (one 256 MiB file in /dev/shm) \`--psp PSP --io-timeout $IO_TIMEOUT --trace T\`;"
  echo "  \`fio --rw=randrw --bs=4k --ioengine=libaio --iodepth=16 --direct=1 --runtime=$FO_RUNTIME --write_lat_log=L"
  echo "  --log_avg_msec=0 --log_unix_epoch=1\` (a per-I/O completion log: IOPS per second and per 100 ms are counted from it,"
  echo "  which is exact where an averaged \`--write_iops_log\` would smear the fault); $FAULT_AT s in, the path with the most I/O over"
  echo "  the last 0.5 s gets \`mpathfs fault inject PATH --error path-failure\` or \`--hang\` (held until cleared, so only the"
  echo "  per-I/O deadline ends it). Per-path IOPS come from \`mpathfs status --json\` sampled every 50 ms; the failover times"
  echo "  from the trace (completion = start + latency)."
  echo "- Columns: max clat = the largest completion latency of I/Os completing in [fault−1 s, fault+3 s]; longest gap = the"
  echo "  longest time without any completion in that window; min IOPS/s = the fewest completions in any of the 1-s windows"
  echo "  [f, f+1), [f+1, f+2), [f+2, f+3); first ok elsewhere = the first I/O completing OK on another path that started"
  echo "  after the fault or was retried off the faulted path; first failover I/O = the first I/O that failed on the faulted"
  echo "  path and completed on another; dead seen = the first status sample showing the path not active (50 ms grain);"
  echo "  max clat before = the same maximum over the healthy part of the run before fault−1 s (the background: this"
  echo "  2-core machine is shared, and 40–60 ms stalls at QD16 happen with no fault at all). Times from the fault are"
  echo "  from just before \`mpathfs fault inject\` is started, so they include that command's own start-up and RPC."
  echo "  failover I/O max = the largest latency (first try to completion, from the trace) of the I/Os that failed on the"
  echo "  faulted path and completed on another: what the failover itself cost the I/Os it touched."
  if [ -s "$SECT/failover-ceiling.json" ]; then
    echo "- Background without mpathfs: the same fio for ${FO_RUNTIME} s, no fault, on bench/fuseceiling (go-fuse with the same"
    echo "  options, no nmp): $(jq -r '"\(.iops | round) IOPS, max clat \((.max_clat_ms * 10 | round) / 10) ms, p99.99 \((.p9999_ms * 10 | round) / 10) ms"' "$SECT/failover-ceiling.json")."
  fi
  echo "- Targets (reported, not asserted): path failure → max clat ≤ 50 ms and no 1-s window without I/O;"
  echo "  hang → max clat ≤ io-timeout + 50 ms = $(( ${IO_TIMEOUT%s} * 1000 + 50 )) ms. \"target met\" also needs no failed I/O and"
  echo "  fio without error; for path failure, no gap ≥ 1 s (a hang on a single-path PSP necessarily stops all I/O"
  echo "  in flight for the deadline)."
  echo
  echo "| fault | PSP | IOPS before | min IOPS/s after | max clat ms | max clat before ms | longest gap ms | first ok elsewhere ms | first failover I/O ms | dead seen ms | failover I/Os | failover I/O max µs | failed I/Os | target met |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  jq -r --arg to "${IO_TIMEOUT%s}" '
    def f1: if . == null then "–" else (. * 10 | round) / 10 | tostring end;
    (if .fault == "hang" then ($to | tonumber) * 1000 + 50 else 50 end) as $lim |
    "| \(.fault) | \(.psp) | \(.iops_before | round) | \(.min_iops_fault_to_3s) | \(.max_clat_ms | f1) | \(.max_clat_before_ms | f1) | \(.longest_gap_ms | f1) | \(.first_ok_other_path_ms | f1) | \(.first_failover_io_ms | f1) | \(.victim_dead_ms | f1) | \(.failover_ios) | \(if .failover_ios > 0 then (.max_failover_io_ms * 1000 | round | tostring) else "–" end) | \(.failed_ios) | \(if .max_clat_ms <= $lim and (.fault == "hang" or .longest_gap_ms < 1000) and .failed_ios == 0 and .fio_rc == 0 then "yes" else "**no**" end) |"' "$SUM"
  echo
  echo "IOPS per second around the fault (first column = the second starting at the offset shown, relative to the fault):"
  echo
  echo '```'
  jq -r '"\(.fault | .[0:12] | . + (" " * (13 - length)))\(.psp | . + (" " * (15 - length))) from \(.iops_per_second_start)s: \(.iops_per_second | map(tostring) | join(" "))"' "$SUM"
  echo '```'
  echo
  echo "Per-path IOPS over time, fault at t=0:"
  echo
  for fault in $FAULTS; do echo "![failover, $fault]($(svgrel "$fault"))"; echo; done
  echo "Raw summaries: bench/results/failover.jsonl; per-run series: bench/results/failover-series/; SVGs redrawn"
  echo "from them with \`bash bench/failover.sh --report-only\`."
} >"$SECT/failover.md"
cat "$SECT/failover.md" >&2
