# iscsi-part.sh — part (d) of the in-VM suite: the array server reached by the
# guest's own iSCSI initiator. Sourced by in-vm-suite.sh (uses its log, now_ms, secs,
# sleep_until, R, failed, scratch, work); not run on its own.
#
#   1. `mpathfs array serve` in the guest: controllers A (port 1, 127.0.0.1:3260) and
#      B (port 2, 127.0.0.1:3261), implicit + explicit ALUA, A owns the LU (A is AO,
#      B is ANO), one 256 MiB LU on tmpfs.
#   2. open-iscsi (iscsid started by hand) discovers the target with SendTargets and
#      logs in to both portals: two SCSI disks. dm-multipath with
#      hardware_handler "1 alua" (scsi_dh_alua), prio alua, group_by_prio must build
#      ONE map with two path groups, prio 50 (the AO port) and 10 (the ANO port).
#   3. Persistent reservations: sg_persist on one path (register, reserve WERO, read
#      from the other path, release, clear) and mpathpersist on the map (the same,
#      the key on both I_T nexuses); the array's own status must show each step.
#   4. mpathfs pr over an mpathfs mount (iscsi:// paths, another initiator) and
#      mpathpersist over the dm map act on the same LU: each sees the other's
#      registrations and reservation.
#   5. fio --verify on the dm map while controller A (the AO port's) fails and is
#      restored: 0 errors, verify clean; dm's failover time is measured.
#
# Knobs: MPATHFS_VM_ISCSI_FIO_RUNTIME (30), MPATHFS_VM_ISCSI_FAIL_AT (8),
# MPATHFS_VM_ISCSI_RESTORE_AT (18), MPATHFS_VM_ISCSI_REPLACEMENT_TIMEOUT (5: the
# iSCSI session's replacement_timeout, how long the kernel holds I/O of a lost
# session before failing it to dm).

is_tgt=iqn.2026-12.io.mpathfs:vm
is_pa=127.0.0.1:3260          # controller A, relative port 1
is_pb=127.0.0.1:3261          # controller B, relative port 2
is_ini=iqn.2026-12.io.mpathfs:vm-open-iscsi
is_mpini=iqn.2026-12.io.mpathfs:vm-mpathfs
is_actl=/run/mpathfs/array-vm.sock
is_mctl=/run/mpathfs/vm-iscsi.sock
is_runtime=${MPATHFS_VM_ISCSI_FIO_RUNTIME:-30}
is_fail_at=${MPATHFS_VM_ISCSI_FAIL_AT:-8}
is_restore_at=${MPATHFS_VM_ISCSI_RESTORE_AT:-18}
is_rtmo=${MPATHFS_VM_ISCSI_REPLACEMENT_TIMEOUT:-5}
is_checks=()      # "name|ok|detail" in order, for the report
is_failed=0
is_warned=0

is_check() { # NAME OK(0/1) DETAIL
  local st=ok
  [ "$2" = 0 ] || { st=FAIL; is_failed=1; failed=1; }
  is_checks+=("$1|$st|$3")
  log "(d) check: $1: $st${3:+ — $3}"
}
is_warn() { # NAME DETAIL: reported, does not fail the suite
  is_checks+=("$1|WARN|$2")
  is_warned=1
  log "(d) check: $1: WARN — $2"
}
is_skip() { # NAME DETAIL
  is_checks+=("$1|skipped|$2")
  log "(d) check: $1: skipped — $2"
}

is_array() { mpathfs array --control "$is_actl" "$@"; }
is_array_json() { mpathfs array status --control "$is_actl" --json 2>/dev/null; }
# is_regs: the array's registrations of LU 0, "KEY PORT HOLDER" per line.
is_regs() {
  is_array_json | jq -r '.reservations[] | select(.lun == 0) | (.registrations // [])[] |
    "\(.key) \(.target_port) \(.holder) \(.initiator_port)"' 2>/dev/null
}
is_restype() { is_array_json | jq -r '.reservations[] | select(.lun == 0) | .type // ""' 2>/dev/null; }

# the dm path state of a device, as dm_path_state in the suite
is_dm_state() {
  multipathd show paths raw format "%d %t %T" 2>/dev/null | awk -v d="$1" '$1==d {print $2, $3}'
}

# ------------------------------------------------------------------- setup
is_start_array() {
  mkdir -p /run/mpathfs "$scratch/array-state"
  cat > "$scratch/array.yaml" <<EOF
name: vm
target: $is_tgt
state_dir: $scratch/array-state
alua:
  access: active-active
  transitions: both
  owner: A
  persist: false
lus:
  - name: lu0
    lun: 0
    file: $scratch/array-lu0.img
    size: 256M
    wwid: naa.600d0230000000000000000000a77a0d
    vendor: MPATHFS
    model: ISCSI-ARRAY
    serial: MPAVM00001
controllers:
  - name: A
    ports:
      - {id: 1, portal: "$is_pa"}
  - name: B
    ports:
      - {id: 2, portal: "$is_pb"}
EOF
  mpathfs array serve --config "$scratch/array.yaml" --control "$is_actl" \
    >"$scratch/array-serve.log" 2>&1 &
  as_pid=$!
  local i=0
  until grep -q '^ready' "$scratch/array-serve.log" 2>/dev/null; do
    kill -0 "$as_pid" 2>/dev/null || { as_pid=""; return 1; }
    i=$((i + 1)); [ $i -gt 300 ] && return 1
    sleep 0.1
  done
  log "(d) array serve ready (pid $as_pid)"
  sed 's/^/    /' "$scratch/array-serve.log"
}

is_start_iscsid() {
  mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi
  # our own initiator name (the package may leave GenerateName=yes to a systemd unit)
  echo "InitiatorName=$is_ini" > /etc/iscsi/initiatorname.iscsi
  modprobe iscsi_tcp || return 1
  # loaded before the disks appear, scsi_dh_alua attaches to them at scan time
  modprobe scsi_dh_alua 2>/dev/null
  # its own session: on SIGTERM iscsid signals its whole process group (killpg), which
  # would otherwise be the suite's
  setsid iscsid -f -d 3 >"$scratch/iscsid.log" 2>&1 &
  isd_pid=$!
  local i=0
  until iscsiadm -m session >/dev/null 2>&1 || [ "$(iscsiadm -m session 2>&1)" = "iscsiadm: No active sessions." ]; do
    kill -0 "$isd_pid" 2>/dev/null || { isd_pid=""; return 1; }
    i=$((i + 1)); [ $i -gt 100 ] && return 1
    sleep 0.1
  done
  log "(d) iscsid ready (pid $isd_pid)"
}

# is_disk_portal sdX: the portal (address:port) of the iSCSI session behind a disk
is_disk_portal() {
  local sess conn
  sess=$(readlink -f "/sys/block/$1/device" | grep -o 'session[0-9]*' | head -1)
  [ -n "$sess" ] || return 0
  for conn in /sys/class/iscsi_connection/connection"${sess#session}":*; do
    echo "$(cat "$conn/persistent_address"):$(cat "$conn/persistent_port")"
    return 0
  done
}

is_login() {
  local out n
  out=$(iscsiadm -m discovery -t st -p "$is_pa" 2>&1)
  log "(d) iscsiadm -m discovery -t st -p $is_pa:"
  echo "$out" | sed 's/^/    /'
  n=$(grep -c " $is_tgt\$" <<<"$out")
  is_check "SendTargets discovery lists both portals" "$([ "$n" -ge 2 ] && echo 0 || echo 1)" "$n portal(s) of $is_tgt"
  if [ "$n" -lt 2 ]; then  # discover the other portal on its own, to go on
    iscsiadm -m discovery -t st -p "$is_pb" >/dev/null 2>&1
  fi
  # A lost session holds its I/O for replacement_timeout, then fails it to dm.
  iscsiadm -m node -T "$is_tgt" -o update -n node.session.timeo.replacement_timeout -v "$is_rtmo" >/dev/null
  iscsiadm -m node -T "$is_tgt" -p "$is_pa" --login 2>&1 | sed 's/^/    /'
  iscsiadm -m node -T "$is_tgt" -p "$is_pb" --login 2>&1 | sed 's/^/    /'
  local i=0 d p
  is_da="" is_db=""
  while :; do
    for d in /sys/block/sd*; do
      [ -e "$d/device/vendor" ] || continue
      [ "$(tr -d ' ' < "$d/device/vendor")" = MPATHFS ] || continue
      p=$(is_disk_portal "${d##*/}")
      [ "$p" = "$is_pa" ] && is_da=${d##*/}
      [ "$p" = "$is_pb" ] && is_db=${d##*/}
    done
    [ -n "$is_da" ] && [ -n "$is_db" ] && break
    i=$((i + 1)); [ $i -gt 600 ] && break   # 2 min: udev and the scan are slow under TCG
    sleep 0.2
  done
  iscsiadm -m session 2>&1 | sed 's/^/    /'
  is_check "open-iscsi logged in to both portals" \
    "$([ -n "$is_da" ] && [ -n "$is_db" ] && echo 0 || echo 1)" \
    "/dev/${is_da:-?} via $is_pa (controller A), /dev/${is_db:-?} via $is_pb (controller B)"
  [ -n "$is_da" ] && [ -n "$is_db" ] || return 1
  local wa wb
  wa=$(/lib/udev/scsi_id -g -u -d "/dev/$is_da" 2>/dev/null)
  wb=$(/lib/udev/scsi_id -g -u -d "/dev/$is_db" 2>/dev/null)
  is_check "both disks report one WWID" "$([ -n "$wa" ] && [ "$wa" = "$wb" ] && echo 0 || echo 1)" "$wa / $wb"
  R[iscsi.paths]="/dev/$is_da ($is_pa, A), /dev/$is_db ($is_pb, B)"
}

is_start_multipath() {
  cat > /etc/multipath.conf <<'EOF'
defaults {
	polling_interval	1
	find_multipaths		no
	user_friendly_names	yes
	no_path_retry		queue
	reservation_key		file
}
blacklist {
	devnode "^vd[a-z]"
	devnode "^(ram|loop|fd|md|dm-|sr|scd|st|nbd|zram)[0-9]*"
	device {
		vendor "Linux"
		product "scsi_debug"
	}
}
devices {
	device {
		vendor			"MPATHFS"
		product			".*"
		path_grouping_policy	group_by_prio
		prio			alua
		hardware_handler	"1 alua"
		path_checker		tur
		path_selector		"round-robin 0"
		failback		immediate
	}
}
EOF
  mkdir -p /etc/multipath
  : > /etc/multipath/prkeys
  modprobe dm_multipath
  modprobe scsi_dh_alua 2>/dev/null
  multipathd -d -s -v3 >"$scratch/iscsi-multipathd.log" 2>&1 &
  is_mpd_pid=$!
  local i=0
  is_map=""
  while :; do
    is_map=$(multipath -l -v1 2>/dev/null | head -1)
    if [ -n "$is_map" ] && [ "$(is_dm_state "$is_da")" = "active ready" ] &&
      [ "$(is_dm_state "$is_db")" = "active ready" ]; then break; fi
    i=$((i + 1))
    [ $((i % 20)) = 0 ] && multipath -v2 >/dev/null 2>&1
    [ $i -gt 1200 ] && break
    kill -0 "$is_mpd_pid" 2>/dev/null || { is_mpd_pid=""; break; }
    sleep 0.1
  done
  udevadm settle -t 10 || true
  local ll nmaps
  ll=$(multipath -ll 2>/dev/null | cat)
  log "(d) multipath -ll:"
  echo "$ll" | sed 's/^/    /'
  nmaps=$(multipath -l -v1 2>/dev/null | grep -c .)
  # the groups in order: "prio dev..." per group
  local groups
  groups=$(echo "$ll" | awk '
    /prio=/ {if (g != "") print g; match($0, /prio=[0-9]+/); g=substr($0, RSTART+5, RLENGTH-5); next}
    / sd[a-z]+ / {for (i=1; i<=NF; i++) if ($i ~ /^sd[a-z]+$/) g = g " " $i}
    END {if (g != "") print g}')
  log "(d) path groups (prio devices): $(echo "$groups" | tr '\n' ';')"
  local g1 g2 ok=1
  g1=$(echo "$groups" | sed -n 1p) g2=$(echo "$groups" | sed -n 2p)
  if [ "$nmaps" = 1 ] && [ "$(echo "$groups" | grep -c .)" = 2 ] &&
    [ "$g1" = "50 $is_da" ] && [ "$g2" = "10 $is_db" ] && grep -q "hwhandler='1 alua'" <<<"$ll"; then
    ok=0
  fi
  is_check "dm-multipath: one map, two ALUA path groups (prio 50 AO / 10 ANO)" "$ok" \
    "$nmaps map(s) ${is_map:-none}; groups: $(echo "$groups" | sed 's/^\([0-9]*\) /prio \1: /' | paste -sd ';' | sed 's/;/; /g')"
  R[iscsi.map]=$is_map
  is_check "scsi_dh_alua attached to both paths" \
    "$([ "$(cat "/sys/block/$is_da/device/dh_state" 2>/dev/null)" = alua ] &&
      [ "$(cat "/sys/block/$is_db/device/dh_state" 2>/dev/null)" = alua ] && echo 0 || echo 1)" \
    "dh_state $(cat "/sys/block/$is_da/device/dh_state" 2>/dev/null) / $(cat "/sys/block/$is_db/device/dh_state" 2>/dev/null)"
  [ "$ok" = 0 ] && [ -b "/dev/mapper/$is_map" ]
}

# ------------------------------------------------------------ reservations
# is_has_key OUTPUT KEY: the sg_persist/mpathpersist output lists the key
is_has_key() { grep -Eiq "(^|[^0-9a-fx])0x0*${2#0x}\b" <<<"$1"; }

is_pr_paths() {
  local k=0x5a01 out ok regs
  log "(d) sg_persist on the paths"
  ok=0
  sg_persist --out --register --param-sark=$k "/dev/$is_da" >"$scratch/pr.out" 2>&1 || ok=1
  out=$(sg_persist --in --read-keys "/dev/$is_db" 2>&1); echo "$out" | sed 's/^/    /'
  is_has_key "$out" $k || ok=1
  regs=$(is_regs); echo "$regs" | sed 's/^/    array: /'
  grep -q "^$k 1 false $is_ini," <<<"$regs" || ok=1
  is_check "sg_persist: register on /dev/$is_da, key seen from /dev/$is_db and by the array (port 1)" $ok ""
  ok=0
  sg_persist --out --reserve --param-rk=$k --prout-type=5 "/dev/$is_da" >>"$scratch/pr.out" 2>&1 || ok=1
  out=$(sg_persist --in --read-reservation "/dev/$is_db" 2>&1); echo "$out" | sed 's/^/    /'
  is_has_key "$out" $k || ok=1
  grep -qi 'registrants only' <<<"$out" || ok=1
  [ "$(is_restype)" = WERO ] || ok=1
  grep -q "^$k 1 true " <<<"$(is_regs)" || ok=1
  is_check "sg_persist: reserve WERO (type 5), seen from the other path and by the array" $ok "array: type $(is_restype)"
  ok=0
  sg_persist --out --release --param-rk=$k --prout-type=5 "/dev/$is_da" >>"$scratch/pr.out" 2>&1 || ok=1
  out=$(sg_persist --in --read-reservation "/dev/$is_db" 2>&1)
  grep -qi 'no reservation' <<<"$out" || ok=1
  sg_persist --out --clear --param-rk=$k "/dev/$is_da" >>"$scratch/pr.out" 2>&1 || ok=1
  out=$(sg_persist --in --read-keys "/dev/$is_db" 2>&1)
  grep -qi 'no registered' <<<"$out" || ok=1
  [ -z "$(is_regs)" ] && [ -z "$(is_restype)" ] || ok=1
  is_check "sg_persist: release and clear (nothing left at the array)" $ok ""
  [ $ok = 0 ] || cat "$scratch/pr.out"
}

is_pr_map() {
  local k=0x5b01 out ok regs dev=/dev/mapper/$is_map
  log "(d) mpathpersist on $dev"
  ok=0
  mpathpersist --out --register --param-sark=$k "$dev" >"$scratch/mpp.out" 2>&1 || ok=1
  out=$(mpathpersist --in --read-keys "$dev" 2>&1); echo "$out" | sed 's/^/    /'
  is_has_key "$out" $k || ok=1
  regs=$(is_regs); echo "$regs" | sed 's/^/    array: /'
  # the key on every I_T nexus of the map: ports 1 and 2
  grep -q "^$k 1 false " <<<"$regs" && grep -q "^$k 2 false " <<<"$regs" || ok=1
  is_check "mpathpersist: register on the map (the key on both I_T nexuses at the array)" $ok \
    "$(echo "$regs" | awk '{print $1 "@port" $2}' | paste -sd ' ')"
  ok=0
  mpathpersist --out --reserve --param-rk=$k --prout-type=5 "$dev" >>"$scratch/mpp.out" 2>&1 || ok=1
  out=$(mpathpersist --in --read-reservation "$dev" 2>&1); echo "$out" | sed 's/^/    /'
  is_has_key "$out" $k || ok=1
  out=$(sg_persist --in --read-reservation "/dev/$is_db" 2>&1)
  is_has_key "$out" $k || ok=1
  [ "$(is_restype)" = WERO ] || ok=1
  is_check "mpathpersist: reserve WERO (type 5), seen by sg_persist on a path and by the array" $ok "array: type $(is_restype)"
  ok=0
  mpathpersist --out --release --param-rk=$k --prout-type=5 "$dev" >>"$scratch/mpp.out" 2>&1 || ok=1
  out=$(mpathpersist --in --read-reservation "$dev" 2>&1)
  grep -qi 'no reservation' <<<"$out" || ok=1
  [ -z "$(is_restype)" ] || ok=1
  # unregister (multipathd forgets the key too) rather than CLEAR, so no stale key in
  # the prkeys file comes back on a reinstated path later
  mpathpersist --out --register --param-rk=$k --param-sark=0 "$dev" >>"$scratch/mpp.out" 2>&1 || ok=1
  [ -z "$(is_regs)" ] || ok=1
  is_check "mpathpersist: release and unregister (nothing left at the array)" $ok ""
  [ $ok = 0 ] || cat "$scratch/mpp.out"
}

# ---------------------------------------------- mpathfs pr beside mpathpersist
is_mpathfs_pr() {
  local help
  help=$(mpathfs pr --help 2>&1)
  if ! grep -q -- '--read-keys' <<<"$help"; then
    is_skip "mpathfs pr and mpathpersist on one LU" "skipped: mpathfs pr missing"
    return 0
  fi
  modprobe fuse 2>/dev/null
  mkdir -p /mnt/mpi
  local u="?initiator=$is_mpini"
  # --lock-sector none: the dm map shares this LU and knows nothing of an mpathfs
  # lock record (the reservations are the coordination under test), and the fio of
  # part 5 writes the whole LU, its last block included
  mpathfs mount --control "$is_mctl" --name shared --lock-sector none \
    --path "iscsi://$is_pa/$is_tgt/0$u" --path "iscsi://$is_pb/$is_tgt/0$u" \
    /mnt/mpi >"$scratch/mpathfs-iscsi.log" 2>&1 &
  is_mp_pid=$!
  local i=0
  until [ -e /mnt/mpi/shared ]; do
    if ! kill -0 "$is_mp_pid" 2>/dev/null || [ $i -gt 300 ]; then
      is_check "mpathfs mount over iscsi:// paths" 1 "$(tail -3 "$scratch/mpathfs-iscsi.log" | tr '\n' ' ')"
      is_stop_mpathfs; return 0
    fi
    i=$((i + 1)); sleep 0.1
  done
  log "(d) mpathfs mounted /mnt/mpi/shared over iscsi:// (pid $is_mp_pid)"
  local pr="mpathfs pr --control $is_mctl"
  local kd=0x6a01 km=0x6b02 dev=/dev/mapper/$is_map ok out
  ok=0
  mpathpersist --out --register --param-sark=$kd "$dev" >"$scratch/x.out" 2>&1 || ok=1
  $pr --register --param-sark $km shared >>"$scratch/x.out" 2>&1 || ok=1
  out=$($pr --read-keys shared 2>&1); echo "$out" | sed 's/^/    mpathfs pr: /'
  is_has_key "$out" $kd && is_has_key "$out" $km || ok=1
  out=$(mpathpersist --in --read-keys "$dev" 2>&1); echo "$out" | sed 's/^/    mpathpersist: /'
  is_has_key "$out" $kd && is_has_key "$out" $km || ok=1
  is_regs | sed 's/^/    array: /'
  is_check "mpathfs pr and mpathpersist: each sees the other's registration" $ok ""
  ok=0
  mpathpersist --out --reserve --param-rk=$kd --prout-type=5 "$dev" >>"$scratch/x.out" 2>&1 || ok=1
  out=$($pr --read-reservation shared 2>&1); echo "$out" | sed 's/^/    mpathfs pr: /'
  is_has_key "$out" $kd || ok=1
  mpathpersist --out --release --param-rk=$kd --prout-type=5 "$dev" >>"$scratch/x.out" 2>&1 || ok=1
  $pr --reserve --param-rk $km --prout-type WERO shared >>"$scratch/x.out" 2>&1 || ok=1
  out=$(mpathpersist --in --read-reservation "$dev" 2>&1); echo "$out" | sed 's/^/    mpathpersist: /'
  is_has_key "$out" $km || ok=1
  [ "$(is_restype)" = WERO ] || ok=1
  is_check "mpathfs pr and mpathpersist: each sees the other's reservation" $ok ""
  ok=0
  $pr --release --param-rk $km --prout-type WERO shared >>"$scratch/x.out" 2>&1 || ok=1
  mpathpersist --out --register --param-rk=$kd --param-sark=0 "$dev" >>"$scratch/x.out" 2>&1 || ok=1
  $pr --clear --param-rk $km shared >>"$scratch/x.out" 2>&1 || ok=1
  [ -z "$(is_regs)" ] && [ -z "$(is_restype)" ] || ok=1
  is_check "mpathfs pr and mpathpersist: release, unregister, clear" $ok ""
  [ $ok = 0 ] || cat "$scratch/x.out"
  is_stop_mpathfs
}

is_stop_mpathfs() {
  [ -n "${is_mp_pid:-}" ] || return 0
  kill -TERM "$is_mp_pid" 2>/dev/null
  local i
  for i in $(seq 100); do kill -0 "$is_mp_pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$is_mp_pid" 2>/dev/null && { log "(d) mpathfs did not exit on SIGTERM; SIGKILL"; kill -KILL "$is_mp_pid"; }
  wait "$is_mp_pid" 2>/dev/null
  is_mp_pid=""
  mountpoint -q /mnt/mpi && umount -l /mnt/mpi
  cp "$scratch/mpathfs-iscsi.log" "$work/" 2>/dev/null
  return 0
}

# ------------------------------------------ controller failure under fio verify
is_ios() { awk '{print $1 + $5}' "/sys/block/$1/stat"; }

is_failover() {
  local dev=/dev/mapper/$is_map pfx=$scratch/iscsi owner ctl_port
  owner=$(is_array_json | jq -r '.array.owner')
  [ "$owner" = A ] || log "(d) WARNING: controller $owner owns the LU, expected A"
  log "(d) fio on $dev: ${is_runtime}s, fail controller A at ${is_fail_at}s, restore at ${is_restore_at}s"
  local tl base0 b_base
  tl=$(now_ms); base0=$(is_ios "$is_da")
  fio --name=iscsi --filename="$dev" --ioengine=libaio --direct=1 \
    --rw=randrw --bs=4k --iodepth=16 --time_based --runtime="$is_runtime" \
    --verify=crc32c --verify_fatal=1 --verify_backlog=1024 --continue_on_error=io \
    --write_lat_log="$pfx" --log_avg_msec=1000 --log_max_value=1 \
    --output-format=json --output="$pfx.json" >"$pfx.fio.out" 2>&1 &
  local fpid=$! t0=""
  while [ $(( $(now_ms) - tl )) -lt 30000 ] && kill -0 "$fpid" 2>/dev/null; do
    [ "$(is_ios "$is_da")" != "$base0" ] && { t0=$(now_ms); break; }
    sleep 0.05
  done
  [ -n "$t0" ] || t0=$tl
  sleep_until $(( t0 + is_fail_at * 1000 ))
  b_base=$(is_ios "$is_db")
  local tf; tf=$(now_ms)
  is_array fail vm A >/dev/null 2>&1 || log "(d) mpathfs array fail vm A failed"
  local tfd; tfd=$(now_ms)
  log "(d) controller A failed"
  # Restore (restore_at - fail_at) s after the fail returned, and not before dm failed
  # over (at most 60 s): on a loaded host the commands themselves take seconds.
  local tfail="" tio="" hold=$(( (is_restore_at - is_fail_at) * 1000 ))
  while :; do
    if [ -z "$tfail" ] && case "$(is_dm_state "$is_da")" in failed*|*faulty*) true ;; *) false ;; esac; then
      tfail=$(now_ms); log "(d) dm failed /dev/$is_da after $(secs $((tfail - tf))) s"
    fi
    if [ -z "$tio" ] && [ "$(is_ios "$is_db")" != "$b_base" ]; then
      tio=$(now_ms); log "(d) I/O through controller B (/dev/$is_db) after $(secs $((tio - tf))) s"
    fi
    [ $(( $(now_ms) - tfd )) -ge "$hold" ] && [ -n "$tio" ] && break
    [ $(( $(now_ms) - tfd )) -ge 60000 ] && break
    sleep 0.1
  done
  log "(d) $(is_array status 2>/dev/null | head -1)"
  local tr; tr=$(now_ms)
  is_array restore vm A >/dev/null 2>&1 || log "(d) mpathfs array restore vm A failed"
  log "(d) controller A restored ($(is_array status 2>/dev/null | head -1))"
  local tback="" st=""
  while [ $(( $(now_ms) - tr )) -lt 60000 ]; do
    st=$(is_dm_state "$is_da")
    [ "$st" = "active ready" ] && { tback=$(now_ms); break; }
    sleep 0.1
  done
  if [ -n "$tback" ]; then
    log "(d) /dev/$is_da active ready again after $(secs $((tback - tr))) s"
  else
    log "(d) /dev/$is_da not back within 60 s (last: $st); device state $(cat "/sys/block/$is_da/device/state" 2>/dev/null)"
    iscsiadm -m session -P 1 2>&1 | sed 's/^/    /'
  fi
  local deadline=$(( t0 + (is_runtime + 90) * 1000 )) frc hung=""
  while kill -0 "$fpid" 2>/dev/null && [ "$(now_ms)" -lt "$deadline" ]; do sleep 0.5; done
  if kill -0 "$fpid" 2>/dev/null; then
    log "(d) fio hung: killing it (pid $fpid)"; kill -KILL "$fpid" 2>/dev/null; hung=1
  fi
  wait "$fpid"; frc=$?
  multipath -ll "$is_map" 2>/dev/null | sed 's/^/    /'
  local errs jerr verr=ok fault_ms=$(( tf - t0 ))
  errs=$(jq -r '[.jobs[].total_err // 0] | add' "$pfx.json" 2>/dev/null)
  jerr=$(jq -r '[.jobs[].error // 0] | add' "$pfx.json" 2>/dev/null)
  if grep -Eqi 'verify (failed|error)|bad magic|bad (header|pattern)' "$pfx.fio.out" ||
    [ "$frc" != 0 ] || [ "${jerr:-1}" != 0 ] || [ -n "$hung" ]; then
    verr="FAILED (fio rc $frc, error ${jerr:-?}${hung:+, hung})"
  fi
  R[iscsi.errors]=${errs:-no json}
  R[iscsi.verify]=$verr
  R[iscsi.iops]=$(jq -r '[.jobs[] | .read.iops + .write.iops] | add | floor' "$pfx.json" 2>/dev/null || echo "?")
  R[iscsi.failed]=${tfail:+$(secs $((tfail - tf))) s}
  R[iscsi.resumed]=${tio:+$(secs $((tio - tf))) s}
  R[iscsi.back]=${tback:+$(secs $((tback - tr))) s}
  # the longest completion around the failure (see the suite's clat_fault)
  R[iscsi.clat]=$(awk -F', *' -v a=$((fault_ms - 1000)) -v b=$((fault_ms + is_rtmo * 1000 + 5000)) '
    $1 >= a && $1 - $2/1e6 - 1000 <= b && $2 > m {m=$2}
    END {if (m == "") print "no samples"; else printf "%.1f", m/1e6}' "${pfx}_clat.1.log" 2>/dev/null)
  cp "$pfx".json "$pfx".fio.out "${pfx}"_clat.1.log "$work/" 2>/dev/null
  is_check "fio --verify on the map through controller A's failure: 0 errors, verify clean" \
    "$([ "${R[iscsi.errors]}" = 0 ] && [ "$verr" = ok ] && echo 0 || echo 1)" \
    "total_err ${R[iscsi.errors]}, verify $verr"
  is_check "dm failed over to controller B" "$([ -n "$tio" ] && echo 0 || echo 1)" \
    "path failed after ${R[iscsi.failed]:-not seen}, I/O through B after ${R[iscsi.resumed]:-not seen}"
  # A failed controller's portals refuse connections (no listener), so
  # open-iscsi retries its connect every ~2 s without touching its kernel
  # session and logs in with the first connection after the restore (see
  # docs/vm.md, "Re-login after the restore").
  is_check "the path through controller A is used again after the restore" \
    "$([ -n "$tback" ] && echo 0 || echo 1)" "after ${R[iscsi.back]:-not within 60 s}"
}

# ------------------------------------------------------------------ teardown
is_teardown() {
  is_stop_mpathfs
  if [ -n "${is_mpd_pid:-}" ]; then
    udevadm settle -t 10 >/dev/null 2>&1
    local i
    for i in 1 2 3 4 5; do multipath -F >/dev/null 2>&1 && break; sleep 1; done
    kill -TERM "$is_mpd_pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$is_mpd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$is_mpd_pid" 2>/dev/null && kill -KILL "$is_mpd_pid"
    wait "$is_mpd_pid" 2>/dev/null
    is_mpd_pid=""
    cp "$scratch/iscsi-multipathd.log" "$work/" 2>/dev/null
  fi
  if [ -n "${isd_pid:-}" ]; then
    iscsiadm -m node -T "$is_tgt" --logout >/dev/null 2>&1
    iscsiadm -m node -T "$is_tgt" -o delete >/dev/null 2>&1
    iscsiadm -m discoverydb -t st -p "$is_pa" -o delete >/dev/null 2>&1
    kill -TERM "$isd_pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$isd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$isd_pid" 2>/dev/null && kill -KILL "$isd_pid"
    wait "$isd_pid" 2>/dev/null
    isd_pid=""
    cp "$scratch/iscsid.log" "$work/iscsid.log" 2>/dev/null
  fi
  if [ -n "${as_pid:-}" ]; then
    kill -TERM "$as_pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$as_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$as_pid" 2>/dev/null && { log "(d) array serve did not stop in 10 s; SIGKILL"; kill -KILL "$as_pid"; }
    wait "$as_pid" 2>/dev/null
    as_pid=""
    cp "$scratch/array-serve.log" "$work/" 2>/dev/null
  fi
  return 0
}

# -------------------------------------------------------------------- main
run_iscsi() {
  local t_start; t_start=$(now_ms)
  log "(d) iSCSI to the array server"
  local t
  for t in iscsiadm iscsid sg_persist mpathpersist multipathd; do
    command -v "$t" >/dev/null || { is_check "tools" 1 "$t missing (run tests/vm/provision.sh)"; return; }
  done
  if ! is_start_array; then
    is_check "mpathfs array serve started" 1 "$(tail -3 "$scratch/array-serve.log" 2>/dev/null | tr '\n' ' ')"
    is_teardown; return
  fi
  if ! is_start_iscsid; then
    is_check "iscsid started" 1 "$(tail -3 "$scratch/iscsid.log" 2>/dev/null | tr '\n' ' ')"
    is_teardown; return
  fi
  if is_login && is_start_multipath; then
    is_pr_paths
    is_pr_map
    is_mpathfs_pr
    is_failover
  fi
  is_teardown
  R[iscsi.time]=$(secs $(( $(now_ms) - t_start )))
  log "(d) done in ${R[iscsi.time]} s"
}

# is_report: the part's section of result.md
is_report() {
  echo "## iSCSI to the array server: open-iscsi + dm-multipath (scsi_dh_alua) in the guest"
  echo
  echo "\`mpathfs array serve\` in the guest (controller A: port 1 $is_pa AO, controller B: port 2 $is_pb ANO,"
  echo "implicit+explicit ALUA, one 256 MiB LU); open-iscsi logged in to both portals"
  echo "(replacement_timeout ${is_rtmo} s); dm-multipath group_by_prio, prio alua, hardware_handler \"1 alua\"."
  echo "Paths: ${R[iscsi.paths]:-?}; map: ${R[iscsi.map]:-none}."
  echo
  echo "| check | result | detail |"
  echo "|---|---|---|"
  local c
  for c in "${is_checks[@]}"; do
    IFS='|' read -r n s d <<<"$c"
    echo "| $n | $s | ${d:-} |"
  done
  echo
  if [ -n "${R[iscsi.errors]:-}" ]; then
    echo "Controller A failed under fio (4k randrw QD16 direct, verify=crc32c, ${is_runtime}s) at ${is_fail_at}s, restored $((is_restore_at - is_fail_at))s after the fail returned and dm had failed over (times from the start of \`mpathfs array fail\`):"
    echo
    echo "| | dm-multipath over open-iscsi |"
    echo "|---|---|"
    echo "| fio errors (total_err) / verify | ${R[iscsi.errors]} / ${R[iscsi.verify]} |"
    echo "| dm failed the path after | ${R[iscsi.failed]:-not seen} |"
    echo "| I/O through controller B after (failover time) | ${R[iscsi.resumed]:-not seen} |"
    echo "| max clat around the failure (ms) | ${R[iscsi.clat]:-?} |"
    echo "| path through A active again after the restore | ${R[iscsi.back]:-not seen} |"
    echo "| mean IOPS | ${R[iscsi.iops]:-?} |"
    echo
  fi
  local v=PASS
  [ "$is_warned" = 1 ] && v="PASS with warnings"
  [ "$is_failed" = 0 ] || v=FAIL
  echo "Part (d) took ${R[iscsi.time]:-?} s. (d): $v"
}
