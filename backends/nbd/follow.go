package nbd

import (
	"context"
	"errors"
)

// The follower poll. A submitter whose reply the leader did not read for it
// (queue depth above 1: the reader role is held by another submitter or a
// helper) waits on its done channel as a follower. It does not wait on
// ctx.Done: for the contexts a FUSE mount gives (nmp's per-I/O context over
// go-fuse's request context, which package context does not know) asking
// for Done makes a channel and a timer and starts a goroutine that watches
// the parent, seven allocations and a goroutine per request, and the
// garbage they make at depth runs the collector, which empties go-fuse's
// pool of request buffers. Instead one timer per connection, armed while
// followers wait, looks at the contexts of the requests in flight every
// leaderWatchAfter — the bound the leader's first phase has too (role.go)
// — and pokes the followers whose context ended; they give up as before.
// So a follower notices that its context ended within leaderWatchAfter,
// not at once.

// errCtxEnded is what follow returns when ctx ended before the reply came.
var errCtxEnded = errors.New("context ended before the reply")

// follow waits for r's reply as a follower and returns what its done
// channel carried, or errCtxEnded when ctx ended first (the caller gives
// up).
func (c *conn) follow(ctx context.Context, r *request) error {
	if ctx.Err() != nil {
		return errCtxEnded
	}
	c.followers.Add(1)
	if !c.polling.Load() {
		c.armPoll()
	}
	defer c.followers.Add(-1)
	for {
		select {
		case err := <-r.done:
			return err
		case <-r.poke:
		}
		if ctx.Err() != nil {
			return errCtxEnded
		}
	}
}

// armPoll arms the poll timer unless it is armed or running.
func (c *conn) armPoll() {
	if c.polling.CompareAndSwap(false, true) {
		c.pollT.Reset(c.watchAfter)
	}
}

// pollFollowers is the poll timer's function: it pokes every follower whose
// context ended and rearms itself while followers wait.
func (c *conn) pollFollowers() {
	c.mu.Lock()
	for _, r := range c.mu.inflight {
		// Not abandoned: its submitter is still in do, so r.ctx is
		// live. A poke to a leader's request, or to one whose reply is
		// on its way, is harmless: it is taken or drained.
		if r.abandoned || r.ctx == nil || r.ctx.Err() == nil {
			continue
		}
		select {
		case r.poke <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	if c.followers.Load() > 0 {
		c.pollT.Reset(c.watchAfter)
		return
	}
	c.polling.Store(false)
	// A follower that came after the count was read found polling set
	// and did not arm: arm for it.
	if c.followers.Load() > 0 {
		c.armPoll()
	}
}
