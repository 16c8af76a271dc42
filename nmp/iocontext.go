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
// when a backend asks for Done (an NBD request waiting for its reply). A
// context goes back to the pool with its open channel whenever nothing
// fired, so a steady stream of NBD I/O allocates only the timer.
type ioCtx struct {
	parent   context.Context
	deadline time.Time
	err      atomic.Pointer[error]

	mu         sync.Mutex
	done       chan struct{} // open unless closed; kept across reuse
	timer      *time.Timer
	expire     func()
	stopParent func() bool
	armed      bool // Done was asked for in this use
	closed     bool
}

var (
	ioCtxPool                   = sync.Pool{New: func() any { return new(ioCtx) }}
	errDeadline                 = context.DeadlineExceeded
	_           context.Context = (*ioCtx)(nil)
)

func newIOCtx(parent context.Context, timeout time.Duration) *ioCtx {
	c := ioCtxPool.Get().(*ioCtx)
	c.parent = parent
	c.deadline = time.Now().Add(timeout)
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
	if c.armed {
		return c.done
	}
	c.armed = true
	if c.done == nil {
		c.done = make(chan struct{})
	}
	d := time.Until(c.deadline)
	if d <= 0 {
		c.closeLocked(&errDeadline)
		return c.done
	}
	// A new timer per use: a pooled timer could cross into another
	// synctest bubble in tests, where reusing it is fatal.
	if c.expire == nil {
		c.expire = func() { c.cancel(&errDeadline) }
	}
	c.timer = time.AfterFunc(d, c.expire)
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

// release ends the context. It goes back to the pool unless its channel
// was closed or a timer or parent callback may still fire; then it is left
// to the collector (a late callback must not touch a context in new use).
func (c *ioCtx) release() {
	c.mu.Lock()
	reusable := true
	if c.armed {
		if c.timer != nil && !c.timer.Stop() {
			reusable = false
		}
		c.timer = nil
		if c.stopParent != nil && !c.stopParent() {
			reusable = false
		}
		c.stopParent = nil
		if c.closed {
			reusable = false
		} else if !reusable {
			c.closed = true
			c.err.Store(&errCanceled)
			close(c.done)
		}
	}
	c.armed = false
	c.mu.Unlock()
	if !reusable {
		return
	}
	c.parent = nil
	c.err.Store(nil)
	ioCtxPool.Put(c)
}

var errCanceled = context.Canceled
