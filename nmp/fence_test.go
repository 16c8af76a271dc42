package nmp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/fusedev"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// The fencing tests run a device over two fake paths, A and B, to one
// in-memory store. A can hold write-class operations the way a stopped NBD
// server holds the requests in its socket: the operation times out on the
// path and may land later, when the test says so.

// fenceStore is the store both fake paths lead to. Writes are applied to
// it in the order they land; check, when set, sees each landing first.
type fenceStore struct {
	*backendtest.Mem
	check func(off int64, p []byte) // called under the store's lock
}

func (s *fenceStore) apply(off int64, p []byte) {
	s.Update(func(d []byte) {
		if s.check != nil {
			s.check(off, p)
		}
		copy(d[off:], p)
	})
}

func (s *fenceStore) get(off, n int64) []byte { return s.Bytes(off, n) }

// fenceMode is what a fake path does with a write-class operation.
type fenceMode int

const (
	fenceHealthy fenceMode = iota
	// fenceHoldPending: hold it; at the deadline return a Pending that
	// settles when the test lands or drops it.
	fenceHoldPending
	// fenceHoldNoProof: hold it; at the deadline return a plain error
	// (a transport that cannot prove anything); it may still land.
	fenceHoldNoProof
	// fenceDropSettled: hold it; at the deadline return a settled
	// Pending (the operation was dropped and cannot land).
	fenceDropSettled
)

// fenceHeld is a write-class operation a fake path holds.
type fenceHeld struct {
	off  int64
	data []byte
	done chan struct{} // the Pending's Settled
	once sync.Once
}

type fenceFake struct {
	name  string
	store *fenceStore

	mu     sync.Mutex
	mode   fenceMode
	grey   bool // probes pass whatever the mode
	held   []*fenceHeld
	closed chan struct{}

	writes atomic.Int64 // write-class operations that landed at once
}

var (
	_ backends.Backend    = (*fenceFake)(nil)
	_ backends.ZeroWriter = (*fenceFake)(nil)
	_ backends.Prober     = (*fenceFake)(nil)
)

func newFenceFake(name string, s *fenceStore) *fenceFake {
	return &fenceFake{name: name, store: s, closed: make(chan struct{})}
}

func (f *fenceFake) setMode(m fenceMode) {
	f.mu.Lock()
	f.mode = m
	f.mu.Unlock()
}

func (f *fenceFake) write(ctx context.Context, off int64, p []byte) error {
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	if mode == fenceHealthy {
		f.store.apply(off, p)
		f.writes.Add(1)
		return nil
	}
	h := &fenceHeld{off: off, data: append([]byte(nil), p...), done: make(chan struct{})}
	if mode != fenceDropSettled {
		f.mu.Lock()
		f.held = append(f.held, h)
		f.mu.Unlock()
	}
	select {
	case <-ctx.Done():
	case <-f.closed:
	}
	err := fmt.Errorf("fake %s: server does not answer: %w", f.name, context.DeadlineExceeded)
	switch mode {
	case fenceHoldPending:
		return &backends.PendingError{Err: err, Done: h.done, Waiting: "the fake server's late reply"}
	case fenceDropSettled:
		return &backends.PendingError{Err: err, Done: backends.Settled, Waiting: "nothing"}
	}
	return err
}

// land executes every held operation now, in the order they came, and
// settles their Pendings.
func (f *fenceFake) land() int {
	f.mu.Lock()
	held := f.held
	f.held = nil
	f.mu.Unlock()
	for _, h := range held {
		h.once.Do(func() {
			f.store.apply(h.off, h.data)
			close(h.done)
		})
	}
	return len(held)
}

// settleOne executes one held operation (by index), or drops it.
func (f *fenceFake) settleOne(i int, execute bool) {
	f.mu.Lock()
	h := f.held[i]
	f.held = append(f.held[:i:i], f.held[i+1:]...)
	f.mu.Unlock()
	h.once.Do(func() {
		if execute {
			f.store.apply(h.off, h.data)
		}
		close(h.done)
	})
}

// settleAt settles the held operation at off (executing it or not).
func (f *fenceFake) settleAt(off int64, execute bool) {
	f.mu.Lock()
	i := slices.IndexFunc(f.held, func(h *fenceHeld) bool { return h.off == off })
	f.mu.Unlock()
	f.settleOne(i, execute)
}

func (f *fenceFake) heldCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

func (f *fenceFake) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	copy(p, f.store.get(off, int64(len(p))))
	return len(p), nil
}

func (f *fenceFake) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.write(ctx, off, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (f *fenceFake) WriteZeroes(ctx context.Context, off, length int64) error {
	return f.write(ctx, off, make([]byte, length))
}

func (f *fenceFake) Probe(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode != fenceHealthy && !f.grey {
		return errors.New("fake: server does not answer")
	}
	return nil
}

func (f *fenceFake) Flush(ctx context.Context) error { return nil }
func (f *fenceFake) Size() int64                     { return f.store.Size() }

func (f *fenceFake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
	return nil
}

type fenceRig struct {
	d      *Device
	store  *fenceStore
	a, b   *fenceFake
	events *mpath.Subscription
}

const fenceIOTimeout = time.Second

// newFenceRig makes a device over A and B, VMW_PSP_FIXED (A preferred), a
// 1 s I/O deadline, a 30 s APD timeout, and a checker that never runs by
// itself.
func newFenceRig(t *testing.T, edit func(cfg *mpath.DeviceConfig, a, b *mpath.Path)) *fenceRig {
	t.Helper()
	r := &fenceRig{store: &fenceStore{Mem: backendtest.NewMem(1 << 20)}}
	r.a, r.b = newFenceFake("A", r.store), newFenceFake("B", r.store)
	pa := &mpath.Path{Name: "A", URI: "fake://A", Transport: "fake", Location: mpath.Location{Adapter: 1}, Backend: r.a}
	pb := &mpath.Path{Name: "B", URI: "fake://B", Transport: "fake", Location: mpath.Location{Adapter: 2}, Backend: r.b}
	cfg := mpath.DeviceConfig{Name: "fence", PSP: PSPFixed, IOTimeout: fenceIOTimeout, APDTimeout: 30 * time.Second, CheckInterval: time.Hour}
	if edit != nil {
		edit(&cfg, pa, pb)
	}
	events := &mpath.Events{}
	r.events = events.Subscribe(4096)
	d, err := NewDevice(cfg, []*mpath.Path{pa, pb}, events)
	require.NoError(t, err)
	r.d = d
	t.Cleanup(func() { d.Close() })
	return r
}

func fenceFill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// goWrite starts a write in the background.
func (r *fenceRig) goWrite(off int64, p []byte) <-chan error {
	c := make(chan error, 1)
	go func() {
		_, err := r.d.WriteAt(context.Background(), p, off)
		c <- err
	}()
	return c
}

func (r *fenceRig) goZero(off, n int64) <-chan error {
	c := make(chan error, 1)
	go func() { c <- r.d.WriteZeroes(context.Background(), off, n) }()
	return c
}

// fenceWaiting reports whether a background I/O is still waiting once
// every goroutine in the bubble is blocked.
func fenceWaiting(t *testing.T, c <-chan error) bool {
	t.Helper()
	synctest.Wait()
	select {
	case err := <-c:
		t.Errorf("I/O finished (error: %v) while it should wait", err)
		return false
	default:
		return true
	}
}

// eventsOf returns the events of the given kinds published so far.
func (r *fenceRig) eventsOf(kinds ...string) []mpath.Event {
	synctest.Wait()
	var out []mpath.Event
	for {
		select {
		case ev := <-r.events.C:
			for _, k := range kinds {
				if ev.Kind == k {
					out = append(out, ev)
				}
			}
		default:
			return out
		}
	}
}

// TestFenceRetryWaitsForSettle is the rollback bug: a write hung on A
// times out; its retry on B must wait until A's copy can no longer land,
// or the newer write that follows the acknowledgement would be rolled back
// when A's server finally executes the old request.
func TestFenceRetryWaitsForSettle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceHoldPending)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		require.True(t, fenceWaiting(t, w1))
		assert.Zero(t, r.b.writes.Load(), "the retry was issued while A's copy may still land")
		amb := r.d.Status().Ambiguous
		require.Len(t, amb, 1)
		assert.Equal(t, "A", amb[0].Path)
		assert.Equal(t, "write", amb[0].Op)
		assert.Equal(t, int64(0), amb[0].Offset)
		assert.Equal(t, int64(4096), amb[0].Length)
		assert.Equal(t, "the fake server's late reply", amb[0].WaitingFor)
		assert.False(t, amb[0].Expired)
		assert.Equal(t, mpath.StateDead, r.d.FindPath("A").State())

		// A's server resumes and executes the old request; the proof
		// releases the retry, which lands on B and is acknowledged.
		require.Equal(t, 1, r.a.land())
		require.NoError(t, <-w1)
		assert.Equal(t, int64(1), r.b.writes.Load())
		assert.Empty(t, r.d.Status().Ambiguous)
		// The newer write after the acknowledgement stays.
		_, err := r.d.WriteAt(context.Background(), fenceFill(2, 4096), 0)
		require.NoError(t, err)
		assert.Equal(t, fenceFill(2, 4096), r.store.get(0, 4096))

		evs := r.eventsOf("write-ambiguous", "ambiguity-resolved")
		require.Len(t, evs, 2)
		assert.Equal(t, "A", evs[0].Path)
		assert.Contains(t, evs[0].Reason, "write of bytes 0+4096 may still land")
		assert.Equal(t, ResolvedSettled, evs[1].To)
		assert.True(t, strings.HasPrefix(evs[1].Reason, "settled: write of bytes 0+4096"), evs[1].Reason)
	})
}

// TestFenceOverlapWaitsOthersPass: while a range is ambiguous, later
// write-class operations overlapping it wait; a write elsewhere and reads
// (even of the ambiguous range) go through at once.
func TestFenceOverlapWaitsOthersPass(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceHoldPending)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		require.True(t, fenceWaiting(t, w1))

		w2 := r.goWrite(2048, fenceFill(2, 4096)) // overlaps the tail
		wz := r.goZero(4095, 2)                   // overlaps the last byte
		require.True(t, fenceWaiting(t, w2))
		require.True(t, fenceWaiting(t, wz))

		_, err := r.d.WriteAt(context.Background(), fenceFill(3, 4096), 4096) // adjacent, no overlap
		require.NoError(t, err)
		buf := make([]byte, 8192)
		_, err = r.d.ReadAt(context.Background(), buf, 0)
		require.NoError(t, err)
		assert.Equal(t, make([]byte, 4096), buf[:4096], "the held write has not landed")
		assert.Equal(t, fenceFill(3, 4096), buf[4096:])

		r.a.land()
		for _, c := range []<-chan error{w1, w2, wz} {
			require.NoError(t, <-c)
		}
		assert.Empty(t, r.d.Status().Ambiguous)
		// w2 alone wrote bytes 4097..6143 (wz zeroed 4095 and 4096).
		assert.Equal(t, fenceFill(2, 6144-4097), r.store.get(4097, 6144-4097))
	})
}

// TestFenceSettledPendingIsNotAmbiguous: a Pending that is settled already
// (the fault decorator dropped the operation) and a definitive error leave
// nothing behind: the retry runs at once.
func TestFenceSettledPendingIsNotAmbiguous(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceDropSettled)
		_, err := r.d.WriteAt(context.Background(), fenceFill(1, 4096), 0)
		require.NoError(t, err)
		assert.Empty(t, r.d.Status().Ambiguous)
		assert.Empty(t, r.eventsOf("write-ambiguous"))
		assert.Equal(t, fenceFill(1, 4096), r.store.get(0, 4096))
	})
}

// TestFencePathFence: a timeout with no proof from the transport waits for
// the operator's `path fence`, which resolves every range of the path.
func TestFencePathFence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceHoldNoProof)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		w2 := r.goWrite(65536, fenceFill(2, 512))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		require.True(t, fenceWaiting(t, w1))
		require.True(t, fenceWaiting(t, w2))
		amb := r.d.Status().Ambiguous
		require.Len(t, amb, 2)
		assert.Contains(t, amb[0].WaitingFor, "`mpathfs path fence A`")

		n, err := r.d.FencePath("B")
		require.NoError(t, err)
		assert.Zero(t, n, "B left no range")
		require.True(t, fenceWaiting(t, w1))
		_, err = r.d.FencePath("nope")
		require.Error(t, err)

		n, err = r.d.FencePath("A")
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		require.NoError(t, <-w1)
		require.NoError(t, <-w2)
		assert.Equal(t, fenceFill(1, 4096), r.store.get(0, 4096))
		n, err = r.d.FencePath("fake://A") // by URI; nothing left
		require.NoError(t, err)
		assert.Zero(t, n)
		evs := r.eventsOf("ambiguity-resolved")
		require.Len(t, evs, 2)
		for _, ev := range evs {
			assert.Equal(t, ResolvedFenced, ev.To)
		}
	})
}

// TestFenceQuiesce: a path with a quiesce time resolves its ranges that
// long after they were registered, without proof or operator.
func TestFenceQuiesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, func(_ *mpath.DeviceConfig, a, _ *mpath.Path) { a.Quiesce = 3 * time.Second })
		r.a.setMode(fenceHoldNoProof)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		amb := r.d.Status().Ambiguous
		require.Len(t, amb, 1)
		assert.Contains(t, amb[0].WaitingFor, "quiesce time (3s)")
		assert.Equal(t, "3s", r.d.FindPath("A").Status().Quiesce)
		time.Sleep(3*time.Second - 2*time.Millisecond)
		require.True(t, fenceWaiting(t, w1), "released before the quiesce time passed")
		time.Sleep(2 * time.Millisecond)
		require.NoError(t, <-w1)
		evs := r.eventsOf("ambiguity-resolved")
		require.Len(t, evs, 1)
		assert.Equal(t, ResolvedQuiesce, evs[0].To)
	})
}

// TestFenceAPDExpiry: a range older than the APD timeout fails the writes
// waiting on it, and later overlapping writes, with an EIO-class error that
// says why; the range stays until proof (here: the operator's fence).
func TestFenceAPDExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, func(cfg *mpath.DeviceConfig, _, _ *mpath.Path) { cfg.APDTimeout = 10 * time.Second })
		r.a.setMode(fenceHoldNoProof)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		require.True(t, fenceWaiting(t, w1))
		time.Sleep(10 * time.Second)
		err := <-w1
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrWriteAmbiguous)
		assert.ErrorIs(t, err, ioerr.ErrPathFailure)
		assert.Equal(t, syscall.EIO, fusedev.ToErrno(err))
		for _, want := range []string{"path A", "bytes 0+4096", "ambiguous for 10s", "APD timeout 10s", "`mpathfs path fence A` confirms the path dead", "`mpathfs path fence A` (the transport gives no proof)"} {
			assert.Contains(t, err.Error(), want)
		}
		// Later overlapping writes fail at once; others pass; reads pass.
		err = r.d.WriteZeroes(context.Background(), 512, 512)
		assert.ErrorIs(t, err, ErrWriteAmbiguous)
		_, err = r.d.WriteAt(context.Background(), fenceFill(2, 512), 8192)
		require.NoError(t, err)
		_, err = r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
		require.NoError(t, err)
		amb := r.d.Status().Ambiguous
		require.Len(t, amb, 1)
		assert.True(t, amb[0].Expired)
		evs := r.eventsOf("ambiguous-expired")
		require.Len(t, evs, 1)
		assert.Contains(t, evs[0].Reason, "bytes 0+4096")

		n, err := r.d.FencePath("A")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		_, err = r.d.WriteAt(context.Background(), fenceFill(3, 4096), 0)
		require.NoError(t, err)
		assert.Equal(t, fenceFill(3, 4096), r.store.get(0, 4096))
	})
}

// TestFenceCloseReleasesWaiters: Close fails every waiting write with
// ErrClosed; nothing hangs.
func TestFenceCloseReleasesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceHoldPending)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		w2 := r.goWrite(0, fenceFill(2, 4096))
		require.True(t, fenceWaiting(t, w1))
		require.True(t, fenceWaiting(t, w2))
		require.NoError(t, r.d.Close())
		assert.ErrorIs(t, <-w1, ioerr.ErrClosed)
		assert.ErrorIs(t, <-w2, ioerr.ErrClosed)
		assert.Empty(t, r.d.Status().Ambiguous)
		evs := r.eventsOf("ambiguity-resolved")
		require.Len(t, evs, 1)
		assert.Equal(t, ResolvedClosed, evs[0].To)
		// A late settle after Close is harmless.
		r.a.land()
	})
}

// TestFenceCallerGivesUp: a write waiting on a range returns when its
// caller's context ends; the range stays.
func TestFenceCallerGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceHoldPending)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		time.Sleep(fenceIOTimeout + time.Millisecond)
		require.True(t, fenceWaiting(t, w1))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := r.d.WriteAt(ctx, fenceFill(2, 4096), 0)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Len(t, r.d.Status().Ambiguous, 1)
		r.a.land()
		require.NoError(t, <-w1)
	})
}

// TestFenceNeverRollsBack: writers rewrite their own blocks, each new
// version only after the previous one was acknowledged, over two paths
// (round robin) while A keeps hanging and coming back, its held writes
// landing late in random order or being dropped. Every write is applied
// to the store in the order it lands; no landing may carry a version older
// than the block's acknowledged one, and at the end every block holds its
// last acknowledged version.
func TestFenceNeverRollsBack(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { fenceNeverRollsBack(t, seed) })
	}
}

func fenceNeverRollsBack(t *testing.T, seed uint64) {
	synctest.Test(t, func(t *testing.T) {
		const (
			blocks   = 8
			bs       = 512
			versions = 40
		)
		r := newFenceRig(t, func(cfg *mpath.DeviceConfig, _, _ *mpath.Path) {
			cfg.PSP, cfg.PSPOptions = PSPRR, map[string]string{"iops": "1"}
			cfg.CheckInterval = 500 * time.Millisecond
			cfg.FlapThreshold = 1 << 20 // A comes back at every check
		})
		r.a.grey = true // A passes probes while it holds writes: it keeps coming back
		var acked [blocks]atomic.Int64
		var violations atomic.Int64
		var firstViolation atomic.Pointer[string]
		r.store.check = func(off int64, p []byte) {
			for o := off - off%bs; o < off+int64(len(p)); o += bs {
				if o < off || o+bs > off+int64(len(p)) || o/bs >= blocks {
					continue
				}
				v := int64(binary.LittleEndian.Uint64(p[o-off:]))
				if a := acked[o/bs].Load(); v < a {
					violations.Add(1)
					msg := fmt.Sprintf("block %d: version %d landed after version %d was acknowledged", o/bs, v, a)
					firstViolation.CompareAndSwap(nil, &msg)
				}
			}
		}
		rng := rand.New(rand.NewPCG(seed, 2))
		t0 := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, blocks)
		for b := range blocks {
			wg.Go(func() {
				buf := make([]byte, bs)
				for v := int64(1); v <= versions; v++ {
					binary.LittleEndian.PutUint64(buf, uint64(v))
					if _, err := r.d.WriteAt(context.Background(), buf, int64(b)*bs); err != nil {
						errs <- fmt.Errorf("block %d version %d: %w", b, v, err)
						return
					}
					acked[b].Store(v)
					time.Sleep(time.Duration(b+1) * 37 * time.Millisecond)
				}
			})
		}
		stop := make(chan struct{})
		var chaos sync.WaitGroup
		chaos.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(100+rng.IntN(900)) * time.Millisecond):
				}
				switch k := rng.IntN(5); {
				case k <= 1:
					r.a.setMode([]fenceMode{fenceHoldPending, fenceDropSettled, fenceHoldPending}[rng.IntN(3)])
				case k == 2:
					r.a.setMode(fenceHealthy)
				default:
					for n := r.a.heldCount(); n > 0; n = r.a.heldCount() {
						r.a.settleOne(rng.IntN(n), rng.IntN(3) > 0)
						if rng.IntN(2) == 0 {
							break
						}
					}
				}
			}
		})
		wg.Wait()
		close(stop)
		chaos.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		r.a.setMode(fenceHealthy)
		r.a.land()
		if m := firstViolation.Load(); m != nil {
			t.Fatalf("%d rollbacks; first: %s", violations.Load(), *m)
		}
		for b := range blocks {
			got := int64(binary.LittleEndian.Uint64(r.store.get(int64(b)*bs, 8)))
			assert.Equal(t, acked[b].Load(), got, "block %d", b)
			assert.Equal(t, int64(versions), got, "block %d", b)
		}
		t.Logf("%d writes became ambiguous; A landed %d at once, B %d; %s", len(r.eventsOf("write-ambiguous")), r.a.writes.Load(), r.b.writes.Load(), time.Since(t0))
	})
}

// TestFenceManyRanges: a write overlapping two ambiguous ranges waits for
// both; a held write-zeroes is ambiguous like a write; a write whose caller
// gave up still leaves its range; a removed path's ranges can be fenced by
// its name.
func TestFenceManyRanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFenceRig(t, nil)
		r.a.setMode(fenceHoldPending)
		w1 := r.goWrite(0, fenceFill(1, 4096))
		wz := r.goZero(8192, 4096)
		ctx, cancel := context.WithCancel(context.Background())
		gaveUp := make(chan error, 1)
		go func() {
			_, err := r.d.WriteAt(ctx, fenceFill(5, 512), 65536)
			gaveUp <- err
		}()
		synctest.Wait()
		cancel() // the caller leaves while A holds its write
		assert.ErrorIs(t, <-gaveUp, context.Canceled)
		time.Sleep(fenceIOTimeout + time.Millisecond)
		amb := r.d.Status().Ambiguous
		require.Len(t, amb, 3)
		ops := map[string]int64{}
		for _, a := range amb {
			ops[a.Op] += a.Length
		}
		assert.Equal(t, map[string]int64{"write": 4096 + 512, "write-zeroes": 4096}, ops)

		w2 := r.goWrite(2048, fenceFill(2, 8192)) // overlaps the write and the write-zeroes
		require.True(t, fenceWaiting(t, w2))
		r.a.settleAt(0, true) // w1's copy lands
		require.NoError(t, <-w1)
		require.True(t, fenceWaiting(t, w2), "released while the write-zeroes may still land")
		require.NoError(t, r.d.RemovePath("A"))
		n, err := r.d.FencePath("A")
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		require.NoError(t, <-w2)
		require.NoError(t, <-wz)
		// w2 and the retry of wz ran concurrently: only where one of them
		// alone wrote is the content known.
		assert.Equal(t, fenceFill(2, 6144), r.store.get(2048, 6144))
		assert.Equal(t, make([]byte, 2048), r.store.get(10240, 2048))
		assert.Empty(t, r.d.Status().Ambiguous)
	})
}
