#!/bin/bash
# vagrant-test.sh — the whole Vagrant flow on a machine of this kind (root, no
# systemd): install Vagrant + libvirt, build the local box (make-box.sh), start
# virtlogd and libvirtd by hand inside a private network namespace (so libvirt's NAT
# network never touches the host's network), add the box, `vagrant up`, run the
# in-VM suite through `vagrant ssh`, `vagrant destroy -f`, stop the daemons by PID.
#
# Environment: MPATHFS_VM_ONLY_DM=1 (suite part (a) only), MPATHFS_BOX (default: the
# local box, local/bookworm), MPATHFS_VAGRANT_KEEP=1 (do not destroy the VM).
# Exit status: the suite's, or non-zero if the flow itself failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$here/work
mkdir -p "$work"
t_start=$(date +%s)
log() { echo "vagrant-test [$(( $(date +%s) - t_start ))s]: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

# 1. Packages (without recommends: with them apt pulls ~300 packages, a kernel too).
pkgs=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86
  qemu-utils dnsmasq-base iptables iproute2 rsync openssh-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. mpathfs for the guest (part (b)); the folder is rsynced into the VM at `up`.
rm -f "$work/mpathfs" "$work/fuseceiling" "$work/mpathfs.unavailable"
if [ "${MPATHFS_VM_ONLY_DM:-0}" != 1 ]; then
  (cd "$repo" && CGO_ENABLED=0 go build -o tests/vm/work/mpathfs ./cmd/mpathfs &&
    CGO_ENABLED=0 go build -o tests/vm/work/fuseceiling ./bench/fuseceiling) \
    >"$work/mpathfs.build.log" 2>&1 ||
    { echo "go build ./cmd/mpathfs failed:"; tail -5 "$work/mpathfs.build.log"; } > "$work/mpathfs.unavailable"
fi

# 3. The box.
box_name=${MPATHFS_BOX:-local/bookworm}
if [ "$box_name" = local/bookworm ]; then
  "$here/make-box.sh" "$work"
fi

# 4. libvirt in a network namespace.
ns=mpathfs-vagrant-$$
export VAGRANT_DOTFILE_PATH=$work/.vagrant
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_DEFAULT_PROVIDER=libvirt
export LIBVIRT_DEFAULT_URI=qemu:///system
if [ -S /run/libvirt/libvirt-sock ] && virsh -q version >/dev/null 2>&1; then
  log "a libvirtd is already running on this machine; refusing to start a second one"
  exit 1
fi
vm_up=0
cleanup() {
  set +e
  if [ "$vm_up" = 1 ] && [ "${MPATHFS_VAGRANT_KEEP:-0}" != 1 ]; then
    log "vagrant destroy -f"
    (cd "$repo" && ip netns exec "$ns" vagrant destroy -f) >&2
  fi
  if [ "${MPATHFS_VAGRANT_KEEP:-0}" != 1 ]; then
    for net in $(virsh net-list --name 2>/dev/null); do virsh net-destroy "$net" >/dev/null 2>&1; done
    for f in "$work/libvirtd.pid" "$work/virtlogd.pid"; do
      if [ -s "$f" ]; then
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        rm -f "$f"
      fi
    done
    ip netns del "$ns" 2>/dev/null
  else
    log "kept: VM, libvirtd (pid $(cat "$work/libvirtd.pid")), netns $ns"
  fi
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
rm -f "$work/libvirtd.pid" "$work/virtlogd.pid"
ip netns exec "$ns" virtlogd -d -p "$work/virtlogd.pid"
ip netns exec "$ns" libvirtd -d -p "$work/libvirtd.pid"
for _ in $(seq 100); do virsh -q version >/dev/null 2>&1 && break; sleep 0.3; done
virsh -q version >/dev/null || { log "libvirtd did not come up"; exit 1; }
log "libvirtd $(cat "$work/libvirtd.pid") and virtlogd $(cat "$work/virtlogd.pid") up in netns $ns"
if ! virsh pool-info default >/dev/null 2>&1; then
  mkdir -p /var/lib/libvirt/images
  virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
fi
pool_state=$(virsh pool-info default 2>/dev/null || true)
case "$pool_state" in *running*) ;; *) virsh -q pool-start default >/dev/null ;; esac
virsh -q pool-refresh default >/dev/null

# 5. The box into Vagrant (and a stale copy of it out of the pool: vagrant-libvirt
#    reuses an uploaded box volume by name even when the box changed).
if [ "$box_name" = local/bookworm ]; then
  for v in $(virsh -q vol-list default 2>/dev/null | awk '{print $1}' | grep '^local-VAGRANTSLASH-bookworm' || true); do
    virsh -q vol-delete --pool default "$v" >/dev/null
  done
  log "vagrant box add --force --name local/bookworm"
  vagrant box add --force --name local/bookworm "$work/box/mpathfs-bookworm.box" 2>&1 |
    tr '\r' '\n' | grep -v 'Progress:' >&2
  [ "${PIPESTATUS[0]}" = 0 ] || { log "vagrant box add failed"; exit 1; }
fi

# 6. Up, suite, destroy.
cd "$repo"
export MPATHFS_BOX=$box_name
log "vagrant up --provider=libvirt (box $box_name)"
t=$(date +%s)
vm_up=1
# (vagrant's progress lines end in \r; keep the log readable)
ip netns exec "$ns" vagrant up --provider=libvirt 2>&1 | tr '\r' '\n' | grep --line-buffered -v 'Progress:' >&2
[ "${PIPESTATUS[0]}" = 0 ] || { log "vagrant up failed"; exit 1; }
log "vagrant up took $(( $(date +%s) - t ))s"
t=$(date +%s)
envs="MPATHFS_VM_ONLY_DM=${MPATHFS_VM_ONLY_DM:-0}"
for v in MPATHFS_VM_FIO_RUNTIME MPATHFS_VM_FAULT_AT MPATHFS_VM_RESTORE_AT; do
  [ -n "${!v:-}" ] && envs+=" $v=${!v}"
done
set +e
ip netns exec "$ns" vagrant ssh -c "sudo env $envs /vagrant/tests/vm/in-vm-suite.sh" 2>&1 |
  tee "$work/vagrant-suite.log"
rc=${PIPESTATUS[0]}
set -e
log "suite exit status $rc after $(( $(date +%s) - t ))s"
exit "$rc"
