package iscsi

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// taskCtx is the context a task's command executes under: cancelled when
// the task is aborted (and when it finishes). It costs nothing until
// something asks for its Done channel: Err is a flag, and the channel
// (with the cancelCtx behind it) is made on the first Done call. A quick
// command at memory speed only ever checks Err, so it allocates no context
// and no channel. It is embedded in its task, so it is not allocated
// either.
type taskCtx struct {
	cancelled atomic.Bool

	mu    sync.Mutex
	inner context.Context // made by the first Done, under mu
	stop  context.CancelFunc
}

var _ context.Context = (*taskCtx)(nil)

func (c *taskCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done returns a channel closed once the task is cancelled.
func (c *taskCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		c.inner, c.stop = context.WithCancel(context.Background())
		if c.cancelled.Load() {
			c.stop()
		}
	}
	return c.inner.Done()
}

// Err is context.Canceled once the task is cancelled. The flag is set
// before the channel closes, so whoever saw Done closed sees Err non-nil.
func (c *taskCtx) Err() error {
	if c.cancelled.Load() {
		return context.Canceled
	}
	return nil
}

// Value has no values of its own; it answers for the inner cancelCtx once
// there is one, so that a context derived from this one (context.WithCancel
// and the like, which call Done first) attaches to it directly instead of
// starting a goroutine to watch Done.
func (c *taskCtx) Value(key any) any {
	c.mu.Lock()
	in := c.inner
	c.mu.Unlock()
	if in == nil {
		return nil
	}
	return in.Value(key)
}

// cancel cancels the context (once; later calls do nothing).
func (c *taskCtx) cancel() {
	if c.cancelled.Swap(true) {
		return
	}
	c.mu.Lock()
	if c.stop != nil {
		c.stop()
	}
	c.mu.Unlock()
}
