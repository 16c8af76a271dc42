#!/usr/bin/env bash
# bench/iscsi.sh — `make bench-iscsi` (and the iscsi part of `make bench`):
# the array server against Debian's tgt (the peer) over iSCSI on 127.0.0.1,
# both serving the same in-memory store file, measured by libiscsi's
# iscsi-perf (a real client neither of us wrote): 4k random read at QD1 and
# QD32, 1 MiB sequential read at QD8. iscsi-perf only reads; writes are not
# measured here. Rounds interleave the two targets; the table shows medians
# and ours/tgt ratios. Writes bench/results/iscsi.md and re-assembles
# docs/benchmarks.md.
#
# Knobs (env): IS_ROUNDS [3] IS_SECONDS per job [5] IS_SIZE store [512M]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
IS_ROUNDS=${IS_ROUNDS:-3}
IS_SECONDS=${IS_SECONDS:-5}
IS_SIZE=${IS_SIZE:-512M}
SECT=${SECT:-$BENCH_DIR/results}
mkdir -p "$SECT"

bench_workdir
for t in iscsi-perf:libiscsi-bin tgtd:tgt tgtadm:tgt jq:jq fio:fio; do
  command -v "${t%%:*}" >/dev/null && continue
  [ "$(id -u)" = 0 ] || die "missing ${t%%:*} (Debian package ${t#*:}) and not root"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${t#*:}" >/dev/null || die "apt-get install ${t#*:} failed"
done
(cd "$REPO" && $GO build -o bin/mpathfs ./cmd/mpathfs) || die "go build ./cmd/mpathfs failed"
cp "$REPO/bin/mpathfs" "$WORK/mpb" # a private copy: nothing stops it by name
BACK=$WORK/store.img
make_backing "$BACK" "$IS_SIZE"
STAMP="$(date -u '+%Y-%m-%d %H:%M UTC')"
MACHINE=$(machine_line)

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
# job: name, iscsi-perf arguments (blocks of 512 bytes)
JOBS=("randread4k-qd1|-m 1 -b 8 -r" "randread4k-qd32|-m 32 -b 8 -r" "seqread1m-qd8|-m 8 -b 2048")

RES=$SECT/iscsi.jsonl
: >"$RES"
for r in $(seq "$IS_ROUNDS"); do
  for j in "${JOBS[@]}"; do
    name=${j%%|*} args=${j#*|}
    for lbl in array-serve tgt; do
      # shellcheck disable=SC2086
      out=$(timeout $((IS_SECONDS + 30)) iscsi-perf $args -t "$IS_SECONDS" "${URL[$lbl]}" 2>&1 | tr '\r' '\n')
      line=$(grep -o 'iops average [0-9]* ([0-9]* MB/s)' <<<"$out" | tail -1)
      iops=$(awk '{print $3}' <<<"$line")
      if [ -z "$iops" ]; then log "$lbl $name r$r: no result: $(tail -3 <<<"$out")"; iops=0; fi
      jq -nc --arg l "$lbl" --arg j "$name" --argjson r "$r" --argjson iops "$iops" \
        --argjson bs "$([ "$name" = seqread1m-qd8 ] && echo 1048576 || echo 4096)" \
        '{label: $l, job: $j, round: $r, iops: $iops, mibs: ($iops * $bs / 1048576 * 10 | round / 10)}' >>"$RES"
      log "$lbl $name r$r: $iops IOPS"
    done
  done
done
stop_all
tgtcleanup

{
  echo "## iSCSI: array serve against tgt"
  echo
  echo "\`make bench-iscsi\` (bench/iscsi.sh), $STAMP on $MACHINE. libiscsi's iscsi-perf against \`mpathfs array serve\`"
  echo "(port 1, controller A: active/optimized) and against Debian's tgt 1.0.85 (\`tgtd\`, one LUN, backing store rdwr), both on"
  echo "127.0.0.1 over the same $IS_SIZE store in memory; $IS_ROUNDS interleaved rounds of ${IS_SECONDS} s per job, medians."
  echo "iscsi-perf only reads, so writes are not measured here."
  echo
  echo "| Job | array serve IOPS (MiB/s) | tgt IOPS (MiB/s) | ours/tgt |"
  echo "|---|---|---|---|"
  jq -rs '
    def med: sort | if length == 0 then 0 else .[(length - 1) / 2 | floor] end;
    group_by(.job) | map({job: .[0].job,
      a: (map(select(.label == "array-serve")) | map(.iops) | med),
      t: (map(select(.label == "tgt")) | map(.iops) | med),
      am: (map(select(.label == "array-serve")) | map(.mibs) | med),
      tm: (map(select(.label == "tgt")) | map(.mibs) | med)}) |
    sort_by(.job) | .[] |
    "| \(.job) | \(.a) (\(.am)) | \(.t) (\(.tm)) | \(if .t > 0 then (.a / .t * 100 | round) / 100 else "–" end) |"' "$RES"
  echo
  echo "Raw per-round lines: bench/results/iscsi.jsonl."
} >"$SECT/iscsi.md"
cat "$SECT/iscsi.md" >&2
bash "$BENCH_DIR/run.sh" --assemble-only
