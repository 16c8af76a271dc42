package nbd

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
)

// roleIdle waits until nobody holds c's reader role and nothing is in
// flight (a helper that read the last reply has given the role back).
func roleIdle(t *testing.T, c *conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := len(c.mu.inflight)
		c.mu.Unlock()
		if n == 0 && (c.role.free() || !c.role.lead) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("the reader role was not given back after the last reply")
}

// TestLeaderHandoffConcurrent: many submitters, some cancelling at random,
// with small and large (larger than the read buffer) requests, on one and
// on several connections: every reply lands in its own caller's buffer, a
// cancelled request is a plain cancellation that leaves the path up, and
// the role ends up free. Run with -race.
func TestLeaderHandoffConcurrent(t *testing.T) {
	// A cancellation that lands while the reader copies the reply into the
	// caller's buffer tears the connection down (by design), so requests
	// are cancelled only where the server delays its replies well past the
	// cancellation (25 ms against at most 0.5 ms: with 5 ms a cancel
	// goroutine delayed under -race on 2 loaded cores sometimes met its
	// reply).
	delay := []string{"--filter=delay", "memory", "size=64M", "delay-read=25ms"}
	for _, tc := range []struct {
		name   string
		args   []string
		q      string
		cancel bool
	}{
		{"memory", []string{"memory", "size=64M"}, "&connections=1", false},
		{"multi", []string{"memory", "size=64M"}, "&connections=3", false},
		{"simple", []string{"memory", "size=64M"}, "&connections=1&structured=false", false},
		{"delay-cancel", delay, "&connections=1", true},
		{"delay-cancel-multi", delay, "&connections=2", true},
		{"delay-cancel-goroutine", delay, "&connections=1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "delay-cancel-goroutine" {
				leaderMode = false // the reader goroutine, for comparison
				defer func() { leaderMode = true }()
			}
			s := startNbdkit(t, false, tc.args...)
			c := openT(t, s.uri("")+tc.q)
			defer c.Close()
			for _, cn := range c.set.Load().cs {
				if cn.role.lead != leaderMode {
					t.Fatal("a Unix socket connection is not in leader mode")
				}
			}
			const workers = 16
			var wg sync.WaitGroup
			var mu sync.Mutex
			cancelled := 0
			for w := 0; w < workers; w++ {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					size := 4096
					if w%4 == 3 {
						size = 256 << 10 // > the 64 KiB read buffer: a helper reads it
					}
					base := int64(w) * (4 << 20)
					n := 60
					if tc.cancel {
						n = 20
					}
					for i := 0; i < n; i++ {
						off := base + int64(rng.IntN(8))*int64(size)
						want := bytes.Repeat([]byte{byte(w), byte(i)}, size/2)
						if _, err := c.WriteAt(context.Background(), want, off); err != nil {
							t.Error(err)
							return
						}
						got := make([]byte, size)
						ctx, cancel := context.WithCancel(context.Background())
						if tc.cancel && rng.IntN(3) == 0 {
							d := time.Duration(rng.IntN(500)) * time.Microsecond
							go func() { time.Sleep(d); cancel() }()
						}
						_, err := c.ReadAt(ctx, got, off)
						cancel()
						switch {
						case err == nil:
							if !bytes.Equal(got, want) {
								t.Errorf("worker %d: read %d returned another request's data", w, i)
								return
							}
						case errors.Is(err, context.Canceled) && !errors.Is(err, ioerr.ErrPathFailure):
							mu.Lock()
							cancelled++
							mu.Unlock()
						default:
							t.Errorf("worker %d: %v", w, err)
							return
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%d reads cancelled", cancelled)
			for _, cn := range c.set.Load().cs {
				if !cn.alive() {
					t.Fatal("connection torn down by plain cancellations")
				}
				roleIdle(t, cn)
			}
		})
	}
}

// TestLeaderCancelled: the only request in flight (so its submitter is the
// leader, waiting in the socket read) is cancelled: it returns at once
// with a plain cancellation, the connection stays up, and once the server
// answers the reply is read and discarded by a helper, which gives the
// role back.
func TestLeaderCancelled(t *testing.T) {
	s := startNbdkit(t, false, "memory", "size=4M")
	c := openT(t, s.uri("")+"&connections=1")
	defer c.Close()
	cn, _ := c.current("read")
	stopServer(t, s.pid())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	buf := bytes.Repeat([]byte{0xaa}, 4096)
	start := time.Now()
	_, err := c.ReadAt(ctx, buf, 0)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ioerr.ErrPathFailure) {
		t.Fatalf("cancelled leader: %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Fatalf("cancelled leader returned after %v", el)
	}
	if !cn.alive() {
		t.Fatal("cancelling the leader tore the connection down")
	}
	syscall.Kill(s.pid(), syscall.SIGCONT)
	roleIdle(t, cn)
	if !bytes.Equal(buf, bytes.Repeat([]byte{0xaa}, 4096)) {
		t.Fatal("an abandoned reply was written into the caller's buffer")
	}
	if _, err := c.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatalf("read after the abandoned one: %v", err)
	}
}

// TestLeaderDeadline: a leader whose deadline passes in the socket read
// tears the connection down and fails as a path failure, like a waiter.
func TestLeaderDeadline(t *testing.T) {
	s := startNbdkit(t, false, "memory", "size=4M")
	c := openT(t, s.uri("")+"&connections=1&watchdog=10s") // the leader's own wake-up, not the watchdog's
	defer c.Close()
	stopServer(t, s.pid())
	defer syscall.Kill(s.pid(), syscall.SIGCONT)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ReadAt(ctx, make([]byte, 4096), 0)
	wantPathFailure(t, "leader past its deadline", err)
	if el := time.Since(start); el > 600*time.Millisecond {
		t.Fatalf("leader past its deadline returned after %v", el)
	}
	cn, _ := c.current("read")
	if cn.alive() {
		t.Fatal("a deadline passed and the connection is still up")
	}
}

// TestIdleServerDeath: with no request in flight nobody reads the socket
// in leader mode; the watchdog's idle check still notices the server
// closing the connection.
func TestIdleServerDeath(t *testing.T) {
	s := startNbdkit(t, false, "memory", "size=4M")
	c := openT(t, s.uri("")+"&connections=2&watchdog=20ms")
	defer c.Close()
	if _, err := c.ReadAt(context.Background(), make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	s.kill()
	deadline := time.Now().Add(2 * time.Second)
	for _, cn := range c.set.Load().cs {
		for cn.alive() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if cn.alive() {
			t.Fatal("an idle connection whose server died still looks alive")
		}
	}
}
