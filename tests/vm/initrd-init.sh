#!/bin/busybox sh
# /init of the tiny initrd built by build-image.sh: load the virtio/ext4/9p modules,
# mount the root disk and switch to the guest init (vmtest.init=, default
# /sbin/mpathfs-vm-init). Debian's own initrd would add ~30 s under TCG.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
  insmod "/lib/modules/$m" 2>/dev/null || echo "initrd: insmod $m failed"
done < /modules.load
root=/dev/vda init=/sbin/mpathfs-vm-init
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=/dev/*) root=${arg#root=} ;;
    vmtest.init=*) init=${arg#vmtest.init=} ;;
  esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "initrd: cannot mount $root"; echo "MPATHFS-VM-EXIT=98"; poweroff -f
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot "$init"
