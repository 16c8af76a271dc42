#!/bin/bash
# provision.sh — install the guest's package set. Shared by build-image.sh (run inside
# the debootstrap chroot) and the Vagrantfile (run inside the Vagrant guest), so the
# plain qemu tier and the Vagrant tier test against the same userland.
#
# usage: provision.sh [--box]
#   --box   also install what a bootable Vagrant box needs (systemd, sshd, sudo,
#           rsync, grub). Without it: just the test set (direct-kernel-boot guest).
set -euo pipefail

# The test set. Changing this list changes the image hash (build-image.sh hashes this
# file), so the cached image is rebuilt.
PACKAGES=(
  linux-image-amd64 udev fuse3 fio multipath-tools sg3-utils lsscsi kmod
  busybox-static jq procps util-linux open-iscsi curl
)
BOX_PACKAGES=(
  systemd systemd-sysv openssh-server sudo rsync grub-pc-bin grub2-common
  initramfs-tools ifupdown isc-dhcp-client iproute2 ca-certificates
)

box=0
[ "${1:-}" = --box ] && box=1

export DEBIAN_FRONTEND=noninteractive
list=("${PACKAGES[@]}")
[ "$box" = 1 ] && list+=("${BOX_PACKAGES[@]}")

missing=()
for p in "${list[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# multipathd and iscsid must not start on their own at boot (the suite starts them by
# hand and the Vagrant guest boots systemd): the suite owns their lifecycle.
units=(multipathd.service multipathd.socket iscsid.service iscsid.socket open-iscsi.service)
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
elif command -v systemctl >/dev/null; then
  systemctl disable "${units[@]}" >/dev/null 2>&1 || true
fi
apt-get clean
echo "provision.sh: ok (box=$box)"
