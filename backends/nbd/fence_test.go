package nbd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/internal/freezeproxy"
	"github.com/mpathfs/mpathfs/ioerr"
)

// wait is how long a test waits for something that must happen; it bounds
// a hang, it is not a latency assertion.
const wait = 20 * time.Second

func pendingOf(t *testing.T, err error) backends.Pending {
	t.Helper()
	require.Error(t, err)
	p, ok := errors.AsType[backends.Pending](err)
	require.Truef(t, ok, "error %v is not a backends.Pending", err)
	return p
}

func isSettled(p backends.Pending) bool {
	select {
	case <-p.Settled():
		return true
	default:
		return false
	}
}

func waitSettled(t *testing.T, p backends.Pending, what string) {
	t.Helper()
	select {
	case <-p.Settled():
	case <-time.After(wait):
		t.Fatalf("%s: not settled after %v (waiting for %s)", what, wait, p.WaitingFor())
	}
}

// writeTimeout writes p at off with a deadline d from now.
func writeTimeout(c *Client, p []byte, off int64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, err := c.WriteAt(ctx, p, off)
	return err
}

// TestFenceLateReply: nbdkit is stopped while a write sits in its socket;
// the write times out as a Pending that is not settled, and the
// connection is torn down. When nbdkit continues it answers the write
// (executed, or refused with ESHUTDOWN when it read our FIN at the same
// time) or closes the half-closed connection: the Pending settles. After
// the proof nothing lands any more: newer data written then stays.
func TestFenceLateReply(t *testing.T) {
	for _, tc := range []struct {
		name       string
		lead, qemu bool
	}{
		{"nbdkit-leader", true, false},
		{"nbdkit-reader-goroutine", false, false},
		{"qemu-nbd", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.lead {
				leaderMode = false
				defer func() { leaderMode = true }()
			}
			var s *server
			var uri string
			if tc.qemu {
				s = startQemuNbd(t, sparseFile(t, 16<<20), "x")
				uri = s.uri("x") + "&connections=1"
			} else {
				s = startNbdkit(t, true, "memory", "size=16M")
				uri = s.uri("") + "?connections=1"
			}
			c := openT(t, uri)
			defer c.Close()
			ctx := ctxTimeout(t, wait)
			_, err := c.WriteAt(ctx, bytes.Repeat([]byte{0x11}, 4096), 0)
			require.NoError(t, err)

			stopServer(t, s.pid())
			defer syscall.Kill(s.pid(), syscall.SIGCONT)
			err = writeTimeout(c, bytes.Repeat([]byte{0x22}, 4096), 0, 300*time.Millisecond)
			p := pendingOf(t, err)
			assert.ErrorIs(t, err, ioerr.ErrPathFailure)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.False(t, isSettled(p), "a write in a stopped server's socket is settled")
			assert.Contains(t, p.WaitingFor(), "the server to answer or close connection 1 (it holds 1 write of ours)")
			t.Logf("pending: %v; waiting for %s", err, p.WaitingFor())
			_, err = c.ReadAt(ctx, make([]byte, 512), 0)
			require.ErrorIs(t, err, ErrConnDown, "the connection was not torn down")

			syscall.Kill(s.pid(), syscall.SIGCONT)
			waitSettled(t, p, "the stopped server's write after SIGCONT")
			pctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			require.NoError(t, c.Probe(pctx))
			got := make([]byte, 4096)
			_, err = c.ReadAt(ctx, got, 0)
			require.NoError(t, err)
			switch {
			case bytes.Equal(got, bytes.Repeat([]byte{0x22}, 4096)):
				t.Log("the abandoned write executed before its proof")
			case bytes.Equal(got, bytes.Repeat([]byte{0x11}, 4096)):
				t.Log("the abandoned write was refused (the server read our FIN at the same time)")
			default:
				t.Fatalf("block 0 holds neither the old nor the abandoned write's data: % x…", got[:16])
			}
			_, err = c.WriteAt(ctx, bytes.Repeat([]byte{0x33}, 4096), 0)
			require.NoError(t, err)
			require.NoError(t, c.Flush(ctx))
			_, err = c.ReadAt(ctx, got, 0)
			require.NoError(t, err)
			assert.Equal(t, bytes.Repeat([]byte{0x33}, 4096), got, "newer data was rolled back after the proof")
		})
	}
}

// fenceFake serves one connection on a Unix socket like fakeServer, but its
// socket's Close waits for allowClose (or the test's end): it reads our
// FIN, then holds the connection open until told.
func fenceFake(t *testing.T, handle func(nc net.Conn, r reqHdr), allowClose <-chan struct{}) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		nc, err := l.Accept()
		if err != nil {
			return
		}
		serveFake(t, &gatedClose{Conn: nc, allow: allowClose, end: ctxDone(t)}, goodHandshake(false), handle)
	}()
	return "nbd+unix:///disk?socket=" + sock + "&connections=1"
}

type gatedClose struct {
	net.Conn
	allow, end <-chan struct{}
	once       sync.Once
}

func (g *gatedClose) Close() error {
	g.once.Do(func() {
		select {
		case <-g.allow:
		case <-g.end:
		}
		g.Conn.Close()
	})
	return nil
}

// TestFenceServerCloseSettles: a server that never answers, but closes the
// connection after reading our FIN (the half-close a teardown does): the
// Pending settles when it closes, not before.
func TestFenceServerCloseSettles(t *testing.T) {
	allow := make(chan struct{})
	uri := fenceFake(t, func(net.Conn, reqHdr) {}, allow)
	c := openT(t, uri)
	defer c.Close()
	err := writeTimeout(c, make([]byte, 4096), 8192, 200*time.Millisecond)
	p := pendingOf(t, err)
	assert.ErrorIs(t, err, ioerr.ErrPathFailure)
	assert.False(t, isSettled(p), "settled before the server closed the connection")
	close(allow)
	waitSettled(t, p, "a write on a connection the server closed after our FIN")
}

// TestFenceLateReplyFake: a server that answers the abandoned write late,
// and keeps the connection open: the reply settles it. Write-zeroes and
// trim are write-class too.
func TestFenceLateReplyFake(t *testing.T) {
	release := make(chan struct{})
	uri := fenceFake(t, func(nc net.Conn, r reqHdr) {
		if r.typ != cmdRead {
			select {
			case <-release:
			case <-ctxDone(t):
			}
		}
		var s stream
		s.u32(magicSimple).u32(0).u64(r.handle)
		if r.typ == cmdRead {
			s.raw(make([]byte, r.length))
		}
		nc.Write(s.Bytes())
	}, nil)
	c := openT(t, uri)
	defer c.Close()
	require.True(t, c.Can(backends.CapWriteZeroes))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := c.WriteZeroes(ctx, 0, 4096)
	p := pendingOf(t, err)
	assert.False(t, isSettled(p), "settled before the late reply")
	close(release)
	waitSettled(t, p, "a write-zeroes answered late")
}

// TestFenceNeverSent: with nbdkit stopped, a large write fills the socket
// and blocks its sender; a small write queues behind it. Abort: the small
// one never left, so it is settled at once; the large one may have (part
// of it is in nbdkit's socket) and stays pending until nbdkit continues
// and closes the half-closed connection.
func TestFenceNeverSent(t *testing.T) {
	s, c, cn := stoppedOneConn(t, "64M")
	big := make(chan error, 1)
	go func() {
		_, err := c.WriteAt(context.Background(), make([]byte, 8<<20), 0)
		big <- err
	}()
	require.Eventually(t, func() bool { return cn.load.Load() == 1 }, wait, time.Millisecond)
	small := make(chan error, 1)
	go func() {
		_, err := c.WriteAt(context.Background(), make([]byte, 4096), 16<<20)
		small <- err
	}()
	require.Eventually(t, func() bool { return cn.load.Load() == 2 }, wait, time.Millisecond)
	c.Abort(errors.New("test abort"))

	var errSmall, errBig error
	select {
	case errSmall = <-small:
	case <-time.After(wait):
		t.Fatal("the queued write did not fail on Abort")
	}
	ps := pendingOf(t, errSmall)
	assert.True(t, isSettled(ps), "a write that never left is not settled: %v", errSmall)
	assert.ErrorIs(t, errSmall, ioerr.ErrPathFailure)
	select {
	case errBig = <-big:
	case <-time.After(wait):
		t.Fatal("the blocked write did not fail on Abort")
	}
	pb := pendingOf(t, errBig)
	assert.False(t, isSettled(pb), "a write partly in a stopped server's socket is settled")
	syscall.Kill(s.pid(), syscall.SIGCONT)
	waitSettled(t, pb, "the partly sent write after SIGCONT")
}

// TestFenceMultiConn: with two connections, a timeout on one tears down
// both, and each drains: writes abandoned on either settle when nbdkit
// continues.
func TestFenceMultiConn(t *testing.T) {
	s := startNbdkit(t, true, "memory", "size=16M")
	c := openT(t, s.uri("")+"?connections=2")
	defer c.Close()
	cs := c.set.Load().cs
	require.Len(t, cs, 2)
	stopServer(t, s.pid())
	defer syscall.Kill(s.pid(), syscall.SIGCONT)
	errs := make(chan error, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go func() { _, err := c.WriteAt(ctx, make([]byte, 4096), 0); errs <- err }()
	require.Eventually(t, func() bool { return cs[0].load.Load() == 1 }, wait, time.Millisecond)
	go func() { _, err := c.WriteAt(ctx, make([]byte, 4096), 4096); errs <- err }()
	require.Eventually(t, func() bool { return cs[1].load.Load() == 1 }, wait, time.Millisecond)
	var ps []backends.Pending
	for range 2 {
		p := pendingOf(t, <-errs)
		assert.False(t, isSettled(p))
		ps = append(ps, p)
	}
	for _, cn := range cs {
		assert.False(t, cn.alive(), "connection %d is up", cn.id)
	}
	syscall.Kill(s.pid(), syscall.SIGCONT)
	for _, p := range ps {
		waitSettled(t, p, "a write on a torn-down connection of two")
	}
}

// TestFenceFrozenProxy: nbdkit behind a proxy that freezes: the abandoned
// write is never settled (nothing answers, nothing closes). Probe opens a
// fresh connection while the old one drains; the path works again; Close
// does not hang, and the write stays unsettled after it (closing our side
// proves nothing).
func TestFenceFrozenProxy(t *testing.T) {
	s := startNbdkit(t, true, "memory", "size=16M")
	f := freezeproxy.Start(t, "tcp", "127.0.0.1:0", "127.0.0.1:"+itoa(s.port))
	c := openT(t, "nbd://"+f.Addr()+"/?connections=1")
	ctx := ctxTimeout(t, wait)
	_, err := c.WriteAt(ctx, make([]byte, 4096), 0)
	require.NoError(t, err)

	f.FreezeExisting()
	err = writeTimeout(c, bytes.Repeat([]byte{1}, 4096), 0, 300*time.Millisecond)
	p := pendingOf(t, err)
	old := c.set.Load().cs[0]
	assert.False(t, old.alive())

	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	require.NoError(t, c.Probe(pctx), "Probe through the proxy (new connections are not frozen)")
	cur := c.set.Load().cs[0]
	assert.NotSame(t, old, cur)
	assert.Equal(t, 2, cur.id)
	c.mu.Lock()
	assert.Equal(t, []*conn{old}, c.mu.draining, "the old connection is not kept draining")
	c.mu.Unlock()
	_, err = c.WriteAt(ctx, bytes.Repeat([]byte{2}, 4096), 4096)
	require.NoError(t, err, "a write on the fresh connection")
	assert.False(t, isSettled(p), "settled although the proxy forwards nothing")
	assert.Contains(t, p.WaitingFor(), "connection 1 (it holds 1 write of ours)")

	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("Close hung on a connection draining through a frozen proxy")
	}
	assert.False(t, isSettled(p), "settled by our own Close")
	assert.Contains(t, p.WaitingFor(), "closed on our side")
}

// TestFenceDrainingBounded: a client keeps at most maxDraining old
// connections draining; the oldest beyond are closed (their writes stay
// unsettled).
func TestFenceDrainingBounded(t *testing.T) {
	s := startNbdkit(t, true, "memory", "size=16M")
	f := freezeproxy.Start(t, "tcp", "127.0.0.1:0", "127.0.0.1:"+itoa(s.port))
	c := openT(t, "nbd://"+f.Addr()+"/?connections=1")
	defer c.Close()
	ctx := ctxTimeout(t, 2*wait)
	var first backends.Pending
	for i := range maxDraining + 2 {
		f.FreezeExisting()
		p := pendingOf(t, writeTimeout(c, make([]byte, 4096), 0, 100*time.Millisecond))
		if i == 0 {
			first = p
		}
		pctx, cancel := context.WithTimeout(ctx, wait)
		require.NoError(t, c.Probe(pctx))
		cancel()
	}
	c.mu.Lock()
	n := len(c.mu.draining)
	c.mu.Unlock()
	assert.Equal(t, maxDraining, n)
	assert.False(t, isSettled(first))
	assert.Contains(t, first.WaitingFor(), "closed on our side")
}

// TestFenceCutRead: a caller cancels a read while the reader is copying its
// reply into the caller's buffer (the server sent half of it). The reader
// is woken, detaches the request and sends the rest nowhere: the caller
// returns at once, its buffer is never written afterwards, and the
// connection stays up (it is not torn down any more, which would lose the
// proof for writes on it).
func TestFenceCutRead(t *testing.T) {
	for _, lead := range []bool{true, false} {
		name := "leader"
		if !lead {
			name = "reader-goroutine"
		}
		t.Run(name, func(t *testing.T) {
			if !lead {
				leaderMode = false
				defer func() { leaderMode = true }()
			}
			rest := make(chan struct{})
			uri := fenceFake(t, func(nc net.Conn, r reqHdr) {
				var s stream
				s.u32(magicSimple).u32(0).u64(r.handle)
				data := bytes.Repeat([]byte{0x55}, int(r.length))
				if r.off != 0 {
					nc.Write(s.raw(data).Bytes())
					return
				}
				nc.Write(s.raw(data[:r.length/2]).Bytes())
				select {
				case <-rest:
				case <-ctxDone(t):
				}
				nc.Write(data[r.length/2:])
			}, nil)
			c := openT(t, uri)
			defer c.Close()
			cn, err := c.current("read")
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			buf := make([]byte, 128<<10) // larger than the read buffer: a leader hands it to a helper
			res := make(chan error, 1)
			go func() { _, err := c.ReadAt(ctx, buf, 0); res <- err }()
			require.Eventually(t, func() bool {
				cn.mu.Lock()
				defer cn.mu.Unlock()
				for _, r := range cn.mu.inflight {
					if r.claimed {
						return true
					}
				}
				return false
			}, wait, time.Millisecond, "the reply was never claimed")
			cancel()
			select {
			case err = <-res:
			case <-time.After(wait):
				t.Fatal("a read cancelled while its reply arrived did not return")
			}
			require.ErrorIs(t, err, context.Canceled)
			for i := range buf {
				buf[i] = 0xee
			}
			close(rest)
			got := make([]byte, 4096)
			_, err = c.ReadAt(context.Background(), got, 1<<19)
			require.NoError(t, err, "the connection did not survive the cut")
			assert.Equal(t, bytes.Repeat([]byte{0x55}, 4096), got)
			assert.True(t, cn.alive())
			assert.Equal(t, bytes.Repeat([]byte{0xee}, len(buf)), buf, "the cut read's buffer was written after its caller returned")
		})
	}
}

// TestFenceProtocolViolationWhileDraining: a server that answers our FIN
// with garbage (and keeps the connection open) ends the drain without
// proof: the write stays unsettled, and WaitingFor says no proof will
// come.
func TestFenceProtocolViolationWhileDraining(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "garbage.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		nc, err := l.Accept()
		if err != nil {
			return
		}
		serveFake(t, &garbageOnEOF{Conn: nc, end: ctxDone(t)}, goodHandshake(true), func(net.Conn, reqHdr) {})
	}()
	c := openT(t, "nbd+unix:///disk?socket="+sock+"&connections=1")
	defer c.Close()
	p := pendingOf(t, writeTimeout(c, make([]byte, 4096), 0, 200*time.Millisecond))
	require.Eventually(t, func() bool { return strings.Contains(p.WaitingFor(), "closed on our side") }, wait, 5*time.Millisecond,
		"the drain did not end on the protocol violation: %s", p.WaitingFor())
	assert.False(t, isSettled(p), "settled by a protocol violation")
}

// garbageOnEOF is a server connection that, when the server closes it
// (serveFake does on our FIN), writes garbage instead and stays open
// until the test ends.
type garbageOnEOF struct {
	net.Conn
	end  <-chan struct{}
	once sync.Once
}

func (g *garbageOnEOF) Close() error {
	g.once.Do(func() {
		g.Conn.Write([]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		<-g.end
		g.Conn.Close()
	})
	return nil
}
