// Package backends defines the contract every path's backing store keeps —
// ReaderAt/WriterAt semantics plus Flush, Size and Close — the optional
// capabilities a backend may add as one-method interfaces, and the registry
// that opens a backend from a path URI.
//
// The contract, as for io.ReaderAt and io.WriterAt:
//   - ReadAt and WriteAt are safe to call in parallel from many goroutines;
//   - a count smaller than len(p) always comes with a non-nil error;
//   - the buffer p is never retained after the call returns;
//   - the context's deadline and cancellation are honoured where the backend
//     can wait (a network round trip, an injected hang); a backend that cannot
//     interrupt a system call documents it.
//
// Backends return raw errors (errno values, network errors) or errors of the
// mpath taxonomy; judging what an error means for the path is the SATP's job.
package backends

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/plugin"
)

// Backend is one path's access to a store.
type Backend interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	// Flush makes every write acknowledged so far durable on the store.
	Flush(ctx context.Context) error
	// Size is the store's size in bytes.
	Size() int64
	Close() error
}

// Discarder is implemented by backends that can deallocate a range (TRIM,
// punch hole). After a discard the range reads as zeroes or its old data.
type Discarder interface {
	Discard(ctx context.Context, off, length int64) error
}

// ZeroWriter is implemented by backends that can write zeroes over a range
// without transferring them. After it the range reads as zeroes.
type ZeroWriter interface {
	WriteZeroes(ctx context.Context, off, length int64) error
}

// Prober is implemented by backends with a cheap health check (a path
// checker's TUR). A nil error means the path can carry I/O.
type Prober interface {
	Probe(ctx context.Context) error
}

// CacheSharer is implemented by backends that can name the volatile write
// cache their acknowledged writes wait in until a flush. Two paths whose
// CacheDomain strings are equal and not empty reach one cache: a flush on
// either makes the writes acknowledged on both durable, so the NMP may
// cover a dead path's flush with a flush on the other. "" promises nothing.
type CacheSharer interface {
	CacheDomain() string
}

// Inquirer is implemented by backends that report an identity (SCSI INQUIRY
// and the device identification VPD page, in spirit).
type Inquirer interface {
	Inquiry(ctx context.Context) (Inquiry, error)
}

// Aborter is implemented by backends that can abandon every request in
// flight at once (a hung NBD connection is torn down). The NMP calls it when
// an I/O outlives its deadline; afterwards no late completion may land.
type Aborter interface {
	Abort(reason error)
}

// Pending is implemented by the error of a write-class operation (write,
// discard, write-zeroes) that the transport gave up waiting for while the
// operation may still execute on the store later: a deadline passed with the
// system call still running, or the request still sitting in a server's
// socket. The NMP keeps the operation's byte range ambiguous — no write that
// overlaps it is issued or acknowledged — until Settled is closed.
//
// A transport closes Settled only on proof that the abandoned operation can
// no longer change the store: the system call returned (file, block), the
// reply arrived late or the server closed the connection that carried it
// after draining it (NBD), the fault decorator executed or dropped it. Until
// then WaitingFor says, for people, what the proof will be ("the pwrite
// system call to return").
//
// An operation that fails definitively (an error reply, a system call that
// returned an error) is not pending. A timed-out operation whose error does
// not implement Pending is ambiguous with no proof the transport can give:
// only the operator's `path fence`, the path's quiesce time or the device's
// APD timeout end it.
type Pending interface {
	error
	Settled() <-chan struct{}
	WaitingFor() string
}

// PendingError is a ready-made Pending: Err is what the caller sees, Done is
// closed on proof, Waiting describes that proof.
type PendingError struct {
	Err     error
	Done    <-chan struct{}
	Waiting string
}

func (e *PendingError) Error() string            { return e.Err.Error() }
func (e *PendingError) Unwrap() error            { return e.Err }
func (e *PendingError) Settled() <-chan struct{} { return e.Done }
func (e *PendingError) WaitingFor() string       { return e.Waiting }

// Settled is a closed channel, for operations known not to land later.
var Settled = func() <-chan struct{} { c := make(chan struct{}); close(c); return c }()

// Unwrapper is implemented by decorators, so capabilities of the backend
// underneath stay reachable.
type Unwrapper interface {
	Unwrap() Backend
}

// Inquiry is what a path reports about the logical unit behind it.
type Inquiry struct {
	Vendor    string `json:"vendor,omitempty"`
	Model     string `json:"model,omitempty"`
	Serial    string `json:"serial,omitempty"`
	WWID      string `json:"wwid,omitempty"`
	Transport string `json:"transport,omitempty"` // file, nbd, block
	// TPGS is the INQUIRY TPGS field: 0 none, 1 implicit, 2 explicit, 3 both.
	TPGS int `json:"tpgs,omitempty"`
}

// Opener opens a backend for a parsed path URI.
type Opener func(ctx context.Context, u *url.URL) (Backend, error)

var openers = plugin.New[Opener]("scheme")

// Register makes an opener available for a URI scheme. It panics if the
// opener is nil or the scheme is taken, like database/sql.Register.
func Register(scheme string, open Opener) { openers.Register(scheme, open) }

// Schemes lists the registered URI schemes, sorted.
func Schemes() []string { return openers.Names() }

// ParseURI parses a path URI. A bare absolute or relative path means
// file://, a bare /dev/… path means block://.
func ParseURI(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("empty path URI: give file:///abs/path, nbd://host:port/export or a file path")
	}
	if !strings.Contains(s, "://") {
		scheme := "file"
		if strings.HasPrefix(s, "/dev/") {
			scheme = "block"
		}
		return &url.URL{Scheme: scheme, Path: s}, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("path URI %q: %v", s, err)
	}
	return u, nil
}

// Open opens the backend a path URI names.
func Open(ctx context.Context, uri string) (Backend, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	open, ok := openers.Get(u.Scheme)
	if !ok {
		return nil, fmt.Errorf("path URI %q: unknown scheme %q (known: %s)", uri, u.Scheme, strings.Join(Schemes(), ", "))
	}
	return open(ctx, u)
}

// As finds the first backend in a chain of decorators that implements T.
// Prefer Can for capability checks: a decorator may implement a method
// whose backend underneath does not support it.
func As[T any](b Backend) (T, bool) {
	for b != nil {
		if t, ok := b.(T); ok {
			return t, true
		}
		u, ok := b.(Unwrapper)
		if !ok {
			break
		}
		b = u.Unwrap()
	}
	var zero T
	return zero, false
}

// ErrNotSupported is returned by an optional operation the backend (or the
// backend under a decorator) does not offer.
var ErrNotSupported = errors.New("operation not supported by this path")

// Capability names an optional operation.
type Capability int

const (
	CapDiscard Capability = iota
	CapWriteZeroes
	CapProbe
	CapInquiry
	CapAbort
	// CapReserve: the backend carries SCSI reservations (Reserver).
	CapReserve
)

func (c Capability) String() string {
	switch c {
	case CapDiscard:
		return "discard"
	case CapWriteZeroes:
		return "write-zeroes"
	case CapProbe:
		return "probe"
	case CapInquiry:
		return "inquiry"
	case CapAbort:
		return "abort"
	case CapReserve:
		return "reserve"
	}
	return fmt.Sprintf("capability(%d)", int(c))
}

// Capable is implemented by backends whose capabilities are not fixed by
// their type: decorators ask the backend underneath, an NBD client answers
// from the server's transmission flags.
type Capable interface {
	Can(c Capability) bool
}

// Can reports whether b offers capability c.
func Can(b Backend, c Capability) bool {
	if cb, ok := b.(Capable); ok {
		return cb.Can(c)
	}
	var ok bool
	switch c {
	case CapDiscard:
		_, ok = b.(Discarder)
	case CapWriteZeroes:
		_, ok = b.(ZeroWriter)
	case CapProbe:
		_, ok = b.(Prober)
	case CapInquiry:
		_, ok = b.(Inquirer)
	case CapAbort:
		_, ok = b.(Aborter)
	case CapReserve:
		_, ok = b.(Reserver)
	}
	return ok
}

// QueryBool reads a boolean query parameter of a path URI (def when
// absent); a value that is not a boolean is an error naming the URI.
func QueryBool(u *url.URL, key string, def bool) (bool, error) {
	v := u.Query().Get(key)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def, fmt.Errorf("%s URI %q: %s=%q is not a boolean", u.Scheme, u.String(), key, v)
	}
	return b, nil
}

// Sleep waits d, or until ctx is done (then it returns ctx.Err()): the
// delays of simulated transports and of plugins that must not outlive the
// I/O or the command they belong to. d ≤ 0 returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
