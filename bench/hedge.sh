#!/usr/bin/env bash
# bench/hedge.sh — hedged reads against a hung path (`make bench-hedge`, or
# `bash bench/failover.sh --hedge`).
#
# For each PSP, hedging off then on, in one run: mpathfs over NPATHS file
# paths to one in-memory file, fio 4k randread QD16 (libaio, direct) with a
# per-I/O completion-latency log; FAULT_AT seconds in, the busiest path gets
# `mpathfs fault inject PATH --hang` (held until cleared: only the per-I/O
# deadline or a hedge ends a read there). Reported per run: max read
# completion latency over the whole run and in [fault-1 s, fault+3 s], IOPS
# in the healthy seconds before the fault (healthy-path throughput, hedging
# on vs off), hedges sent and won, whether the victim was reported slow.
#
# Knobs (env): PSPS, NPATHS [3], HG_RUNTIME [10], FAULT_AT [4], IO_TIMEOUT
#   [1s], SECT [bench/results], KEEP_LOGS (a directory: keep the
#   per-I/O completion logs there).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

PSPS=${PSPS:-"VMW_PSP_RR queue-length service-time VMW_PSP_FIXED VMW_PSP_MRU"}
NPATHS=${NPATHS:-3}
HG_RUNTIME=${HG_RUNTIME:-10}
FAULT_AT=${FAULT_AT:-4}
IO_TIMEOUT=${IO_TIMEOUT:-1s}
SECT=${SECT:-$BENCH_DIR/results}
STAMP=${STAMP:-$(date -u '+%Y-%m-%d %H:%M UTC')}
CMDLINE=${CMDLINE:-bash bench/hedge.sh}
mkdir -p "$SECT"
SUM=$SECT/hedge.jsonl

bench_workdir
bench_deps
bench_build
BACK=$WORK/hg.img
make_backing "$BACK" 256M
MACHINE=$(machine_line)
: >"$SUM"

# The background: the same fio, no fault, on the bare go-fuse ceiling program
# (same FUSE options, no nmp), once before each PSP's pair of runs: the
# stalls any read on this machine can meet with no path and no hedge
# involved — the floor under the latency goals, measured beside them.
BG=$SECT/hedge-ceiling.jsonl
: >"$BG"
background() { # LABEL
  [ "$HAVE_FUSECEILING" = 1 ] || return 0
  start_fuseceiling hgceil "$BACK" "$WORK/mnt/hgceil"
  timeout $((HG_RUNTIME + 60)) fio --name=hg --filename="$FC_DEV" --direct=1 --rw=randread --bs=4k \
    --ioengine=libaio --iodepth=16 --numjobs=1 --size=256M --time_based --runtime="$HG_RUNTIME" \
    --randrepeat=0 --allow_file_create=0 --fallocate=none --write_lat_log="$WORK/hgceil" --log_avg_msec=0 --log_unix_epoch=1 \
    --output-format=json --output="$WORK/hgceil.fio.json" >/dev/null 2>&1
  # the same window as the fault runs': [t0 + FAULT_AT − 1 s, t0 + FAULT_AT + 3 s]
  local win
  win=$(awk -F', *' -v at="$FAULT_AT" 'NR == 1 { f = $1 + at * 1000 }
    $1 >= f - 1000 && $1 <= f + 3000 { lat = $2 / 1e6; if (lat > m) m = lat } END { printf "%.1f\n", m }' "$WORK/hgceil_clat.1.log")
  rm -f "$WORK"/hgceil_*lat.1.log
  jq -c --arg before "$1" --argjson win "${win:-0}" '.jobs[0] | {before: $before, iops: (.read.iops | round), max_clat_window_ms: $win, max_clat_ms: (.read.clat_ns.max / 1e5 | round / 10),
    p9999_ms: (.read.clat_ns.percentile["99.990000"] / 1e5 | round / 10), p999_ms: (.read.clat_ns.percentile["99.900000"] / 1e5 | round / 10)}' \
    "$WORK/hgceil.fio.json" | tee -a "$BG" >&2
  stop_all
}

busiest() { # CTL: the path with the most reads over the last 0.5 s
  local a b
  a=$(timeout 5 "$MPATHFS" status --json --control "$1" | jq -r '.devices[0].paths[] | "\(.name) \(.reads)"')
  sleep 0.5
  b=$(timeout 5 "$MPATHFS" status --json --control "$1" | jq -r '.devices[0].paths[] | "\(.name) \(.reads)"')
  join <(sort <<<"$a") <(sort <<<"$b") | awk '{print $3 - $2, $1}' | sort -rn | head -1 | cut -d' ' -f2
}

for psp in $PSPS; do
  background "$psp"
  for hedge in off on; do
    tag=hg-$psp-$hedge
    args=()
    for i in $(seq "$NPATHS"); do args+=(--path "file://$BACK"); done
    start_mpathfs "$tag" "$WORK/mnt/hg" "${args[@]}" --psp "$psp" --io-timeout "$IO_TIMEOUT" --hedge "$hedge"
    ctl=$MP_CTL
    timeout $((HG_RUNTIME + 60)) fio --name=hg --filename="$MP_DEV" --direct=1 --rw=randread --bs=4k \
      --ioengine=libaio --iodepth=16 --numjobs=1 --size=256M --time_based --runtime="$HG_RUNTIME" \
      --randrepeat=0 --allow_file_create=0 --fallocate=none \
      --write_lat_log="$WORK/$tag" --log_avg_msec=0 --log_unix_epoch=1 \
      --output-format=json --output="$WORK/$tag.fio.json" >/dev/null 2>"$WORK/$tag.fio.err" &
    FIO=$!; BENCH_PIDS+=("$FIO")
    sleep $((FAULT_AT - 1))
    victim=$(busiest "$ctl")
    sleep 0.5
    fault_ms=$(($(date +%s%N) / 1000000))
    timeout 5 "$MPATHFS" fault inject --control "$ctl" "$victim" --hang >/dev/null
    log "$psp hedge=$hedge: hung $victim"
    wait "$FIO"; fio_rc=$?
    st=$(timeout 5 "$MPATHFS" status --json --control "$ctl")
    timeout 5 "$MPATHFS" fault clear --control "$ctl" "$victim" >/dev/null 2>&1
    stop_all
    # clat log: epoch ms, latency ns, direction, size, ...
    read -r iops_before win_max all_max n_win <<<"$(awk -F', *' -v f="$fault_ms" '
      NR == 1 { t0 = $1 }
      { t = $1; lat = $2 / 1e6
        if (t >= t0 + 1000 && t < f - 500) before++
        if (t >= f - 1000 && t <= f + 3000) { n++; if (lat > wm) wm = lat }
        if (lat > am) am = lat }
      END { s = (f - 500 - t0 - 1000) / 1000; printf "%d %.1f %.1f %d\n", (s > 0 ? before / s : 0), wm, am, n }' "$WORK/${tag}_clat.1.log")"
    jq -cn --arg psp "$psp" --arg hedge "$hedge" --arg victim "$victim" --argjson rc "$fio_rc" \
      --argjson before "$iops_before" --argjson win "$win_max" --argjson all "$all_max" \
      --argjson st "$st" --slurpfile fio "$WORK/$tag.fio.json" '
      ($st.devices[0]) as $d | ($d.paths[] | select(.name == $victim)) as $v |
      {psp: $psp, hedge: $hedge, victim: $victim, fio_rc: $rc, fio_error: ($fio[0].jobs[0].error // -1),
       iops: ($fio[0].jobs[0].read.iops | round), iops_before: $before, max_clat_window_ms: $win, max_clat_ms: $all,
       hedged: ($d.hedged_reads // 0), hedge_wins: ($d.hedge_wins // 0), victim_slow: ($v.slow // false),
       victim_state: $v.state}' | tee -a "$SUM" >&2
    [ -n "${KEEP_LOGS:-}" ] && cp "$WORK/${tag}_clat.1.log" "$KEEP_LOGS/" 2>/dev/null
    rm -f "$WORK/${tag}"_*lat.1.log
  done
done

{
  echo "## Hedged reads against a hung path (bench/hedge.sh)"
  echo
  echo "- Date: $STAMP. Machine: $MACHINE. Command: \`$CMDLINE\` (knobs NPATHS=$NPATHS HG_RUNTIME=$HG_RUNTIME FAULT_AT=$FAULT_AT IO_TIMEOUT=$IO_TIMEOUT)."
  echo "- \`mpathfs mount --path file://F\` ×$NPATHS (one 256 MiB file in /dev/shm) \`--psp PSP --io-timeout $IO_TIMEOUT --hedge off|on\`;"
  echo "  \`fio --rw=randread --bs=4k --ioengine=libaio --iodepth=16 --direct=1 --runtime=$HG_RUNTIME\` with a per-I/O"
  echo "  completion log; $FAULT_AT s in, the path with the most reads over the last 0.5 s gets \`mpathfs fault inject PATH"
  echo "  --hang\` (every operation held until cleared). Hedging off and on run back to back for each PSP."
  echo "- Columns: max read clat = the largest completion latency in [fault−1 s, fault+3 s] and over the whole run;"
  echo "  healthy IOPS = reads per second completed from 1 s after fio's first completion to 0.5 s before the fault (the"
  echo "  healthy-path throughput, hedging on vs off); hedged / won = hedges sent / answered first; slow = the victim reported slow."
  echo "- Goal (issue \"Faster than the fault\"): max read completion ≤ 50 ms with RR, queue-length, service-time,"
  echo "  ≤ 100 ms with FIXED and MRU; healthy throughput within 3 % of hedging off."
  echo
  echo "| PSP | hedge | max read clat ms (window) | max read clat ms (run) | healthy IOPS | healthy on/off | run IOPS | hedged | won | victim slow | victim state | fio errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
  jq -rs '
    (map(select(.hedge == "off")) | map({key: .psp, value: .iops_before}) | from_entries) as $off |
    .[] | "| \(.psp) | \(.hedge) | \(.max_clat_window_ms) | \(.max_clat_ms) | \(.iops_before) | \(if .hedge == "on" and ($off[.psp] // 0) > 0 then (.iops_before / $off[.psp] * 1000 | round / 1000 | tostring) else "–" end) | \(.iops) | \(.hedged) | \(.hedge_wins) | \(.victim_slow) | \(.victim_state) | \(.fio_error) |"' "$SUM"
  if [ -s "$BG" ]; then
    echo
    echo "Background (the floor): the same fio for ${HG_RUNTIME} s with no fault on bench/fuseceiling (go-fuse with the same"
    echo "options, no paths, no hedging), run just before each PSP's pair of runs:"
    echo
    echo "| before | IOPS | max read clat ms (same window) | max read clat ms (run) | p99.99 ms | p99.9 ms |"
    echo "|---|---:|---:|---:|---:|---:|"
    jq -r '"| \(.before) | \(.iops) | \(.max_clat_window_ms) | \(.max_clat_ms) | \(.p9999_ms) | \(.p999_ms) |"' "$BG"
  fi
  echo
  echo "Raw: bench/results/hedge.jsonl, bench/results/hedge-ceiling.jsonl."
} >"$SECT/hedge.md"
cat "$SECT/hedge.md" >&2
