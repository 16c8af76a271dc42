#!/bin/bash
# run.sh — boot the VM-tier guest headless and run the in-VM suite in it.
#
# Builds (or reuses) the image with build-image.sh, builds mpathfs for the guest
# (CGO_ENABLED=0, into tests/vm/work/mpathfs), boots qemu with direct kernel boot,
# shares the repository read-write over 9p (tag "host", /mnt/host in the guest),
# runs tests/vm/in-vm-suite.sh there and exits with its exit status.
#
# Environment:
#   MPATHFS_VM_ACCEL=tcg|kvm   default tcg (kvm here is a nested PVM: guests crawl)
#   MPATHFS_VM_TIMEOUT=SECONDS hard limit for the guest, default 1200
#   MPATHFS_VM_CMD=COMMAND     run this (bash -c, cwd = repo) instead of the suite
#   MPATHFS_VM_ONLY_DM=1       run only part (a), dm-multipath
#   MPATHFS_VM_MEM / MPATHFS_VM_CPUS   default 2048 / 2
#   MPATHFS_VM_FIO_RUNTIME / MPATHFS_VM_FAULT_AT / MPATHFS_VM_RESTORE_AT
#                              fio seconds (40) and fault/restore times (10/20)
#   MPATHFS_VM_ONLY_ISCSI=1 / MPATHFS_VM_SKIP_ISCSI=1   only part (d) / all but (d)
#   MPATHFS_VM_BLOCK_QUERY=Q   query of part (b)'s block:// paths, default ?inline=true
#                              (empty: the default hand-off to a worker per system call)
#   MPATHFS_VM_KERNEL_ARGS=ARGS  more guest kernel arguments; default "clocksource=tsc
#                              tsc=reliable" (empty: the kernel's choice under TCG, HPET)
#   MPATHFS_VM_ISCSI_FIO_RUNTIME / _FAIL_AT / _RESTORE_AT / _REPLACEMENT_TIMEOUT
#                              part (d): fio seconds (30), controller failure and
#                              restore (8/18), the iSCSI replacement_timeout (5)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$here/work
mkdir -p "$work"
log() { echo "vm-run: $*" >&2; }

accel=${MPATHFS_VM_ACCEL:-tcg}
timeout=${MPATHFS_VM_TIMEOUT:-1200}
mem=${MPATHFS_VM_MEM:-2048}
cpus=${MPATHFS_VM_CPUS:-2}

"$here/build-image.sh" "$work"

# mpathfs for the guest. A failure is not fatal here: the suite reports part (b) as
# not available (and fails unless MPATHFS_VM_ONLY_DM=1).
rm -f "$work/mpathfs" "$work/fuseceiling" "$work/mpathfs.unavailable"
if [ "${MPATHFS_VM_ONLY_DM:-0}" != 1 ]; then
  if command -v go >/dev/null; then
    if ! (cd "$repo" && CGO_ENABLED=0 go build -o tests/vm/work/mpathfs ./cmd/mpathfs &&
      CGO_ENABLED=0 go build -o tests/vm/work/fuseceiling ./bench/fuseceiling) \
      >"$work/mpathfs.build.log" 2>&1; then
      { echo "go build ./cmd/mpathfs failed:"; tail -5 "$work/mpathfs.build.log"; } \
        > "$work/mpathfs.unavailable"
      log "$(cat "$work/mpathfs.unavailable")"
    fi
  else
    echo "no go toolchain on the host" > "$work/mpathfs.unavailable"
  fi
fi

# What the guest runs (sourced by the guest's init).
rm -f "$work/exit-status" "$work/result.md"
q() { printf '%q' "$1"; }
{
  echo "VMTEST_CMD=$(q "${MPATHFS_VM_CMD:-tests/vm/in-vm-suite.sh}")"
  echo "VMTEST_STATUS=tests/vm/work/exit-status"
  for v in MPATHFS_VM_ONLY_DM MPATHFS_VM_FIO_RUNTIME MPATHFS_VM_FAULT_AT MPATHFS_VM_RESTORE_AT \
    MPATHFS_VM_ONLY_ISCSI MPATHFS_VM_SKIP_ISCSI MPATHFS_VM_ISCSI_FIO_RUNTIME MPATHFS_VM_ISCSI_FAIL_AT \
    MPATHFS_VM_ISCSI_RESTORE_AT MPATHFS_VM_ISCSI_REPLACEMENT_TIMEOUT MPATHFS_VM_BLOCK_QUERY; do
    [ -n "${!v+x}" ] && echo "export $v=$(q "${!v}")"
  done
  true
} > "$work/guest.env"

case "$accel" in
  tcg) accel_args=(-accel tcg,thread=multi,tb-size=512 -cpu max) ;;
  kvm) accel_args=(-enable-kvm -cpu host,-arch-capabilities) ;;
  *) log "MPATHFS_VM_ACCEL must be tcg or kvm"; exit 2 ;;
esac

# The guest's clock: under TCG the kernel distrusts the emulated TSC and
# falls back to HPET, on which every clock read is an emulated device access
# and clock_gettime leaves the vDSO for a system call: about 2.5 µs a read,
# and the Go runtime reads the clock on every goroutine switch. A real host
# runs on the TSC; so does the guest unless MPATHFS_VM_KERNEL_ARGS says else.
kernel_args=${MPATHFS_VM_KERNEL_ARGS-clocksource=tsc tsc=reliable}

console=$work/console.log
pidfile=$work/qemu.pid
rm -f "$console" "$pidfile"
log "booting ($accel, $cpus vCPUs, $mem MiB, timeout ${timeout}s); console: $console"
t0=$(date +%s)
# The disk is opened with snapshot=on: the cached image is never modified.
# no_timer_check: on a loaded host the emulated timer misses the kernel's IO-APIC
# timer check ("IO-APIC + timer doesn't work!" panic at boot, seen under load 29).
qemu-system-x86_64 \
  -machine q35 "${accel_args[@]}" -smp "$cpus" -m "$mem" \
  -nodefaults -no-user-config -display none -vga none -nic none -no-reboot \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "root=/dev/vda console=ttyS0 panic=-1 loglevel=4 quiet no_timer_check vmtest.init=/sbin/mpathfs-vm-init${kernel_args:+ $kernel_args}" \
  -drive file="$work/disk.raw",format=raw,if=virtio,snapshot=on,cache=unsafe \
  -virtfs local,path="$repo",mount_tag=host,security_model=none,id=host \
  -chardev file,id=con,path="$console" -serial chardev:con \
  -pidfile "$pidfile" </dev/null >"$work/qemu.out" 2>&1 &
qpid=$!

# Mirror the console to stdout while waiting.
tail -n +1 -F "$console" 2>/dev/null &
tpid=$!
stop_tail() { kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; }
on_exit() {
  if kill -0 "$qpid" 2>/dev/null; then kill -KILL "$qpid" 2>/dev/null || true; fi
  stop_tail
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM

timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
  if [ $(( $(date +%s) - t0 )) -ge "$timeout" ]; then
    timed_out=1
    kill -TERM "$qpid" 2>/dev/null || true
    sleep 3
    kill -KILL "$qpid" 2>/dev/null || true
    break
  fi
  sleep 1
done
wait "$qpid" 2>/dev/null && qrc=0 || qrc=$?
sleep 0.5
stop_tail
elapsed=$(( $(date +%s) - t0 ))

if [ "$timed_out" = 1 ]; then
  log "TIMEOUT: the guest did not finish within ${timeout}s; qemu (pid $qpid) killed"
  log "last 60 lines of $console:"
  tail -n 60 "$console" >&2
  exit 124
fi

rc=
if [ -s "$work/exit-status" ]; then
  rc=$(tr -dc '0-9' < "$work/exit-status")
else
  rc=$(grep -a -o 'MPATHFS-VM-EXIT=[0-9]*' "$console" | tail -1 | cut -d= -f2 || true)
fi
if [ -z "$rc" ]; then
  log "FAILED: the guest gave no exit status (qemu exit $qrc after ${elapsed}s)"
  cat "$work/qemu.out" >&2 || true
  log "last 60 lines of $console:"
  tail -n 60 "$console" >&2
  exit 125
fi
[ -s "$work/result.md" ] && { echo; cat "$work/result.md"; echo; }
log "guest finished in ${elapsed}s with exit status $rc"
exit "$rc"
