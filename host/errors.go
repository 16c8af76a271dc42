package host

import (
	"errors"
	"fmt"
)

// The kinds of error the host's operations return, for errors.Is. The
// message of an error of a kind is its own ("no device \"x\" (devices:
// [a b])"); the kind only classifies it. The control API carries the kind
// across its socket as a code, so a client matches the same sentinels.
var (
	// ErrNotFound: no device, path, array or the like of that name.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request itself is wrong (a bad value, a missing field).
	ErrInvalid = errors.New("invalid request")
	// ErrExists: what is to be added is there already.
	ErrExists = errors.New("already exists")
	// ErrUnsupported: the device or the mount cannot do this (a device
	// without an integrity checker asked to verify, a mount without arrays).
	ErrUnsupported = errors.New("not supported")
	// ErrRefused: a path was refused (not claimed, or shown to lead to
	// another store).
	ErrRefused = errors.New("refused")
)

// kindError is an error of a kind: its message is err's; errors.Is
// matches both the kind and whatever err wraps.
type kindError struct {
	kind error
	err  error
}

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.kind, e.err} }

// errorf makes an error of a kind; the format may wrap with %w.
func errorf(kind error, format string, a ...any) error {
	return kindError{kind: kind, err: fmt.Errorf(format, a...)}
}

// Kinded returns err classified as kind (nil stays nil; an error already
// of that kind is returned as it is).
func Kinded(kind, err error) error {
	if err == nil || errors.Is(err, kind) {
		return err
	}
	return kindError{kind: kind, err: err}
}
