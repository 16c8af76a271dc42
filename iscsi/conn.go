package iscsi

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one TCP connection to the target: its login, then (as the one
// connection of its session) the full feature phase.
type conn struct {
	t      *Target
	nc     net.Conn
	portal Portal
	fr     *Framer

	closeOnce sync.Once
	closed    chan struct{}

	// wmu serialises writes; statSN is assigned under it so StatSN order
	// is wire order.
	wmu    sync.Mutex
	statSN uint32
	wpdu   PDU

	expCmdSN atomic.Uint32
	// outstanding counts the commands accepted and not yet answered.
	outstanding atomic.Int32
	// maxCmdSN is the highest MaxCmdSN advertised so far (valid once
	// advertised is set). An initiator keeps the highest MaxCmdSN it saw
	// (RFC 7143 4.2.2.1), so a command up to it is in the window even when
	// the outstanding count has since grown: ExpCmdSN and the count move in
	// two steps, and a status sent between them advertises one more.
	maxCmdSN   atomic.Uint32
	advertised atomic.Bool
	qmu        sync.Mutex
	queue      map[uint32]func() // commands received ahead of ExpCmdSN
	// abortedSN are CmdSNs an ABORT TASK named before they arrived.
	abortedSN map[uint32]bool

	// a Text answer longer than one PDU: its rest, sent when the
	// initiator asks with textITT and textTTT (reader goroutine only)
	textRest         []byte
	textITT, textTTT uint32

	sess      *session
	initiator atomic.Pointer[string]

	lastRecv atomic.Int64 // unix nanoseconds
	pingTTT  atomic.Uint32
	wg       sync.WaitGroup // goroutines of this connection besides serve
}

func newConn(t *Target, nc net.Conn, p Portal) *conn {
	c := &conn{t: t, nc: nc, portal: p, closed: make(chan struct{}), queue: map[uint32]func(){}, abortedSN: map[uint32]bool{}}
	c.fr = NewFramer(nc, nc, 64<<10)
	return c
}

func (c *conn) window() uint32 { return c.t.cfg.Limits.CmdWindow }

// open is how many CmdSNs from ExpCmdSN on the target accepts now: the
// command window less the commands still outstanding, so MaxCmdSN bounds
// the queue depth. Its upper edge never moves back: a new command adds
// one to both ExpCmdSN and the outstanding count.
func (c *conn) open() uint32 {
	out := uint32(max(c.outstanding.Load(), 0))
	if out >= c.window() {
		return 0
	}
	return c.window() - out
}

func (c *conn) initiatorName() string {
	if p := c.initiator.Load(); p != nil {
		return *p
	}
	return ""
}

// close shuts the connection; the reader loop sees the error and ends
// the session.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.t.removeConn(c)
	defer c.close()
	_ = c.nc.SetDeadline(c.loginDeadline())
	if err := c.login(); err != nil {
		if !errors.Is(err, io.EOF) {
			c.t.logf("iscsi: %s: login: %v", c.nc.RemoteAddr(), err)
		}
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	s := c.sess
	c.t.logf("iscsi: %s logged in from %s (ISID %s, TSIH %d, %s session)", s.nexus.Initiator, c.nc.RemoteAddr(), s.nexus.ISID, s.tsih, s.kind())
	err := c.fullFeature()
	c.close()
	s.end()
	c.wg.Wait()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.t.logf("iscsi: %s (ISID %s): connection ended: %v", s.nexus.Initiator, s.nexus.ISID, err)
	}
}

// seqMessage is a target message carrying StatSN, ExpCmdSN and MaxCmdSN.
type seqMessage interface {
	Message
	setSeq(statSN, expCmdSN, maxCmdSN uint32)
}

func (m *NOPIn) setSeq(s, e, x uint32)          { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *SCSIResponse) setSeq(s, e, x uint32)   { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *TMFResponse) setSeq(s, e, x uint32)    { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *TextResponse) setSeq(s, e, x uint32)   { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *DataIn) setSeq(s, e, x uint32)         { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *LogoutResponse) setSeq(s, e, x uint32) { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *R2T) setSeq(s, e, x uint32)            { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *AsyncMessage) setSeq(s, e, x uint32)   { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }
func (m *Reject) setSeq(s, e, x uint32)         { m.StatSN, m.ExpCmdSN, m.MaxCmdSN = s, e, x }

// send writes one message with the connection's sequence numbers; status
// says whether it carries status (and so takes a StatSN of its own).
// flush false leaves it buffered for the next send.
func (c *conn) send(m seqMessage, data []byte, status, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	exp := c.expCmdSN.Load()
	m.setSeq(c.statSN, exp, c.advertise(exp))
	if status {
		c.statSN++
	}
	c.wpdu.Encode(m, data)
	var err error
	if flush {
		err = c.fr.WritePDU(&c.wpdu)
	} else {
		err = c.fr.WritePDUNoFlush(&c.wpdu)
	}
	c.wpdu.Data = nil
	if err != nil {
		c.close()
	}
	return err
}

// reject sends a Reject carrying the header of the rejected PDU.
func (c *conn) reject(reason uint8, bhs *BHS) {
	hdr := *bhs
	_ = c.send(&Reject{Reason: reason}, hdr[:], false, true)
}

// ordered runs fn in CmdSN order: at once for an immediate request,
// when cmdSN is ExpCmdSN (and then the requests queued behind it), later
// for a request ahead of ExpCmdSN inside the window. A CmdSN outside the
// window is ignored, as RFC 7143 4.2.2.1 says.
func (c *conn) ordered(cmdSN uint32, immediate bool, fn func()) bool {
	if immediate {
		fn()
		return true
	}
	c.qmu.Lock()
	exp := c.expCmdSN.Load()
	if !c.accepts(cmdSN, exp) {
		c.qmu.Unlock()
		c.t.logf("iscsi: %s: CmdSN %d outside the window %d..%d: ignored", c.initiatorName(), cmdSN, exp, exp+c.open()-1)
		return false
	}
	if cmdSN != exp {
		if _, dup := c.queue[cmdSN]; dup {
			c.qmu.Unlock()
			return false
		}
		c.queue[cmdSN] = fn
		c.qmu.Unlock()
		return true
	}
	run := []func(){fn}
	exp++
	for {
		next, ok := c.queue[exp]
		if !ok {
			break
		}
		delete(c.queue, exp)
		run = append(run, next)
		exp++
	}
	c.expCmdSN.Store(exp)
	c.qmu.Unlock()
	for _, f := range run {
		f()
	}
	return true
}

// turnNow is ordered's usual case without its closure: when cmdSN is the
// next expected CmdSN and no later command waits in the queue, it advances
// ExpCmdSN and reports true, and the caller runs the command itself;
// otherwise it changes nothing and the caller goes through ordered.
func (c *conn) turnNow(cmdSN uint32) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	exp := c.expCmdSN.Load()
	if cmdSN != exp || len(c.queue) != 0 || !c.accepts(cmdSN, exp) {
		return false
	}
	c.expCmdSN.Store(exp + 1)
	return true
}

// inWindow reports whether a non-immediate cmdSN would be accepted.
func (c *conn) inWindow(cmdSN uint32) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.accepts(cmdSN, c.expCmdSN.Load())
}

// advertise returns the MaxCmdSN to send with ExpCmdSN exp: the window's
// upper edge now, or the highest edge advertised before if that is higher
// (serial number arithmetic), so the edge never moves back.
func (c *conn) advertise(exp uint32) uint32 {
	edge := exp + c.open() - 1
	for {
		prev := c.maxCmdSN.Load()
		if c.advertised.Load() && int32(prev-edge) >= 0 {
			return prev
		}
		if c.maxCmdSN.CompareAndSwap(prev, edge) {
			c.advertised.Store(true)
			return edge
		}
	}
}

// accepts reports whether a non-immediate command with cmdSN is in the
// window: from ExpCmdSN up to the window's edge now or the highest edge
// advertised, whichever is higher.
func (c *conn) accepts(cmdSN, exp uint32) bool {
	if cmdSN-exp < c.open() {
		return true
	}
	return c.advertised.Load() && int32(cmdSN-exp) >= 0 && int32(c.maxCmdSN.Load()-cmdSN) >= 0
}

// pinger sends a NOP-In when the connection has been idle for
// NOPInterval and drops it when the initiator does not answer within
// NOPTimeout.
func (c *conn) pinger() {
	defer c.wg.Done()
	l := c.t.cfg.Limits
	if l.NOPInterval < 0 {
		return
	}
	tick := time.NewTicker(min(l.NOPInterval, l.NOPTimeout) / 2)
	defer tick.Stop()
	var sent time.Time
	for {
		select {
		case <-c.closed:
			return
		case now := <-tick.C:
			last := time.Unix(0, c.lastRecv.Load())
			if !sent.IsZero() {
				if last.After(sent) {
					sent = time.Time{}
				} else if now.Sub(sent) > l.NOPTimeout {
					c.t.logf("iscsi: %s: no answer to a NOP-In ping within %v: dropping the connection", c.initiatorName(), l.NOPTimeout)
					c.close()
					return
				}
				continue
			}
			if now.Sub(last) >= l.NOPInterval {
				ttt := c.pingTTT.Add(1) | 0x80000000
				if ttt == ReservedTag {
					ttt = c.pingTTT.Add(1) | 0x80000000
				}
				sent = now
				_ = c.send(&NOPIn{LUN: 0, ITT: ReservedTag, TTT: ttt}, nil, false, true)
			}
		}
	}
}

// errProtocol ends a connection for a protocol error.
type errProtocol struct{ msg string }

func (e *errProtocol) Error() string { return "protocol error: " + e.msg }

func protocolError(format string, args ...any) error {
	return &errProtocol{msg: fmt.Sprintf(format, args...)}
}
