package fault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
)

// landOp runs a write-class operation of 4 KiB at off: a write of 0xab
// bytes, a discard or a write-zeroes.
func landOp(ctx context.Context, b backends.Backend, op string, off int64) error {
	switch op {
	case "write":
		_, err := b.WriteAt(ctx, bytes.Repeat([]byte{0xab}, 4096), off)
		return err
	case "discard":
		return b.(backends.Discarder).Discard(ctx, off, 4096)
	case "zero":
		return b.(backends.ZeroWriter).WriteZeroes(ctx, off, 4096)
	}
	panic("unknown op " + op)
}

// block returns a copy of the 4 KiB of m at off.
func (m *mem) block(off int64) []byte {
	return m.Bytes(off, 4096)
}

func (m *mem) fill(v byte) {
	m.Update(func(d []byte) {
		for i := range d {
			d[i] = v
		}
	})
}

// settled reports whether the channel is closed.
func settled(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// asPending extracts the backends.Pending from err.
func asPending(t *testing.T, err error) backends.Pending {
	t.Helper()
	var p backends.Pending
	require.True(t, errors.As(err, &p), "error %v is not a backends.Pending", err)
	return p
}

func TestLandLateWriteClass(t *testing.T) {
	for _, c := range []struct {
		op   string
		want byte // the block's bytes once the operation landed
	}{{"write", 0xab}, {"discard", 0}, {"zero", 0}} {
		t.Run(c.op, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fb, m := newFB(t, 1)
				m.fill(0xff)
				inject(t, fb, "--land-late 3s --op write,discard")
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				start := time.Now()
				err := landOp(ctx, fb, c.op, 8192)

				// The caller saw a hang until its deadline, then a path
				// failure that is a Pending, not settled yet.
				require.Error(t, err)
				assert.Equal(t, time.Second, time.Since(start), "the caller returns at its deadline")
				assert.ErrorIs(t, err, ioerr.ErrPathFailure)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				p := asPending(t, err)
				assert.False(t, settled(p.Settled()), "settled before the operation landed")
				assert.Contains(t, p.WaitingFor(), "land the")
				assert.Equal(t, bytes.Repeat([]byte{0xff}, 4096), m.block(8192), "the operation landed before D")
				assert.Equal(t, int64(1), fb.Landing())
				assert.Equal(t, int64(1), fb.List()[0].Landing)

				// It lands exactly D after it was issued, then settles.
				<-p.Settled()
				assert.Equal(t, 3*time.Second, time.Since(start), "landed at the wrong time")
				assert.Equal(t, bytes.Repeat([]byte{c.want}, 4096), m.block(8192), "the late operation did not land")
				assert.Equal(t, bytes.Repeat([]byte{0xff}, 4096), m.block(4096), "the neighbour changed")
				assert.Equal(t, int64(0), fb.Landing())
			})
		})
	}
}

// TestLandLateCopiesTheBuffer: the caller may reuse its buffer once the
// call returned (the backends contract); the late write carries the data
// as it was when the write was issued.
func TestLandLateCopiesTheBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--land-late 2s --op write")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		buf := bytes.Repeat([]byte{0x11}, 4096)
		_, err := fb.WriteAt(ctx, buf, 0)
		p := asPending(t, err)
		copy(buf, bytes.Repeat([]byte{0x22}, 4096))
		<-p.Settled()
		assert.Equal(t, bytes.Repeat([]byte{0x11}, 4096), m.block(0))
	})
}

// TestLandLateRollsBack is the hazard itself: the attempt that timed out
// lands after a newer write to the same block and rolls it back.
func TestLandLateRollsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		id := inject(t, fb, "--land-late 2s --op write --count 1")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := fb.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), 0)
		p := asPending(t, err)
		// the retry (here on the same decorator: the fault is exhausted)
		// and a newer write are acknowledged
		_, err = fb.WriteAt(t.Context(), bytes.Repeat([]byte{1}, 4096), 0)
		require.NoError(t, err)
		_, err = fb.WriteAt(t.Context(), bytes.Repeat([]byte{2}, 4096), 0)
		require.NoError(t, err)
		l := fb.List()
		require.Len(t, l, 1)
		assert.True(t, l[0].Exhausted, "an exhausted land-late fault stays listed")
		<-p.Settled()
		assert.Equal(t, bytes.Repeat([]byte{1}, 4096), m.block(0), "the stale attempt did not roll the block back")
		require.NoError(t, fb.Clear(id))
	})
}

// TestLandLateSettledOnlyAfterLanding: Settled closes once the late
// execution returned, not when it started.
func TestLandLateSettledOnlyAfterLanding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newMem(memSize)
		g := &gated{mem: m, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
		fb := fault.Wrap(g, 1)
		inject(t, fb, "--land-late 2s --op write")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := fb.WriteAt(ctx, bytes.Repeat([]byte{7}, 4096), 0)
		p := asPending(t, err)
		<-g.entered // the late write reached the store and is stuck there
		synctest.Wait()
		assert.False(t, settled(p.Settled()), "settled while the late write was still running")
		close(g.gate)
		<-p.Settled()
		assert.Equal(t, bytes.Repeat([]byte{7}, 4096), m.block(0))
	})
}

// gated is a store whose writes wait for gate.
type gated struct {
	*mem
	gate    chan struct{}
	entered chan struct{}
}

func (g *gated) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	g.entered <- struct{}{}
	<-g.gate
	return g.mem.WriteAt(ctx, p, off)
}

func TestLandLateSilent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--land-late 2s --op write --silent")
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		start := time.Now()
		res := make(chan error, 1)
		go func() {
			_, err := fb.WriteAt(ctx, bytes.Repeat([]byte{9}, 4096), 0)
			res <- err
		}()
		time.Sleep(time.Second)
		fb.Abort(errors.New("I/O deadline"))
		synctest.Wait()
		select {
		case err := <-res:
			t.Fatalf("Abort ended the silent wait: %v", err)
		default:
		}
		err := <-res
		assert.Equal(t, 5*time.Second, time.Since(start), "the silent caller returns at its own deadline")
		assert.ErrorIs(t, err, ioerr.ErrPathFailure)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var p backends.Pending
		assert.False(t, errors.As(err, &p), "a silent land-late error is a Pending: %v", err)
		// it landed at 2s all the same
		assert.Equal(t, bytes.Repeat([]byte{9}, 4096), m.block(0))
		assert.Equal(t, int64(0), fb.Landing())
	})
}

func TestLandLateAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--land-late 3s --op write")
		res := make(chan error, 1)
		go func() {
			_, err := fb.WriteAt(t.Context(), bytes.Repeat([]byte{5}, 4096), 0)
			res <- err
		}()
		time.Sleep(time.Second)
		reason := errors.New("I/O deadline of the other write")
		fb.Abort(reason)
		err := <-res
		assert.ErrorIs(t, err, ioerr.ErrPathFailure)
		assert.ErrorIs(t, err, reason)
		p := asPending(t, err)
		assert.False(t, settled(p.Settled()))
		<-p.Settled()
		assert.Equal(t, bytes.Repeat([]byte{5}, 4096), m.block(0))
	})
}

// TestLandLateClearDoesNotCancel: clearing the fault neither releases the
// caller (the server never answers) nor cancels the late landing.
func TestLandLateClearDoesNotCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		id := inject(t, fb, "--land-late 2s --op write")
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
		defer cancel()
		start := time.Now()
		res := make(chan error, 1)
		go func() {
			_, err := fb.WriteAt(ctx, bytes.Repeat([]byte{3}, 4096), 0)
			res <- err
		}()
		time.Sleep(time.Second)
		require.NoError(t, fb.Clear(id))
		assert.Empty(t, fb.List())
		err := <-res
		assert.Equal(t, 4*time.Second, time.Since(start))
		p := asPending(t, err)
		assert.True(t, settled(p.Settled()), "landed at 2s, before the caller's deadline")
		assert.Equal(t, bytes.Repeat([]byte{3}, 4096), m.block(0))
		// a new write, with the fault gone, goes straight through
		_, err = fb.WriteAt(t.Context(), bytes.Repeat([]byte{4}, 4096), 0)
		require.NoError(t, err)
		assert.Equal(t, bytes.Repeat([]byte{4}, 4096), m.block(0))
	})
}

func TestLandLateClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, _ := newFB(t, 1)
		inject(t, fb, "--land-late 2s --op write --silent")
		res := make(chan error, 1)
		go func() {
			_, err := fb.WriteAt(t.Context(), make([]byte, 4096), 0)
			res <- err
		}()
		synctest.Wait()
		require.NoError(t, fb.Close())
		err := <-res
		assert.ErrorIs(t, err, fault.ErrClosed)
		assert.ErrorIs(t, err, ioerr.ErrPathFailure)
		time.Sleep(3 * time.Second) // the late write meets the closed store
		assert.Equal(t, int64(0), fb.Landing())
	})
}

// TestLandLateReadsHangAndDrop: a read matched by a land-late fault is
// held until its deadline, then dropped: it never reaches the store, now
// or later, and its error is a settled Pending.
func TestLandLateReadsHangAndDrop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--land-late 1s")
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := fb.ReadAt(ctx, make([]byte, 4096), 0)
		assert.Equal(t, 3*time.Second, time.Since(start))
		assert.ErrorIs(t, err, ioerr.ErrPathFailure)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		p := asPending(t, err)
		assert.True(t, settled(p.Settled()), "a dropped read is settled")
		time.Sleep(time.Hour)
		assert.Equal(t, int64(0), m.ops.Load(), "the dropped read reached the store")
		assert.Equal(t, int64(0), fb.Landing())
	})
}

func TestLandLateSpec(t *testing.T) {
	for _, c := range []struct {
		args string
		want fault.Spec
	}{
		{"--land-late 2s", fault.Spec{LandLate: 2 * time.Second}},
		{"--land-late=500ms --op write --silent", fault.Spec{LandLate: 500 * time.Millisecond, Ops: []string{"write"}, Silent: true}},
		{"--land-late 1s --op write-zeroes --count 3 --probability 10%", fault.Spec{LandLate: time.Second, Ops: []string{"write-zeroes"}, Count: 3, Probability: 0.1}},
	} {
		got, err := fault.ParseArgs(strings.Fields(c.args))
		if assert.NoError(t, err, c.args) {
			assert.Equal(t, c.want, got, c.args)
			back, err := fault.ParseArgs(got.Args())
			assert.NoError(t, err)
			assert.Equal(t, got, back, "Args round trip of %q", c.args)
			j, err := json.Marshal(got)
			require.NoError(t, err)
			var fromJSON fault.Spec
			require.NoError(t, json.Unmarshal(j, &fromJSON))
			assert.Equal(t, got, fromJSON, "JSON round trip of %s", j)
		}
	}
	j, err := json.Marshal(fault.Spec{LandLate: 1500 * time.Millisecond, Silent: true, Ops: []string{"write"}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"land_late":"1.5s","silent":true,"ops":["write"]}`, string(j))

	for _, c := range []struct{ args, want string }{
		{"--land-late", "--land-late needs a value"},
		{"--land-late soon", `--land-late "soon": want --land-late DURATION`},
		{"--land-late 0s", `--land-late "0s"`},
		{"--land-late -1s", `--land-late "-1s"`},
		{"--silent", "--silent needs --land-late"},
		{"--latency 1ms --silent", "--silent needs --land-late"},
		{"--land-late 1s --error path-failure", "--land-late and --error exclude each other"},
		{"--land-late 1s --hang", "--land-late and --hang exclude each other"},
		{"--land-late 1s --latency 5ms", "--land-late excludes --latency"},
		{"--land-late 1s --slow 2", "--land-late excludes --latency, --jitter, --slow and --bandwidth"},
		{"--land-late 1s --op read,flush", "--land-late never lands anything with --op read,flush: add write or discard"},
		{"--land-late 1s --silent=perhaps", `--silent "perhaps": want --silent or --silent=true|false`},
	} {
		_, err := fault.ParseArgs(strings.Fields(c.args))
		if assert.Error(t, err, c.args) {
			assert.Contains(t, err.Error(), c.want, c.args)
		}
	}
	assert.ErrorContains(t, fault.Spec{LandLate: -time.Second}.Validate(), "--land-late -1s is negative")
}
