package nmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// ReadAt reads len(p) bytes at off. A read crossing the end of the device
// returns the bytes before it and io.EOF.
func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > d.size {
		return 0, ioerr.ErrOutOfRange
	}
	var eof error
	if rest := d.size - off; int64(len(p)) > rest {
		p, eof = p[:rest], io.EOF
	}
	if len(p) == 0 {
		return 0, eof
	}
	n, err := d.do(ctx, mpath.OpRead, p, off, int64(len(p)))
	if err == nil {
		err = eof
	}
	return n, err
}

// WriteAt writes p at off; the write is acknowledged only after a path's
// backend acknowledged all of it.
func (d *Device) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, ioerr.ErrOutOfRange
	}
	if len(p) == 0 {
		return 0, nil
	}
	return d.do(ctx, mpath.OpWrite, p, off, int64(len(p)))
}

// Discard deallocates a range, when every path can.
func (d *Device) Discard(ctx context.Context, off, length int64) error {
	if !d.canDiscard.Load() {
		return ioerr.NewError(ioerr.ClassDeviceError, "discard", backends.ErrNotSupported)
	}
	if off < 0 || length < 0 || off+length > d.size {
		return ioerr.ErrOutOfRange
	}
	_, err := d.do(ctx, mpath.OpDiscard, nil, off, length)
	return err
}

// WriteZeroes zeroes a range without transferring data, when every path can.
func (d *Device) WriteZeroes(ctx context.Context, off, length int64) error {
	if !d.canZero.Load() {
		return ioerr.NewError(ioerr.ClassDeviceError, "write-zeroes", backends.ErrNotSupported)
	}
	if off < 0 || length < 0 || off+length > d.size {
		return ioerr.ErrOutOfRange
	}
	_, err := d.do(ctx, mpath.OpWriteZeroes, nil, off, length)
	return err
}

// do routes one I/O: select a path, run the I/O under the per-I/O
// deadline, judge errors, retry elsewhere, wait out All-Paths-Down.
func (d *Device) do(ctx context.Context, op mpath.OpKind, p []byte, off, length int64) (int, error) {
	d.queueDepth.Add(1)
	defer d.queueDepth.Add(-1)
	var tr *ioTrace
	if tb := d.tracer.Load(); tb != nil {
		tr = tb.t.begin(d, op, off, length)
	}
	attempts := 0
	var failed triedPaths
	for {
		if err := d.detachedErr(); err != nil { // state.go: off or dead
			if tr != nil {
				tr.finish(err)
			}
			return 0, err
		}
		// Fencing: a write-class operation never overlaps a range an
		// earlier write may still land on. One atomic load when none is.
		if writeClass(op) && d.fence.active.Load() != 0 {
			if err := d.awaitFence(ctx, op, off, length); err != nil {
				if tr != nil {
					tr.finish(err)
				}
				return 0, err
			}
		}
		v := d.view.Load()
		path, reason := d.psp.Load().psp.Select(v, op, int(length))
		if path != nil && failed.has(path) {
			// Retry elsewhere: a path this I/O already failed on is chosen
			// again only when no other usable path is left (the view may
			// not show the failure yet: another goroutine may be applying
			// a probe result taken before it).
			if alt := d.retryTarget(v, failed, op, int(length)); alt != nil {
				path, reason = alt, ReasonRetryElsewhere
			}
		}
		if pin := d.pinned(v); pin != nil {
			path = pin // a SCSI-2 reservation is held through it (pr.go)
		}
		if path == nil {
			if err := d.waitForPath(ctx, v); err != nil {
				if tr != nil {
					tr.finish(err)
				}
				return 0, err
			}
			continue
		}
		if tr != nil {
			tr.attempt(path, reason)
		}
		var n int
		var err error
		if op == mpath.OpRead {
			n, err = d.read(ctx, path, p, off) // hedge.go
		} else {
			n, err = d.exec(ctx, path, op, p, off, length)
		}
		if err == nil {
			if tr != nil {
				tr.finish(nil)
			}
			return n, nil
		}
		if cerr := ctx.Err(); cerr != nil {
			if tr != nil {
				tr.finish(cerr)
			}
			return n, cerr
		}
		verdict := d.judge(ctx, path, op, err)
		if verdict.Class == ioerr.ClassPathFailure {
			failed.add(path) // a retryable error retries on the same path
		}
		if tr != nil {
			tr.failed(verdict.Class, err)
		}
		if !verdict.Retry {
			err = d.finalError(op, path, verdict.Class, err)
			if tr != nil {
				tr.finish(err)
			}
			return n, err
		}
		attempts++
		if attempts > d.cfg.MaxRetries {
			err = &ioerr.Error{Class: verdict.Class, Op: op.String(), Path: path.Name,
				Err: fmt.Errorf("gave up after %d attempts: %w", attempts, err)}
			if tr != nil {
				tr.finish(err)
			}
			return n, err
		}
		if verdict.Backoff > 0 {
			t := time.NewTimer(verdict.Backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				if tr != nil {
					tr.finish(ctx.Err())
				}
				return n, ctx.Err()
			}
		}
	}
}

func (d *Device) finalError(op mpath.OpKind, p *mpath.Path, c ioerr.Class, err error) error {
	var me *ioerr.Error
	if errors.As(err, &me) && me.Class == c {
		return err
	}
	return &ioerr.Error{Class: c, Op: op.String(), Path: p.Name, Err: err}
}

// exec runs one I/O on one path under the per-I/O deadline.
func (d *Device) exec(ctx context.Context, path *mpath.Path, op mpath.OpKind, p []byte, off, length int64) (int, error) {
	return d.execLeg(ctx, path, op, p, off, length, nil)
}

// execLeg is exec for one leg of a hedged read (hedge.go): the leg's
// context can be ended by the other leg, and a leg so beaten returns
// errBeaten without counting as a failure of its path.
func (d *Device) execLeg(ctx context.Context, path *mpath.Path, op mpath.OpKind, p []byte, off, length int64, leg *hedgeLeg) (int, error) {
	start := time.Now()
	ictx := newIOCtx(ctx, start, d.cfg.IOTimeout)
	if leg != nil {
		leg.started(ictx)
	}
	path.Inflight.Add(1)
	path.InflightBytes.Add(length)
	b := path.Backend
	var n int
	var err error
	switch op {
	case mpath.OpRead:
		n, err = b.ReadAt(ictx, p, off)
	case mpath.OpWrite:
		n, err = b.WriteAt(ictx, p, off)
	case mpath.OpFlush:
		err = b.Flush(ictx)
	case mpath.OpDiscard:
		if dd, ok := backends.As[backends.Discarder](b); ok {
			err = dd.Discard(ictx, off, length)
		} else {
			err = backends.ErrNotSupported
		}
	case mpath.OpWriteZeroes:
		if z, ok := backends.As[backends.ZeroWriter](b); ok {
			err = z.WriteZeroes(ictx, off, length)
		} else {
			err = backends.ErrNotSupported
		}
	}
	lat := time.Since(start)
	timedOut := err != nil && ictx.expired()
	beaten := leg != nil && leg.finished(err, lat, &leg.r.h.cfg)
	ictx.release()
	if path.Inflight.Add(-1) == 0 && d.drains.n.Load() != 0 {
		d.drained(path)
	}
	path.InflightBytes.Add(-length)
	if beaten {
		return n, errBeaten
	}
	if err == nil && (op == mpath.OpRead || op == mpath.OpWrite) && n != len(p) {
		err = io.ErrShortWrite
		if op == mpath.OpRead {
			err = io.ErrUnexpectedEOF
		}
	}
	if ob := d.obs.Load(); ob != nil {
		c := ioerr.ClassNone
		if err != nil {
			c = ClassifyError(err)
			if timedOut {
				c = ioerr.ClassPathFailure
			}
		}
		ob.o.Completed(d, path, op, n, lat, c)
	}
	if err == nil {
		path.Done(op, n, lat)
		if op == mpath.OpWrite || op == mpath.OpDiscard || op == mpath.OpWriteZeroes {
			path.MarkDirty()
		}
		return n, nil
	}
	if writeClass(op) {
		d.noteAttempt(path, op, off, length, err, timedOut)
	}
	if timedOut {
		if a, ok := backends.As[backends.Aborter](b); ok {
			a.Abort(err)
		}
		err = &ioerr.Error{Class: ioerr.ClassPathFailure, Op: op.String(), Path: path.Name,
			Err: fmt.Errorf("I/O deadline of %v exceeded: %w", d.cfg.IOTimeout, err)}
	}
	return n, err
}

// judge asks the SATP what an error means — for this I/O: its class,
// whether and when to retry — and reports a verdict that may change the
// path's state to the owner, which decides (decide.go). The report is
// synchronous: when judge returns, the routing view reflects the decision,
// so the retry finds the next path at once. An I/O failing on a path that
// is out of service already reports nothing: nothing could change.
func (d *Device) judge(ctx context.Context, path *mpath.Path, op mpath.OpKind, err error) Verdict {
	err = d.mediumCheck(path, op, err) // satp_default.go: a bad block is not a dead path
	v := d.SATP().Classify(path, op, err)
	path.Failed(v.Class)
	if v.Class == ioerr.ClassConflict {
		d.noteConflict(path, op, err) // pr.go: no state change, no retry
	}
	if v.Event != "" {
		d.events.Publish(mpath.Event{Time: time.Now(), Kind: v.Event, Device: d.name, Path: path.Name, Reason: v.Reason})
	}
	d.noteRetryable(path, v) // marginal.go
	if (v.State != mpath.StateUnknown && path.State() == mpath.StateActive && !path.AdminOff()) ||
		(v.Class == ioerr.ClassPermanentLoss && !path.PDL()) {
		d.report(event{kind: evIOFailed, path: path, op: op, err: err, verdict: v})
	}
	if v.Update {
		if v.Class == ioerr.ClassPathFailure && len(d.view.Load().Usable) > 0 {
			// The retry has a path already (the report above took this
			// one out of the view): re-inquire in the background.
			d.updateSoon()
		} else {
			d.updateWith(ctx, d.report)
		}
	}
	return v
}

// waitForPath waits out All-Paths-Down: until a path returns (nil), the
// APD timeout expires (ErrAllPathsDown) or the caller gives up.
func (d *Device) waitForPath(ctx context.Context, v *View) error {
	d.mu.Lock()
	if d.mu.dec.closed {
		d.mu.Unlock()
		return ioerr.ErrClosed
	}
	if d.view.Load() != v {
		d.mu.Unlock()
		return nil
	}
	allPDL := true
	for _, p := range d.mu.dec.paths {
		if !p.PDL() {
			allPDL = false
		}
	}
	since := d.mu.dec.apdSince
	pending := len(v.Usable) == 0 && d.mu.dec.pending()
	limit, forever, why := d.mu.dec.waitLimit() // policy.go: no_path_retry, queue on|off
	d.mu.Unlock()
	if allPDL {
		return &ioerr.Error{Class: ioerr.ClassPermanentLoss, Op: "io", Err: fmt.Errorf("device %s: every path reports permanent device loss: %w", d.name, ioerr.ErrNoPaths)}
	}
	if since.IsZero() && pending {
		// Not All-Paths-Down: the paths wait for their first probe,
		// whose verdict (bounded by the probe timeout) is a new view.
		select {
		case <-v.Changed():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stopper.done():
			return ioerr.ErrClosed
		}
	}
	if since.IsZero() {
		return nil
	}
	apdErr := func() error {
		if limit == 0 {
			return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "io", Err: fmt.Errorf("device %s: %w: I/O does not wait: %s", d.name, ioerr.ErrAllPathsDown, why)}
		}
		if why == whyAPD {
			return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "io", Err: fmt.Errorf("device %s: %w after %v", d.name, ioerr.ErrAllPathsDown, limit)}
		}
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "io", Err: fmt.Errorf("device %s: %w after %v (%s)", d.name, ioerr.ErrAllPathsDown, limit, why)}
	}
	var expired <-chan time.Time
	if !forever {
		remaining := time.Until(since.Add(limit))
		if remaining <= 0 {
			return apdErr()
		}
		t := time.NewTimer(remaining)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-v.Changed():
		return nil
	case <-expired:
		return apdErr()
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stopper.done():
		return ioerr.ErrClosed
	}
}

// triedPaths are the paths one I/O saw fail with a path failure, in order
// (small: an I/O gives up after MaxRetries attempts). No allocation until a
// second path fails.
type triedPaths struct {
	first *mpath.Path
	more  []*mpath.Path
}

func (t *triedPaths) add(p *mpath.Path) {
	if t.has(p) {
		return
	}
	if t.first == nil {
		t.first = p
		return
	}
	t.more = append(t.more, p)
}

func (t *triedPaths) has(p *mpath.Path) bool {
	if t.first == p {
		return true
	}
	for _, q := range t.more {
		if q == p {
			return true
		}
	}
	return false
}

// retryTarget picks the path for a retry over the view without the paths
// the I/O already failed on; nil when none is left.
func (d *Device) retryTarget(v *View, failed triedPaths, op mpath.OpKind, n int) *mpath.Path {
	nv := v.without(failed.has)
	if nv == nil {
		return nil
	}
	p, _ := d.psp.Load().psp.Select(nv, op, n)
	return p
}

// without returns a copy of the view's groups and usable paths with the
// paths drop matches left out (All and GroupOf are shared), or nil when no
// usable path is left. Used off the healthy I/O path only: for a hedge's or
// a retry's path choice.
func (v *View) without(drop func(*mpath.Path) bool) *View {
	nv := &View{Gen: v.Gen, All: v.All, GroupOf: v.GroupOf, Held: v.Held, changed: v.changed}
	for _, g := range v.Groups {
		var ng []*mpath.Path
		for _, p := range g {
			if !drop(p) {
				ng = append(ng, p)
			}
		}
		if len(ng) > 0 {
			nv.Groups = append(nv.Groups, ng)
			nv.Usable = append(nv.Usable, ng...)
		}
	}
	if len(nv.Usable) == 0 {
		return nil
	}
	return nv
}
