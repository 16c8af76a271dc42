package main

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
)

// lockLU is an LU's SCSI-2 reservation shared by fake hosts.
type lockLU struct {
	mu     sync.Mutex
	holder string
	writes []string // the metadata writers, in order
}

type lockHost struct {
	name string
	lu   *lockLU
}

func (h lockHost) Reserve6(context.Context) error {
	h.lu.mu.Lock()
	defer h.lu.mu.Unlock()
	if h.lu.holder != "" && h.lu.holder != h.name {
		return ioerr.NewError(ioerr.ClassConflict, "reserve6", ioerr.ErrConflict)
	}
	h.lu.holder = h.name
	return nil
}

func (h lockHost) Release6(context.Context) error {
	h.lu.mu.Lock()
	defer h.lu.mu.Unlock()
	if h.lu.holder == h.name {
		h.lu.holder = ""
	}
	return nil
}

func (h lockHost) UpdateMetadata(context.Context, int) error {
	h.lu.mu.Lock()
	defer h.lu.mu.Unlock()
	if h.lu.holder != h.name {
		return errors.New("metadata write without the reservation")
	}
	h.lu.writes = append(h.lu.writes, h.name)
	return nil
}

// TestLockLoopCounts: a host that always conflicts (another holds the LU)
// retries R-1 times per iteration after a backoff in [min, max] and fails
// every iteration; once the other releases, every iteration succeeds at
// the first attempt.
func TestLockLoopCounts(t *testing.T) {
	lu := &lockLU{holder: "other"}
	var waits []time.Duration
	sleep := func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }
	cfg := lockLoopConfig{Iterations: 3, Retries: 4, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, Seed: 1}
	var r lockLoopResult
	require.NoError(t, runLockLoop(context.Background(), lockHost{"a", lu}, cfg, &r, sleep))
	require.Equal(t, lockLoopResult{Iterations: 3, Conflicts: 12, Retries: 9, Failures: 3, MaxAttempts: 4}, r)
	require.Len(t, waits, 9, "a wait before each retry, none after the last attempt")
	for _, w := range waits {
		require.GreaterOrEqual(t, w, time.Millisecond)
		require.LessOrEqual(t, w, 5*time.Millisecond)
	}
	lu.holder = ""
	r = lockLoopResult{}
	require.NoError(t, runLockLoop(context.Background(), lockHost{"a", lu}, cfg, &r, sleep))
	require.Equal(t, lockLoopResult{Iterations: 3, Succeeded: 3, MaxAttempts: 1}, r)
	require.Equal(t, "", lu.holder, "released after each update")
}

// TestLockLoopContention: four hosts loop on one LU at once; every
// metadata update happens under its host's reservation, and the counts
// add up (each iteration succeeded or failed; every retry followed a
// conflict).
func TestLockLoopContention(t *testing.T) {
	lu := &lockLU{}
	cfg := lockLoopConfig{Iterations: 50, Retries: 8, BackoffMin: 0, BackoffMax: 200 * time.Microsecond, Hold: 50 * time.Microsecond}
	res := make([]lockLoopResult, 4)
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			c.Seed = uint64(i + 1)
			sleep := func(ctx context.Context, d time.Duration) error { time.Sleep(d); return nil }
			require.NoError(t, runLockLoop(context.Background(), lockHost{string(rune('a' + i)), lu}, c, &res[i], sleep))
		}()
	}
	wg.Wait()
	total := 0
	for _, r := range res {
		require.Equal(t, r.Iterations, r.Succeeded+r.Failures)
		require.LessOrEqual(t, r.Retries, r.Conflicts)
		total += r.Succeeded
	}
	require.Len(t, lu.writes, total)
}

func TestLockLoopErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  lockLoopConfig
		want string
	}{
		{lockLoopConfig{Iterations: 0, Retries: 1}, "--iterations 0"},
		{lockLoopConfig{Iterations: 1, Retries: 0}, "--retries 0"},
		{lockLoopConfig{Iterations: 1, Retries: 1, BackoffMin: 2 * time.Millisecond, BackoffMax: time.Millisecond}, "want 0 ≤ min ≤ max"},
	} {
		require.ErrorContains(t, tc.cfg.check(), tc.want)
	}
	// A failure other than a conflict stops the loop with what it counted.
	var r lockLoopResult
	err := runLockLoop(context.Background(), failing{}, lockLoopConfig{Iterations: 2, Retries: 2}, &r, nil)
	require.ErrorContains(t, err, "iteration 1: reserve6: path gone")
	var out bytes.Buffer
	r.Device, r.Error = "d0", err.Error()
	printLockLoop(&out, r)
	require.Contains(t, out.String(), "d0: 2 iterations: 0 succeeded")
	require.Contains(t, out.String(), "stopped: iteration 1")
	require.Equal(t, "MPATHFS-LOCKLOOP", string(metadataBlock("a", 1, time.Unix(0, 0))[:16]))
}

type failing struct{}

func (failing) Reserve6(context.Context) error            { return errors.New("path gone") }
func (failing) Release6(context.Context) error            { return nil }
func (failing) UpdateMetadata(context.Context, int) error { return nil }
