package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpathfs/mpathfs/ioerr"
)

// request is one NBD request in flight. Requests are pooled; a request
// belongs to the goroutine that submitted it until it is completed (a value
// sent on done) or abandoned (then whoever completes it recycles it).
type request struct {
	handle   uint64
	typ      uint16
	off      uint64
	length   uint32
	buf      []byte    // READ: where the data goes (the caller's buffer)
	deadline time.Time // zero: none
	done     chan error
	// ctx is the submitter's context, set when the request is registered;
	// the follower poll (follow.go) reads it under conn.mu while the
	// request is in flight and not abandoned (its submitter is in do).
	ctx  context.Context
	poke chan struct{} // the follower poll saw ctx end (or a stale poke)

	// Guarded by conn.mu.
	claimed   bool // the reader is processing a reply chunk for it
	abandoned bool // the submitter gave up; its buffer must not be touched
	// detached: the submitter was handed its error on done while the
	// request stays in the in-flight map for a late reply; nobody
	// recycles it then (the reader and the submitter would race).
	detached bool
	// settle, for an abandoned write-class request that may still land:
	// closed on proof that it cannot any more (fence.go).
	settle chan struct{}
	cut    bool  // its reply is being read: detach it at the reader's next wake-up
	cutErr error // the error it is detached with

	// Reader goroutine only.
	err     error      // first error chunk
	covered uint64     // bytes of a structured READ covered so far
	ivs     []interval // covered extents once chunks arrive out of order
}

type interval struct{ lo, hi uint64 }

var requestPool = sync.Pool{New: func() any {
	return &request{done: make(chan error, 1), poke: make(chan struct{}, 1)}
}}

func getRequest() *request { return requestPool.Get().(*request) }

func putRequest(r *request) {
	done, poke, ivs := r.done, r.poke, r.ivs[:0]
	select {
	case <-poke: // harmless where it goes next, but spare it the wake-up
	default:
	}
	*r = request{done: done, poke: poke, ivs: ivs}
	requestPool.Put(r)
}

func opName(typ uint16) string {
	switch typ {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "discard"
	case cmdWriteZeroes:
		return "write-zeroes"
	}
	return fmt.Sprintf("cmd%d", typ)
}

// conn is one NBD connection in the transmission phase: one reader
// goroutine demultiplexes replies by handle, senders combine their writes, and a
// watchdog tears the connection down when a request outlives its deadline.
type conn struct {
	nc   net.Conn
	info *exportInfo
	name string // the path URI, for messages
	id   int    // the connection's number within its client, for messages

	shut      atomic.Bool // torn down: senders send nothing more (fence.go)
	closeOnce sync.Once   // closing the socket
	sockGone  atomic.Bool // the socket is closed

	// Sending (send.go): senders append requests to wbuf under wmu; one
	// of them at a time, the flusher, writes what is pending.
	wmu      sync.Mutex
	wcond    sync.Cond // on wmu: a batch was written, or the flusher is done
	wbuf     []byte    // the pending batch: requests not yet written; under wmu
	batch    uint64    // the pending batch's number; under wmu
	written  uint64    // the last batch written whole; under wmu
	tried    uint64    // the last batch handed to the socket; under wmu
	flushing bool      // a flusher holds the socket's write side; under wmu
	werr     error     // the write error that ended sending; under wmu
	spare    []byte    // the flusher's other buffer; flusher only
	hdr      [28]byte  // a large request's header; flusher only

	// The reader role: whoever holds it reads replies (role.go).
	role readerRole
	br   *bufio.Reader // role holder only
	rbuf [20]byte      // role holder only
	cur  *request      // role holder only: the claimed request

	// watchAfter is leaderWatchAfter when the connection was made: the
	// leader's first phase and the follower poll's period. Read from the
	// connection, never from the variable, so a test that changes the
	// variable races with no earlier test's connection.
	watchAfter time.Duration

	// The follower poll (follow.go).
	followers atomic.Int32 // submitters waiting for their replies as followers
	polling   atomic.Bool  // pollT is armed or running
	pollT     *time.Timer

	mu struct {
		sync.Mutex
		inflight map[uint64]*request
		next     uint64
		err      error // non-nil once torn down

		interrupted bool // the read deadline was set to wake the role holder

		// pendingWrites counts abandoned write-class requests whose
		// settle channel is open; a torn-down connection is read
		// (drained) while it is above 0 (fence.go).
		pendingWrites int
		killed        bool // closed on our side: no proof can come any more
	}
	done chan struct{} // closed by teardown
	wg   sync.WaitGroup

	// onDown, if set, runs once after teardown: it tears down the other
	// connections of the path. Set before start.
	onDown func(cause error)
	load   atomic.Int32 // requests in flight, for picking a connection
	dirty  atomic.Bool  // carried writes since its last flush was sent
}

func allocConn(nc net.Conn, info *exportInfo, name string) *conn {
	c := &conn{
		nc:   nc,
		info: info,
		name: name,
		br:   bufio.NewReaderSize(nc, 64<<10),
		done: make(chan struct{}),

		watchAfter: leaderWatchAfter,
	}
	lead := false
	switch nc.(type) {
	case *net.UnixConn, *net.TCPConn:
		// Interruptible reads (deadlines) and a non-blocking peek for the
		// idle check. TLS keeps a reader goroutine.
		lead = leaderMode
	}
	c.role = newReaderRole(lead)
	c.wcond.L = &c.wmu
	c.pollT = time.AfterFunc(time.Hour, c.pollFollowers)
	c.pollT.Stop()
	c.batch = 1
	c.mu.inflight = make(map[uint64]*request)
	return c
}

// start starts the connection: the reader role (a reader goroutine, or
// free for submitters in leader mode) and the watchdog goroutine.
func (c *conn) start(watchdog time.Duration) {
	if c.role.lead {
		c.role.give()
	} else {
		c.wg.Add(1)
		go c.readLoop(false)
	}
	if watchdog > 0 {
		c.wg.Add(1)
		go c.watchdog(watchdog)
	}
}

// markDirty notes that the connection carried a write since its last
// flush. It reads before it writes: under load the flag is already set, and
// a store per write would bounce the cache line between the cores.
func (c *conn) markDirty() {
	if !c.dirty.Load() {
		c.dirty.Store(true)
	}
}

// alive reports whether the connection has not been torn down.
func (c *conn) alive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err == nil
}

// downErr is the error of a request that found the connection down or lost
// it while in flight.
func (c *conn) downErr(op string, cause error) error {
	return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("%s: %w: %w", c.name, ErrConnDown, cause))
}

// teardown fails the connection and every request in flight on it that the
// reader is not processing, then the path's other connections. It is
// idempotent. The socket is only half-closed while write-class requests
// may still land: the connection is drained for the proof (fence.go).
func (c *conn) teardown(cause error) { c.down(cause, true) }

// down is teardown; siblings says whether to take the path's other
// connections down too.
func (c *conn) down(cause error, siblings bool) {
	c.mu.Lock()
	if c.mu.err != nil {
		c.mu.Unlock()
		return
	}
	// One critical section: a reader that sees the connection down also
	// sees the writes it must drain for.
	c.mu.err = cause
	c.shut.Store(true)
	victims, drain := c.detachAllLocked(cause)
	c.mu.Unlock()
	close(c.done)
	c.shutWrite()
	for _, v := range victims {
		v.r.done <- v.err
	}
	if !drain {
		c.closeSocket()
	}
	if siblings && c.onDown != nil {
		c.onDown(cause)
	}
}

// finish hands a request already removed from the in-flight map to its
// submitter, or recycles it if the submitter abandoned it.
func (c *conn) finish(r *request, err error) {
	// abandoned is only set while r is in the map, so it is stable now.
	if r.abandoned {
		if !r.detached {
			putRequest(r)
		}
		return
	}
	r.done <- err
}

// complete removes a request the reader holds and finishes it. Its reply
// (or the start of it) arrived, so an abandoned write among them is
// settled: it executed.
func (c *conn) complete(r *request, err error) {
	c.mu.Lock()
	delete(c.mu.inflight, r.handle)
	end := false
	if r.settle != nil {
		end = c.settleLocked(r)
	}
	c.mu.Unlock()
	if end {
		c.closeSocket()
	}
	c.finish(r, err)
}

// do runs one request: it registers it, sends it and waits for its reply,
// the connection's death or ctx. data is a WRITE's payload; rbuf a READ's
// destination of exactly length bytes. The error of a write-class request
// is a backends.Pending (fence.go).
func (c *conn) do(ctx context.Context, typ, flags uint16, off uint64, length uint32, data, rbuf []byte) error {
	op := opName(typ)
	wc := writeClass(typ)
	if err := ctx.Err(); err != nil {
		return settled(wc, ctxError(c.name, op, err))
	}
	r := getRequest()
	r.typ, r.off, r.length, r.buf = typ, off, length, rbuf
	if dl, ok := ctx.Deadline(); ok {
		r.deadline = dl
	}
	c.mu.Lock()
	if err := c.mu.err; err != nil {
		c.mu.Unlock()
		putRequest(r)
		return settled(wc, c.downErr(op, err))
	}
	c.mu.next++
	r.handle = c.mu.next
	r.ctx = ctx
	c.mu.inflight[r.handle] = r
	c.mu.Unlock()
	c.load.Add(1)
	defer c.load.Add(-1)

	wrote, err := c.send(r, flags, data)
	if err != nil && wrote {
		// A partial request corrupts the stream: the connection is lost.
		c.teardown(fmt.Errorf("sending %s request: %w", op, err))
	}
	if c.role.lead && c.role.take() {
		c.leadUntil(ctx, r)
	}
	// The reply is usually there already at queue depth 1 (the leader
	// read it). Otherwise wait for it as a follower: the connection's
	// follower poll (follow.go) watches ctx, not ctx's Done channel, which
	// some contexts make on demand with a timer and a goroutine watching
	// their parent.
	select {
	case err := <-r.done:
		return c.finished(r, wc, wrote, err)
	default:
	}
	if err := c.follow(ctx, r); err != errCtxEnded {
		return c.finished(r, wc, wrote, err)
	}
	return c.giveUp(ctx, r, wc, wrote)
}

// giveUp ends a request whose context ended before its reply arrived.
func (c *conn) giveUp(ctx context.Context, r *request, wc, wrote bool) error {
	op := opName(r.typ)
	cerr := ctx.Err()
	expired := errors.Is(cerr, context.DeadlineExceeded)
	e := ctxError(c.name, op, cerr)
	c.mu.Lock()
	if c.mu.inflight[r.handle] != r || r.abandoned {
		// Completed or detached: its result is on its way.
		c.mu.Unlock()
		return c.finished(r, wc, wrote, <-r.done)
	}
	if !r.claimed {
		if !wrote {
			// It never left: nothing can land.
			delete(c.mu.inflight, r.handle)
			c.mu.Unlock()
			putRequest(r)
			return settled(wc, e)
		}
		// The reader will discard its reply; the buffer is ours again.
		r.abandoned = true
		var settle chan struct{}
		if wc && !r.cut { // a cut one's reply had started: it executed
			settle = make(chan struct{})
			r.settle = settle
			c.mu.pendingWrites++
		}
		c.mu.Unlock()
		if expired {
			c.teardown(fmt.Errorf("%s request outlived its deadline: %w", op, cerr))
		}
		if settle != nil {
			return &pendingError{err: e, settle: settle, c: c}
		}
		return e
	}
	// The reader is reading its reply right now (into the buffer, for a
	// READ): wake it, and it detaches the request at a safe point.
	r.cut = true
	r.cutErr = e
	c.wakeLocked()
	c.mu.Unlock()
	if expired {
		c.teardown(fmt.Errorf("%s request abandoned while its reply arrived: %w", op, cerr))
	}
	return c.finished(r, wc, wrote, <-r.done)
}

func ctxError(name, op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return ioerr.NewError(ioerr.ClassPathFailure, op, fmt.Errorf("%s: request timed out (connection torn down): %w", name, err))
	}
	return fmt.Errorf("nbd %s %s: %w", name, op, err)
}

func (c *conn) watchdog(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			var late *request
			c.mu.Lock()
			for _, r := range c.mu.inflight {
				if !r.deadline.IsZero() && now.After(r.deadline) {
					late = r
					break
				}
			}
			var op string
			var dl time.Time
			if late != nil {
				op, dl = opName(late.typ), late.deadline
			}
			c.mu.Unlock()
			if late != nil {
				c.teardown(fmt.Errorf("watchdog: a %s request outlived its deadline by %v: %w", op, now.Sub(dl).Round(time.Millisecond), context.DeadlineExceeded))
				continue
			}
			if c.role.lead {
				c.idleCheck()
			}
		}
	}
}

// idleCheck notices, in leader mode, a connection the server closed while
// no request was in flight (nothing else reads it then), as the reader
// goroutine would: with a non-blocking peek at the socket.
func (c *conn) idleCheck() {
	if !c.role.take() {
		return // someone reads
	}
	c.mu.Lock()
	idle := c.mu.err == nil && len(c.mu.inflight) == 0
	c.mu.Unlock()
	var fail error
	if idle {
		if c.br.Buffered() > 0 {
			fail = protoErr("%d bytes from the server while no request was in flight", c.br.Buffered())
		} else if sc, ok := c.nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				var b [1]byte
				var n int
				var perr error
				rc.Read(func(fd uintptr) bool {
					n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
					return true
				})
				switch {
				case perr == unix.EAGAIN || perr == unix.EINTR:
				case perr != nil:
					fail = perr
				case n == 0:
					fail = io.EOF
				default:
					fail = protoErr("data from the server while no request was in flight")
				}
			}
		}
	}
	if _, data := fail.(*ProtocolError); data {
		// A request registered after the idle test may have been
		// sent and answered since: only data with nothing in flight
		// is unsolicited.
		c.mu.Lock()
		idle = len(c.mu.inflight) == 0
		c.mu.Unlock()
		if !idle {
			fail = nil
		}
	}
	if fail != nil {
		c.readFailed(fail)
		return
	}
	c.releaseRole()
}

// close tears the connection down, closes its socket at once (requests
// that may still land stay unsettled: closing our side proves nothing) and
// waits for its goroutines.
func (c *conn) close(cause error) {
	c.teardown(cause)
	c.kill()
	c.pollT.Stop()
	c.wg.Wait()
}
