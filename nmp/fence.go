package nmp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Fencing. A write-class operation (write, discard, write-zeroes) that
// failed on a path in a way that lets it still land on the store leaves its
// byte range ambiguous: a retry elsewhere, acknowledged, then overwritten by
// newer data, would be rolled back when the old request finally executes.
// So no write-class operation that overlaps an ambiguous range is issued —
// neither the retry of the write that left it nor any later write — until
// the range is resolved by proof that the old operation cannot land any
// more:
//
//   - the transport's proof: the error's backends.Pending Settled channel
//     closes (the system call returned, the NBD reply arrived late, the
//     server closed the connection after draining it);
//   - the operator's `mpathfs path fence PATH` (a STONITH confirmation: the
//     path's server is dead or was reset), which resolves every range of the
//     path;
//   - the path's quiesce time (NVMe's CQT in spirit), when it has one: the
//     range resolves that long after it was registered;
//   - the device's Close (waiting writes fail with ioerr.ErrClosed).
//
// A range older than the device's APD timeout stays until proof, but the
// writes waiting on it, and later writes overlapping it, fail with an EIO
// class error saying why. Reads are never held.

// ErrWriteAmbiguous is wrapped by the error of a write that overlaps a range
// left ambiguous for longer than the APD timeout.
var ErrWriteAmbiguous = errors.New("an earlier write to this range may still land")

// Resolutions of an ambiguous range, as the ambiguity-resolved event's To
// field names them.
const (
	ResolvedSettled = "settled"
	ResolvedFenced  = "fenced"
	ResolvedQuiesce = "quiesce"
	ResolvedClosed  = "closed"
)

// ambiguous is one ambiguous range.
type ambiguous struct {
	path    *mpath.Path
	op      mpath.OpKind
	off, n  int64
	since   time.Time
	waiting string
	settled <-chan struct{} // the transport's proof; nil: none will come
	quiesce time.Duration

	resolved chan struct{} // closed when resolved
	expired  chan struct{} // closed when older than the APD timeout
	// done and isExpired are guarded by fencing.mu.
	done, isExpired bool
}

func (a *ambiguous) overlaps(off, n int64) bool {
	return n > 0 && off < a.off+a.n && a.off < off+n
}

// fencing is a device's set of ambiguous ranges.
type fencing struct {
	// active is the number of ranges: the only thing a write reads when
	// there are none.
	active atomic.Int32
	mu     sync.Mutex
	ranges []*ambiguous
	closed bool
}

// writeClass reports whether an operation changes the store's data.
func writeClass(op mpath.OpKind) bool {
	return op == mpath.OpWrite || op == mpath.OpDiscard || op == mpath.OpWriteZeroes
}

// noteAttempt registers the range of a failed write-class attempt when the
// failure leaves it ambiguous: its error is a Pending not settled yet, or
// the attempt timed out and its error is no Pending at all (no proof will
// come from the transport).
func (d *Device) noteAttempt(path *mpath.Path, op mpath.OpKind, off, length int64, err error, timedOut bool) {
	var settled <-chan struct{}
	var waiting string
	if pe, ok := errors.AsType[backends.Pending](err); ok {
		settled = pe.Settled()
		select {
		case <-settled:
			return
		default:
		}
		waiting = pe.WaitingFor()
		if waiting == "" {
			waiting = "the transport's proof that the operation cannot land any more"
		}
	} else if timedOut {
		waiting = "`mpathfs path fence " + path.Name + "` (the transport gives no proof)"
	} else {
		return
	}
	if length <= 0 {
		return // an empty range overlaps nothing
	}
	if path.Quiesce > 0 {
		waiting += fmt.Sprintf(", or the path's quiesce time (%v)", path.Quiesce)
	}
	now := time.Now()
	a := &ambiguous{path: path, op: op, off: off, n: length, since: now, waiting: waiting,
		settled: settled, quiesce: path.Quiesce, resolved: make(chan struct{}), expired: make(chan struct{})}
	d.fence.mu.Lock()
	if d.fence.closed {
		d.fence.mu.Unlock()
		return
	}
	d.fence.ranges = append(d.fence.ranges, a)
	d.fence.active.Store(int32(len(d.fence.ranges)))
	d.fence.mu.Unlock()
	d.events.Publish(mpath.Event{Time: now, Kind: "write-ambiguous", Device: d.name, Path: path.Name,
		Reason: fmt.Sprintf("%s of bytes %d+%d may still land (%v); overlapping writes wait for %s", op, off, length, err, waiting)})
	// Close marks fencing closed (and resolves every range) before it
	// stops the device's goroutines, so a watcher refused here has no range
	// left to watch.
	d.stopper.goWork(func() { d.watchAmbiguous(a) })
}

// watchAmbiguous resolves a range on proof or at its quiesce time, and
// marks it expired at the APD timeout.
func (d *Device) watchAmbiguous(a *ambiguous) {
	var quiesce <-chan time.Time
	if a.quiesce > 0 {
		t := time.NewTimer(time.Until(a.since.Add(a.quiesce)))
		defer t.Stop()
		quiesce = t.C
	}
	expiry := time.NewTimer(time.Until(a.since.Add(d.cfg.APDTimeout)))
	defer expiry.Stop()
	expire := expiry.C
	for {
		select {
		case <-a.settled:
			d.resolve(a, ResolvedSettled)
			return
		case <-quiesce:
			d.resolve(a, ResolvedQuiesce)
			return
		case <-expire:
			expire = nil
			d.expire(a)
		case <-a.resolved:
			return
		case <-d.stopper.done():
			return // Close resolves every range
		}
	}
}

// resolve removes a range and wakes the writes waiting on it. It reports
// false if the range was resolved already.
func (d *Device) resolve(a *ambiguous, how string) bool {
	d.fence.mu.Lock()
	if a.done {
		d.fence.mu.Unlock()
		return false
	}
	a.done = true
	for i, r := range d.fence.ranges {
		if r == a {
			d.fence.ranges = append(d.fence.ranges[:i:i], d.fence.ranges[i+1:]...)
			break
		}
	}
	d.fence.active.Store(int32(len(d.fence.ranges)))
	close(a.resolved)
	d.fence.mu.Unlock()
	now := time.Now()
	d.events.Publish(mpath.Event{Time: now, Kind: "ambiguity-resolved", Device: d.name, Path: a.path.Name, To: how,
		Reason: fmt.Sprintf("%s: %s of bytes %d+%d was ambiguous for %v", how, a.op, a.off, a.n, now.Sub(a.since).Round(time.Millisecond))})
	return true
}

// expire marks a range older than the APD timeout: writes overlapping it
// fail from now on, until it is resolved.
func (d *Device) expire(a *ambiguous) {
	d.fence.mu.Lock()
	if a.done || a.isExpired {
		d.fence.mu.Unlock()
		return
	}
	a.isExpired = true
	close(a.expired)
	d.fence.mu.Unlock()
	d.events.Publish(mpath.Event{Time: time.Now(), Kind: "ambiguous-expired", Device: d.name, Path: a.path.Name,
		Reason: d.expiredReason(a)})
}

func (d *Device) expiredReason(a *ambiguous) string {
	return fmt.Sprintf("bytes %d+%d of device %s: a %s on path %s may still land; ambiguous for %v, longer than the APD timeout %v, waiting for %s; `mpathfs path fence %s` confirms the path dead",
		a.off, a.n, d.name, a.op, a.path.Name, time.Since(a.since).Round(time.Millisecond), d.cfg.APDTimeout, a.waiting, a.path.Name)
}

// awaitFence holds a write-class operation while it overlaps an ambiguous
// range: it returns nil once none does, an EIO-class error when the range
// it waits on outlived the APD timeout, ioerr.ErrClosed when the device
// closes, or the caller's context error.
func (d *Device) awaitFence(ctx context.Context, op mpath.OpKind, off, length int64) error {
	for {
		d.fence.mu.Lock()
		if d.fence.closed {
			d.fence.mu.Unlock()
			return ioerr.ErrClosed
		}
		var a *ambiguous
		for _, r := range d.fence.ranges {
			if r.overlaps(off, length) {
				a = r
				if r.isExpired {
					break
				}
			}
		}
		d.fence.mu.Unlock()
		if a == nil {
			return nil
		}
		select {
		case <-a.expired:
			return d.expiredError(op, a)
		default:
		}
		select {
		case <-a.resolved:
		case <-a.expired:
			return d.expiredError(op, a)
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stopper.done():
			return ioerr.ErrClosed
		}
	}
}

func (d *Device) expiredError(op mpath.OpKind, a *ambiguous) error {
	return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: op.String(), Path: a.path.Name,
		Err: fmt.Errorf("%w: %s", ErrWriteAmbiguous, d.expiredReason(a))}
}

// FencePath is the operator's confirmation that nothing sent on a path can
// land any more (its server is dead, fenced or reset): every ambiguous
// range the path left is resolved. It returns how many. A path removed
// from the device is found by name among the ranges it left.
func (d *Device) FencePath(name string) (int, error) {
	p := d.FindPath(name)
	d.fence.mu.Lock()
	var hit []*ambiguous
	for _, a := range d.fence.ranges {
		if a.path == p || (p == nil && (a.path.Name == name || a.path.URI == name)) {
			hit = append(hit, a)
		}
	}
	d.fence.mu.Unlock()
	if p == nil && len(hit) == 0 {
		return 0, fmt.Errorf("device %s has no path %q", d.name, name)
	}
	n := 0
	for _, a := range hit {
		if d.resolve(a, ResolvedFenced) {
			n++
		}
	}
	return n, nil
}

// Ambiguous lists the device's ambiguous ranges, oldest first.
func (d *Device) Ambiguous() []mpath.AmbiguousRange {
	if d.fence.active.Load() == 0 {
		return nil
	}
	now := time.Now()
	d.fence.mu.Lock()
	defer d.fence.mu.Unlock()
	var out []mpath.AmbiguousRange
	for _, a := range d.fence.ranges {
		out = append(out, mpath.AmbiguousRange{Path: a.path.Name, Op: a.op.String(), Offset: a.off, Length: a.n,
			Since: a.since, Age: now.Sub(a.since).Round(time.Millisecond).String(), WaitingFor: a.waiting, Expired: a.isExpired})
	}
	return out
}

// closeFence resolves every range at Close; writes waiting fail with
// ioerr.ErrClosed and no range is registered afterwards.
func (d *Device) closeFence() {
	d.fence.mu.Lock()
	d.fence.closed = true
	left := append([]*ambiguous(nil), d.fence.ranges...)
	d.fence.mu.Unlock()
	for _, a := range left {
		d.resolve(a, ResolvedClosed)
	}
}
