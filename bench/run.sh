#!/usr/bin/env bash
# bench/run.sh [--quick] — `make bench` / `make bench-quick`.
#
# One interleaved run (round 1: every job on every target, round 2: …) of the
# standard fio job set (bench/fio-suite.sh over bench/jobs/*.fio: 4k randread QD1, 4k
# randwrite QD1, 4k randrw QD32×2, 1 MiB seq read QD8, 1 MiB seq write QD8;
# --direct=1, libaio) against one in-memory backing file reached as:
#   raw             the backing file itself
#   fuseceiling     bench/fuseceiling (go-fuse, fusedev's mount options)
#   mpathfs-1file   mpathfs, one file path
#   mpathfs-2file-rr    mpathfs, two file paths, VMW_PSP_RR iops=1
#   mpathfs-2file-rr1000  the same with RR's default iops=1000 (RR_COMPARE=1)
#   nbdfuse         nbdfuse --unix SOCK over `nbdkit -U SOCK file BACKING`
#   mpathfs-nbd     mpathfs, one NBD path to that same nbdkit
# then NBD rate aggregation (two rate-capped nbdkits, RR over both vs one),
# the nmp routing benchmark, and bench/failover.sh. Medians go to
# docs/benchmarks.md (bench-quick: /tmp/mpathfs-bench-quick.md).
#
# Knobs (env): ROUNDS [3] RUNTIME seconds per job [7; quick 2] RAMP [1; quick 0]
#   SIZE backing file [1G] JOBS [the five] RR_COMPARE [1; quick 0] RATE_ROUNDS [ROUNDS; quick 1]
#   PSPS for failover [all five; quick: FIXED, RR, queue-length] RATE nbdkit rate
#   filter, bits/s [400M] PARTS [main rate nmpbench failover iscsi nbdfloor] OUT [docs/benchmarks.md]
#   (iscsi: bench/iscsi.sh, array serve against tgt over iSCSI; nbdfloor:
#   bench/nbdfloor.sh, mpathfs-nbd against nbdfuse, fio's nbd engine and the
#   FUSE ceiling, with CPU per I/O)
#   KEEP_WORK=1 keeps the work directory (raw fio JSON, logs).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

QUICK=0
[ "${1:-}" = --quick ] && QUICK=1
ROUNDS=${ROUNDS:-3}
if [ $QUICK = 1 ]; then RUNTIME=${RUNTIME:-2}; RAMP=${RAMP:-0}; else RUNTIME=${RUNTIME:-7}; RAMP=${RAMP:-1}; fi
SIZE=${SIZE:-1G}
JOBS=${JOBS:-"randread4k randwrite4k randrw4k seqread1m seqwrite1m"}
if [ $QUICK = 1 ]; then RR_COMPARE=${RR_COMPARE:-0}; RATE_ROUNDS=${RATE_ROUNDS:-1}; else RR_COMPARE=${RR_COMPARE:-1}; RATE_ROUNDS=${RATE_ROUNDS:-$ROUNDS}; fi
RATE=${RATE:-400M}
RATE_4K=${RATE_4K:-100M}
PARTS=${PARTS:-"main rate nmpbench failover iscsi nbdfloor"}
if [ $QUICK = 1 ]; then OUT=${OUT:-/tmp/mpathfs-bench-quick.md}; SECT=${SECT:-/tmp/mpathfs-bench-quick}
else OUT=${OUT:-$REPO/docs/benchmarks.md}; SECT=${SECT:-$BENCH_DIR/results}; fi
CMDLINE="make $([ $QUICK = 1 ] && echo bench-quick || echo bench)  # ROUNDS=$ROUNDS RUNTIME=$RUNTIME RAMP=$RAMP SIZE=$SIZE RATE=$RATE"
export RUNTIME RAMP
mkdir -p "$SECT"

# assemble: docs/benchmarks.md from the sections that exist
assemble() {
  {
  echo "# Benchmarks"
  echo
  echo "Produced by \`make bench\` (bench/run.sh, bench/failover.sh, bench/iscsi.sh, bench/nbdfloor.sh); \`make bench-soak\` (bench/soak.sh), \`make bench-nbdcost\` (bench/nbdcost.sh) and \`make bench-profile\`"
  echo "(bench/profile.sh) add their sections; \`bash bench/run.sh --assemble-only\` re-assembles this file."
  echo "The fio job set is bench/fio-suite.sh over the fio job files in bench/jobs/; the header of each job file shows how to"
  echo "run it by hand, e.g. \`TARGET=/dev/shm/t.img SIZE=1G DIRECT=1 RUNTIME=7 RAMP=1 fio bench/jobs/randread4k.fio\`."
  echo "Sections are kept in bench/results/*.md and assembled here; the machine is shared and noisy, so compare"
  echo "numbers within one run only. Last assembled $STAMP on $MACHINE."
  echo
  for s in main main-notes rate failover failover-notes hedge hedge-notes iscsi iscsi-notes nbdfloor nbdfloor-notes soak soak-notes nbdcost nbdcost-notes profile profile-findings nmpbench; do
    [ -s "$SECT/$s.md" ] && { cat "$SECT/$s.md"; echo; }
  done
  } >"$OUT"
  log "wrote $OUT"
}

if [ "${1:-}" = --assemble-only ]; then
  STAMP="$(date -u '+%Y-%m-%d %H:%M UTC')"; MACHINE=$(machine_line); assemble; exit 0
fi

bench_setup "$SIZE"

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

# fio_line TARGET LABEL JOB NUMJOBS IODEPTH BS fio-args...: one JSON line in
# fio-suite.sh's shape, for jobs the suite does not have.
fio_line() {
  local target=$1 label=$2 job=$3 nj=$4 qd=$5 bs=$6; shift 6
  local out=$WORK/fio-$$.json
  timeout $((RUNTIME + RAMP + 60)) fio --name="$job" --filename="$target" --direct=1 --offset=0 \
    --allow_file_create=0 --fallocate=none --group_reporting --randrepeat=0 --size="$SIZE" \
    --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --numjobs="$nj" --iodepth="$qd" --bs="$bs" \
    --output-format=json --output="$out" "$@" >/dev/null 2>&1
  jq -c --arg lbl "$label" --arg job "$job" --arg target "$target" --argjson nj "$nj" --argjson qd "$qd" --arg bs "$bs" '
    def r1: (. * 10 | round) / 10;
    def side(s): {iops: (s.iops | round), mibs: (s.bw_bytes / 1048576 | r1),
      p50: ((s.clat_ns.percentile["50.000000"] // 0) / 1000 | r1),
      p99: ((s.clat_ns.percentile["99.000000"] // 0) / 1000 | r1), max: ((s.clat_ns.max // 0) / 1000 | r1)};
    .jobs[0] as $j | side($j.read) as $r | side($j.write) as $w |
    {label:$lbl, job:$job, target:$target, direct:1, engine:"libaio", numjobs:$nj, iodepth:$qd, bs:$bs,
     rd_iops:$r.iops, rd_mibs:$r.mibs, rd_p50_us:$r.p50, rd_p99_us:$r.p99, rd_max_us:$r.max,
     wr_iops:$w.iops, wr_mibs:$w.mibs, wr_p50_us:$w.p50, wr_p99_us:$w.p99, wr_max_us:$w.max,
     error:$j.error, note:""}' "$out" 2>/dev/null ||
    jq -cn --arg lbl "$label" --arg job "$job" '{label:$lbl, job:$job, error:1, note:"fio failed"}'
  rm -f "$out"
}

# suite_line TARGET LABEL JOB: one job of the suite (bench/fio-suite.sh)
suite_line() {
  JOBS=$3 timeout $((RUNTIME + RAMP + 90)) bash "$FIO_SUITE" "$1" "$2" "$SIZE" ||
    log "fio-suite $2 $3 reported an error"
}

# The jq that turns result lines into medians: per (label, job) the median of
# each metric over the rounds (each metric separately).
MEDIANS_JQ='
  def median: map(select(. != null)) | sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r1: if . == null then null else (. * 10 | round) / 10 end;
  map(select((.error // 0) == 0)) | group_by([.label, .job]) | map({
    label: .[0].label, job: .[0].job, n: length,
    iops: (map((.rd_iops // 0) + (.wr_iops // 0)) | median | round),
    mibs: (map((.rd_mibs // 0) + (.wr_mibs // 0)) | median | r1),
    rd_p50: (map(.rd_p50_us) | median | r1), rd_p99: (map(.rd_p99_us) | median | r1),
    wr_p50: (map(.wr_p50_us) | median | r1), wr_p99: (map(.wr_p99_us) | median | r1),
    iops_min: (map((.rd_iops // 0) + (.wr_iops // 0)) | min), iops_max: (map((.rd_iops // 0) + (.wr_iops // 0)) | max)})'

lat_cell() { # jq filter for "p50 / p99" of the relevant side(s)
  echo 'def lat(job): if (job|test("write")) then "\(.wr_p50) / \(.wr_p99)"
    elif (job|test("rw")) then "r \(.rd_p50) / \(.rd_p99), w \(.wr_p50) / \(.wr_p99)"
    else "\(.rd_p50) / \(.rd_p99)" end;'
}

job_desc() {
  case $1 in
    randread4k) echo "4k randread QD1";; randwrite4k) echo "4k randwrite QD1";;
    randrw4k) echo "4k randrw QD32×2";; seqread1m) echo "1 MiB seq read QD8";;
    seqwrite1m) echo "1 MiB seq write QD8";; randread4k16) echo "4k randread QD16 (cap $RATE_4K)";;
    randread4k16hi) echo "4k randread QD16 (cap $RATE)";; *) echo "$1";;
  esac
}

declare -A DEV_OF PID_OF MNT_OF RESTARTS
NBD_SOCK=""
# start_target LABEL [GEN]: (re)start one target of the main table
start_target() {
  local t=$1 g=${2:-0}
  case $t in
    raw) DEV_OF[$t]=$BACK; PID_OF[$t]=""; return ;;
    fuseceiling) start_fuseceiling "fc$g" "$BACK" "$WORK/mnt/fc$g"; DEV_OF[$t]=$FC_DEV; PID_OF[$t]=$FC_PID; MNT_OF[$t]=$WORK/mnt/fc$g; return ;;
    nbdfuse) start_nbdfuse "nbdfuse$g" "$WORK/mnt/nbdfuse$g" "$NBD_SOCK"; DEV_OF[$t]=$NF_DEV; PID_OF[$t]=$NF_PID; MNT_OF[$t]=$WORK/mnt/nbdfuse$g; return ;;
  esac
  local args=()
  case $t in
    mpathfs-1file) args=(--path "file://$BACK") ;;
    mpathfs-2file-rr) args=(--path "file://$BACK" --path "file://$BACK" --psp VMW_PSP_RR --psp-option iops=1) ;;
    mpathfs-2file-rr1000) args=(--path "file://$BACK" --path "file://$BACK" --psp VMW_PSP_RR) ;;
    mpathfs-nbd) args=(--path "nbd+unix:///?socket=$NBD_SOCK") ;;
  esac
  local tag=${t//mpathfs/mp}$g   # no "mpathfs" in our command lines (see lib.sh)
  start_mpathfs "$tag" "$WORK/mnt/$tag" "${args[@]}"
  DEV_OF[$t]=$MP_DEV; PID_OF[$t]=$MP_PID; MNT_OF[$t]=$WORK/mnt/$tag
}

target_ok() { # LABEL: its server is alive and its device file is there
  local t=$1
  [ -z "${PID_OF[$t]}" ] && return 0
  kill -0 "${PID_OF[$t]}" 2>/dev/null && timeout 5 test -e "${DEV_OF[$t]}"
}

# ensure_target LABEL: restart a target whose server died (something outside
# stopped it); nbdkit first for the NBD targets
ensure_target() {
  local t=$1
  if [[ $t == nbdfuse || $t == mpathfs-nbd ]] && ! kill -0 "$NK_MAIN_PID" 2>/dev/null; then
    log "nbdkit died; restarting it"
    bench_stop "$NK_MAIN_PID" ""
    start_nbdkit "nbdkit$RANDOM" "$NBD_SOCK" file "$BACK"; NK_MAIN_PID=$NK_PID
    # their connections died with it
    local n
    for n in nbdfuse mpathfs-nbd; do
      RESTARTS[$n]=$(( ${RESTARTS[$n]:-0} + 1 ))
      bench_stop "${PID_OF[$n]}" "${MNT_OF[$n]}"
      start_target "$n" "${RESTARTS[$n]}"
    done
  fi
  target_ok "$t" && return 0
  RESTARTS[$t]=$(( ${RESTARTS[$t]:-0} + 1 ))
  log "target $t is gone (server PID ${PID_OF[$t]}); restarting it (restart ${RESTARTS[$t]})"
  bench_stop "${PID_OF[$t]}" "${MNT_OF[$t]}"
  start_target "$t" "${RESTARTS[$t]}"
}

part_main() {
  local res=$SECT/main.jsonl
  : >"$res"
  NBD_SOCK=$WORK/nbd.sock
  TARGETS=(raw)
  [ "$HAVE_FUSECEILING" = 1 ] && TARGETS+=(fuseceiling)
  TARGETS+=(mpathfs-1file mpathfs-2file-rr)
  [ "$RR_COMPARE" = 1 ] && TARGETS+=(mpathfs-2file-rr1000)
  TARGETS+=(nbdfuse mpathfs-nbd)
  start_nbdkit nbdkit "$NBD_SOCK" file "$BACK"; NK_MAIN_PID=$NK_PID
  local t
  for t in "${TARGETS[@]}"; do start_target "$t"; done
  log "main: ${#TARGETS[@]} targets × $(wc -w <<<"$JOBS") jobs × $ROUNDS rounds × ${RUNTIME}+${RAMP} s"
  local r j i
  for r in $(seq "$ROUNDS"); do
    for j in $JOBS; do
      for t in "${TARGETS[@]}"; do
        local line try
        for try in 1 2; do
          ensure_target "$t"
          line=$(suite_line "${DEV_OF[$t]}" "$t" "$j" | jq -c --argjson r "$r" '. + {round: $r}')
          target_ok "$t" && { [[ $t != nbdfuse && $t != mpathfs-nbd ]] || kill -0 "$NK_MAIN_PID" 2>/dev/null; } && break
          log "target $t died during $j (round $r); rerunning the job"
        done
        echo "$line" >>"$res"
        jq -r '"\(.label) \(.job) r'"$r"': \((.rd_iops // 0) + (.wr_iops // 0)) IOPS \((.rd_mibs // 0) + (.wr_mibs // 0)) MiB/s err=\(.error)"' <<<"$line" >&2
      done
    done
  done
  # per-path split of the RR mounts, as a sanity check that both paths carried I/O
  local rrsplit
  rrsplit=$(timeout 10 "$MPATHFS" status --json --control "$WORK/mp-2file-rr${RESTARTS[mpathfs-2file-rr]:-0}.sock" |
    jq -r '.devices[0].paths | map("\(.name): \(.reads + .writes) I/Os") | join(", ")')
  stop_all

  local med=$WORK/main-medians.json
  jq -s "$MEDIANS_JQ" "$res" >"$med"
  {
    echo "## Against the peers (medians of $ROUNDS interleaved rounds)"
    echo
    echo "- Date: $STAMP. Machine: $MACHINE."
    echo "- Command: \`$CMDLINE\` (bench/run.sh, part \`main\`)."
    echo "- One backing file of $SIZE in /dev/shm (tmpfs), filled with random data; every target reaches that"
    echo "  file. fio: \`bench/fio-suite.sh TARGET LABEL $SIZE\` with \`JOBS=<job> RUNTIME=$RUNTIME RAMP=$RAMP\` (job files in bench/jobs/)"
    echo "  (--direct=1; QD1 jobs psync, the others libaio). Order within a round: for each job, every target in turn."
    echo "- IOPS and MiB/s are read+write; latencies are fio completion latency (clat) p50 / p99 in µs, each the median"
    echo "  over the rounds on its own. min–max is the spread of IOPS over the rounds."
    echo "- Targets: raw = the file; fuseceiling = bench/fuseceiling (go-fuse with fusedev's mount options);"
    echo "  mpathfs-1file = \`mpathfs mount --path file://BACKING\`; mpathfs-2file-rr = two file paths, \`--psp VMW_PSP_RR"
    echo "  --psp-option iops=1\`; mpathfs-2file-rr1000 = the same with RR's default iops=1000; nbdfuse = \`nbdfuse MNT --unix S\`"
    echo "  over \`nbdkit -f -U S file BACKING\` (nbdfuse multi-conn: 4 connections); mpathfs-nbd = \`--path nbd+unix:///?socket=S\`"
    echo "  to the same nbdkit (one connection)."
    echo "- Per-path split on mpathfs-2file-rr at the end: $rrsplit."
    local rs=""; for t in "${!RESTARTS[@]}"; do rs+="$t ×${RESTARTS[$t]} "; done
    [ -n "$rs" ] && echo "- Targets restarted after something outside stopped them (the job was rerun): $rs."
    echo
    echo "| job | target | IOPS | MiB/s | p50 / p99 µs | IOPS min–max | n |"
    echo "|---|---|---:|---:|---|---|---:|"
    local j t
    for j in $JOBS; do
      for t in "${TARGETS[@]}"; do
        jq -r --arg j "$j" --arg t "$t" --arg d "$(job_desc "$j")" "$(lat_cell)"'
          .[] | select(.job == $j and .label == $t) |
          "| \($d) | \(.label) | \(.iops) | \(.mibs) | \(lat($j)) | \(.iops_min)–\(.iops_max) | \(.n) |"' "$med"
      done
    done
    echo
    echo "Ratios of median IOPS (1 MiB jobs: the same as MiB/s):"
    echo
    echo "| job | 2file-rr / fuseceiling | 1file / fuseceiling | 1file / nbdfuse | 2file-rr / nbdfuse | mpathfs-nbd / nbdfuse | rr iops=1 / iops=1000 | fuseceiling / raw |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for j in $JOBS; do
      jq -r --arg j "$j" --arg d "$(job_desc "$j")" '
        map(select(.job == $j)) | (map({key: .label, value: .iops}) | from_entries) as $m |
        def ratio(a; b): if ($m[a] // 0) > 0 and ($m[b] // 0) > 0 then ($m[a] / $m[b] * 100 | round) / 100 | tostring else "–" end;
        "| \($d) | \(ratio("mpathfs-2file-rr"; "fuseceiling")) | \(ratio("mpathfs-1file"; "fuseceiling")) | \(ratio("mpathfs-1file"; "nbdfuse")) | \(ratio("mpathfs-2file-rr"; "nbdfuse")) | \(ratio("mpathfs-nbd"; "nbdfuse")) | \(ratio("mpathfs-2file-rr"; "mpathfs-2file-rr1000")) | \(ratio("fuseceiling"; "raw")) |"' "$med"
    done
    echo
    echo "Raw per-round lines: bench/results/main.jsonl (fio-suite.sh's JSON shape plus \"round\")."
  } >"$SECT/main.md"
  cat "$SECT/main.md" >&2
}

part_rate() {
  local res=$SECT/rate.jsonl
  : >"$res"
  # the rate is read from rate-file (re-read by nbdkit at run time): RATE for
  # the 1 MiB job, RATE_4K for the 4k job, low enough that the cap and not
  # the CPU (2 cores shared by fio, mpathfs and two nbdkits) is the limit
  set_rate() { echo "$1" >"$WORK/rate.new" && mv "$WORK/rate.new" "$WORK/rate"; sleep 2; }
  echo "$RATE" >"$WORK/rate"
  start_nbdkit rate1 "$WORK/rate1.sock" --filter=rate file "$BACK" rate="$RATE" rate-file="$WORK/rate"
  start_nbdkit rate2 "$WORK/rate2.sock" --filter=rate file "$BACK" rate="$RATE" rate-file="$WORK/rate"
  local RAMP=$RAMP; [ "$RAMP" -lt 2 ] && RAMP=2   # drain the token bucket's initial burst
  start_mpathfs rp1 "$WORK/mnt/rp1" --path "nbd+unix:///?socket=$WORK/rate1.sock"
  local dev1=$MP_DEV
  start_mpathfs rp2 "$WORK/mnt/rp2" --path "nbd+unix:///?socket=$WORK/rate1.sock" \
    --path "nbd+unix:///?socket=$WORK/rate2.sock" --psp VMW_PSP_RR --psp-option iops=1
  local dev2=$MP_DEV
  log "rate: 2 targets × 3 jobs × $RATE_ROUNDS rounds, nbdkit rate=$RATE bits/s each"
  local r
  for r in $(seq "$RATE_ROUNDS"); do
    for lbl in nbd-1path nbd-2path-rr; do
      local d=$dev1; [ $lbl = nbd-2path-rr ] && d=$dev2
      set_rate "$RATE"
      RAMP=$RAMP suite_line "$d" "$lbl" seqread1m | jq -c --argjson r "$r" '. + {round: $r}' >>"$res"
      fio_line "$d" "$lbl" randread4k16hi 1 16 4k --rw=randread --ioengine=libaio |
        jq -c --argjson r "$r" '. + {round: $r}' >>"$res"
      set_rate "$RATE_4K"
      fio_line "$d" "$lbl" randread4k16 1 16 4k --rw=randread --ioengine=libaio |
        jq -c --argjson r "$r" '. + {round: $r}' >>"$res"
      tail -3 "$res" | jq -r '"\(.label) \(.job) r'"$r"': \(.rd_iops) IOPS \(.rd_mibs) MiB/s"' >&2
    done
  done
  local split
  split=$(timeout 10 "$MPATHFS" status --json --control "$WORK/rp2.sock" |
    jq -r '.devices[0].paths | map("\(.name): \(.read_bytes / 1048576 | floor) MiB") | join(", ")')
  stop_all
  local med=$WORK/rate-medians.json
  jq -s "$MEDIANS_JQ" "$res" >"$med"
  local cap
  local cap cap4k
  cap4k=$(awk -v r="$RATE_4K" 'BEGIN { m = r + 0; u = substr(r, length(r)); if (u == "M") m *= 1e6; else if (u == "G") m *= 1e9; else if (u == "K" || u == "k") m *= 1e3; printf "%.1f", m / 8 / 1048576 }')
  cap=$(awk -v r="$RATE" 'BEGIN { m = r + 0; u = substr(r, length(r)); if (u == "M") m *= 1e6; else if (u == "G") m *= 1e9; else if (u == "K" || u == "k") m *= 1e3; printf "%.1f", m / 8 / 1048576 }')
  {
    echo "## NBD rate aggregation"
    echo
    echo "- Date: $STAMP. Machine: $MACHINE. Command: \`$CMDLINE\` (part \`rate\`)."
    echo "- Two servers on Unix sockets serving the same file: \`nbdkit -f -U S1 --filter=rate file BACKING rate=$RATE rate-file=R\`"
    echo "  and the same on S2 — each capped at $RATE bits/s ≈ $cap MiB/s for the 1 MiB job and, through the rate file, at"
    echo "  $RATE_4K bits/s ≈ $cap4k MiB/s for a second 4k run: at $RATE one path's cap is ≈ $(awk -v c="$cap" 'BEGIN {printf "%.0f", c * 256}') 4k IOPS, about"
    echo "  what mpathfs over NBD reaches on these 2 cores anyway (fio, mpathfs and two nbdkits share them), so that row"
    echo "  measures the CPU, not the aggregation. nbd-1path = \`mpathfs mount --path nbd+unix:///?socket=S1\`;"
    echo "  nbd-2path-rr = \`--path …S1 --path …S2 --psp VMW_PSP_RR --psp-option iops=1\`. Medians of $RATE_ROUNDS interleaved rounds,"
    echo "  RUNTIME=$RUNTIME s, RAMP=$RAMP s (at least 2 s, to drain the token bucket's initial burst). 1 MiB seq read QD8 from fio-suite.sh; 4k randread QD16 is the same fio"
    echo "  invocation with \`--rw=randread --bs=4k --iodepth=16 --ioengine=libaio\`."
    echo "- Bytes read per path on nbd-2path-rr at the end: $split."
    echo
    echo "| job | 1 path MiB/s (IOPS) | 2 paths RR MiB/s (IOPS) | 2 paths / 1 path | cap per path MiB/s |"
    echo "|---|---:|---:|---:|---:|"
    for j in seqread1m randread4k16hi randread4k16; do
      local c=$cap; [ $j = randread4k16 ] && c=$cap4k
      jq -r --arg j "$j" --arg d "$(job_desc $j)" --arg cap "$c" '
        map(select(.job == $j)) | (map({key: .label, value: .}) | from_entries) as $m |
        ($m["nbd-1path"] // {}) as $a | ($m["nbd-2path-rr"] // {}) as $b |
        "| \($d) | \($a.mibs) (\($a.iops)) | \($b.mibs) (\($b.iops)) | \(if ($a.mibs // 0) > 0 then ($b.mibs / $a.mibs * 100 | round) / 100 else "–" end)× | \($cap) |"' "$med"
    done
    echo
    echo "Raw per-round lines: bench/results/rate.jsonl."
  } >"$SECT/rate.md"
  cat "$SECT/rate.md" >&2
}

part_nmpbench() {
  local out
  out=$(cd "$REPO" && timeout 300 $GO test -run '^$' -bench . -benchmem ./nmp ./bench 2>&1)
  {
    echo "## Routing path micro-benchmark"
    echo
    echo "- Date: $STAMP. Machine: $MACHINE. Command: \`go test -run '^\$' -bench . -benchmem ./nmp ./bench\` (BenchmarkDeviceRead in bench/routing_test.go: one path, file or NBD to nbdkit; ns/op are noisy here, allocs/op are the point)."
    echo
    echo '```'
    grep -E '^(Benchmark|goos|goarch|cpu|ok|FAIL|---)' <<<"$out"
    echo '```'
  } >"$SECT/nmpbench.md"
  cat "$SECT/nmpbench.md" >&2
}

has_part main && part_main
has_part rate && part_rate
has_part nmpbench && part_nmpbench
if has_part failover; then
  [ $QUICK = 1 ] && export PSPS=${PSPS:-"VMW_PSP_FIXED VMW_PSP_RR queue-length"}
  FO_QUICK=$QUICK SECT=$SECT STAMP=$STAMP CMDLINE=$CMDLINE bash "$BENCH_DIR/failover.sh" || log "failover.sh failed"
fi
if has_part iscsi; then
  [ $QUICK = 1 ] && export IS_ROUNDS=${IS_ROUNDS:-1} IS_SECONDS=${IS_SECONDS:-2}
  SECT=$SECT OUT=$OUT bash "$BENCH_DIR/iscsi.sh" || log "iscsi.sh failed"
fi
if has_part nbdfloor; then
  [ $QUICK = 1 ] && export NF_ROUNDS=${NF_ROUNDS:-2}
  # its own work directory and processes; RAMP 0 (CPU and I/Os over the same time)
  (unset WORK; SECT=$SECT NF_ASSEMBLE=0 RAMP=0 CMDLINE="$CMDLINE (part nbdfloor: bench/nbdfloor.sh)" \
    bash "$BENCH_DIR/nbdfloor.sh") || log "nbdfloor.sh failed"
fi

assemble
