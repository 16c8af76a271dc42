package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// The reader role and its hand-off between leaders and followers. Exactly
// one party reads a connection's replies at a time: it holds the reader
// role. In leader mode (plain Unix and TCP sockets) a submitter that finds
// the role free takes it and reads replies itself until its own arrives —
// no goroutine hand-off at queue depth 1 — then lets go: to a helper
// goroutine while requests are in flight (their submitters wait on their
// done channels, not on the role), back to the token when none is. Without
// leader mode (TLS) one reader goroutine holds the role for the
// connection's life. On a torn-down connection the role is kept by a
// goroutine that drains replies while an abandoned write may still be
// proven settled (fence.go), or dropped.

// readerRole is the role itself: the token, while nobody holds it, and the
// tenure of the submitter holding it (so that a late wake-up meant for an
// earlier leader does nothing).
type readerRole struct {
	tok  chan struct{} // holds the role while nobody does
	lead bool          // leader mode
	gen  uint64        // tenure of the leader holding the role; under the conn's mu
}

func newReaderRole(lead bool) readerRole {
	return readerRole{tok: make(chan struct{}, 1), lead: lead}
}

// take takes the role if it is free, without waiting.
func (r *readerRole) take() bool {
	select {
	case <-r.tok:
		return true
	default:
		return false
	}
}

// give gives the role back. Giving back a role nobody holds is a bug: it
// panics rather than let two parties read one stream.
func (r *readerRole) give() {
	select {
	case r.tok <- struct{}{}:
	default:
		panic("nbd: reader role given back while free")
	}
}

// free reports whether nobody holds the role.
func (r *readerRole) free() bool { return len(r.tok) == 1 }

// beginTenure starts a leader's tenure and returns its number.
func (r *readerRole) beginTenure() uint64 {
	r.gen++
	return r.gen
}

// inTenure reports whether tenure gen is the current one.
func (r *readerRole) inTenure(gen uint64) bool { return r.gen == gen }

// endTenure ends the current tenure: a wake-up meant for it finds it over.
func (r *readerRole) endTenure() { r.gen++ }

// roleNext is what becomes of the reader role when its holder is done with
// its own business.
type roleNext uint8

const (
	// roleGiveBack: nothing to read; the role goes back to the token (a
	// reader goroutine in non-leader mode keeps it and reads on).
	roleGiveBack roleNext = iota
	// roleRead: someone must go on reading — requests are in flight, or
	// the connection is torn down with abandoned writes still unsettled.
	roleRead
	// roleDrop: torn down with nothing left to prove: nobody reads any
	// more, and what still waits fails.
	roleDrop
)

func (n roleNext) String() string {
	switch n {
	case roleGiveBack:
		return "give-back"
	case roleRead:
		return "read"
	case roleDrop:
		return "drop"
	}
	return fmt.Sprintf("roleNext(%d)", uint8(n))
}

// roleState is what the hand-off depends on.
type roleState struct {
	down          bool // torn down
	pendingWrites int  // abandoned write-class requests not yet settled
	killed        bool // closed on our side: no proof can come any more
	inflight      int  // requests registered and not completed
}

// nextForRole decides the hand-off.
func nextForRole(s roleState) roleNext {
	if s.down {
		if s.pendingWrites > 0 && !s.killed {
			return roleRead
		}
		return roleDrop
	}
	if s.inflight > 0 {
		return roleRead
	}
	return roleGiveBack
}

// readLoop reads replies while holding the reader role: for the
// connection's life (untilIdle false: the reader goroutine), or until no
// request is in flight (a helper a leader started on stepping down). On a
// torn-down connection it drains: it reads until no abandoned write is
// left unsettled (fence.go).
func (c *conn) readLoop(untilIdle bool) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		switch c.roleNextLocked() {
		case roleDrop:
			c.mu.Unlock()
			c.drained(false) // nothing to prove: fail what still waits
			return
		case roleGiveBack:
			if untilIdle {
				c.role.give()
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		if err := c.readReply(); err != nil {
			c.readFailed(err)
			return
		}
	}
}

// readFailed ends reading after a fatal read error: it tears the connection
// down, settles what the error proves (the server closed the connection)
// and fails the request being processed. The role is not given back:
// nothing reads the connection any more.
func (c *conn) readFailed(err error) {
	c.mu.Lock()
	down := c.mu.err
	c.mu.Unlock()
	cause := down // torn down on purpose: report why
	if down == nil {
		cause = fmt.Errorf("reading replies: %w", eofMeansClosed(err))
	}
	c.teardown(cause)
	c.drained(serverClosed(err))
	if r := c.cur; r != nil {
		c.cur = nil
		c.complete(r, c.downErr(opName(r.typ), cause))
	}
}

// releaseRole gives the reader role up: to a helper goroutine if requests are
// in flight (their submitters may be waiting on done, not on the role), else
// back to tok. On a torn-down connection the role is kept by a goroutine that
// drains it, or dropped.
func (c *conn) releaseRole() {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.roleNextLocked() {
	case roleRead:
		c.wg.Add(1) // before teardown, so before close's Wait
		go c.readLoop(true)
	case roleDrop:
		// Nobody reads it any more: fail what still waits.
		c.mu.Unlock()
		c.drained(false)
		c.mu.Lock()
	case roleGiveBack:
		c.role.give()
	}
}

// roleNextLocked is nextForRole on the connection's state (c.mu held).
func (c *conn) roleNextLocked() roleNext {
	return nextForRole(roleState{down: c.mu.err != nil, pendingWrites: c.mu.pendingWrites,
		killed: c.mu.killed, inflight: len(c.mu.inflight)})
}

// leaderMode enables leader mode on plain sockets (tests turn it off to
// compare with the reader goroutine).
var leaderMode = true

// errBigMessage: the next message does not fit in the read buffer, so a
// leader cannot read it interruptibly; a helper reads it.
var errBigMessage = errors.New("message larger than the read buffer")

// aLongTimeAgo is a read deadline that wakes a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// leaderWatchAfter is how long a leader waits for its own reply before it
// watches its context. Until then its read has a deadline no later than
// this (nor than the request's deadline), and a timed-out read looks at
// ctx.Err: a cancellation is noticed within leaderWatchAfter, an expiry on
// time. A reply that comes sooner (at QD1 nearly every one) costs no
// watcher: context.AfterFunc, and the Done channel it needs, cost a
// goroutine and a wake-up per request for contexts package context does
// not know (go-fuse's per-request context, and nmp's per-I/O context over
// it), besides a timer. Past it the leader watches ctx (context.AfterFunc)
// and reads without a deadline, as before. Shorter than nmp's hedging
// floor, so a hedged read's losing leg is always watched by the time the
// hedge ends it.
var leaderWatchAfter = time.Millisecond

// leadUntil runs on the submitter of r holding the reader role: it reads
// replies until r's has been read, ctx ends, or the next message is too
// large to be read interruptibly, then releases the role. It reads a
// message only once it is entirely in the buffer, so an interrupted wait
// (ctx done: the read deadline is pulled in) never leaves a message half
// read.
func (c *conn) leadUntil(ctx context.Context, r *request) {
	until := time.Now().Add(c.watchAfter)
	if !r.deadline.IsZero() && r.deadline.Before(until) {
		until = r.deadline
	}
	c.mu.Lock()
	gen := c.role.beginTenure()
	if !c.mu.interrupted { // a pending wake-up keeps its deadline
		c.nc.SetReadDeadline(until)
	}
	c.mu.Unlock()
	watching := false
	stop := func() bool { return true }
	failed := false
	for len(r.done) == 0 {
		err := c.peekMessage()
		if err == nil {
			err = c.readReply()
			if err != nil {
				c.readFailed(err)
				failed = true
				break
			}
			continue
		}
		if err == errBigMessage {
			break
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.unwake()
			if ctx.Err() != nil {
				break
			}
			if !watching {
				watching = true
				stop = c.watch(ctx, gen)
			}
			continue
		}
		c.readFailed(err)
		failed = true
		break
	}
	stop()
	c.mu.Lock()
	c.role.endTenure() // a late AfterFunc of this tenure does nothing
	if !watching && !c.mu.interrupted {
		// Lift the first phase's deadline: whoever reads next (a
		// helper, the idle check) reads without one. A pending wake-up
		// is lifted by unwake.
		c.nc.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	c.unwake()
	if !failed {
		c.releaseRole()
	}
}

// watch, on a leader whose reply is late (leaderWatchAfter), arms the
// wake-up on ctx for tenure gen and lifts the first phase's read deadline
// (unless a wake-up is pending: then its deadline stays, and unwake lifts
// it). It returns the function that disarms the wake-up.
func (c *conn) watch(ctx context.Context, gen uint64) (stop func() bool) {
	stop = func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			c.mu.Lock()
			if c.role.inTenure(gen) {
				c.wakeLocked()
			}
			c.mu.Unlock()
		})
	}
	c.mu.Lock()
	if !c.mu.interrupted {
		c.nc.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	return stop
}

// peekMessage waits until the next reply message is entirely buffered,
// without consuming anything. It returns errBigMessage for one larger than
// the buffer, and nil for one whose header is malformed (readReply reports
// that).
func (c *conn) peekMessage() error {
	b, err := c.br.Peek(4)
	if err != nil {
		return err
	}
	n := 4
	switch binary.BigEndian.Uint32(b) {
	case magicSimple:
		if b, err = c.br.Peek(16); err != nil {
			return err
		}
		n = 16
		if binary.BigEndian.Uint32(b[4:]) == 0 && !c.info.structured {
			c.mu.Lock()
			if r := c.mu.inflight[binary.BigEndian.Uint64(b[8:])]; r != nil && r.typ == cmdRead {
				n += int(r.length)
			}
			c.mu.Unlock()
		}
	case magicStructured:
		if b, err = c.br.Peek(20); err != nil {
			return err
		}
		n = 20 + int(binary.BigEndian.Uint32(b[16:]))
	}
	if n > c.br.Size() {
		return errBigMessage
	}
	_, err = c.br.Peek(n)
	return err
}
