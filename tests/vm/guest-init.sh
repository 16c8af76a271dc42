#!/bin/bash
# /sbin/mpathfs-vm-init: PID 1 of the direct-kernel-boot guest (no systemd).
# Mounts the basics, starts udevd, mounts the host's repository (9p tag "host") at
# /mnt/host, runs the command from tests/vm/work/guest.env (default: the in-VM suite),
# writes its exit status to tests/vm/work/exit-status on the share and as a marker line
# on the console, and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs tmpfs /tmp
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config 2>/dev/null
hostname mpathfs-vm
busybox ip link set lo up 2>/dev/null

finish() {
  local rc=$1
  echo "MPATHFS-VM-EXIT=$rc"
  sync
  umount /mnt/host 2>/dev/null
  busybox poweroff -f
  sleep 5
  echo o > /proc/sysrq-trigger
}

/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle -t 30

mkdir -p /mnt/host
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none host /mnt/host; then
  echo "vm-init: cannot mount the 9p share 'host'"
  finish 97
fi

VMTEST_CMD=tests/vm/in-vm-suite.sh
VMTEST_STATUS=tests/vm/work/exit-status
[ -r /mnt/host/tests/vm/work/guest.env ] && . /mnt/host/tests/vm/work/guest.env
echo "vm-init: $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/{print int($2/1024)" MiB"}' /proc/meminfo); running $VMTEST_CMD"
cd /mnt/host
bash -c "$VMTEST_CMD" </dev/null
rc=$?
echo "$rc" > "/mnt/host/$VMTEST_STATUS"
finish "$rc"
