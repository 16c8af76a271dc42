package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
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

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan error, 1)} }}

func getRequest() *request { return requestPool.Get().(*request) }

func putRequest(r *request) {
	done, ivs := r.done, r.ivs[:0]
	*r = request{done: done, ivs: ivs}
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
// goroutine demultiplexes replies by handle, senders serialise on wmu, and a
// watchdog tears the connection down when a request outlives its deadline.
type conn struct {
	nc   net.Conn
	info *exportInfo
	name string // the path URI, for messages
	id   int    // the connection's number within its client, for messages

	shut      atomic.Bool // torn down: senders send nothing more (fence.go)
	closeOnce sync.Once   // closing the socket
	sockGone  atomic.Bool // the socket is closed

	wmu sync.Mutex
	bw  *bufio.Writer
	hdr [28]byte

	// The reader role: whoever holds it reads replies. tok holds the
	// role while nobody does. In leader mode a submitter that finds the
	// role free reads replies itself until its own arrives (no goroutine
	// hand-off at QD1); otherwise a reader goroutine holds it.
	tok  chan struct{}
	lead bool          // leader mode (plain Unix or TCP sockets)
	br   *bufio.Reader // role holder only
	rbuf [20]byte      // role holder only
	cur  *request      // role holder only: the claimed request

	mu struct {
		sync.Mutex
		inflight map[uint64]*request
		next     uint64
		err      error // non-nil once torn down

		leaderGen   uint64 // tenure of the submitter holding the role (0: none)
		interrupted bool   // the read deadline was set to wake the role holder

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
		bw:   bufio.NewWriterSize(nc, 64<<10),
		br:   bufio.NewReaderSize(nc, 64<<10),
		done: make(chan struct{}),
		tok:  make(chan struct{}, 1),
	}
	switch nc.(type) {
	case *net.UnixConn, *net.TCPConn:
		// Interruptible reads (deadlines) and a non-blocking peek for the
		// idle check. TLS keeps a reader goroutine.
		c.lead = leaderMode
	}
	c.mu.inflight = make(map[uint64]*request)
	return c
}

// start starts the connection: the reader role (a reader goroutine, or
// free for submitters in leader mode) and the watchdog goroutine.
func (c *conn) start(watchdog time.Duration) {
	if c.lead {
		c.tok <- struct{}{}
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
	c.mu.inflight[r.handle] = r
	c.mu.Unlock()
	c.load.Add(1)
	defer c.load.Add(-1)

	wrote, err := c.send(r, flags, data)
	if err != nil && wrote {
		// A partial request corrupts the stream: the connection is lost.
		c.teardown(fmt.Errorf("sending %s request: %w", op, err))
	}
	if c.lead {
		select {
		case <-c.tok:
			c.leadUntil(ctx, r)
		default:
		}
	}
	select {
	case err := <-r.done:
		return c.finished(r, wc, wrote, err)
	case <-ctx.Done():
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

// send writes a request. wrote is false when nothing was written because
// the connection was already torn down (then the request never left).
func (c *conn) send(r *request, flags uint16, data []byte) (wrote bool, err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.shut.Load() {
		return false, errShut
	}
	h := c.hdr[:]
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], r.typ)
	binary.BigEndian.PutUint64(h[8:], r.handle)
	binary.BigEndian.PutUint64(h[16:], r.off)
	binary.BigEndian.PutUint32(h[24:], r.length)
	if _, err := c.bw.Write(h); err != nil {
		return true, err
	}
	if len(data) > 0 {
		if _, err := c.bw.Write(data); err != nil {
			return true, err
		}
	}
	return true, c.bw.Flush()
}

// disconnect sends NBD_CMD_DISC (best effort) before the connection closes.
func (c *conn) disconnect() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.shut.Load() {
		return
	}
	h := c.hdr[:]
	clear(h)
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[6:], cmdDisc)
	c.nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.bw.Write(h)
	c.bw.Flush()
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
			if c.lead {
				c.idleCheck()
			}
		}
	}
}

// idleCheck notices, in leader mode, a connection the server closed while
// no request was in flight (nothing else reads it then), as the reader
// goroutine would: with a non-blocking peek at the socket.
func (c *conn) idleCheck() {
	select {
	case <-c.tok:
	default:
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

// readLoop reads replies while holding the reader role: for the
// connection's life (untilIdle false: the reader goroutine), or until no
// request is in flight (a helper a leader started on stepping down). On a
// torn-down connection it drains: it reads until no abandoned write is
// left unsettled (fence.go).
func (c *conn) readLoop(untilIdle bool) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if c.mu.err != nil {
			if c.mu.pendingWrites == 0 || c.mu.killed {
				c.mu.Unlock()
				c.drained(false) // nothing to prove: fail what still waits
				return
			}
		} else if untilIdle && len(c.mu.inflight) == 0 {
			c.tok <- struct{}{}
			c.mu.Unlock()
			return
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
	if c.mu.err != nil {
		if c.mu.pendingWrites > 0 && !c.mu.killed {
			c.wg.Add(1)
			go c.readLoop(true)
			return
		}
		// Nobody reads it any more: fail what still waits.
		c.mu.Unlock()
		c.drained(false)
		c.mu.Lock()
		return
	}
	if len(c.mu.inflight) > 0 {
		c.wg.Add(1) // before teardown, so before close's Wait
		go c.readLoop(true)
		return
	}
	c.tok <- struct{}{}
}

// leaderMode enables leader mode on plain sockets (tests turn it off to
// compare with the reader goroutine).
var leaderMode = true

// errBigMessage: the next message does not fit in the read buffer, so a
// leader cannot read it interruptibly; a helper reads it.
var errBigMessage = errors.New("message larger than the read buffer")

// aLongTimeAgo is a read deadline that wakes a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// leadUntil runs on the submitter of r holding the reader role: it reads
// replies until r's has been read, ctx ends, or the next message is too
// large to be read interruptibly, then releases the role. It reads a
// message only once it is entirely in the buffer, so an interrupted wait
// (ctx done: the read deadline is pulled in) never leaves a message half
// read.
func (c *conn) leadUntil(ctx context.Context, r *request) {
	c.mu.Lock()
	c.mu.leaderGen++
	gen := c.mu.leaderGen
	c.mu.Unlock()
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			c.mu.Lock()
			if c.mu.leaderGen == gen {
				c.mu.interrupted = true
				c.nc.SetReadDeadline(aLongTimeAgo)
			}
			c.mu.Unlock()
		})
	}
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
			continue
		}
		c.readFailed(err)
		failed = true
		break
	}
	stop()
	c.mu.Lock()
	c.mu.leaderGen++ // a late AfterFunc of this tenure does nothing
	c.mu.Unlock()
	c.unwake()
	if !failed {
		c.releaseRole()
	}
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

// claim finds the request a reply names and marks it as being processed.
// Whether its submitter abandoned it is r.abandoned, which only the reader
// changes while r is claimed (a wake-up detaching it).
func (c *conn) claim(handle uint64) (*request, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.mu.inflight[handle]
	if r == nil {
		return nil, protoErr("reply for unknown handle %#x", handle)
	}
	r.claimed = true
	c.cur = r
	return r, nil
}

func (c *conn) unclaim(r *request) {
	c.mu.Lock()
	r.claimed = false
	c.cur = nil
	c.mu.Unlock()
}

func (c *conn) release(r *request, err error) {
	c.cur = nil
	c.complete(r, err)
}

// readReply reads and dispatches one simple reply or structured reply chunk.
// A returned error is fatal for the connection.
func (c *conn) readReply() error {
	b := c.rbuf[:]
	if err := c.fill(b[:4]); err != nil {
		return err
	}
	switch m := binary.BigEndian.Uint32(b); m {
	case magicSimple:
		if err := c.fill(b[4:16]); err != nil {
			return err
		}
		errno := binary.BigEndian.Uint32(b[4:])
		r, err := c.claim(binary.BigEndian.Uint64(b[8:]))
		if err != nil {
			return err
		}
		if errno != 0 {
			c.release(r, serverErr(c.name, r.typ, &ServerError{Errno: errno}))
			return nil
		}
		if r.typ == cmdRead {
			if c.info.structured {
				return protoErr("simple reply with data to a READ after structured replies were negotiated")
			}
			if err := c.readData(r, 0, uint64(r.length)); err != nil {
				return err
			}
		}
		c.release(r, nil)
		return nil
	case magicStructured:
		if !c.info.structured {
			return protoErr("structured reply chunk although structured replies were not negotiated")
		}
		if err := c.fill(b[4:20]); err != nil {
			return err
		}
		flags := binary.BigEndian.Uint16(b[4:])
		typ := binary.BigEndian.Uint16(b[6:])
		length := binary.BigEndian.Uint32(b[16:])
		r, err := c.claim(binary.BigEndian.Uint64(b[8:]))
		if err != nil {
			return err
		}
		if err := c.readChunk(r, flags, typ, length); err != nil {
			return err
		}
		if flags&replyFlagDone == 0 {
			c.unclaim(r)
			return nil
		}
		if r.err == nil && r.typ == cmdRead && r.covered != uint64(r.length) {
			return protoErr("structured READ reply ended after covering %d of %d bytes", r.covered, r.length)
		}
		var rerr error
		if r.err != nil {
			rerr = serverErr(c.name, r.typ, r.err.(*ServerError))
		}
		c.release(r, rerr)
		return nil
	default:
		return protoErr("bad reply magic %#x", m)
	}
}

func serverErr(name string, typ uint16, se *ServerError) error {
	return ioerr.NewError(classifyServerErr(se.Errno), opName(typ), fmt.Errorf("%s: %w", name, se))
}

// readData reads n bytes of a READ's data for the request-relative offset
// rel, into the caller's buffer or, if abandoned, nowhere. A wake-up that
// detaches the request mid-way sends the rest nowhere.
func (c *conn) readData(r *request, rel, n uint64) error {
	if r.abandoned {
		return c.discard(int(n))
	}
	dst := r.buf[rel : rel+n]
	for {
		k, err := io.ReadFull(c.br, dst)
		if err == nil {
			return nil
		}
		if !c.woken(err) {
			return err
		}
		dst = dst[k:]
		if r.abandoned {
			return c.discard(len(dst))
		}
	}
}

func (c *conn) readChunk(r *request, flags, typ uint16, length uint32) error {
	b := c.rbuf[:]
	switch typ {
	case chunkNone:
		if length != 0 {
			return protoErr("NBD_REPLY_TYPE_NONE with length %d", length)
		}
		if flags&replyFlagDone == 0 {
			return protoErr("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
		}
		return nil
	case chunkOffsetData, chunkOffsetHole:
		if r.typ != cmdRead {
			return protoErr("content chunk in reply to a %s request", opName(r.typ))
		}
		if typ == chunkOffsetData {
			if length < 9 || uint64(length)-8 > uint64(r.length) {
				return protoErr("NBD_REPLY_TYPE_OFFSET_DATA of length %d for a %d-byte read", length, r.length)
			}
		} else if length != 12 {
			return protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of length %d, want 12", length)
		}
		hl := 8
		if typ == chunkOffsetHole {
			hl = 12
		}
		if err := c.fill(b[:hl]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(b)
		var n uint64
		if typ == chunkOffsetData {
			n = uint64(length) - 8
		} else {
			n = uint64(binary.BigEndian.Uint32(b[8:]))
			if n == 0 {
				return protoErr("NBD_REPLY_TYPE_OFFSET_HOLE of size 0")
			}
		}
		if off < r.off || off-r.off > uint64(r.length) || n > uint64(r.length)-(off-r.off) {
			return protoErr("content chunk [%d, +%d) outside the request [%d, +%d)", off, n, r.off, r.length)
		}
		rel := off - r.off
		if err := r.addExtent(rel, n); err != nil {
			return err
		}
		if typ == chunkOffsetData {
			return c.readData(r, rel, n)
		}
		if !r.abandoned {
			clear(r.buf[rel : rel+n])
		}
		return nil
	case chunkBlockStatus:
		return protoErr("block status chunk although no metadata context was negotiated")
	}
	if typ&chunkErrBit == 0 {
		return protoErr("unknown structured reply chunk type %d", typ)
	}
	// An error chunk.
	if length < 6 || length > maxErrChunkLen {
		return protoErr("error chunk of length %d", length)
	}
	p := make([]byte, length)
	if err := c.fill(p); err != nil {
		return err
	}
	errno := binary.BigEndian.Uint32(p)
	msgLen := uint32(binary.BigEndian.Uint16(p[4:]))
	if msgLen > length-6 {
		return protoErr("error chunk message of %d bytes in a %d-byte chunk", msgLen, length)
	}
	if errno == 0 {
		return protoErr("error chunk with error value 0")
	}
	if typ == chunkErrorOffset {
		if length-6-msgLen < 8 {
			return protoErr("NBD_REPLY_TYPE_ERROR_OFFSET of length %d has no offset", length)
		}
		off := binary.BigEndian.Uint64(p[6+msgLen:])
		if off < r.off || off-r.off >= uint64(r.length) {
			return protoErr("error offset %d outside the request [%d, +%d)", off, r.off, r.length)
		}
	}
	if r.err == nil {
		r.err = &ServerError{Errno: errno, Message: sanitize(p[6 : 6+msgLen])}
	}
	return nil
}

// addExtent records that [rel, rel+n) of a READ was covered, refusing
// overlaps. In-order chunks cost nothing; out-of-order ones keep a sorted
// list.
func (r *request) addExtent(rel, n uint64) error {
	if len(r.ivs) == 0 {
		if rel == r.covered {
			r.covered += n
			return nil
		}
		if r.covered > 0 {
			r.ivs = append(r.ivs, interval{0, r.covered})
		}
	}
	hi := rel + n
	i := 0
	for i < len(r.ivs) && r.ivs[i].hi <= rel {
		i++
	}
	if i < len(r.ivs) && r.ivs[i].lo < hi {
		return protoErr("content chunks overlap at request offset %d", rel)
	}
	r.ivs = append(r.ivs, interval{})
	copy(r.ivs[i+1:], r.ivs[i:])
	r.ivs[i] = interval{rel, hi}
	r.covered += n
	return nil
}

// close tears the connection down, closes its socket at once (requests
// that may still land stay unsettled: closing our side proves nothing) and
// waits for its goroutines.
func (c *conn) close(cause error) {
	c.teardown(cause)
	c.kill()
	c.wg.Wait()
}
