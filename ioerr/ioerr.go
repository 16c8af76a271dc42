// Package ioerr is the error taxonomy every layer shares: the classes an I/O
// error can belong to (path failure, retryable, not ready, device error,
// permanent loss, reservation conflict), their sentinels, the sense triple a path reports with an
// error, and the errors the NMP returns when no path could carry an I/O. It is
// a leaf: it imports nothing of this module.
package ioerr

import (
	"errors"
	"fmt"
)

// Class is a class of the error taxonomy: what an I/O error means for the
// path that carried it and for the device.
type Class uint8

const (
	// ClassNone: no error.
	ClassNone Class = iota
	// ClassPathFailure: the path cannot carry I/O (connection refused or
	// reset, I/O timeout, transport EIO). Mark the path dead, fail over, retry.
	ClassPathFailure
	// ClassRetryable: the I/O may succeed if tried again (busy, queue full,
	// ALUA transitioning). Back off and retry, on the same or another path.
	ClassRetryable
	// ClassNotReady: the LU is not accessible through this path (ALUA
	// standby or unavailable, a passive controller). The path goes to
	// standby; the SATP may activate another group.
	ClassNotReady
	// ClassDeviceError: the request itself failed (medium error, out of
	// range, no space, invalid request). Return it; another path would not help.
	ClassDeviceError
	// ClassPermanentLoss: the LU is gone or its identity changed (PDL). The
	// path is dead for good; with every path in PDL, I/O fails at once.
	ClassPermanentLoss
	// ClassConflict: the LU answered RESERVATION CONFLICT — another I_T
	// nexus holds a reservation that excludes this one. Not a path failure:
	// the path stays active, nothing fails over, nothing is retried on
	// another path (every path of this host meets the same reservation) and
	// nothing waits as in All-Paths-Down. The application sees EBADE, as
	// from the Linux block layer.
	ClassConflict
)

var classNames = [...]string{"none", "path-failure", "retryable", "not-ready", "device-error", "permanent-loss", "reservation-conflict"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// ParseClass parses a class name as String prints it.
func ParseClass(s string) (Class, error) {
	for i, n := range classNames {
		if n == s && i != 0 {
			return Class(i), nil
		}
	}
	switch s {
	case "busy":
		return ClassRetryable, nil
	case "medium", "medium-error":
		return ClassDeviceError, nil
	case "pdl":
		return ClassPermanentLoss, nil
	case "conflict", "reservation":
		return ClassConflict, nil
	}
	return ClassNone, fmt.Errorf("unknown error class %q (want path-failure, retryable, not-ready, device-error, permanent-loss or reservation-conflict)", s)
}

// The sentinels of the taxonomy. Any error of a class matches its sentinel
// with errors.Is.
var (
	ErrPathFailure   = &classSentinel{ClassPathFailure}
	ErrRetryable     = &classSentinel{ClassRetryable}
	ErrNotReady      = &classSentinel{ClassNotReady}
	ErrDeviceError   = &classSentinel{ClassDeviceError}
	ErrPermanentLoss = &classSentinel{ClassPermanentLoss}
	ErrConflict      = &classSentinel{ClassConflict}
)

// Errors the NMP returns when no path could carry an I/O.
var (
	// ErrAllPathsDown: no path returned before the APD timeout expired.
	ErrAllPathsDown = errors.New("all paths down: APD timeout expired")
	// ErrNoPaths: the device has no paths at all, or every path is in PDL.
	ErrNoPaths = errors.New("no usable path")
	// ErrOutOfRange: the request lies (partly) beyond the end of the device.
	ErrOutOfRange = &Error{Class: ClassDeviceError, Op: "io", Err: errors.New("request beyond the end of the device")}
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("device closed")
	// ErrReservationConflict: the LU answered RESERVATION CONFLICT (another
	// I_T nexus holds a reservation). Transports wrap it in ClassConflict:
	// not a path failure, no failover, no retry on another path.
	ErrReservationConflict = errors.New("reservation conflict: the logical unit is reserved by another initiator; release or preempt the reservation")
)

type classSentinel struct{ c Class }

func (s *classSentinel) Error() string { return s.c.String() }

// Class returns the class of the sentinel.
func (s *classSentinel) Class() Class { return s.c }

// Sense is a SCSI-like sense triple that a path reports with an error, so an
// SATP can tell e.g. an ALUA transition (02/04/0A) from a standby port
// (02/04/0B) or a unit attention (06/2A/06).
type Sense struct {
	Key, ASC, ASCQ uint8
}

// Sense keys and additional sense codes the project uses.
const (
	SenseNotReady       = 0x02
	SenseMediumError    = 0x03
	SenseIllegalRequest = 0x05
	SenseUnitAttention  = 0x06
	SenseAbortedCommand = 0x0b
)

// Well-known sense triples.
var (
	SenseALUATransitioning = Sense{SenseNotReady, 0x04, 0x0a} // LU not accessible, asymmetric access state transition
	SenseALUAStandby       = Sense{SenseNotReady, 0x04, 0x0b} // LU not accessible, target port in standby state
	SenseALUAUnavailable   = Sense{SenseNotReady, 0x04, 0x0c} // LU not accessible, target port in unavailable state
	SenseAccessChanged     = Sense{SenseUnitAttention, 0x2a, 0x06}
	SenseLUNotSupported    = Sense{SenseIllegalRequest, 0x25, 0x00}
	SenseUnrecoveredRead   = Sense{SenseMediumError, 0x11, 0x00}
)

func (s Sense) String() string { return fmt.Sprintf("%02x/%02x/%02x", s.Key, s.ASC, s.ASCQ) }

// Error is a classified I/O error.
type Error struct {
	Class Class
	Op    string // read, write, flush, discard, probe, …
	Path  string // the path's name, when known
	Sense *Sense // optional sense data
	Err   error  // the underlying error, may be nil
}

func (e *Error) Error() string {
	msg := e.Class.String()
	if e.Op != "" {
		msg = e.Op + ": " + msg
	}
	if e.Path != "" {
		msg = "path " + e.Path + ": " + msg
	}
	if e.Sense != nil {
		msg += " (sense " + e.Sense.String() + ")"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of the error's class.
func (e *Error) Is(target error) bool {
	s, ok := target.(*classSentinel)
	return ok && s.c == e.Class
}

// NewError returns a classified error.
func NewError(c Class, op string, err error) *Error {
	return &Error{Class: c, Op: op, Err: err}
}

// ClassOf returns the class an error was already given (ClassNone if it
// carries none). Judging unclassified errors is the SATP's job.
func ClassOf(err error) Class {
	if err == nil {
		return ClassNone
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	var s *classSentinel
	if errors.As(err, &s) {
		return s.c
	}
	return ClassNone
}

// SenseOf returns the sense data carried by err, if any.
func SenseOf(err error) (Sense, bool) {
	var e *Error
	for err != nil {
		if !errors.As(err, &e) {
			return Sense{}, false
		}
		if e.Sense != nil {
			return *e.Sense, true
		}
		err = e.Err
	}
	return Sense{}, false
}
