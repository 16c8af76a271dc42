package fusedev

import (
	"context"
	"encoding/binary"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"

	"github.com/mpathfs/mpathfs/scsi"
)

// The Linux persistent reservation ioctls (linux/pr.h) on a device file,
// as block devices take them, so programs written for them (sg_persist's
// block-device mode, cluster fencing agents, blkpr) work on mpathfs. FUSE
// passes ioctls on regular files in restricted mode: the kernel copies
// _IOC_SIZE bytes in for _IOC_WRITE commands — which all six are — and
// the reply carries no data.

// Reserver is a device that takes persistent reservation commands
// (nmp.Device registers the key on every path).
type Reserver interface {
	PRRegister(ctx context.Context, oldKey, newKey uint64, ignore bool) error
	PRReserve(ctx context.Context, key uint64, typ scsi.PRType) error
	PRRelease(ctx context.Context, key uint64, typ scsi.PRType) error
	PRPreempt(ctx context.Context, key, victim uint64, typ scsi.PRType, abort bool) error
	PRClear(ctx context.Context, key uint64) error
}

// ioc is _IOC(dir, type, nr, size) of asm-generic/ioctl.h.
func ioc(dir, typ, nr, size uint32) uint32 { return dir<<30 | size<<16 | typ<<8 | nr }

const iocWrite = 1

// The six commands (linux/pr.h) with the sizes of their structures:
// pr_registration and pr_preempt are 24 bytes, pr_reservation and pr_clear
// 16.
var (
	IOCPRRegister     = ioc(iocWrite, 'p', 200, 24)
	IOCPRReserve      = ioc(iocWrite, 'p', 201, 16)
	IOCPRRelease      = ioc(iocWrite, 'p', 202, 16)
	IOCPRPreempt      = ioc(iocWrite, 'p', 203, 24)
	IOCPRPreemptAbort = ioc(iocWrite, 'p', 204, 24)
	IOCPRClear        = ioc(iocWrite, 'p', 205, 16)
)

// prFlIgnoreKey is PR_FL_IGNORE_KEY of struct pr_registration.
const prFlIgnoreKey = 1

// PRTypeFromLinux maps enum pr_type (1 PR_WRITE_EXCLUSIVE … 6
// PR_EXCLUSIVE_ACCESS_ALL_REGS) to the SCSI type; 0 when unknown.
func PRTypeFromLinux(t uint32) scsi.PRType {
	switch t {
	case 1:
		return scsi.PRWriteExclusive
	case 2:
		return scsi.PRExclusiveAccess
	case 3:
		return scsi.PRWriteExclusiveRegOnly
	case 4:
		return scsi.PRExclusiveAccessRegOnly
	case 5:
		return scsi.PRWriteExclusiveAllReg
	case 6:
		return scsi.PRExclusiveAccessAllReg
	}
	return 0
}

var _ fs.NodeIoctler = (*devNode)(nil)

// Ioctl serves the PR ioctls; any other command is ENOTTY, as on a file
// that is no block device. A device whose paths cannot carry reservations
// answers EOPNOTSUPP, a conflict EBADE.
func (n *devNode) Ioctl(ctx context.Context, _ fs.FileHandle, cmd uint32, _ uint64, in []byte, _ []byte) (int32, syscall.Errno) {
	switch cmd {
	case IOCPRRegister, IOCPRReserve, IOCPRRelease, IOCPRPreempt, IOCPRPreemptAbort, IOCPRClear:
	default:
		return 0, syscall.ENOTTY
	}
	r, ok := n.dev.(Reserver)
	if !ok {
		return 0, syscall.EOPNOTSUPP
	}
	if size := int(cmd>>16) & 0x3fff; len(in) < size {
		return 0, syscall.EFAULT
	}
	u64 := func(off int) uint64 { return binary.LittleEndian.Uint64(in[off:]) }
	u32 := func(off int) uint32 { return binary.LittleEndian.Uint32(in[off:]) }
	var err error
	switch cmd {
	case IOCPRRegister: // old_key, new_key, flags, pad
		flags := u32(16)
		if flags&^prFlIgnoreKey != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		err = r.PRRegister(ctx, u64(0), u64(8), flags&prFlIgnoreKey != 0)
	case IOCPRReserve, IOCPRRelease: // key, type, flags
		t := PRTypeFromLinux(u32(8))
		if u32(12) != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		if t == 0 {
			return 0, syscall.EINVAL
		}
		if cmd == IOCPRReserve {
			err = r.PRReserve(ctx, u64(0), t)
		} else {
			err = r.PRRelease(ctx, u64(0), t)
		}
	case IOCPRPreempt, IOCPRPreemptAbort: // old_key, new_key, type, flags
		t := PRTypeFromLinux(u32(16))
		if u32(20) != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		if t == 0 {
			return 0, syscall.EINVAL
		}
		// As the kernel's sd driver: old_key is this host's key, new_key
		// the victim's (PR OUT service action key).
		err = r.PRPreempt(ctx, u64(0), u64(8), t, cmd == IOCPRPreemptAbort)
	case IOCPRClear: // key, flags, pad
		if u32(8) != 0 {
			return 0, syscall.EOPNOTSUPP
		}
		err = r.PRClear(ctx, u64(0))
	}
	if err != nil {
		return 0, ToErrno(err)
	}
	return 0, 0
}
