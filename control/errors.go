package control

import (
	"errors"
	"net/http"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/ioerr"
)

// Errors cross the socket with a code: the server finds the first kind in
// codes that the error matches (errors.Is) and sends its code with the
// message; the client returns an *Error that matches the same sentinel. So
// errors.Is(err, control.ErrNotFound) or errors.Is(err,
// ioerr.ErrAllPathsDown) works on either side of the socket, and nobody
// compares messages.

// The kinds of the host's errors, as the control API names them.
var (
	ErrNotFound    = host.ErrNotFound
	ErrInvalid     = host.ErrInvalid
	ErrExists      = host.ErrExists
	ErrUnsupported = host.ErrUnsupported
	ErrRefused     = host.ErrRefused
	// ErrUnknownEndpoint: the server has no such route (an older mpathfs,
	// or a typing error in a script).
	ErrUnknownEndpoint = errors.New("unknown control endpoint")
	// ErrPermission: the caller may not use the socket (only root and the
	// user who started the mount may).
	ErrPermission = errors.New("permission denied")
)

// codes is the one table of error codes: the code on the wire, the
// sentinel it stands for and the HTTP status it is sent with. More
// specific kinds come first.
var codes = []struct {
	code   string
	err    error
	status int
}{
	{"unknown-endpoint", ErrUnknownEndpoint, http.StatusNotFound},
	{"permission-denied", ErrPermission, http.StatusForbidden},
	{"not-found", ErrNotFound, http.StatusNotFound},
	{"invalid", ErrInvalid, http.StatusBadRequest},
	{"exists", ErrExists, http.StatusConflict},
	{"refused", ErrRefused, http.StatusConflict},
	{"unsupported", ErrUnsupported, http.StatusNotImplemented},
	{"all-paths-down", ioerr.ErrAllPathsDown, http.StatusServiceUnavailable},
	{"no-paths", ioerr.ErrNoPaths, http.StatusServiceUnavailable},
	{"closed", ioerr.ErrClosed, http.StatusServiceUnavailable},
	{"path-failure", ioerr.ErrPathFailure, http.StatusBadGateway},
	{"retryable", ioerr.ErrRetryable, http.StatusBadGateway},
	{"not-ready", ioerr.ErrNotReady, http.StatusBadGateway},
	{"device-error", ioerr.ErrDeviceError, http.StatusBadGateway},
	{"permanent-loss", ioerr.ErrPermanentLoss, http.StatusBadGateway},
	{"reservation-conflict", ioerr.ErrConflict, http.StatusConflict},
}

// codeOf is the code and HTTP status of an error ("" and 400 Bad Request
// for an error of no known kind, as every error was before codes).
func codeOf(err error) (string, int) {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return c.code, c.status
		}
	}
	return "", http.StatusBadRequest
}

// Error is an error the control API returned: the server's message and the
// code of its kind. It unwraps to the sentinel of the code, so errors.Is
// matches it.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel of the code (nil for an unknown code), so
// errors.Is also sees what that sentinel wraps.
func (e *Error) Unwrap() error {
	for _, c := range codes {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}
