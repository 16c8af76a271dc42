#!/usr/bin/env bash
# bench/iscsi.sh — `make bench-iscsi` (and the iscsi part of `make bench`):
# the array server against Debian's tgt (the peer) over iSCSI on 127.0.0.1,
# both serving the same in-memory store file, measured by clients neither of
# us wrote:
#   reads   libiscsi's iscsi-perf: 4k random read at QD1 and QD32, 1 MiB
#           sequential read at QD8
#   writes  iscsi-perf only reads, and Debian's fio has no libiscsi engine,
#           so fio's nbd engine (libnbd) drives qemu-nbd, which reaches the
#           target through QEMU's own iSCSI block driver (libiscsi; Debian
#           package qemu-block-extra): 4k random write at QD1 and QD32, 1 MiB
#           sequential write at QD8. One qemu-nbd per target, started the same
#           way (--cache=none), so the client chain is the same on both sides
#           and the ratio compares the targets.
# Rounds interleave the two targets; the table shows medians and ours/tgt
# ratios, and the load average before and after. Writes
# bench/results/iscsi.md and re-assembles docs/benchmarks.md.
#
# Knobs (env): IS_ROUNDS [3] IS_SECONDS per job [5] IS_SIZE store [512M]
#   IS_WRITES [1]: 0 leaves the write jobs out
set -uo pipefail
source "$(dirname "$0")/lib.sh"
IS_ROUNDS=${IS_ROUNDS:-3}
IS_SECONDS=${IS_SECONDS:-5}
IS_SIZE=${IS_SIZE:-512M}
IS_WRITES=${IS_WRITES:-1}
SECT=${SECT:-$BENCH_DIR/results}
mkdir -p "$SECT"

bench_workdir
for t in iscsi-perf:libiscsi-bin tgtd:tgt tgtadm:tgt jq:jq fio:fio; do
  command -v "${t%%:*}" >/dev/null && continue
  [ "$(id -u)" = 0 ] || die "missing ${t%%:*} (Debian package ${t#*:}) and not root"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${t#*:}" >/dev/null || die "apt-get install ${t#*:} failed"
done
# the write client: qemu-nbd with QEMU's iSCSI driver, fio with the nbd engine
if [ "$IS_WRITES" = 1 ]; then
  if ! command -v qemu-nbd >/dev/null || ! ls /usr/lib/*/qemu/block-iscsi.so >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "writes need qemu-nbd with the iSCSI driver (Debian packages qemu-utils qemu-block-extra) and we are not root; or set IS_WRITES=0"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-utils qemu-block-extra >/dev/null ||
      die "apt-get install qemu-utils qemu-block-extra failed"
  fi
  fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd engine (needed for the write jobs); set IS_WRITES=0"
fi
(cd "$REPO" && $GO build -o bin/mpathfs ./cmd/mpathfs) || die "go build ./cmd/mpathfs failed"
cp "$REPO/bin/mpathfs" "$WORK/mpb" # a private copy: nothing stops it by name
BACK=$WORK/store.img
make_backing "$BACK" "$IS_SIZE"
STAMP="$(date -u '+%Y-%m-%d %H:%M UTC')"
MACHINE=$(machine_line)
LOAD_START=$(load_line)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# tgt: its own management socket (-C N), one LUN on the store
TGT_PORT=$(free_port)
TGT_CTL=""
for i in $(seq 50); do
  n=$((1000 + RANDOM % 31000))
  [ -e "/var/run/tgtd/socket.$n" ] || { TGT_CTL=$n; break; }
done
[ -n "$TGT_CTL" ] || die "no free tgtd management port"
tgtd -f -C "$TGT_CTL" --iscsi "portal=127.0.0.1:$TGT_PORT" >"$WORK/tgtd.log" 2>&1 &
TGT_PID=$!; BENCH_PIDS+=("$TGT_PID")
tgtcleanup() { rm -f "/var/run/tgtd/socket.$TGT_CTL" "/var/run/tgtd/socket.$TGT_CTL.lock"; }
adm() { tgtadm -C "$TGT_CTL" --lld iscsi "$@"; }
for i in $(seq 100); do adm --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
TGT_IQN=iqn.2026-12.io.mpathfs.bench:tgt
adm --op new --mode target --tid 1 -T "$TGT_IQN" &&
  adm --op new --mode logicalunit --tid 1 --lun 1 -b "$BACK" &&
  adm --op bind --mode target --tid 1 -I ALL || { cat "$WORK/tgtd.log" >&2; tgtcleanup; die "tgt setup failed"; }

# ours: the same store, the AO port of controller A
cat >"$WORK/array.yaml" <<YAML
target: iqn.2026-12.io.mpathfs.bench:array
state_dir: $WORK/array-state
lus:
  - {name: bench, lun: 0, file: $BACK, create: false}
controllers:
  - {name: A, ports: [{id: 1, portal: "127.0.0.1:0"}]}
  - {name: B, ports: [{id: 2, portal: "127.0.0.1:0"}]}
YAML
"$WORK/mpb" array serve --config "$WORK/array.yaml" --control "$WORK/array.sock" >"$WORK/array.log" 2>"$WORK/array.err" &
AS_PID=$!; BENCH_PIDS+=("$AS_PID")
for i in $(seq 100); do grep -q '^ready' "$WORK/array.log" && break; sleep 0.1; done
grep -q '^ready' "$WORK/array.log" || { cat "$WORK/array.log" "$WORK/array.err" >&2; tgtcleanup; die "array serve did not start"; }
AS_PORTAL=$(awk '$1 == "portal" && $4 == 1 {print $2}' "$WORK/array.log")

declare -A URL=(
  [array-serve]="iscsi://$AS_PORTAL/iqn.2026-12.io.mpathfs.bench:array/0"
  [tgt]="iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/1"
)
# qemu-nbd per target: QEMU's iSCSI driver (libiscsi) logs in, fio's nbd
# engine drives it over a Unix socket. -t: it serves one fio after another.
declare -A NBDURI=()
if [ "$IS_WRITES" = 1 ]; then
  qn=0
  for lbl in array-serve tgt; do
    url=${URL[$lbl]#iscsi://}
    portal=${url%%/*} rest=${url#*/}
    iqn=${rest%/*} lun=${rest##*/}
    qn=$((qn + 1))
    sock=$WORK/qnbd$qn.sock
    qemu-nbd -t -e 2 --cache=none -k "$sock" --image-opts \
      "driver=iscsi,transport=tcp,portal=$portal,target=$iqn,lun=$lun,initiator-name=iqn.2026-12.io.mpathfs.bench:qemu$qn" \
      >"$WORK/qnbd$qn.log" 2>&1 &
    BENCH_PIDS+=("$!")
    wait_for "$sock" 20 "$!" || { cat "$WORK/qnbd$qn.log" >&2; tgtcleanup; die "qemu-nbd did not start for $lbl (${URL[$lbl]})"; }
    NBDURI[$lbl]="nbd+unix:///?socket=$sock"
  done
fi

# job: name, client, arguments. iscsi-perf: blocks of 512 bytes; fio: the
# nbd engine through qemu-nbd.
JOBS=("randread4k-qd1|iscsi-perf|-m 1 -b 8 -r" "randread4k-qd32|iscsi-perf|-m 32 -b 8 -r" "seqread1m-qd8|iscsi-perf|-m 8 -b 2048")
[ "$IS_WRITES" = 1 ] && JOBS+=("randwrite4k-qd1|fio|--rw=randwrite --bs=4k --iodepth=1"
  "randwrite4k-qd32|fio|--rw=randwrite --bs=4k --iodepth=32" "seqwrite1m-qd8|fio|--rw=write --bs=1M --iodepth=8")

# fio_iops LABEL NAME ARGS...: IOPS and p50 completion latency (µs) of one
# fio run through LABEL's qemu-nbd; "0 0" when fio gave no result
fio_iops() {
  local lbl=$1 name=$2; shift 2
  timeout $((IS_SECONDS + 60)) fio --name="$name" --ioengine=nbd --uri="${NBDURI[$lbl]}" "$@" --size="$IS_SIZE" \
    --time_based --runtime="$IS_SECONDS" --randrepeat=0 --output-format=json --output="$WORK/fio.json" >"$WORK/fio.err" 2>&1
  jq -r '.jobs[0] | "\(.write.iops + .read.iops | round) \(([.write.clat_ns.percentile["50.000000"], .read.clat_ns.percentile["50.000000"]] | map(. // 0) | max) / 1000 | . * 10 | round / 10)"' \
    "$WORK/fio.json" 2>/dev/null || echo "0 0"
}

RES=$SECT/iscsi.jsonl
: >"$RES"
for r in $(seq "$IS_ROUNDS"); do
  for j in "${JOBS[@]}"; do
    IFS='|' read -r name client args <<<"$j"
    for lbl in array-serve tgt; do
      p50=null
      if [ "$client" = iscsi-perf ]; then
        # shellcheck disable=SC2086
        out=$(timeout $((IS_SECONDS + 30)) iscsi-perf $args -t "$IS_SECONDS" "${URL[$lbl]}" 2>&1 | tr '\r' '\n')
        line=$(grep -o 'iops average [0-9]* ([0-9]* MB/s)' <<<"$out" | tail -1)
        iops=$(awk '{print $3}' <<<"$line")
        if [ -z "$iops" ]; then log "$lbl $name r$r: no result: $(tail -3 <<<"$out")"; iops=0; fi
      else
        # shellcheck disable=SC2086
        read -r iops p50 <<<"$(fio_iops "$lbl" "$name" $args)"
        [ "$iops" = 0 ] && log "$lbl $name r$r: no result: $(tail -3 "$WORK/fio.err")"
      fi
      jq -nc --arg l "$lbl" --arg j "$name" --arg c "$client" --argjson r "$r" --argjson iops "$iops" --argjson p50 "$p50" \
        --argjson bs "$([[ $name == seq* ]] && echo 1048576 || echo 4096)" \
        '{label: $l, job: $j, client: $c, round: $r, iops: $iops, p50_us: $p50, mibs: ($iops * $bs / 1048576 * 10 | round / 10)}' >>"$RES"
      log "$lbl $name ($client) r$r: $iops IOPS"
    done
  done
done
stop_all
tgtcleanup
LOAD_END=$(load_line)

{
  echo "## iSCSI: array serve against tgt"
  echo
  echo "\`make bench-iscsi\` (bench/iscsi.sh), $STAMP on $MACHINE. libiscsi's iscsi-perf against \`mpathfs array serve\`"
  echo "(port 1, controller A: active/optimized) and against Debian's tgt 1.0.85 (\`tgtd\`, one LUN, backing store rdwr), both on"
  echo "127.0.0.1 over the same $IS_SIZE store in memory; $IS_ROUNDS interleaved rounds of ${IS_SECONDS} s per job, medians."
  echo "Reads: iscsi-perf. Writes (iscsi-perf only reads; Debian's fio has no libiscsi engine): fio's nbd engine against"
  echo "\`qemu-nbd -t --cache=none --image-opts driver=iscsi,portal=…,target=…,lun=…\`, one per target, so the writes reach"
  echo "each target through QEMU's iSCSI driver (libiscsi) and the client chain is the same on both sides; p50 is fio's"
  echo "completion latency through that chain. Load average (1/5/15 min) before: $LOAD_START; after: $LOAD_END —"
  echo "the machine is shared, so the ratio within a round, not the absolute figure, is the result."
  echo
  echo "| Job | client | array serve IOPS (MiB/s) | tgt IOPS (MiB/s) | p50 µs ours / tgt | ours/tgt |"
  echo "|---|---|---|---|---|---|"
  jq -rs '
    def med: sort | if length == 0 then 0 else .[(length - 1) / 2 | floor] end;
    group_by(.job) | map({job: .[0].job, client: (.[0].client // "iscsi-perf"),
      ap: (map(select(.label == "array-serve")) | map(.p50_us // empty) | med),
      tp: (map(select(.label == "tgt")) | map(.p50_us // empty) | med),
      a: (map(select(.label == "array-serve")) | map(.iops) | med),
      t: (map(select(.label == "tgt")) | map(.iops) | med),
      am: (map(select(.label == "array-serve")) | map(.mibs) | med),
      tm: (map(select(.label == "tgt")) | map(.mibs) | med)}) |
    sort_by(.job) | .[] |
    "| \(.job) | \(.client) | \(.a) (\(.am)) | \(.t) (\(.tm)) | \(if .ap > 0 then "\(.ap) / \(.tp)" else "–" end) | \(if .t > 0 then (.a / .t * 100 | round) / 100 else "–" end) |"' "$RES"
  echo
  echo "Raw per-round lines: bench/results/iscsi.jsonl."
} >"$SECT/iscsi.md"
cat "$SECT/iscsi.md" >&2
bash "$BENCH_DIR/run.sh" --assemble-only
