package nmp

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// ioCtx is the per-I/O deadline context. context.WithTimeout allocates a
// context, a timer and a channel per I/O; most backends (a file's pread)
// only look at Err and Deadline, so ioCtx creates its channel and timer only
// when a backend asks for Done, and is recycled when nobody did.
type ioCtx struct {
	parent   context.Context
	deadline time.Time
	err      atomic.Pointer[error]

	mu         sync.Mutex
	done       chan struct{}
	timer      *time.Timer
	stopParent func() bool
	closed     bool
}

var (
	ioCtxPool                   = sync.Pool{New: func() any { return new(ioCtx) }}
	errDeadline                 = context.DeadlineExceeded
	_           context.Context = (*ioCtx)(nil)
)

// newIOCtx starts the deadline at now (the caller's clock reading, so the
// I/O path reads the clock once).
func newIOCtx(parent context.Context, now time.Time, timeout time.Duration) *ioCtx {
	c := ioCtxPool.Get().(*ioCtx)
	c.parent = parent
	c.deadline = now.Add(timeout)
	return c
}

func (c *ioCtx) Deadline() (time.Time, bool) {
	if pd, ok := c.parent.Deadline(); ok && pd.Before(c.deadline) {
		return pd, true
	}
	return c.deadline, true
}

func (c *ioCtx) Value(key any) any { return c.parent.Value(key) }

func (c *ioCtx) Err() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// expired reports whether the I/O deadline (not the parent's) has passed.
// An I/O the caller ended (its own deadline or cancellation) did not time
// out on the path, even when the error Done recorded is DeadlineExceeded.
func (c *ioCtx) expired() bool {
	if c.parent.Err() != nil {
		return false
	}
	if p := c.err.Load(); p != nil {
		return *p == context.DeadlineExceeded
	}
	return !time.Now().Before(c.deadline)
}

func (c *ioCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	if d := time.Until(c.deadline); d <= 0 {
		c.closeLocked(&errDeadline)
		return c.done
	}
	c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(&errDeadline) })
	if c.parent.Done() != nil {
		c.stopParent = context.AfterFunc(c.parent, func() {
			err := c.parent.Err()
			c.cancel(&err)
		})
	}
	return c.done
}

func (c *ioCtx) cancel(err *error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(err)
}

func (c *ioCtx) closeLocked(err *error) {
	if c.closed {
		return
	}
	c.closed = true
	c.err.Store(err)
	close(c.done)
}

// release ends the context. A context whose Done was never asked for is
// reused; one whose channel may still be held is left to the collector.
func (c *ioCtx) release() {
	c.mu.Lock()
	used := c.done != nil
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stopParent != nil {
		c.stopParent()
	}
	if used && !c.closed {
		c.closed = true
		c.err.Store(&errCanceled)
		close(c.done)
	}
	c.mu.Unlock()
	if used {
		return
	}
	c.parent = nil
	c.err.Store(nil)
	ioCtxPool.Put(c)
}

var errCanceled = context.Canceled
