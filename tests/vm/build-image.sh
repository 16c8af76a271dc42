#!/bin/bash
# build-image.sh [OUTDIR] — build the Debian 12 guest for the VM tier.
#
# Produces in OUTDIR (default tests/vm/work):
#   disk.raw     ext4 root file system (no partition table), made with mkfs.ext4 -d
#   vmlinuz      the guest's Debian kernel, for qemu direct kernel boot
#   initrd.img   a tiny busybox initrd: virtio_pci/virtio_blk/ext4/9p modules + init
#   image.stamp  hash of the inputs; an OUTDIR whose stamp matches is reused as is
# Needs root (debootstrap, chroot, file ownership in the image). Installs its host
# tools with apt-get when missing. No loop device or mount of the image is needed.
#
# Environment: MPATHFS_MIRROR (default http://deb.debian.org/debian),
#              MPATHFS_VM_REBUILD=1 to ignore the cache.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/work}
mkdir -p "$out"
out=$(cd "$out" && pwd)
mirror=${MPATHFS_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

log() { echo "build-image: $*" >&2; }

# The cache key: everything that decides what is in the image.
hash=$(cat "$here/build-image.sh" "$here/provision.sh" "$here/guest-init.sh" \
  "$here/initrd-init.sh" | sha256sum | cut -c1-16)
if [ "${MPATHFS_VM_REBUILD:-0}" != 1 ] && [ -f "$out/image.stamp" ] &&
  [ "$(cat "$out/image.stamp")" = "$hash" ] &&
  [ -s "$out/disk.raw" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ]; then
  log "cached image $hash in $out is up to date"
  exit 0
fi

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

# Host tools.
need=()
for pair in debootstrap:debootstrap mkfs.ext4:e2fsprogs cpio:cpio \
  qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils xz:xz-utils zstd:zstd; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing host packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

t0=$(date +%s)
tmp=$(mktemp -d "$out/.build.XXXXXX")
rootfs=$tmp/rootfs
cleanup() {
  # never leave a mount behind
  for m in "$rootfs/proc" "$rootfs/sys" "$rootfs/dev/pts"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

log "debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$rootfs" "$mirror" \
  >"$tmp/debootstrap.log" 2>&1 || { tail -30 "$tmp/debootstrap.log" >&2; exit 1; }
log "debootstrap done after $(( $(date +%s) - t0 )) s"

# apt sources: the same mirror, plus updates and security.
cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
# no services may start inside the chroot
printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"
# Skip Debian's initramfs for the test guest (we boot with our own tiny initrd);
# make-box.sh builds one for the Vagrant box.
mkdir -p "$rootfs/etc/initramfs-tools"
printf 'do_symlinks = no\n' > "$rootfs/etc/kernel-img.conf"

mount -t proc proc "$rootfs/proc"
install -m 0755 "$here/provision.sh" "$rootfs/tmp/provision.sh"
log "provisioning in the chroot (provision.sh)"
chroot "$rootfs" env INITRD=No LANG=C.UTF-8 /tmp/provision.sh >"$tmp/provision.log" 2>&1 ||
  { tail -40 "$tmp/provision.log" >&2; exit 1; }
rm -f "$rootfs/tmp/provision.sh" "$rootfs/usr/sbin/policy-rc.d"
umount "$rootfs/proc"
log "provisioned after $(( $(date +%s) - t0 )) s"

# Guest configuration.
install -m 0755 "$here/guest-init.sh" "$rootfs/sbin/mpathfs-vm-init"
echo mpathfs-vm > "$rootfs/etc/hostname"
printf '/dev/vda / ext4 rw 0 1\n' > "$rootfs/etc/fstab"
mkdir -p "$rootfs/mnt/host" "$rootfs/mnt/mp" "$rootfs/etc/multipath"
passwd -R "$rootfs" -d root >/dev/null 2>&1 || true
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages

# Kernel and the tiny initrd.
kver=$(basename "$(ls -d "$rootfs"/lib/modules/* | sort -V | tail -1)")
cp "$rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
moddir=$rootfs/lib/modules/$kver
ird=$tmp/initrd
mkdir -p "$ird"/{bin,proc,sys,dev,newroot,lib/modules}
cp "$rootfs/bin/busybox" "$ird/bin/busybox"
install -m 0755 "$here/initrd-init.sh" "$ird/init"
: > "$ird/modules.load"
declare -A seen=()
add_module() { # name: add it after its dependencies, depth first
  local name=$1 rel deps d
  rel=$(awk -F: -v n="$name" '{m=$1; sub(/.*\//,"",m); sub(/\.ko(\.xz|\.zst|\.gz)?$/,"",m);
        gsub(/-/,"_",m); nn=n; gsub(/-/,"_",nn); if (m==nn) {print $1; exit}}' "$moddir/modules.dep")
  if [ -z "$rel" ]; then
    grep -q "/${name}.ko" "$moddir/modules.builtin" 2>/dev/null ||
      log "warning: module $name neither loadable nor built in"
    return 0
  fi
  [ -n "${seen[$rel]:-}" ] && return 0
  seen[$rel]=1
  deps=$(awk -F: -v r="$rel" '$1==r {print $2; exit}' "$moddir/modules.dep")
  for d in $deps; do
    d=$(basename "$d"); d=${d%%.ko*}
    add_module "$d"
  done
  local dst=${rel%.xz}; dst=${dst%.zst}; dst=${dst%.gz}
  mkdir -p "$ird/lib/modules/$(dirname "$dst")"
  case "$rel" in
    *.xz) xz -dc "$moddir/$rel" > "$ird/lib/modules/$dst" ;;
    *.zst) zstd -qdc "$moddir/$rel" > "$ird/lib/modules/$dst" ;;
    *.gz) gzip -dc "$moddir/$rel" > "$ird/lib/modules/$dst" ;;
    *) cp "$moddir/$rel" "$ird/lib/modules/$dst" ;;
  esac
  echo "$dst" >> "$ird/modules.load"
}
for m in virtio_pci virtio_blk ext4 crc32c_generic 9pnet_virtio 9p; do add_module "$m"; done
log "initrd modules: $(xargs -n1 basename < "$ird/modules.load" | tr '\n' ' ')"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initrd.img"

# The disk: an ext4 file system made straight from the directory.
size_mb=$(( $(du -sm "$rootfs" | cut -f1) * 13 / 10 + 512 ))
log "mkfs.ext4 -d rootfs (${size_mb} MiB)"
mkfs.ext4 -q -F -L mpathfs-vm -E root_owner=0:0 -d "$rootfs" "$tmp/disk.raw" "${size_mb}M"

mv -f "$tmp/disk.raw" "$tmp/vmlinuz" "$tmp/initrd.img" "$out/"
echo "$kver" > "$out/kernel.version"
echo "$hash" > "$out/image.stamp"
log "image $hash ready in $out after $(( $(date +%s) - t0 )) s (kernel $kver)"
