#!/usr/bin/env bash
# bench/soak.sh — `make bench-soak` (opt-in): mpathfs RSS at queue depth 64
# over a soak. mpathfs over two file paths (VMW_PSP_RR) to one in-memory file;
# fio 4k randrw, libaio, iodepth 64, direct, for SOAK_SECONDS; VmRSS (and
# VmHWM, threads) of the mpathfs process from /proc/PID/status every
# SAMPLE_EVERY seconds. Reports the max, the first/last minute and the trend
# (least-squares slope over the run), writes bench/results/soak.md and
# re-assembles docs/benchmarks.md.
#
# Knobs (env): SOAK_SECONDS [600] SAMPLE_EVERY [5] SIZE [1G] QD [64]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
SOAK_SECONDS=${SOAK_SECONDS:-600}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
SIZE=${SIZE:-1G}
QD=${QD:-64}
SECT=${SECT:-$BENCH_DIR/results}
mkdir -p "$SECT"

bench_workdir
bench_deps
bench_build
BACK=$WORK/soak.img
make_backing "$BACK" "$SIZE"
STAMP="$(date -u '+%Y-%m-%d %H:%M UTC')"
MACHINE=$(machine_line)

start_mpathfs soak "$WORK/mnt/soak" --path "file://$BACK" --path "file://$BACK" --psp VMW_PSP_RR
pid=$MP_PID
rss() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} /^Threads/ {t=$2} END {print r, h, t}' "/proc/$pid/status"; }
read -r rss0 _ thr0 < <(rss)
log "soak: mpathfs PID $pid, idle RSS ${rss0} KiB, $thr0 threads; fio QD$QD for ${SOAK_SECONDS}s"
timeout $((SOAK_SECONDS + 120)) fio --name=soak --filename="$MP_DEV" --direct=1 --rw=randrw --bs=4k \
  --ioengine=libaio --iodepth="$QD" --numjobs=1 --size="$SIZE" --time_based --runtime="$SOAK_SECONDS" \
  --randrepeat=0 --allow_file_create=0 --fallocate=none --output-format=json --output="$WORK/soak.fio.json" \
  >/dev/null 2>"$WORK/soak.fio.err" &
FIO=$!; BENCH_PIDS+=("$FIO")
t0=$(date +%s)
: >"$SECT/soak-rss.tsv"
while kill -0 "$FIO" 2>/dev/null; do
  sleep "$SAMPLE_EVERY"
  kill -0 "$pid" 2>/dev/null || die "mpathfs died during the soak"
  printf '%s\t%s\n' $(( $(date +%s) - t0 )) "$(rss | tr ' ' '\t')" >>"$SECT/soak-rss.tsv"
done
wait "$FIO"; fio_rc=$?
read -r rssEnd hwm thrEnd < <(rss)
stop_all
iops=$(jq -r '.jobs[0] | (.read.iops + .write.iops) | round' "$WORK/soak.fio.json" 2>/dev/null || echo "?")
ferr=$(jq -r '.jobs[0].error' "$WORK/soak.fio.json" 2>/dev/null || echo "?")
stats=$(awk -F'\t' '
  { n++; t[n] = $1; r[n] = $2; if ($2 > max) max = $2; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2
    if ($1 <= 60) { f += $2; fn++ } }
  END { for (i = 1; i <= n; i++) if (t[i] >= t[n] - 60) { l += r[i]; ln++ }
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)   # KiB per second
        printf "%d %d %.0f %.0f %.1f %d", n, max, f / fn, l / ln, slope * 60, r[n] }' "$SECT/soak-rss.tsv")
read -r n max first last slope lastS <<<"$stats"
# The same load on the go-fuse ceiling (same mount options, no nmp): whose
# memory is it?
CEIL_SECONDS=${CEIL_SECONDS:-60}
cmax="–"; cthr="–"
if [ "$HAVE_FUSECEILING" = 1 ] && [ "$CEIL_SECONDS" -gt 0 ]; then
  start_fuseceiling ceil "$BACK" "$WORK/mnt/ceil"
  cpid=$FC_PID
  timeout $((CEIL_SECONDS + 60)) fio --name=ceil --filename="$FC_DEV" --direct=1 --rw=randrw --bs=4k \
    --ioengine=libaio --iodepth="$QD" --numjobs=1 --size="$SIZE" --time_based --runtime="$CEIL_SECONDS" \
    --randrepeat=0 --allow_file_create=0 --fallocate=none --output=/dev/null >/dev/null 2>&1 &
  FIO=$!; BENCH_PIDS+=("$FIO")
  cmax=0
  while kill -0 "$FIO" 2>/dev/null; do
    sleep "$SAMPLE_EVERY"
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$cpid/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$cmax" ] && cmax=$r
  done
  cthr=$(awk '/^Threads/ {print $2}' "/proc/$cpid/status")
  chwm=$(awk '/^VmHWM/ {print $2}' "/proc/$cpid/status")
  cmax="$((cmax / 1024)) MiB (VmHWM $((chwm / 1024)) MiB, $cthr threads)"
  stop_all
fi
{
  echo "## Memory: RSS at QD$QD over a $((SOAK_SECONDS / 60))-minute soak (bench/soak.sh)"
  echo
  echo "- Date: $STAMP. Machine: $MACHINE. Command: \`make bench-soak\` (SOAK_SECONDS=$SOAK_SECONDS SAMPLE_EVERY=$SAMPLE_EVERY)."
  echo "- \`mpathfs mount --path file://F --path file://F --psp VMW_PSP_RR\` (F: $SIZE in /dev/shm); \`fio --rw=randrw --bs=4k"
  echo "  --ioengine=libaio --iodepth=$QD --direct=1 --time_based --runtime=$SOAK_SECONDS\`; VmRSS from /proc/PID/status every ${SAMPLE_EVERY} s."
  echo
  echo "| idle RSS (mounted, before I/O) | max RSS | mean RSS, first minute | mean RSS, last minute | trend (least squares) | VmHWM | threads idle → end | fio IOPS (mean) | fio error |"
  echo "|---:|---:|---:|---:|---:|---:|---|---:|---|"
  echo "| $((rss0 / 1024)) MiB | $((max / 1024)) MiB | $((first / 1024)) MiB | $((last / 1024)) MiB | $slope KiB/min | $((hwm / 1024)) MiB | $thr0 → $thrEnd | $iops | $ferr (rc $fio_rc) |"
  echo
  echo "The same fio against bench/fuseceiling (go-fuse with fusedev's mount options, no nmp) for ${CEIL_SECONDS} s: max VmRSS $cmax."
  echo
  echo "Samples ($n, seconds → KiB): $(awk -F'\t' 'NR % 12 == 1 || NR == n {printf "%s%ss %s", (NR > 1 ? ", " : ""), $1, $2}' n="$n" "$SECT/soak-rss.tsv"); all in bench/results/soak-rss.tsv (s, VmRSS KiB, VmHWM KiB, threads)."
} >"$SECT/soak.md"
cat "$SECT/soak.md" >&2
# re-assemble docs/benchmarks.md with the new section (the other sections as they are)
if [ -s "$REPO/docs/benchmarks.md" ] && [ "$SECT" = "$BENCH_DIR/results" ]; then
  PARTS=none OUT=$REPO/docs/benchmarks.md bash "$BENCH_DIR/run.sh" --assemble-only
fi
