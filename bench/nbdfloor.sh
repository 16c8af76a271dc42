#!/usr/bin/env bash
# bench/nbdfloor.sh — `make bench-nbdfloor` (and part `nbdfloor` of `make
# bench`): the NBD path held against its floor. One `nbdkit file` on a Unix
# socket serves an in-memory backing file; the targets, interleaved (round
# 1: every job on every target, round 2: …):
#   fio-nbd      fio's nbd engine (libnbd) straight to that nbdkit: no FUSE,
#                no kernel — the floor of the NBD hop
#   fuseceiling  bench/fuseceiling over the backing file: the FUSE hop alone
#   nbdfuse      nbdfuse over the same nbdkit (the peer)
#   mpathfs-nbd  `mpathfs mount --path nbd+unix:///?socket=S` to the same nbdkit
# Jobs: bench/fio-suite.sh's (JOBS; 4k randread QD1 first). For every run,
# the CPU time of the serving daemon and of nbdkit, from utime+stime in
# /proc/PID/stat before and after, divided by the run's I/Os (fio's
# total_ios): CPU per I/O. RAMP defaults to 0 here so that the CPU counted
# and the I/Os counted cover the same time.
# Goals for mpathfs-nbd: QD1 latency (p50) within 10 % of fuseceiling + floor,
# and at least 1.5× nbdfuse's IOPS on every job; the table prints each ratio.
# Writes $SECT/nbdfloor.md (bench/results/ by default) and, run alone,
# re-assembles docs/benchmarks.md.
#
# Knobs (env): NF_ROUNDS [3] RUNTIME seconds per job [5] RAMP [0] SIZE [1G]
#   JOBS [randread4k randwrite4k randrw4k seqread1m seqwrite1m] SECT
#   NF_BASE=BINARY adds the target mpathfs-nbd-base: the same mount served by
#   another mpathfs binary (one built from an earlier commit), for a
#   before/after of a change in the same run
set -uo pipefail
{ # the whole script is one compound command: bash reads it before it runs,
# so editing this file during a run does not change that run
source "$(dirname "$0")/lib.sh"
NF_ROUNDS=${NF_ROUNDS:-3}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-0}
SIZE=${SIZE:-1G}
JOBS=${JOBS:-"randread4k randwrite4k randrw4k seqread1m seqwrite1m"}
SECT=${SECT:-$BENCH_DIR/results}
NF_BASE_DESC=${NF_BASE_DESC:-${NF_BASE:-}}
CMDLINE=${CMDLINE:-"make bench-nbdfloor  # NF_ROUNDS=$NF_ROUNDS RUNTIME=$RUNTIME RAMP=$RAMP SIZE=$SIZE"}
mkdir -p "$SECT"
command -v fio >/dev/null && ! fio --enghelp=nbd >/dev/null 2>&1 &&
  die "this fio has no nbd engine (Debian's fio has it: apt-get install fio)"

bench_setup "$SIZE"
[ "$HAVE_FUSECEILING" = 1 ] || die "bench/fuseceiling does not build: the FUSE hop cannot be measured"
LOAD_START=$(load_line)

SOCK=$WORK/nbd.sock
start_nbdkit nbdkit "$SOCK" file "$BACK"
NK=$NK_PID
start_fuseceiling fc "$BACK" "$WORK/mnt/fc"
start_nbdfuse nbdfuse "$WORK/mnt/nf" "$SOCK"
start_mpathfs mpnbd "$WORK/mnt/mpnbd" --path "nbd+unix:///?socket=$SOCK"
TARGETS=(fio-nbd fuseceiling nbdfuse mpathfs-nbd)
declare -A DEV=([fio-nbd]="nbd+unix:///?socket=$SOCK" [fuseceiling]=$FC_DEV [nbdfuse]=$NF_DEV [mpathfs-nbd]=$MP_DEV)
declare -A PID=([fio-nbd]="" [fuseceiling]=$FC_PID [nbdfuse]=$NF_PID [mpathfs-nbd]=$MP_PID)
if [ -n "${NF_BASE:-}" ]; then
  [ -x "$NF_BASE" ] || die "NF_BASE=$NF_BASE is not an executable mpathfs binary"
  cp "$NF_BASE" "$WORK/mpb-base" # a private copy, as lib.sh's (no "mpathfs" in the name)
  cur=$MPATHFS; MPATHFS=$WORK/mpb-base
  start_mpathfs mpbase "$WORK/mnt/mpbase" --path "nbd+unix:///?socket=$SOCK"
  MPATHFS=$cur
  TARGETS+=(mpathfs-nbd-base)
  DEV[mpathfs-nbd-base]=$MP_DEV PID[mpathfs-nbd-base]=$MP_PID
fi

RES=$WORK/nbdfloor.jsonl
: >"$RES"
log "nbdfloor: ${#TARGETS[@]} targets × $(wc -w <<<"$JOBS") jobs × $NF_ROUNDS rounds × ${RUNTIME}+${RAMP} s"
for r in $(seq "$NF_ROUNDS"); do
  for j in $JOBS; do
    for t in "${TARGETS[@]}"; do
      pid=${PID[$t]}
      if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then die "the $t daemon (PID $pid) is gone"; fi
      kill -0 "$NK" 2>/dev/null || die "nbdkit (PID $NK) is gone"
      d0="" c0=""; [ -n "$pid" ] && d0=$(cpu_ticks "$pid") c0=$(ctx_switches "$pid")
      k0=$(cpu_ticks "$NK")
      line=$(JOBS=$j RAWDIR=$WORK/raw RUNTIME=$RUNTIME RAMP=$RAMP timeout $((RUNTIME + RAMP + 90)) \
        bash "$FIO_SUITE" "${DEV[$t]}" "$t" "$SIZE")
      d1="" c1=""; [ -n "$pid" ] && d1=$(cpu_ticks "$pid") c1=$(ctx_switches "$pid")
      k1=$(cpu_ticks "$NK")
      ios=$(sed -n '/^{/,$p' "$WORK/raw/$t.$j.json" 2>/dev/null | jq '.jobs[0] | (.read.total_ios // 0) + (.write.total_ios // 0)' 2>/dev/null)
      [ -n "$line" ] || line=$(jq -nc --arg l "$t" --arg j "$j" '{label: $l, job: $j, error: 1, note: "fio-suite gave no line"}')
      # CPU µs per I/O: ticks × 1e6 / CLK_TCK / I/Os (null where there is no daemon or no I/O)
      line=$(jq -c --argjson r "$r" --argjson ios "${ios:-0}" --argjson tck "$CLK_TCK" \
        --arg d0 "$d0" --arg d1 "$d1" --arg k0 "$k0" --arg k1 "$k1" --arg c0 "$c0" --arg c1 "$c1" '
        def per(a; b): if a == "" or b == "" or $ios == 0 then null
          else (((b | tonumber) - (a | tonumber)) * 1e6 / $tck / $ios * 10 | round) / 10 end;
        def cs(a; b): if a == "" or b == "" or $ios == 0 then null
          else (((b | tonumber) - (a | tonumber)) / $ios * 100 | round) / 100 end;
        . + {round: $r, ios: $ios, daemon_cpu_us: per($d0; $d1), nbdkit_cpu_us: per($k0; $k1),
             daemon_cs: cs($c0; $c1)}' <<<"$line")
      echo "$line" >>"$RES"
      jq -r '"\(.label) \(.job) r\(.round): \((.rd_iops // 0) + (.wr_iops // 0)) IOPS, CPU/I/O daemon \(.daemon_cpu_us) µs, nbdkit \(.nbdkit_cpu_us) µs, err=\(.error)"' <<<"$line" >&2
    done
  done
done
stop_all
LOAD_END=$(load_line)
cp "$RES" "$SECT/nbdfloor.jsonl"

MED=$WORK/nbdfloor-medians.json
jq -s '
  def median: map(select(. != null)) | sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def r1: if . == null then null else (. * 10 | round) / 10 end;
  map(select((.error // 0) == 0)) | group_by([.label, .job]) | map({
    label: .[0].label, job: .[0].job, n: length,
    iops: (map((.rd_iops // 0) + (.wr_iops // 0)) | median | round),
    mibs: (map((.rd_mibs // 0) + (.wr_mibs // 0)) | median | r1),
    p50: (map(if (.job | test("write")) then .wr_p50_us else .rd_p50_us end) | median | r1),
    p99: (map(if (.job | test("write")) then .wr_p99_us else .rd_p99_us end) | median | r1),
    dcpu: (map(.daemon_cpu_us) | median | r1), kcpu: (map(.nbdkit_cpu_us) | median | r1),
    dcs: (map(.daemon_cs) | median)})' "$RES" >"$MED"

job_desc() {
  case $1 in
    randread4k) echo "4k randread QD1" ;; randwrite4k) echo "4k randwrite QD1" ;;
    randrw4k) echo "4k randrw QD32×2" ;; seqread1m) echo "1 MiB seq read QD8" ;;
    seqwrite1m) echo "1 MiB seq write QD8" ;; *) echo "$1" ;;
  esac
}

{
  echo "## The NBD hop against its floor (bench/nbdfloor.sh)"
  echo
  echo "- Date: $STAMP. Machine: $MACHINE. Command: \`$CMDLINE\`."
  echo "- Load average (1/5/15 min) before: $LOAD_START; after: $LOAD_END. The machine is shared: compare within"
  echo "  this run only — the ratios, not the absolute figures, are the result."
  echo "- One \`nbdkit -f -U S file BACKING\` ($SIZE in /dev/shm). fio-nbd = fio's nbd engine (libnbd) with \`uri=nbd+unix:///?socket=S\`:"
  echo "  the NBD hop alone, the floor; fuseceiling = bench/fuseceiling over BACKING: the FUSE hop alone; nbdfuse = \`nbdfuse MNT"
  echo "  --unix S\`; mpathfs-nbd = \`mpathfs mount --path nbd+unix:///?socket=S\`${NF_BASE:+; mpathfs-nbd-base = the same mount served by $NF_BASE_DESC}. Jobs: bench/fio-suite.sh (the QD1 jobs psync,"
  echo "  fio-nbd at the same iodepth with the nbd engine), RUNTIME=$RUNTIME RAMP=$RAMP, medians of $NF_ROUNDS interleaved rounds."
  echo "- CPU per I/O: utime+stime of the process (/proc/PID/stat, all threads) before and after the fio run ÷ the run's"
  echo "  I/Os; daemon = the FUSE server (fuseceiling, nbdfuse, mpathfs); nbdkit = the server behind it. Resolution:"
  echo "  one clock tick ($((1000 / CLK_TCK)) ms) per run. Switches: voluntary + involuntary context switches of the daemon's"
  echo "  threads (/proc/PID/task/*/status) per I/O."
  echo
  echo "| job | target | IOPS | MiB/s | p50 / p99 µs | daemon CPU µs/I/O | daemon switches/I/O | nbdkit CPU µs/I/O | n |"
  echo "|---|---|---:|---:|---|---:|---:|---:|---:|"
  for j in $JOBS; do
    for t in "${TARGETS[@]}"; do
      jq -r --arg j "$j" --arg t "$t" --arg d "$(job_desc "$j")" '
        .[] | select(.job == $j and .label == $t) |
        "| \($d) | \(.label) | \(.iops) | \(.mibs) | \(.p50) / \(.p99) | \(.dcpu // "–") | \(.dcs // "–") | \(.kcpu // "–") | \(.n) |"' "$MED"
    done
  done
  echo
  echo "Goals for mpathfs-nbd, per job (latency: p50; \"floor\" = fio-nbd):"
  echo
  echo "| job | fuseceiling + floor p50 µs | mpathfs-nbd p50 µs | mpathfs-nbd / (fuseceiling + floor) (goal ≤ 1.10 at QD1) | mpathfs-nbd / nbdfuse IOPS (goal ≥ 1.5) | nbdfuse / (fuseceiling + floor) | CPU µs/I/O mpathfs-nbd / nbdfuse |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for j in $JOBS; do
    jq -r --arg j "$j" --arg d "$(job_desc "$j")" '
      def r2: (. * 100 | round) / 100;
      map(select(.job == $j)) | (map({key: .label, value: .}) | from_entries) as $m |
      ($m["fio-nbd"] // {}) as $f | ($m["fuseceiling"] // {}) as $c | ($m["nbdfuse"] // {}) as $n | ($m["mpathfs-nbd"] // {}) as $p |
      (if ($f.p50 // 0) > 0 and ($c.p50 // 0) > 0 then ($f.p50 + $c.p50) else null end) as $sum |
      def ratio(a; b): if a != null and b != null and b > 0 then (a / b | r2 | tostring) else "–" end;
      "| \($d) | \(if $sum then ($sum * 10 | round) / 10 else "–" end) | \($p.p50 // "–") | \(ratio($p.p50; $sum)) | \(ratio($p.iops; $n.iops)) | \(ratio($n.p50; $sum)) | \(if $p.dcpu != null and $n.dcpu != null then "\($p.dcpu) / \($n.dcpu)" else "–" end) |"' "$MED"
  done
  if [ -n "${NF_BASE:-}" ]; then
    echo
    echo "Before/after: mpathfs-nbd against mpathfs-nbd-base ($NF_BASE_DESC), same run:"
    echo
    echo "| job | IOPS after / before | p50 µs after / before | daemon CPU µs/I/O after / before | switches/I/O after / before |"
    echo "|---|---:|---:|---:|---:|"
    for j in $JOBS; do
      jq -r --arg j "$j" --arg d "$(job_desc "$j")" '
        map(select(.job == $j)) | (map({key: .label, value: .}) | from_entries) as $m |
        ($m["mpathfs-nbd"] // {}) as $a | ($m["mpathfs-nbd-base"] // {}) as $b |
        def ratio(x; y): if x != null and y != null and y > 0 then ((x / y * 100 | round) / 100 | tostring) else "–" end;
        "| \($d) | \($a.iops) / \($b.iops) = \(ratio($a.iops; $b.iops)) | \($a.p50) / \($b.p50) | \($a.dcpu) / \($b.dcpu) = \(ratio($a.dcpu; $b.dcpu)) | \($a.dcs) / \($b.dcs) |"' "$MED"
    done
  fi
  echo
  echo "Raw per-round lines: bench/results/nbdfloor.jsonl (fio-suite.sh's JSON shape plus round, ios, daemon_cpu_us, nbdkit_cpu_us)."
} >"$SECT/nbdfloor.md"
cat "$SECT/nbdfloor.md" >&2
# run alone on the real sections: re-assemble docs/benchmarks.md
if [ "${NF_ASSEMBLE:-1}" = 1 ] && [ "$SECT" = "$BENCH_DIR/results" ]; then
  OUT=$REPO/docs/benchmarks.md bash "$BENCH_DIR/run.sh" --assemble-only
fi
exit
}
