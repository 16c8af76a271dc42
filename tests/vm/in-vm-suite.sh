#!/bin/bash
# in-vm-suite.sh — runs inside the VM-tier guest as root (qemu guest from run.sh or the
# Vagrant guest). One LUN with two real SCSI paths (scsi_debug, ALUA), the same fio
# job and the same path fault against (a) dm-multipath and (b) mpathfs, side by side.
#
#   fio: 4k randrw QD16, --direct=1 --verify=crc32c --verify_fatal=1 (--verify_backlog
#   so data written across the fault is read back and checked during the run),
#   MPATHFS_VM_FIO_RUNTIME s (40). At MPATHFS_VM_FAULT_AT s (10) the ALUA
#   active/optimized path goes offline, at MPATHFS_VM_RESTORE_AT s (20) it
#   comes back; we measure how long until each system uses it again.
#
# Then (d), iSCSI to the array server (iscsi-part.sh): `mpathfs array serve` in the
# guest, open-iscsi logged in to two portals, dm-multipath with scsi_dh_alua, SCSI
# persistent reservations through sg_persist, mpathpersist and mpathfs pr, and a
# controller failure under fio verify.
#
# Exit status: 0 only if both systems ran with 0 fio errors, verify ok and the path
# reinstated, and every check of (d) passed. MPATHFS_VM_ONLY_DM=1 runs (a) only,
# MPATHFS_VM_ONLY_ISCSI=1 (d) only, MPATHFS_VM_SKIP_ISCSI=1 all but (d). The tables go
# to stdout and to tests/vm/work/result.md in the repository the script lives in.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$repo/tests/vm/work
mkdir -p "$work"
scratch=$(mktemp -d /tmp/mpathfs-vm.XXXXXX)
runtime=${MPATHFS_VM_FIO_RUNTIME:-40}
fault_at=${MPATHFS_VM_FAULT_AT:-10}
restore_at=${MPATHFS_VM_RESTORE_AT:-20}
only_dm=${MPATHFS_VM_ONLY_DM:-0}
only_iscsi=${MPATHFS_VM_ONLY_ISCSI:-0}
skip_iscsi=${MPATHFS_VM_SKIP_ISCSI:-0}
reinstate_limit=60   # seconds to wait for a restored path to be used again
ceiling_runtime=${MPATHFS_VM_CEILING_RUNTIME:-15}
# Both stacks take the same queueing and failback policy: no_path_retry queue
# (queue for ever while no path is usable; mpathfs's --no-path-retry queue
# replaces its APD timeout) and failback manual (dm's default, stated).
t_suite=$(date +%s%3N)

now_ms() { date +%s%3N; }
log() { local e=$(( $(now_ms) - t_suite )); printf '[suite %4d.%01ds] %s\n' $((e / 1000)) $(( (e % 1000) / 100 )) "$*"; }
die() { log "FATAL: $*"; exit 2; }
sleep_until() { # epoch ms
  local d=$(( $1 - $(now_ms) ))
  [ "$d" -gt 0 ] && sleep "$(printf '%d.%03d' $((d / 1000)) $((d % 1000)))"
  return 0
}
secs() { printf '%d.%02d' $(( $1 / 1000 )) $(( ($1 % 1000) / 10 )); }
# poll_state SYS DEV: sets st to the path's state and tq to the middle of the
# query (the state was read somewhere between its start and its end; a query
# that takes long, a Go binary starting under TCG, must not add its own time
# to the measurement), and adds the query's duration to the running totals.
declare -A QMS QN
poll_state() {
  local a b
  a=$(now_ms); st=$("${1}_path_state" "$2"); b=$(now_ms)
  tq=$(( (a + b) / 2 ))
  QMS[$1]=$(( ${QMS[$1]:-0} + b - a )); QN[$1]=$(( ${QN[$1]:-0} + 1 ))
}

[ "$(id -u)" = 0 ] || die "must run as root"
for t in fio jq lsscsi multipath multipathd modprobe; do
  command -v "$t" >/dev/null || die "$t missing (run tests/vm/provision.sh)"
done

# Results, per system: key -> value.
declare -A R=()
failed=0
# part (d): iSCSI to the array server
. "$(dirname "$0")/iscsi-part.sh"

# --------------------------------------------------------------------------- LUN
alua_state() { # the ALUA access state a path reports for its own port group
  sg_rtpg -d "/dev/$1" 2>/dev/null | sed -n 's/.*asymmetric access state : 0x[0-9a-f]* (\(.*\))/\1/p' | head -1
}
setup_lun() {
  # scsi_debug gives each host's port the ALUA state (host number mod 3): 0 = active/
  # optimized, 1 = active/non-optimized, 2 = standby (which rejects I/O). Host numbers
  # depend on the guest's other SCSI hosts (qemu q35: 6,7 = AO+ANO; the Vagrant box:
  # 2,3 = standby+AO), so load three hosts, keep the AO and the ANO path and delete the
  # standby disk: the same two usable paths to one LUN in every guest.
  if lsmod | grep -q '^scsi_debug'; then   # left over from an earlier run in this VM
    modprobe -r scsi_debug || die "scsi_debug is loaded and in use"
  fi
  modprobe scsi_debug add_host=3 num_tgts=1 max_luns=1 dev_size_mb=256 \
    vpd_use_hostno=0 delay=0 || die "modprobe scsi_debug failed"
  udevadm settle -t 30 || true
  local i=0 d
  while :; do
    mapfile -t disks < <(for d in /sys/block/sd*; do
      [ -e "$d/device/model" ] || continue
      [ "$(tr -d ' ' < "$d/device/model")" = scsi_debug ] || continue
      h=$(readlink -f "$d/device" | sed -n 's|.*/host\([0-9]*\)/.*|\1|p')
      echo "$h ${d##*/}"
    done | sort -n | awk '{print $2}')
    [ "${#disks[@]}" -ge 3 ] && break
    i=$((i + 1)); [ $i -gt 100 ] && die "scsi_debug disks did not appear (${disks[*]})"
    sleep 0.2
  done
  pa="" pb=""
  for d in "${disks[@]}"; do
    case "$(alua_state "$d")" in
      active/optimized) [ -z "$pa" ] && pa=$d ;;
      "active/non optimized"|active/non-optimized) [ -z "$pb" ] && pb=$d ;;
    esac
  done
  if [ -z "$pa" ] || [ -z "$pb" ]; then
    log "WARNING: no AO+ANO pair by ALUA state; using the first two disks"
    pa=${disks[0]} pb=${disks[1]}
  fi
  for d in "${disks[@]}"; do
    if [ "$d" != "$pa" ] && [ "$d" != "$pb" ]; then
      log "deleting the spare scsi_debug disk $d ($(alua_state "$d"))"
      echo 1 > "/sys/block/$d/device/delete"
    fi
  done
  udevadm settle -t 30 || true
  local wa wb
  wa=$(/lib/udev/scsi_id -g -u -d "/dev/$pa" 2>/dev/null)
  wb=$(/lib/udev/scsi_id -g -u -d "/dev/$pb" 2>/dev/null)
  [ -n "$wa" ] && [ "$wa" = "$wb" ] || die "the two disks do not share a WWID ($wa / $wb)"
  log "LUN $wa: paths /dev/$pa ($(alua_state "$pa")) and /dev/$pb ($(alua_state "$pb")); fault target /dev/$pa"
  lsscsi
}

# timeline PFX RUNTIME: per-second I/O counts and max completion latency from
# fio's iops and clat logs (log_avg_msec=1000), one "second IOPS max_clat_ms"
# line per second. Each iops sample is a rate over the time since the previous
# sample of its direction; it is spread over those milliseconds, so a second
# with no completions (or no sample) counts 0. The iops log counts the job's
# own reads and writes only: the reads fio issues to verify what it wrote
# (--verify with --verify_backlog) are not in it, while fio's JSON totals
# include them. Every healthy-IOPS figure of the report (dm, mpathfs and the
# FUSE ceiling) is taken from this timeline, so they compare like with like.
timeline() {
  awk -F', *' -v rt="$2" -v clat="${1}_clat.1.log" '
    BEGIN {while ((getline line < clat) > 0) {split(line, f, /, */); s=int((f[1]+999)/1000);
             if (f[2] > mc[s]) mc[s]=f[2]}}
    {d=$3; t=$1; p=(d in prev) ? prev[d] : 0; prev[d]=t
     for (ms=p; ms<t; ms+=10) {s=int(ms/1000)+1; io[s]+=$2*(((t-ms) < 10 ? t-ms : 10))/1000}}
    END {for (s=1; s<=rt; s++) printf "%d %d %.0f\n", s, io[s]+0.5, mc[s]/1e6}' \
    "${1}_iops.1.log" 2>/dev/null
}

# mean_per_second TIMELINE FROM TO: the mean count of seconds FROM..TO-1.
mean_per_second() {
  awk -v a="$2" -v b="$3" '$1>=a && $1<b {s+=$2; n++}
    END {if (n) printf "%d", s/n; else print "?"}' "$1"
}

# ---------------------------------------------------------------- the fio run
# run_case SYS DEVICE: fio on DEVICE, fault pa at fault_at, restore at restore_at,
# then poll ${SYS}_path_state (prints "ok", "failed" or other) for reinstatement.
run_case() {
  local sys=$1 dev=$2 pfx=$scratch/$1
  log "($sys) fio on $dev: ${runtime}s, fault /dev/$pa at ${fault_at}s, restore at ${restore_at}s"
  local tl; tl=$(now_ms)
  local base; base=$(path_ios)
  fio --name="$sys" --filename="$dev" --ioengine=libaio --direct=1 \
    --rw=randrw --bs=4k --iodepth=16 --time_based --runtime="$runtime" \
    --verify=crc32c --verify_fatal=1 --verify_backlog=1024 --continue_on_error=io \
    --write_lat_log="$pfx" --write_iops_log="$pfx" --log_avg_msec=1000 --log_max_value=1 \
    --output-format=json --output="$pfx.json" >"$pfx.fio.out" 2>&1 &
  local fpid=$!
  # fio's clock starts with its first I/O; under TCG its start-up takes a second or
  # more, so time 0 is the first I/O seen on the LUN's paths, not the launch.
  local t0=""
  while [ $(( $(now_ms) - tl )) -lt 30000 ] && kill -0 "$fpid" 2>/dev/null; do
    [ "$(path_ios)" != "$base" ] && { t0=$(now_ms); break; }
    sleep 0.05
  done
  [ -n "$t0" ] || t0=$tl
  log "($sys) first I/O $(secs $((t0 - tl))) s after the launch"

  sleep_until $(( t0 + fault_at * 1000 ))
  local tf; tf=$(now_ms)
  echo offline > "/sys/block/$pa/device/state"
  log "($sys) /dev/$pa offline"
  local tfail="" st="" tq=""
  while [ $(( $(now_ms) - t0 )) -lt $(( restore_at * 1000 - 200 )) ]; do
    if [ -z "$tfail" ]; then
      poll_state "$sys" "$pa"
      [ "$st" = failed ] && { tfail=$tq; log "($sys) path $pa marked failed after $(secs $((tfail - tf))) s"; }
    fi
    sleep 0.1
  done
  sleep_until $(( t0 + restore_at * 1000 ))
  local tr; tr=$(now_ms)
  echo running > "/sys/block/$pa/device/state"
  log "($sys) /dev/$pa running again"
  local tback=""
  while [ $(( $(now_ms) - tr )) -lt $(( reinstate_limit * 1000 )) ]; do
    poll_state "$sys" "$pa"
    if [ "$st" = ok ]; then tback=$tq; break; fi
    sleep 0.1
  done
  if [ -n "$tback" ]; then
    log "($sys) path $pa in use again after $(secs $((tback - tr))) s"
  else
    log "($sys) path $pa NOT reinstated within ${reinstate_limit}s (last state: $st)"
  fi

  # fio: give it its runtime plus a margin (queued I/O, final verify).
  local deadline=$(( t0 + (runtime + 90) * 1000 )) frc
  while kill -0 "$fpid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.5; done
  if kill -0 "$fpid" 2>/dev/null; then
    log "($sys) fio hung: killing it (pid $fpid)"
    kill -KILL "$fpid" 2>/dev/null
    R[$sys.hung]=1
  fi
  wait "$fpid"; frc=$?
  log "($sys) fio exit status $frc"

  # Results.
  local fault_ms=$(( tf - t0 )) errs verr jerr
  errs=$(jq -r '[.jobs[].total_err // 0] | add' "$pfx.json" 2>/dev/null)
  jerr=$(jq -r '[.jobs[].error // 0] | add' "$pfx.json" 2>/dev/null)
  [ -n "$errs" ] || errs="no json"
  verr=ok
  if grep -Eqi 'verify (failed|error)|bad magic|bad (header|pattern)' "$pfx.fio.out" ||
    [ "$frc" != 0 ] || [ "${jerr:-1}" != 0 ] || [ -n "${R[$sys.hung]:-}" ]; then
    verr="FAILED (fio rc $frc, error ${jerr:-?})"
  fi
  R[$sys.errors]=$errs
  R[$sys.verify]=$verr
  R[$sys.iops_mean]=$(jq -r '[.jobs[] | .read.iops + .write.iops] | add | floor' "$pfx.json" 2>/dev/null || echo "?")
  # fio writes a lat log entry (max of its window, log_max_value) only when an I/O
  # completes: after a stall the long latencies show up when the stall ends. So an
  # entry at T with max latency L counts for the fault window if the I/O behind it
  # may have been in flight in fault-1s..fault+5s, i.e. T >= fault-1s and
  # T - L - 1s <= fault+5s. Values are ns.
  R[$sys.clat_fault]=$(awk -F', *' -v a=$((fault_ms - 1000)) -v b=$((fault_ms + 5000)) '
    $1 >= a && $1 - $2/1e6 - 1000 <= b && $2 > m {m=$2}
    END {if (m == "") print "no samples"; else printf "%.1f", m/1e6}' "${pfx}_clat.1.log" 2>/dev/null)
  R[$sys.clat_before]=$(awk -F', *' -v b=$((fault_ms - 1000)) \
    '$1 < b && $2 > m {m=$2} END {if (m == "") print "no samples"; else printf "%.1f", m/1e6}' \
    "${pfx}_clat.1.log" 2>/dev/null)
  local tl_file=$scratch/$sys.timeline
  timeline "$pfx" "$runtime" > "$tl_file"
  R[$sys.iops_min]=$(awk -v rt="$runtime" '$1>=2 && $1<rt && (m=="" || $2<m) {m=$2; at=$1}
    END {if (m=="") print "?"; else printf "%d (second %d)", m, at}' "$tl_file")
  # Healthy throughput: the mean of the per-second counts from second 2 up to the
  # second before the fault, so the fault's cost does not hide the I/O path's cost.
  R[$sys.iops_healthy]=$(mean_per_second "$tl_file" 2 "$(( fault_ms / 1000 ))")
  log "($sys) per second (s:IOPS/max clat ms), fault at $(secs "$fault_ms") s, restore at $(secs $((tr - t0))) s:"
  awk '{printf "%s:%s/%s ", $1, $2, $3} NR%10==0 {print ""} END {print ""}' "$tl_file"
  R[$sys.failed]=${tfail:+$(secs $((tfail - tf))) s}
  R[$sys.failed]=${R[$sys.failed]:-not seen}
  R[$sys.reinstate]=${tback:+$(secs $((tback - tr))) s}
  R[$sys.reinstate]=${R[$sys.reinstate]:-"not within ${reinstate_limit} s"}
  [ -n "${QN[$sys]:-}" ] && R[$sys.query]=$(( QMS[$sys] / QN[$sys] ))
  # mpathfs's own record: the path-state events' timestamps (see run_mpathfs).
  if [ "$sys" = mpathfs ] && [ -s "$scratch/mpathfs-events.jsonl" ]; then
    local name tev
    name=$(mpathfs status --control "$ctl" --json 2>/dev/null |
      jq -r --arg u "block:///dev/$pa$mp_query" '[.devices[].paths[] | select(.uri == $u) | .name][0] // empty')
    tev=$(ev_ms "$name" '"dead","disabled","standby"' "$tf")
    R[mpathfs.failed_ev]=${tev:+$(secs $((tev - tf))) s}
    tev=$(ev_ms "$name" '"active"' "$tr")
    R[mpathfs.reinstate_ev]=${tev:+$(secs $((tev - tr))) s}
  fi

  cp "$pfx".* "${pfx}"_*.log "$work/" 2>/dev/null
  [ "$errs" = 0 ] || failed=1
  [ "$verr" = ok ] || failed=1
  [ -n "$tback" ] || failed=1
}

# ev_ms PATH-NAME STATES AFTER-MS: the time (epoch ms) of the first path-state
# event of the path into one of STATES (a jq list body) at or after AFTER-MS.
ev_ms() {
  local t
  t=$(jq -r --arg p "$1" "select(.kind == \"path-state\" and .path == \$p and (.to | IN($2))) | .time" \
    "$scratch/mpathfs-events.jsonl" 2>/dev/null | while read -r x; do
      m=$(date -d "$x" +%s%3N 2>/dev/null) && [ "$m" -ge "$3" ] && { echo "$m"; break; }
    done)
  echo "$t"
}

path_ios() { # reads + writes completed on both paths
  awk '{s += $1 + $5} END {print s}' "/sys/block/$pa/stat" "/sys/block/$pb/stat"
}

# ------------------------------------------------------------ (a) dm-multipath
dm_path_state() { # ok when dm uses the path again, failed when dm failed it
  local s
  s=$(multipathd show paths raw format "%d %t %T" 2>/dev/null | awk -v d="$1" '$1==d {print $2, $3}')
  case "$s" in
    "active ready") echo ok ;;
    failed*|*faulty*) echo failed ;;
    *) echo "${s:-unknown}" ;;
  esac
}

run_dm() {
  log "(a) dm-multipath"
  cat > /etc/multipath.conf <<'EOF'
defaults {
	polling_interval	1
	path_checker		tur
	no_path_retry		queue
	failback		manual
	find_multipaths		no
	user_friendly_names	yes
	path_grouping_policy	multibus
	path_selector		"round-robin 0"
}
blacklist {
	devnode "^vd[a-z]"
	devnode "^(ram|loop|fd|md|dm-|sr|scd|st|nbd|zram)[0-9]*"
}
blacklist_exceptions {
	device {
		vendor "Linux"
		product "scsi_debug"
	}
}
EOF
  mkdir -p /etc/multipath
  modprobe dm_multipath
  multipathd -d -s -v2 >"$scratch/multipathd.log" 2>&1 &
  mpd_pid=$!
  local map="" i=0
  while [ -z "$map" ]; do
    map=$(multipath -l -v1 2>/dev/null | head -1)
    [ -n "$map" ] && break
    i=$((i + 1))
    [ $((i % 20)) = 0 ] && multipath -v2 >/dev/null 2>&1  # nudge if no uevent did it
    [ $i -gt 300 ] && { tail -20 "$scratch/multipathd.log"; die "no multipath map after 30 s"; }
    kill -0 "$mpd_pid" 2>/dev/null || { cat "$scratch/multipathd.log"; die "multipathd exited"; }
    sleep 0.1
  done
  i=0
  until [ "$(dm_path_state "$pa")" = ok ] && [ "$(dm_path_state "$pb")" = ok ]; do
    i=$((i + 1)); [ $i -gt 300 ] && die "paths of $map not active ready"; sleep 0.1
  done
  log "(a) map $map ready (multipathd pid $mpd_pid)"
  multipath -ll "$map" | cat
  udevadm settle -t 10 || true
  [ -b "/dev/mapper/$map" ] || die "/dev/mapper/$map missing"

  run_case dm "/dev/mapper/$map"
  multipath -ll "$map" | cat

  log "(a) teardown: multipath -F"
  udevadm settle -t 10 || true
  for i in 1 2 3 4 5; do
    multipath -F && break
    log "(a) multipath -F failed (try $i)"; sleep 1
  done
  log "(a) teardown: SIGTERM to multipathd (pid $mpd_pid)"
  kill -TERM "$mpd_pid"
  for i in $(seq 50); do kill -0 "$mpd_pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$mpd_pid" 2>/dev/null && { log "(a) multipathd did not stop in 10 s; SIGKILL"; kill -KILL "$mpd_pid"; }
  wait "$mpd_pid" 2>/dev/null
  mpd_pid=""
  log "(a) teardown done"
  cp "$scratch/multipathd.log" "$work/dm-multipathd.log" 2>/dev/null
  if dmsetup ls --target multipath 2>/dev/null | grep -qv 'No devices'; then
    log "(a) WARNING: multipath maps left: $(dmsetup ls --target multipath)"
  fi
}

# ----------------------------------------------------------------- (b) mpathfs
ctl=/run/mpathfs/vm.sock
# mpathfs's block paths here run their system calls in the FUSE request's own
# goroutine (inline=true), as dm-multipath does in the kernel: scsi_debug
# fails an offline disk's I/O at once, so there is no hung call to escape
# from. The default (a hand-off to a worker per call, so that a call hung in
# the kernel can be given up at the I/O deadline) costs about 300 µs of
# emulated CPU per I/O in this guest: docs/vm.md. MPATHFS_VM_BLOCK_QUERY=
# (empty) measures the default.
mp_query=${MPATHFS_VM_BLOCK_QUERY-?inline=true}
# The state is polled from the control socket with curl (GET /v1/status, the
# JSON `mpathfs status --json` prints): starting the Go CLI costs about 1.3 s
# of emulated CPU per query here, which ran beside the daemon through the
# fault window (dm's query is multipathd's own small client).
mpathfs_status_json() {
  if command -v curl >/dev/null; then
    curl -s --max-time 10 --unix-socket "$ctl" http://mpathfs/v1/status
  else
    mpathfs status --control "$ctl" --json
  fi
}
# The path's state is cut out of the JSON with bash's own string operations
# (a path's "uri" is followed by its "state"): jq's start-up alone took about
# a second of emulated CPU per query here, through the fault window.
mpathfs_path_state() {
  local s key="\"uri\":\"block:///dev/$1$mp_query\",\"state\":\""
  s=$(mpathfs_status_json 2>/dev/null)
  if [[ $s == *"$key"* ]]; then
    s=${s#*"$key"}
    s=${s%%\"*}
  else
    s=unknown
  fi
  case "$s" in
    active) echo ok ;;
    dead|disabled|standby) echo failed ;;
    *) echo "${s:-unknown}" ;;
  esac
}

mpathfs_unavailable() { # prints the reason, or nothing when mpathfs can run
  local bin=$work/mpathfs
  if [ ! -x "$bin" ]; then
    if [ -s "$work/mpathfs.unavailable" ]; then tr '\n' ' ' < "$work/mpathfs.unavailable"
    else echo "no binary at tests/vm/work/mpathfs (build it: CGO_ENABLED=0 go build -o tests/vm/work/mpathfs ./cmd/mpathfs)"; fi
    return
  fi
  install -m 0755 "$bin" /usr/local/bin/mpathfs || { echo "cannot install the binary"; return; }
  # (the help is read whole: with pipefail, grep -q closing the pipe early would
  # fail the pipeline when mpathfs is still writing)
  local help
  help=$(mpathfs mount --help 2>&1)
  if ! grep -qi 'block' <<<"$help"; then
    echo "'mpathfs mount --help' does not mention block:// paths"
  fi
}

run_mpathfs() {
  log "(b) mpathfs"
  modprobe fuse 2>/dev/null
  mkdir -p /run/mpathfs /mnt/mp
  # The same policy as the dm map: round-robin over both paths switching on
  # every I/O (dm's rr_min_io_rq 1, multibus ignores ALUA priorities:
  # useANO=1), paths checked every second (polling_interval 1).
  mpathfs mount --control "$ctl" --name lun --path "block:///dev/$pa$mp_query" --path "block:///dev/$pb$mp_query" \
    --psp VMW_PSP_RR --psp-option iops=1 --psp-option useANO=1 --check-interval 1s --no-path-retry queue --failback manual \
    /mnt/mp >"$scratch/mpathfs.log" 2>&1 &
  mp_pid=$!
  local i=0
  until [ -e /mnt/mp/lun ]; do
    kill -0 "$mp_pid" 2>/dev/null || { cat "$scratch/mpathfs.log"; R[mpathfs.na]="mpathfs mount exited: $(tail -1 "$scratch/mpathfs.log")"; mp_pid=""; failed=1; return; }
    i=$((i + 1)); [ $i -gt 300 ] && { R[mpathfs.na]="/mnt/mp/lun did not appear in 30 s"; failed=1; stop_mpathfs; return; }
    sleep 0.1
  done
  i=0
  until [ "$(mpathfs_path_state "$pa")" = ok ] && [ "$(mpathfs_path_state "$pb")" = ok ]; do
    i=$((i + 1))
    if [ $i -gt 300 ]; then
      mpathfs status --control "$ctl" --json | cat
      R[mpathfs.na]="paths not active in status --json after 30 s"; failed=1; stop_mpathfs; return
    fi
    sleep 0.1
  done
  log "(b) /mnt/mp/lun ready (mpathfs pid $mp_pid)"
  mpathfs status --control "$ctl" --json | jq -M -c .

  # mpathfs's event log, for the path-state times by its own clock.
  mpathfs events --control "$ctl" --follow --json --last 0 >"$scratch/mpathfs-events.jsonl" 2>/dev/null &
  local ev_pid=$!
  run_case mpathfs /mnt/mp/lun
  kill "$ev_pid" 2>/dev/null; wait "$ev_pid" 2>/dev/null
  cp "$scratch/mpathfs-events.jsonl" "$work/" 2>/dev/null
  mpathfs status --control "$ctl" --json | jq -M -c .
  stop_mpathfs
}

stop_mpathfs() {
  [ -n "${mp_pid:-}" ] || return 0
  log "(b) stopping mpathfs (SIGTERM to pid $mp_pid)"
  kill -TERM "$mp_pid" 2>/dev/null
  local i
  for i in $(seq 100); do kill -0 "$mp_pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$mp_pid" 2>/dev/null; then
    log "(b) mpathfs did not exit within 20 s after SIGTERM; SIGKILL"
    kill -KILL "$mp_pid"; failed=1; R[mpathfs.unmount]="did not exit on SIGTERM"
  fi
  wait "$mp_pid" 2>/dev/null
  mp_pid=""
  if mountpoint -q /mnt/mp; then
    log "(b) /mnt/mp still mounted after mpathfs exited"
    R[mpathfs.unmount]="left /mnt/mp mounted"; failed=1
    umount -l /mnt/mp
  fi
  R[mpathfs.unmount]=${R[mpathfs.unmount]:-clean}
  cp "$scratch/mpathfs.log" "$work/mpathfs.log" 2>/dev/null
}

# ------------------------------------------- (c) the FUSE ceiling in this guest
# bench/fuseceiling serves /dev/$pb through the same FUSE options as mpathfs with
# nothing behind them but pread/pwrite (O_DIRECT, as mpathfs's block paths): the
# most any FUSE device can do here. Same fio job, no fault.
run_ceiling() {
  local bin=$work/fuseceiling pfx=$scratch/ceiling
  [ -x "$bin" ] || { R[ceiling.na]="no binary at tests/vm/work/fuseceiling"; return; }
  mkdir -p /mnt/fc
  "$bin" -direct -file "/dev/$pb" /mnt/fc >"$scratch/ceiling.log" 2>&1 &
  fc_pid=$!
  local i=0
  until [ -e /mnt/fc/ceiling ]; do
    kill -0 "$fc_pid" 2>/dev/null || { R[ceiling.na]="fuseceiling exited: $(tail -1 "$scratch/ceiling.log")"; fc_pid=""; return; }
    i=$((i + 1)); [ $i -gt 100 ] && { R[ceiling.na]="/mnt/fc/ceiling did not appear"; stop_ceiling; return; }
    sleep 0.1
  done
  log "(c) fuseceiling over /dev/$pb: fio ${ceiling_runtime}s, no fault"
  timeout $((ceiling_runtime + 60)) fio --name=ceiling --filename=/mnt/fc/ceiling --ioengine=libaio --direct=1 \
    --rw=randrw --bs=4k --iodepth=16 --time_based --runtime="$ceiling_runtime" \
    --verify=crc32c --verify_fatal=1 --verify_backlog=1024 \
    --write_lat_log="$pfx" --write_iops_log="$pfx" --log_avg_msec=1000 --log_max_value=1 \
    --output-format=json --output="$pfx.json" >"$pfx.fio.out" 2>&1
  # Counted as the other two columns' healthy IOPS: per second from the iops
  # log, second 2 up to the last whole second (see timeline).
  timeline "$pfx" "$ceiling_runtime" > "$scratch/ceiling.timeline"
  R[ceiling.iops]=$(mean_per_second "$scratch/ceiling.timeline" 2 "$ceiling_runtime")
  R[ceiling.iops_fio]=$(jq -r '[.jobs[] | .read.iops + .write.iops] | add | floor' "$pfx.json" 2>/dev/null || echo "?")
  R[ceiling.errors]=$(jq -r '[.jobs[].total_err // 0] | add' "$pfx.json" 2>/dev/null || echo "?")
  # the largest completion latency of the FUSE ceiling with no fault: the
  # stalls any FUSE device meets in this guest
  R[ceiling.max_clat]=$(jq -r '[.jobs[] | .read.clat_ns.max, .write.clat_ns.max] | max / 1e5 | round / 10' "$pfx.json" 2>/dev/null || echo "?")
  log "(c) fuseceiling: ${R[ceiling.iops]} IOPS per second (fio's mean with its verify reads: ${R[ceiling.iops_fio]}), errors ${R[ceiling.errors]}"
  stop_ceiling
}

stop_ceiling() {
  [ -n "${fc_pid:-}" ] || return 0
  kill -TERM "$fc_pid" 2>/dev/null
  local i
  for i in $(seq 50); do kill -0 "$fc_pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$fc_pid" 2>/dev/null && kill -KILL "$fc_pid"
  wait "$fc_pid" 2>/dev/null
  fc_pid=""
  mountpoint -q /mnt/fc && umount -l /mnt/fc
  return 0
}

# ratio A B: A/B with two decimals, or "?" when either is not a number.
ratio() {
  awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN {
    if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) print "?"; else printf "%.2f", a / b }'
}

cleanup() {
  is_teardown
  [ -n "${fc_pid:-}" ] && kill -TERM "$fc_pid" 2>/dev/null
  [ -n "${mp_pid:-}" ] && kill -TERM "$mp_pid" 2>/dev/null
  [ -n "${mpd_pid:-}" ] && { multipath -F >/dev/null 2>&1; kill -TERM "$mpd_pid" 2>/dev/null; }
  mountpoint -q /mnt/mp 2>/dev/null && umount -l /mnt/mp
  mountpoint -q /mnt/fc 2>/dev/null && umount -l /mnt/fc
  [ -n "${pa:-}" ] && [ -e "/sys/block/$pa/device/state" ] && echo running > "/sys/block/$pa/device/state" 2>/dev/null
  udevadm settle -t 10 >/dev/null 2>&1
  modprobe -r scsi_debug 2>/dev/null   # so the suite can run again in the same VM
  rm -rf "$scratch"
}
trap cleanup EXIT

# ------------------------------------------------------------------------ main
log "kernel $(uname -r); fio $(fio --version); multipath-tools $(dpkg-query -W -f='${Version}' multipath-tools 2>/dev/null); open-iscsi $(dpkg-query -W -f='${Version}' open-iscsi 2>/dev/null)"
na=""
if [ "$only_iscsi" != 1 ]; then
  setup_lun
  run_dm

  if [ "$only_dm" = 1 ]; then
    na="skipped (MPATHFS_VM_ONLY_DM=1)"
  else
    na=$(mpathfs_unavailable)
    if [ -n "$na" ]; then
      na="not available: $na"
      failed=1
    else
      run_mpathfs
      [ -n "${R[mpathfs.na]:-}" ] && na="failed to start: ${R[mpathfs.na]}"
    fi
  fi
  [ -n "$na" ] && log "(b) mpathfs: $na"
  [ "$only_dm" = 1 ] || run_ceiling
  # the scsi_debug LUN is done with; (d) has its own disks
  udevadm settle -t 10 >/dev/null 2>&1
  modprobe -r scsi_debug 2>/dev/null
fi

# (d) iSCSI to the array server
is_na=""
if [ "$only_dm" = 1 ]; then
  is_na="skipped (MPATHFS_VM_ONLY_DM=1)"
elif [ "$skip_iscsi" = 1 ]; then
  is_na="skipped (MPATHFS_VM_SKIP_ISCSI=1)"
else
  is_na=$(mpathfs_unavailable)
  if [ -n "$is_na" ]; then
    is_na="not available: $is_na"
    failed=1
  else
    run_iscsi
  fi
fi
[ -n "$is_na" ] && log "(d) iSCSI: $is_na"

# ------------------------------------------------------------------------ table
col() { if [ -n "$na" ]; then echo "—"; else echo "${R[mpathfs.$1]:-?}"; fi; }
{
  if [ "$only_iscsi" != 1 ]; then
  echo "## VM tier: one path of a 2-path scsi_debug LUN offline at ${fault_at}s, back at ${restore_at}s"
  echo
  echo "fio 4k randrw QD16 direct, verify=crc32c (backlog 1024), ${runtime}s; kernel $(uname -r), $(nproc) vCPUs."
  echo
  echo "| | (a) dm-multipath | (b) mpathfs |"
  echo "|---|---|---|"
  echo "| fio errors (total_err) | ${R[dm.errors]:-?} | $(col errors) |"
  echo "| verify | ${R[dm.verify]:-?} | $(col verify) |"
  echo "| max clat, fault-1s..fault+5s (ms) | ${R[dm.clat_fault]:-?} | $(col clat_fault) |"
  echo "| max clat before the fault (ms) | ${R[dm.clat_before]:-?} | $(col clat_before) |"
  echo "| lowest 1-s IOPS (r+w) | ${R[dm.iops_min]:-?} | $(col iops_min) |"
  echo "| mean IOPS over the run, fio's figure (its verify reads included) | ${R[dm.iops_mean]:-?} | $(col iops_mean) |"
  echo "| path seen failed after the fault | ${R[dm.failed]:-?} | $(col failed) |"
  echo "| path in use again after it returned | ${R[dm.reinstate]:-?} | $(col reinstate) |"
  echo "| the state query polled for the two rows above takes (mean ms; times are taken at its middle) | ${R[dm.query]:-?} | $(col query) |"
  [ -z "$na" ] && echo "| failed / in use again by mpathfs's event log (path-state timestamps) | n/a | ${R[mpathfs.failed_ev]:-?} / ${R[mpathfs.reinstate_ev]:-?} |"
  [ -z "$na" ] && echo "| stopped by SIGTERM, unmounted | n/a | ${R[mpathfs.unmount]:-?} |"
  echo "| healthy IOPS (the job's own reads and writes per second, mean of second 2 to the fault) | ${R[dm.iops_healthy]:-?} | $(col iops_healthy) |"
  echo
  if [ -z "$na" ]; then
    echo "Ratios, mpathfs against its references (FUSE ceiling: bench/fuseceiling over /dev/$pb in this guest, same fio job, no fault${R[ceiling.na]:+; not measured: ${R[ceiling.na]}}):"
    echo
    echo "| ratio | value | aim |"
    echo "|---|--:|---|"
    echo "| healthy IOPS, mpathfs / FUSE ceiling (${R[ceiling.iops]:-?} IOPS per second counted the same way; fio's mean with its verify reads ${R[ceiling.iops_fio]:-?}) | $(ratio "$(col iops_healthy)" "${R[ceiling.iops]:-?}") | >= 0.9 |"
    echo "| healthy IOPS, mpathfs / dm-multipath | $(ratio "$(col iops_healthy)" "${R[dm.iops_healthy]:-?}") | FUSE costs a round trip dm does not |"
    echo "| FUSE ceiling / dm-multipath | $(ratio "${R[ceiling.iops]:-?}" "${R[dm.iops_healthy]:-?}") | the floor FUSE sets |"
    echo "| path seen failed, mpathfs / dm (polled) | $(ratio "$(col failed)" "${R[dm.failed]:-?}") | <= 1 |"
    echo "| path in use again, mpathfs / dm (polled) | $(ratio "$(col reinstate)" "${R[dm.reinstate]:-?}") | <= 1 |"
    echo "| path seen failed, mpathfs (event log) / dm (polled) | $(ratio "${R[mpathfs.failed_ev]:-?}" "${R[dm.failed]:-?}") | <= 1 |"
    echo "| path in use again, mpathfs (event log) / dm (polled) | $(ratio "${R[mpathfs.reinstate_ev]:-?}" "${R[dm.reinstate]:-?}") | <= 1 |"
    echo "| max clat around the fault, mpathfs / dm | $(ratio "$(col clat_fault)" "${R[dm.clat_fault]:-?}") | <= 1 |"
    echo "| max clat around the fault, mpathfs / the FUSE ceiling's max with no fault (${R[ceiling.max_clat]:-?} ms over ${ceiling_runtime} s) | $(ratio "$(col clat_fault)" "${R[ceiling.max_clat]:-?}") | the floor FUSE sets |"
    echo
  fi
  echo "Both stacks ran with the same policy: round-robin over both paths switching on every I/O, one path group (ALUA priorities ignored), paths checked every second with TEST UNIT READY, I/O queued while no path is usable, failback manual on both (it only matters between path groups; there is one)."
  echo
  echo "- (a) dm-multipath: path_grouping_policy multibus, path_selector \"round-robin 0\" (rr_min_io_rq 1), polling_interval 1, path_checker tur, no_path_retry queue, failback manual."
  echo "- (b) mpathfs: --psp VMW_PSP_RR --psp-option iops=1 --psp-option useANO=1 --check-interval 1s --no-path-retry queue --failback manual, block:// paths${mp_query:+ ($mp_query: each system call in the goroutine of its FUSE request)} probed with SG_IO TEST UNIT READY."
  echo
  [ -n "$na" ] && echo "(b) mpathfs: $na" && echo
  fi
  if [ -n "$is_na" ]; then
    echo "## iSCSI to the array server"
    echo
    echo "(d) iSCSI: $is_na"
    echo
  else
    is_report
    echo
  fi
  if [ "$failed" = 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
} > "$scratch/result.md"
cp "$scratch/result.md" "$work/result.md"
echo
cat "$scratch/result.md"
exit "$failed"
