package nbd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/mpathfs/mpathfs/backends"
)

// Fencing: proof that an abandoned write cannot land.
//
// NBD has no abort command, and closing our socket fences nothing: a request
// already in the server's receive buffer is read and executed whenever the
// server gets to it (a stopped nbdkit that is continued does exactly that).
// So a write-class request (write, trim, write-zeroes) whose caller gave up,
// or whose connection was torn down, while the server may hold it fails
// with a backends.Pending whose Settled channel closes only on proof that it
// cannot land any more:
//
//   - its reply arrives late (it executed; nothing more can happen), or the
//     start of its reply had arrived when the caller gave up;
//   - the connection ends from the server's side: our reader sees EOF or a
//     reset. A teardown half-closes the connection (shutdown SHUT_WR) and
//     keeps reading: a server that reads our FIN has read every request
//     before it, and nbdkit and qemu-nbd finish the requests they read
//     before they close; a server process that is gone had its sockets
//     closed by the kernel.
//
// A request that never left (the connection was torn down while it waited
// to be sent) is settled at once. A torn-down connection is read (drained)
// only while abandoned writes on it are unsettled; late replies are
// discarded, each settling its request. Our own Close of the socket (client
// Close, eviction of old draining connections, a protocol violation) ends
// the drain without proof: those requests stay unsettled, and only the
// operator's `path fence`, the path's quiesce time or the APD timeout end
// the ambiguity.

// maxDraining bounds the torn-down connections a client keeps reading for
// proof; beyond it the oldest are closed (their unsettled writes stay
// unsettled). Each costs one goroutine and its buffers.
const maxDraining = 16

// errShut is what a send finds on a torn-down connection: nothing was sent.
var errShut = errors.New("connection torn down before the request was sent")

// writeClass reports whether an NBD command changes the store's data.
func writeClass(typ uint16) bool {
	return typ == cmdWrite || typ == cmdTrim || typ == cmdWriteZeroes
}

// settled makes the error of a write-class request a settled Pending: the
// request cannot land later (it never left, or its reply arrived).
func settled(wc bool, err error) error {
	if !wc || err == nil {
		return err
	}
	if _, ok := errors.AsType[backends.Pending](err); ok {
		return err
	}
	return &backends.PendingError{Err: err, Done: backends.Settled, Waiting: "nothing: the request was answered or never reached the server"}
}

// pendingError is the error of a write-class request that may still land.
type pendingError struct {
	err    error
	settle <-chan struct{}
	c      *conn
}

func (e *pendingError) Error() string            { return e.err.Error() }
func (e *pendingError) Unwrap() error            { return e.err }
func (e *pendingError) Settled() <-chan struct{} { return e.settle }

// WaitingFor names the proof still awaited, with the connection's current
// count of writes in that state.
func (e *pendingError) WaitingFor() string {
	select {
	case <-e.settle:
		return "nothing: the server answered or closed the connection"
	default:
	}
	return e.c.waitingFor()
}

func (c *conn) waitingFor() string {
	c.mu.Lock()
	n, killed := c.mu.pendingWrites, c.mu.killed
	c.mu.Unlock()
	if killed {
		return fmt.Sprintf("%s: connection %d was closed on our side before the server answered or closed it, so no proof will come: only `path fence`, the path's quiesce time or the APD timeout", c.name, c.id)
	}
	w := "writes"
	if n == 1 {
		w = "write"
	}
	return fmt.Sprintf("%s: the server to answer or close connection %d (it holds %d %s of ours)", c.name, c.id, n, w)
}

// detached is what a request detached from its submitter (teardown, a
// wake-up) finds on done: the request stays in the in-flight map, and
// nobody recycles it.
type detached struct {
	err    error
	settle chan struct{} // nil: settled
}

func (d *detached) Error() string { return d.err.Error() }

// finished turns a request's result into the caller's error and recycles
// the request when it is the submitter's to recycle.
func (c *conn) finished(r *request, wc, wrote bool, err error) error {
	d, ok := err.(*detached)
	if !ok {
		putRequest(r)
		return settled(wc, err)
	}
	if !wrote {
		c.reclaim(r)
		return settled(wc, d.err)
	}
	if wc && d.settle != nil {
		return &pendingError{err: d.err, settle: d.settle, c: c}
	}
	return settled(wc, d.err)
}

// reclaim removes a detached request that never left from the in-flight
// map: no reply can come for it, so its write is settled.
func (c *conn) reclaim(r *request) {
	c.mu.Lock()
	end := false
	if c.mu.inflight[r.handle] == r && !r.claimed {
		delete(c.mu.inflight, r.handle)
		if r.settle != nil {
			end = c.settleLocked(r)
		}
	}
	c.mu.Unlock()
	if end {
		c.closeSocket()
	}
}

// settleLocked closes an abandoned write's settle channel. It reports
// whether that was the last one a torn-down connection waited for: then
// the caller closes the socket (nothing more to learn from it).
func (c *conn) settleLocked(r *request) bool {
	close(r.settle)
	r.settle = nil
	c.mu.pendingWrites--
	return c.mu.err != nil && c.mu.pendingWrites == 0
}

type victim struct {
	r   *request
	err *detached
}

// detachAllLocked, on teardown, detaches every request in flight that the
// reader is not processing (their submitters get their errors, sent by the
// caller; write-class ones a Pending) and marks the one it is processing
// to be detached at the next wake-up. It reports whether the connection
// must be drained, and then makes sure something reads it.
func (c *conn) detachAllLocked(cause error) ([]victim, bool) {
	var victims []victim
	cutting := false
	for _, r := range c.mu.inflight {
		if r.abandoned {
			continue
		}
		e := c.downErr(opName(r.typ), cause)
		if r.claimed {
			if !r.cut {
				r.cut, r.cutErr = true, e
			}
			cutting = true
			continue
		}
		r.abandoned, r.detached = true, true
		d := &detached{err: e}
		if writeClass(r.typ) && !r.cut { // a cut one's reply had started
			r.settle = make(chan struct{})
			d.settle = r.settle
			c.mu.pendingWrites++
		}
		victims = append(victims, victim{r, d})
	}
	drain := c.mu.pendingWrites > 0 && !c.mu.killed
	if drain {
		if cutting {
			c.wakeLocked()
		}
		// Nobody reads (leader mode): a goroutine drains. Otherwise the
		// role holder drains, or hands over on release.
		if c.role.take() {
			c.wg.Add(1)
			go c.readLoop(true)
		}
	}
	return victims, drain
}

// shutWrite half-closes the connection: the server reads our FIN after
// every request we sent. A sender blocked on a full socket is woken first
// (senders after it see shut and send nothing).
func (c *conn) shutWrite() {
	c.nc.SetWriteDeadline(aLongTimeAgo)
	nc := c.nc
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn() // no close_notify: it would wait for the write lock
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// closeSocket closes the socket once.
func (c *conn) closeSocket() {
	c.closeOnce.Do(func() {
		c.sockGone.Store(true)
		c.nc.Close()
	})
}

// kill closes the socket at once: draining ends without proof.
func (c *conn) kill() {
	c.mu.Lock()
	c.mu.killed = true
	c.mu.Unlock()
	c.closeSocket()
}

// drained ends reading a torn-down connection: with proof (the server
// closed the connection) every abandoned write still in flight is settled;
// without, they stay unsettled. A request whose submitter still waits (one
// whose reply had begun when the connection went down, between two chunks
// now) gets its error. The request the reader is processing is left to
// it. The socket is closed.
func (c *conn) drained(proof bool) {
	c.mu.Lock()
	proof = proof && !c.mu.killed
	if !proof && c.mu.pendingWrites > 0 {
		c.mu.killed = true // WaitingFor: no proof will come now
	}
	cause := c.mu.err
	var orphans []*request
	for h, r := range c.mu.inflight {
		if r.claimed {
			continue
		}
		delete(c.mu.inflight, h)
		if !r.abandoned {
			orphans = append(orphans, r)
			continue
		}
		if r.settle != nil {
			if proof {
				close(r.settle)
			}
			r.settle = nil
			c.mu.pendingWrites--
		}
	}
	c.mu.Unlock()
	c.closeSocket()
	for _, r := range orphans {
		err := r.cutErr
		if err == nil {
			err = c.downErr(opName(r.typ), cause)
		}
		r.done <- err
	}
}

// serverClosed reports whether a read error means the server's side closed
// the connection (EOF, a reset), not ours.
func serverClosed(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// wakeLocked wakes whoever holds the reader role (its read times out at
// once): a leader whose context ended, or a reader that must detach a
// request marked cut.
func (c *conn) wakeLocked() {
	c.mu.interrupted = true
	c.nc.SetReadDeadline(aLongTimeAgo)
}

// unwake, on the role holder, clears a wake-up and detaches the requests
// marked cut. It reports whether there was a wake-up.
func (c *conn) unwake() bool {
	c.mu.Lock()
	if !c.mu.interrupted {
		c.mu.Unlock()
		return false
	}
	c.mu.interrupted = false
	c.nc.SetReadDeadline(time.Time{})
	var cuts []*request
	for _, r := range c.mu.inflight {
		if r.cut && !r.abandoned {
			r.abandoned, r.detached = true, true
			cuts = append(cuts, r)
		}
	}
	c.mu.Unlock()
	for _, r := range cuts {
		r.done <- &detached{err: r.cutErr}
	}
	return true
}

// woken tells a wake-up from a read error: a timed-out read after
// wakeLocked is retried.
func (c *conn) woken(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	if !ok || !ne.Timeout() {
		return false
	}
	return c.unwake()
}

// fill reads len(p) bytes, riding out wake-ups.
func (c *conn) fill(p []byte) error {
	for {
		k, err := io.ReadFull(c.br, p)
		if err == nil {
			return nil
		}
		if !c.woken(err) {
			return err
		}
		p = p[k:]
	}
}

// discard skips n bytes, riding out wake-ups.
func (c *conn) discard(n int) error {
	for {
		k, err := c.br.Discard(n)
		if err == nil {
			return nil
		}
		if !c.woken(err) {
			return err
		}
		n -= k
	}
}
