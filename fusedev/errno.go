package fusedev

import (
	"context"
	"errors"
	"syscall"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

// ToErrno converts an error of the device to the errno the FUSE client (the
// application's read, write, fsync or fallocate) sees. It is the one place
// where errors become syscall.Errno; nil becomes 0.
//
// The table, first match wins:
//
//	ioerr.ErrConflict (RESERVATION CONFLICT)        EBADE (4)
//	backends.ErrNotSupported                        EOPNOTSUPP
//	ioerr.ErrOutOfRange                             EINVAL (1)
//	ioerr.ErrDeviceError wrapping an Errno          that Errno (ENOSPC, EROFS, …)
//	ioerr.ErrDeviceError otherwise                  EIO
//	ErrAllPathsDown, ErrNoPaths, ErrPathFailure,
//	  ErrPermanentLoss, ErrNotReady, ErrRetryable,
//	  ErrClosed                                     EIO (2)
//	context.Canceled                                EINTR
//	context.DeadlineExceeded                        EIO (3)
//	a syscall.Errno (wrapped or not, non-zero)      itself
//	anything else                                   EIO
//
// (1) fusedev clips reads at the end of the device and answers writes there
// with ENOSPC itself, so ErrOutOfRange only reaches this point when the
// device shrank under an open file: the request, not the medium, is wrong.
//
// (2) The NMP surfaces path-level classes only after it gave up (retries
// exhausted, APD timeout, PDL): for the application that is an I/O error,
// exactly what a block device reports when its last path is gone.
//
// (3) A deadline that reaches fusedev means the device gave up on the I/O.
// ETIMEDOUT is not an errno applications expect from read(2) or write(2) on
// a disk; some treat it as a network condition and retry forever. EIO is
// what every caller (file systems on a loop device, databases) handles.
//
// (4) What the Linux block layer returns for BLK_STS_RESV_CONFLICT, so a
// cluster stack that tells a fenced host from a failed disk by EBADE
// (pacemaker's fence_scsi, sg_persist users) sees the same here.
//
// The taxonomy is checked before context errors, so an I/O the NMP
// classified keeps its class even when its cause was a cancelled context.
func ToErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	switch {
	case errors.Is(err, ioerr.ErrConflict), errors.Is(err, ioerr.ErrReservationConflict):
		return syscall.EBADE
	case errors.Is(err, backends.ErrNotSupported):
		return syscall.EOPNOTSUPP
	case errors.Is(err, ioerr.ErrOutOfRange):
		return syscall.EINVAL
	case errors.Is(err, ioerr.ErrDeviceError):
		var errno syscall.Errno
		if errors.As(err, &errno) && errno != 0 {
			return errno
		}
		return syscall.EIO
	case errors.Is(err, ioerr.ErrAllPathsDown),
		errors.Is(err, ioerr.ErrNoPaths),
		errors.Is(err, ioerr.ErrPathFailure),
		errors.Is(err, ioerr.ErrPermanentLoss),
		errors.Is(err, ioerr.ErrNotReady),
		errors.Is(err, ioerr.ErrRetryable),
		errors.Is(err, ioerr.ErrClosed):
		return syscall.EIO
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		return syscall.EIO
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno
	}
	return syscall.EIO
}
