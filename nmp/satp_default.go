package nmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/scsi"
)

// The generic SATPs.
const (
	// SATPDefaultAA is VMW_SATP_DEFAULT_AA: an active/active array, every
	// path to the LU equal.
	SATPDefaultAA = "VMW_SATP_DEFAULT_AA"
	// SATPLocal is VMW_SATP_LOCAL: direct-attached storage.
	SATPLocal = "VMW_SATP_LOCAL"
)

func init() {
	RegisterSATP(SATPDefaultAA, "Active/active arrays: every path equal", PSPFixed, func(o map[string]string) (SATP, error) {
		return newDefaultSATP(SATPDefaultAA, o)
	})
	RegisterSATP(SATPLocal, "Direct-attached storage", PSPFixed, func(o map[string]string) (SATP, error) {
		return newDefaultSATP(SATPLocal, o)
	})
}

type defaultSATP struct {
	name         string
	retryBackoff time.Duration
}

var _ SATP = (*defaultSATP)(nil)

func newDefaultSATP(name string, opts map[string]string) (SATP, error) {
	o := NewOptions(name, opts)
	ms := o.Uint("retry_backoff_ms", 10, 0)
	if err := o.Done(); err != nil {
		return nil, err
	}
	return &defaultSATP{name: name, retryBackoff: time.Duration(ms) * time.Millisecond}, nil
}

func (s *defaultSATP) Name() string       { return s.name }
func (s *defaultSATP) DefaultPSP() string { return PSPFixed }
func (s *defaultSATP) Config() string     { return "{action_OnRetryErrors=off}" }

func (s *defaultSATP) Group(p *mpath.Path) (int, bool) {
	return 0, p.State() == mpath.StateActive
}

func (s *defaultSATP) Classify(p *mpath.Path, op mpath.OpKind, err error) Verdict {
	return VerdictFor(ClassifyError(err), s.retryBackoff)
}

func (s *defaultSATP) Checked(p *mpath.Path, probeErr error) (mpath.PathState, string) {
	if probeErr == nil {
		return mpath.StateActive, "path checker: probe passed"
	}
	switch ClassifyError(probeErr) {
	case ioerr.ClassNotReady:
		return mpath.StateStandby, "path checker: not ready: " + probeErr.Error()
	case ioerr.ClassRetryable:
		return p.State(), "path checker: busy"
	case ioerr.ClassConflict:
		return mpath.StateActive, CheckedConflict
	}
	return mpath.StateDead, "path checker: " + probeErr.Error()
}

// CheckedConflict is the checker's reason for a probe that met
// RESERVATION CONFLICT: another host holds the LU (a SCSI-2 reservation
// refuses even TEST UNIT READY), and the path that answered is up — as
// Linux's tur checker judges it.
const CheckedConflict = "path checker: reservation conflict: the path answers (another host holds the LU)"

// VerdictFor is the generic action for an error class.
func VerdictFor(c ioerr.Class, backoff time.Duration) Verdict {
	switch c {
	case ioerr.ClassPathFailure:
		return Verdict{Class: c, State: mpath.StateDead, Retry: true, Reason: "path failure"}
	case ioerr.ClassRetryable:
		return Verdict{Class: c, Retry: true, Backoff: backoff, Reason: "retryable error"}
	case ioerr.ClassNotReady:
		return Verdict{Class: c, State: mpath.StateStandby, Retry: true, Update: true, Reason: "not ready on this path"}
	case ioerr.ClassPermanentLoss:
		return Verdict{Class: c, State: mpath.StateDead, Retry: true, Reason: "permanent device loss"}
	case ioerr.ClassDeviceError:
		return Verdict{Class: c, Reason: "device error"}
	case ioerr.ClassConflict:
		// Another I_T nexus holds a reservation: every path of this host
		// meets it. The path stays active, nothing is retried.
		return Verdict{Class: c, Reason: "reservation conflict"}
	}
	return Verdict{Class: c}
}

// ClassifyError puts an error into the taxonomy: errors that carry a class
// keep it; sense data decides next (scsi.ClassifySense, the one sense
// table); errno values and network errors are judged the way a host judges
// transport and target errors. What is not recognised counts as a path
// failure: another path may succeed, and a device error would be reported
// by every path anyway.
func ClassifyError(err error) ioerr.Class {
	if err == nil {
		return ioerr.ClassNone
	}
	if c := ioerr.ClassOf(err); c != ioerr.ClassNone {
		return c
	}
	if s, ok := ioerr.SenseOf(err); ok {
		// The one sense table. Sense that reports no error (NO SENSE,
		// RECOVERED ERROR) says nothing about this error: judge it below.
		if c := scsi.ClassifySense(s); c != ioerr.ClassNone {
			return c
		}
	}
	switch {
	case errors.Is(err, backends.ErrNotSupported):
		return ioerr.ClassDeviceError
	case errors.Is(err, context.DeadlineExceeded):
		return ioerr.ClassPathFailure
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.ErrShortWrite):
		return ioerr.ClassPathFailure
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EAGAIN, syscall.EBUSY, syscall.EINTR:
			return ioerr.ClassRetryable
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EINVAL, syscall.EFBIG,
			syscall.EOVERFLOW, syscall.EFAULT, syscall.EOPNOTSUPP, syscall.EPERM, syscall.EACCES:
			return ioerr.ClassDeviceError
		case syscall.ENOMEDIUM, syscall.ESTALE:
			return ioerr.ClassPermanentLoss
		}
		return ioerr.ClassPathFailure
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return ioerr.ClassPathFailure
	}
	return ioerr.ClassPathFailure
}

// MediumSuspect reports whether an error of an operation on a range may be
// a medium error of that range rather than a failed path: a bare EIO
// (pread or pwrite on a file or block path; an NBD server's EIO reply)
// that ClassifyError calls a path failure for want of anything better,
// with no sense data (sense decides by itself: MEDIUM ERROR, key 03, is a
// device error already), not a timeout and not a write that may still
// land. The NMP then probes the path: a path that answers its probe is
// fine and the error belongs to the blocks (a device error: the I/O fails
// with EIO, the path stays active); a path that fails its probe failed.
func MediumSuspect(op mpath.OpKind, err error) bool {
	switch op {
	case mpath.OpRead, mpath.OpWrite, mpath.OpDiscard, mpath.OpWriteZeroes:
	default:
		return false // a flush or probe EIO belongs to no block
	}
	if !errors.Is(err, syscall.EIO) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if _, ok := ioerr.SenseOf(err); ok {
		return false
	}
	var pe backends.Pending
	if errors.As(err, &pe) {
		return false
	}
	return ClassifyError(err) == ioerr.ClassPathFailure
}

// Sense data a medium error found by probing carries: UNRECOVERED READ
// ERROR for reads, WRITE ERROR otherwise.
var (
	senseReadError  = ioerr.Sense{Key: ioerr.SenseMediumError, ASC: 0x11}
	senseWriteError = ioerr.Sense{Key: ioerr.SenseMediumError, ASC: 0x0c}
)

// mediumProbes shares one probe among the I/Os of a path that all got EIO
// at once.
var mediumProbes struct {
	sync.Mutex
	m map[*mpath.Path]*mediumProbe
}

type mediumProbe struct {
	done chan struct{}
	err  error
}

// mediumCheck is judge's first step: an error MediumSuspect picks out is
// turned into a device error (a medium error) when the path still answers
// its probe (under the probe timeout); otherwise it is returned as it was.
func (d *Device) mediumCheck(p *mpath.Path, op mpath.OpKind, err error) error {
	if !MediumSuspect(op, err) {
		return err
	}
	mediumProbes.Lock()
	if mediumProbes.m == nil {
		mediumProbes.m = map[*mpath.Path]*mediumProbe{}
	}
	mp, running := mediumProbes.m[p]
	if !running {
		mp = &mediumProbe{done: make(chan struct{})}
		mediumProbes.m[p] = mp
	}
	mediumProbes.Unlock()
	if !running {
		mp.err = d.probe(d.stopper.ctx, p)
		mediumProbes.Lock()
		delete(mediumProbes.m, p)
		mediumProbes.Unlock()
		close(mp.done)
	}
	<-mp.done
	if mp.err != nil {
		return err
	}
	s := senseWriteError
	if op == mpath.OpRead {
		s = senseReadError
	}
	return &ioerr.Error{Class: ioerr.ClassDeviceError, Op: op.String(), Path: p.Name, Sense: &s,
		Err: fmt.Errorf("medium error (the path answers its probe): %w", err)}
}
