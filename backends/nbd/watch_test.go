package nbd

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
)

// The leader watches its context only once its reply is late
// (leaderWatchAfter); before that its read has a short deadline. These
// tests pin the leader in one phase or the other (a stopped server never
// answers) and check that an ending context ends the request either way.

// withWatchAfter sets leaderWatchAfter for one test; connections opened
// after it use d (each takes the value when it is made).
func withWatchAfter(t *testing.T, d time.Duration) {
	t.Helper()
	old := leaderWatchAfter
	leaderWatchAfter = d
	t.Cleanup(func() { leaderWatchAfter = old })
}

// foreignCtx is a cancellable context package context does not know, as
// go-fuse's per-request context is: context.AfterFunc watches it from a
// goroutine of its own.
type foreignCtx struct {
	context.Context
	done chan struct{}
}

func (c *foreignCtx) Done() <-chan struct{} { return c.done }

func (c *foreignCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// TestLeaderCancelledFirstPhase: a cancellation that comes while the
// leader is still in its first phase (no watcher yet: leaderWatchAfter is
// long here) is noticed when that phase's read deadline passes; the
// request ends as a plain cancellation, the connection stays up and the
// late reply never reaches the caller's buffer.
func TestLeaderCancelledFirstPhase(t *testing.T) {
	withWatchAfter(t, 100*time.Millisecond)
	s, c, cn := stoppedOneConn(t, "4M")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(5 * time.Millisecond); cancel() }()
	buf := bytes.Repeat([]byte{0xaa}, 4096)
	_, err := c.ReadAt(ctx, buf, 0)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ioerr.ErrPathFailure)
	require.True(t, cn.alive(), "cancelling the leader tore the connection down")
	require.NoError(t, syscall.Kill(s.pid(), syscall.SIGCONT))
	roleIdle(t, cn)
	require.Equal(t, bytes.Repeat([]byte{0xaa}, 4096), buf, "an abandoned reply was written into the caller's buffer")
	_, err = c.ReadAt(context.Background(), buf, 0)
	require.NoError(t, err, "read after the abandoned one")
}

// TestLeaderDeadlineFirstPhase: a request deadline earlier than the end of
// the first phase is the read deadline itself: the leader gives up at it,
// the request fails as a path failure and the connection is torn down (the
// watchdog is slow here, so it is the leader's doing).
func TestLeaderDeadlineFirstPhase(t *testing.T) {
	withWatchAfter(t, time.Hour)
	s := startNbdkit(t, false, "memory", "size=4M")
	c := openT(t, s.uri("")+"&connections=1&watchdog=1h")
	defer c.Close()
	stopServer(t, s.pid())
	defer syscall.Kill(s.pid(), syscall.SIGCONT)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := c.ReadAt(ctx, make([]byte, 4096), 0)
	require.ErrorIs(t, err, ioerr.ErrPathFailure)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	cn, err := c.current("read")
	if err == nil {
		require.False(t, cn.alive(), "a deadline passed and the connection is still up")
	}
}

// TestLeaderCancelledForeignContext: past the first phase the leader
// watches its context; with a context package context does not know (as
// under a FUSE mount) a cancellation still wakes it, and a write cancelled
// while the server is stopped is reported pending, then settles once the
// server answers it.
func TestLeaderCancelledForeignContext(t *testing.T) {
	withWatchAfter(t, time.Millisecond)
	s, c, cn := stoppedOneConn(t, "4M")
	ctx := &foreignCtx{Context: context.Background(), done: make(chan struct{})}
	go func() { time.Sleep(30 * time.Millisecond); close(ctx.done) }()
	_, err := c.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), 0)
	require.ErrorIs(t, err, context.Canceled)
	var pend interface{ Settled() <-chan struct{} }
	require.True(t, errors.As(err, &pend), "a cancelled write that was sent is pending: %v", err)
	require.True(t, cn.alive(), "cancelling the leader tore the connection down")
	require.NoError(t, syscall.Kill(s.pid(), syscall.SIGCONT))
	<-pend.Settled() // the server answered it: it executed, nothing more can land
	roleIdle(t, cn)
	got := make([]byte, 4096)
	_, err = c.ReadAt(context.Background(), got, 0)
	require.NoError(t, err)
	require.Equal(t, bytes.Repeat([]byte{1}, 4096), got)
}

// doneCounter is a foreignCtx that counts the calls of Done: a follower
// must not ask for it (follow.go).
type doneCounter struct {
	foreignCtx
	calls atomic.Int32
}

func (c *doneCounter) Done() <-chan struct{} { c.calls.Add(1); return c.done }

// TestFollowerCancelledPolled: a follower (the reader role is held by a
// leader whose reply never comes: the server is stopped) whose context is
// cancelled returns context.Canceled within a few poll periods, without
// ever asking its context for Done; the connection stays up, the
// abandoned reply never reaches the caller's buffer, and the leader's
// request still completes once the server answers.
func TestFollowerCancelledPolled(t *testing.T) {
	s, c, cn := stoppedOneConn(t, "4M")
	lead := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(context.Background(), make([]byte, 4096), 4096)
		lead <- err
	}()
	require.Eventually(t, func() bool { return !cn.role.free() && cn.load.Load() == 1 }, wait, time.Millisecond)
	ctx := &doneCounter{foreignCtx: foreignCtx{Context: context.Background(), done: make(chan struct{})}}
	buf := bytes.Repeat([]byte{0xaa}, 4096)
	go func() { time.Sleep(20 * time.Millisecond); close(ctx.done) }()
	start := time.Now()
	_, err := c.ReadAt(ctx, buf, 0)
	el := time.Since(start)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, ioerr.ErrPathFailure)
	require.Less(t, el, 500*time.Millisecond, "the cancelled follower returned late")
	require.Zero(t, ctx.calls.Load(), "the follower asked its context for Done")
	require.True(t, cn.alive(), "cancelling a follower tore the connection down")
	require.NoError(t, syscall.Kill(s.pid(), syscall.SIGCONT))
	require.NoError(t, <-lead, "the leader's read")
	roleIdle(t, cn)
	require.Equal(t, bytes.Repeat([]byte{0xaa}, 4096), buf, "an abandoned reply was written into the caller's buffer")
}
