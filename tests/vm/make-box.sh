#!/bin/bash
# make-box.sh [WORKDIR] — build a local Vagrant box (libvirt provider) from the guest
# image of build-image.sh: WORKDIR/box/mpathfs-bookworm.box, to be added with
#   vagrant box add --name local/bookworm WORKDIR/box/mpathfs-bookworm.box
#
# The box is the qemu image's file system plus what Vagrant needs: systemd,
# openssh-server, sudo, rsync, grub (provision.sh --box), Debian's initramfs, a
# "vagrant" user with Vagrant's insecure key and passwordless sudo, DHCP on eth0,
# on an MBR-partitioned disk with GRUB in it. Cached like the image: rebuilt only
# when the image or this script changes. Needs root, one loop device (to read the
# image) and network for apt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$here/work}
"$here/build-image.sh" "$work"
work=$(cd "$work" && pwd)
out=$work/box
box=$out/mpathfs-bookworm.box
log() { echo "make-box: $*" >&2; }

hash=$( (cat "$work/image.stamp"; cat "$here/make-box.sh") | sha256sum | cut -c1-16)
if [ -s "$box" ] && [ "$(cat "$out/box.stamp" 2>/dev/null)" = "$hash" ]; then
  log "cached box $hash: $box"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

need=()
for pair in sfdisk:fdisk qemu-img:qemu-utils; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
# Vagrant's insecure key pair ships with the vagrant package.
keydir=$(dirname "$(dpkg -L vagrant 2>/dev/null | grep '/keys/vagrant.pub$' | head -1)" 2>/dev/null || true)
[ -f "$keydir/vagrant.pub" ] || need+=(vagrant)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing host packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  keydir=$(dirname "$(dpkg -L vagrant | grep '/keys/vagrant.pub$' | head -1)")
fi

t0=$(date +%s)
mkdir -p "$out"
tmp=$(mktemp -d "$out/.build.XXXXXX")
rootfs=$tmp/rootfs
cleanup() {
  set +e
  for m in "$rootfs/dev/pts" "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" "$tmp/img"; do
    mountpoint -q "$m" 2>/dev/null && umount "$m"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$rootfs" "$tmp/img"

# 1. The image's file system, copied out read-only.
log "copying the image's root file system"
mount -o loop,ro "$work/disk.raw" "$tmp/img"
tar -C "$tmp/img" --numeric-owner -cf - . | tar -C "$rootfs" --numeric-owner -xpf -
umount "$tmp/img"

# 2. Box packages, initramfs, users, network, boot config — in a chroot.
mount -t proc proc "$rootfs/proc"
mount -t sysfs sysfs "$rootfs/sys"
mount --bind /dev "$rootfs/dev"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"; chmod +x "$rootfs/usr/sbin/policy-rc.d"
install -m 0755 "$here/provision.sh" "$rootfs/tmp/provision.sh"
log "provision.sh --box in the chroot"
chroot "$rootfs" env LANG=C.UTF-8 /tmp/provision.sh --box >"$tmp/provision.log" 2>&1 ||
  { tail -30 "$tmp/provision.log" >&2; exit 1; }
kver=$(cat "$work/kernel.version")
chroot "$rootfs" update-initramfs -c -k "$kver" >"$tmp/initramfs.log" 2>&1 ||
  { tail -20 "$tmp/initramfs.log" >&2; exit 1; }

chroot "$rootfs" /bin/bash -euo pipefail <<EOF
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash -U vagrant
echo 'vagrant:vagrant' | chpasswd
echo 'root:vagrant' | chpasswd
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
printf 'UseDNS no\n' > /etc/ssh/sshd_config.d/vagrant.conf
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' > /etc/network/interfaces
printf 'LABEL=mpathfs-box / ext4 errors=remount-ro 0 1\n' > /etc/fstab
echo mpathfs-vm > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 mpathfs-vm\n' > /etc/hosts
: > /etc/machine-id
systemctl enable ssh.service >/dev/null 2>&1 || true
systemctl mask multipathd.service multipathd.socket >/dev/null 2>&1 || true
EOF
uid=$(chroot "$rootfs" id -u vagrant); gid=$(chroot "$rootfs" id -g vagrant)
install -m 0600 -o "$uid" -g "$gid" "$keydir/vagrant.pub" "$rootfs/home/vagrant/.ssh/authorized_keys"
mkdir -p "$rootfs/boot/grub"
cat > "$rootfs/boot/grub/grub.cfg" <<EOF
set timeout=1
insmod part_msdos
insmod ext2
search --no-floppy --label --set=root mpathfs-box
menuentry 'Debian 12 (mpathfs box)' {
  linux /boot/vmlinuz-$kver root=LABEL=mpathfs-box ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0
  initrd /boot/initrd.img-$kver
}
EOF
rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs/tmp/provision.sh"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
for m in "$rootfs/dev" "$rootfs/proc" "$rootfs/sys"; do umount "$m"; done
log "box file system ready after $(( $(date +%s) - t0 )) s"

# 3. The disk: MBR, one partition at 1 MiB made straight from the directory
#    (mkfs.ext4 -E offset), GRUB's boot.img in the MBR and its core.img in the gap
#    before the partition (what grub-install does, without a loop device: this
#    kernel does not scan partitions on loop devices).
chroot "$rootfs" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2
mkdir -p "$rootfs/boot/grub/i386-pc"
cp "$rootfs"/usr/lib/grub/i386-pc/*.mod "$rootfs"/usr/lib/grub/i386-pc/*.lst "$rootfs/boot/grub/i386-pc/"
mv "$rootfs/tmp/core.img" "$tmp/core.img"
cp "$rootfs/usr/lib/grub/i386-pc/boot.img" "$tmp/boot.img"
[ "$(stat -c %s "$tmp/core.img")" -lt $(( 2047 * 512 )) ] || { log "core.img too big"; exit 1; }
disk_mb=$(( $(du -sm "$rootfs" | cut -f1) * 13 / 10 + 1024 ))
[ "$disk_mb" -lt 3072 ] && disk_mb=3072
disk=$tmp/box.raw
truncate -s "${disk_mb}M" "$disk"
echo 'start=2048, type=83, bootable' | sfdisk -q "$disk"
dd if="$tmp/boot.img" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$tmp/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none
mkfs.ext4 -q -F -L mpathfs-box -E offset=1048576,root_owner=0:0 -d "$rootfs" "$disk" \
  "$(( disk_mb - 1 ))M"

# 4. The box: box.img (qcow2) + metadata.json + Vagrantfile, as a tar.
log "qemu-img convert -O qcow2 -c"
qemu-img convert -O qcow2 -c "$disk" "$tmp/box.img"
rm -f "$disk"
vsize=$(( (disk_mb + 1023) / 1024 ))
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%d}\n' "$vsize" > "$tmp/metadata.json"
cat > "$tmp/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.ssh.username = "vagrant"
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
  end
end
EOF
tar -C "$tmp" -cf "$tmp/box.tar" metadata.json Vagrantfile box.img
mv -f "$tmp/box.tar" "$box"
echo "$hash" > "$out/box.stamp"
log "box $box ($(du -h "$box" | cut -f1)) ready after $(( $(date +%s) - t0 )) s"
