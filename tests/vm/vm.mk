# tests/vm/vm.mk — the VM tier. Included by the top-level Makefile
# (`include tests/vm/vm.mk`); all paths are relative to the repository root.
# Everything here needs root (debootstrap, chroot, qemu, libvirt).
#
#   make vm-image      build or reuse the Debian 12 guest (tests/vm/work/)
#   make vm-test       boot it under qemu (TCG) and run the in-VM suite
#                      (dm-multipath vs mpathfs under the same path fault)
#   make vagrant-box   build a local libvirt box from the guest image
#   make vagrant-test  the same suite through Vagrant + libvirt (slow, ~10 min)
#
# Knobs (environment): MPATHFS_VM_ACCEL=kvm, MPATHFS_VM_ONLY_DM=1,
# MPATHFS_VM_TIMEOUT=seconds, MPATHFS_VM_REBUILD=1 (see tests/vm/README.md).

VM_DIR  ?= tests/vm
VM_WORK ?= $(VM_DIR)/work

.PHONY: vm-image vm-test vagrant-box vagrant-test

vm-image:
	bash $(VM_DIR)/build-image.sh $(VM_WORK)

# (the image prerequisite is up to date here: MPATHFS_VM_REBUILD=1 must not rebuild twice)
vm-test: vm-image
	MPATHFS_VM_REBUILD=0 bash $(VM_DIR)/run.sh

vagrant-box: vm-image
	MPATHFS_VM_REBUILD=0 bash $(VM_DIR)/make-box.sh $(VM_WORK)

vagrant-test: vagrant-box
	MPATHFS_VM_REBUILD=0 bash $(VM_DIR)/vagrant-test.sh
