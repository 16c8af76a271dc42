package fault_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
)

const memSize = 1 << 20

func newFB(t testing.TB, seed uint64) (*fault.Backend, *mem) {
	t.Helper()
	m := newMem(memSize)
	return fault.Wrap(m, seed), m
}

// inject parses a spec from a CLI-style line and injects it.
func inject(t testing.TB, fb *fault.Backend, line string) int {
	t.Helper()
	spec, err := fault.ParseArgs(strings.Fields(line))
	if err != nil {
		t.Fatalf("ParseArgs(%q): %v", line, err)
	}
	id, err := fb.Inject(spec)
	if err != nil {
		t.Fatalf("Inject(%q): %v", line, err)
	}
	return id
}

// do runs one operation named like a Spec's ops ("zero" for write-zeroes).
func do(ctx context.Context, b backends.Backend, op string, off, n int64) error {
	switch op {
	case "read":
		_, err := b.ReadAt(ctx, make([]byte, n), off)
		return err
	case "write":
		_, err := b.WriteAt(ctx, make([]byte, n), off)
		return err
	case "flush":
		return b.Flush(ctx)
	case "discard":
		return b.(backends.Discarder).Discard(ctx, off, n)
	case "zero":
		return b.(backends.ZeroWriter).WriteZeroes(ctx, off, n)
	case "probe":
		return b.(backends.Prober).Probe(ctx)
	}
	panic("unknown op " + op)
}

// outcomes runs n 4k reads and returns "." for each success, "X" for each
// failure.
func outcomes(b backends.Backend, n int) string {
	var s strings.Builder
	for i := 0; i < n; i++ {
		if err := do(context.Background(), b, "read", int64(i%64)*4096, 4096); err != nil {
			s.WriteByte('X')
		} else {
			s.WriteByte('.')
		}
	}
	return s.String()
}

func newFileStore(t *testing.T, size int64) backends.Backend {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	b, err := backends.OpenFile(name, backends.FileOptions{Inline: true}) // inline: sysio's workers would outlive a synctest bubble
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		return fault.Wrap(newFileStore(t, size), 1)
	})
}

// TestConformanceFaultsActive runs the suite with faults active that never
// change an outcome, so the slow path keeps the contract too.
func TestConformanceFaultsActive(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		fb := fault.Wrap(newFileStore(t, size), 1)
		inject(t, fb, "--latency 1us --jitter 1us")
		inject(t, fb, "--error device-error --op read --range 0:4k --after 1000000")
		return fb
	})
}

func TestFilters(t *testing.T) {
	type probe struct {
		op      string
		off, n  int64
		failing bool
	}
	for _, c := range []struct {
		spec   string
		probes []probe
	}{
		{"--error path-failure", []probe{
			{"read", 0, 4096, true}, {"write", 0, 4096, true}, {"flush", 0, 0, true},
			{"discard", 0, 4096, true}, {"zero", 0, 4096, true}, {"probe", 0, 0, true}}},
		{"--error path-failure --op write", []probe{
			{"read", 0, 4096, false}, {"write", 0, 4096, true}, {"flush", 0, 0, false}, {"probe", 0, 0, false}}},
		// The gray failure: the checker's probe passes, data I/O fails.
		{"--error path-failure --op read,write", []probe{
			{"probe", 0, 0, false}, {"read", 0, 4096, true}, {"write", 0, 4096, true}, {"flush", 0, 0, false}}},
		{"--error device-error --op discard", []probe{
			{"discard", 0, 4096, true}, {"zero", 0, 4096, true}, {"write", 0, 4096, false}}},
		{"--error path-failure --op flush --op probe", []probe{
			{"flush", 0, 0, true}, {"probe", 0, 0, true}, {"read", 0, 4096, false}}},
		{"--error device-error --range 8k:4k", []probe{
			{"read", 4096, 4096, false}, {"read", 8192, 4096, true}, {"read", 4096, 8192, true},
			{"read", 12288, 4096, false}, {"read", 8192 + 4095, 1, true}, {"write", 0, 65536, true},
			{"discard", 12288, 4096, false}, {"zero", 0, 12288, true},
			{"flush", 0, 0, false}, {"probe", 0, 0, false}}},
		{"--error device-error --offset 1M --length 1 --op write", []probe{
			{"write", 1<<20 - 4096, 4096, false}, {"read", 1<<20 - 4096, 4096, false}}},
	} {
		t.Run(c.spec, func(t *testing.T) {
			fb, _ := newFB(t, 1)
			inject(t, fb, c.spec)
			for _, p := range c.probes {
				err := do(t.Context(), fb, p.op, p.off, p.n)
				if (err != nil) != p.failing {
					t.Errorf("%s %d@%d: err = %v, want failing=%v", p.op, p.n, p.off, err, p.failing)
				}
			}
		})
	}
}

func TestTriggers(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{"--error path-failure", "XXXXXXXXXXXX"},
		{"--error path-failure --probability 1", "XXXXXXXXXXXX"},
		{"--error path-failure --every 3", "..X..X..X..X"},
		{"--error path-failure --after 4", "....XXXXXXXX"},
		{"--error path-failure --after 2 --every 3", "....X..X..X."},
		{"--error path-failure --count 2", "XX.........."},
		{"--error path-failure --every 2 --count 2", ".X.X........"},
		{"--error path-failure --after 10 --count 1", "..........X."},
		{"--error path-failure --after 1 --every 2 --count 3", "..X.X.X....."},
		{"--error path-failure --range 16k:8k", "....XX......"},
		{"--error path-failure --range 16k:16k --every 2", ".....X.X...."},
	} {
		t.Run(c.spec, func(t *testing.T) {
			fb, _ := newFB(t, 1)
			inject(t, fb, c.spec)
			if got := outcomes(fb, len(c.want)); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

func TestProbabilityRate(t *testing.T) {
	fb, _ := newFB(t, 42)
	inject(t, fb, "--error retryable --probability 25%")
	got := strings.Count(outcomes(fb, 4000), "X")
	if got < 850 || got > 1150 {
		t.Errorf("25%% of 4000 operations failed %d times", got)
	}
}

func TestErrorClasses(t *testing.T) {
	for _, c := range []struct {
		spec     string
		op       string
		sentinel error
		sense    *ioerr.Sense
	}{
		{"--error path-failure", "read", ioerr.ErrPathFailure, nil},
		{"--error retryable", "write", ioerr.ErrRetryable, &ioerr.Sense{Key: 0x0b}},
		{"--error busy", "read", ioerr.ErrRetryable, &ioerr.Sense{Key: 0x0b}},
		{"--error not-ready", "probe", ioerr.ErrNotReady, &ioerr.Sense{Key: 0x02, ASC: 0x04}},
		{"--error device-error", "read", ioerr.ErrDeviceError, &ioerr.SenseUnrecoveredRead},
		{"--error device-error", "write", ioerr.ErrDeviceError, &ioerr.Sense{Key: 0x03, ASC: 0x0c}},
		{"--error medium", "flush", ioerr.ErrDeviceError, &ioerr.Sense{Key: 0x03, ASC: 0x0c}},
		{"--error permanent-loss", "read", ioerr.ErrPermanentLoss, &ioerr.SenseLUNotSupported},
		{"--error retryable --sense 02/04/0a", "read", ioerr.ErrRetryable, &ioerr.SenseALUATransitioning},
		{"--error not-ready --sense 2/4/b", "write", ioerr.ErrNotReady, &ioerr.SenseALUAStandby},
	} {
		t.Run(c.spec+" "+c.op, func(t *testing.T) {
			fb, m := newFB(t, 1)
			id := inject(t, fb, c.spec)
			err := do(t.Context(), fb, c.op, 0, 4096)
			if !errors.Is(err, c.sentinel) {
				t.Fatalf("err = %v, want class %v", err, c.sentinel)
			}
			if !errors.Is(err, fault.ErrInjected) {
				t.Errorf("errors.Is(%v, ErrInjected) = false", err)
			}
			var ie *fault.InjectedError
			if !errors.As(err, &ie) || ie.ID != id {
				t.Errorf("InjectedError = %v, want ID %d", ie, id)
			}
			var me *ioerr.Error
			if !errors.As(err, &me) || me.Op != c.op {
				t.Errorf("Op = %q, want %q", me.Op, c.op)
			}
			sense, ok := ioerr.SenseOf(err)
			switch {
			case c.sense == nil && ok:
				t.Errorf("sense %v, want none", sense)
			case c.sense != nil && (!ok || sense != *c.sense):
				t.Errorf("sense %v (%v), want %v", sense, ok, *c.sense)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("injected fault #%d", id)) {
				t.Errorf("message %q does not name the fault", err)
			}
			if m.ops.Load() != 0 {
				t.Errorf("the failed operation reached the backend underneath")
			}
		})
	}
}

func TestLate(t *testing.T) {
	fb, m := newFB(t, 1)
	inject(t, fb, "--error path-failure --late --op write")
	w := []byte("landed")
	n, err := fb.WriteAt(t.Context(), w, 100)
	if n != 0 || !errors.Is(err, ioerr.ErrPathFailure) {
		t.Fatalf("WriteAt = %d, %v; want 0 and a path failure", n, err)
	}
	fb.ClearAll()
	r := make([]byte, len(w))
	if _, err := fb.ReadAt(t.Context(), r, 100); err != nil || string(r) != "landed" {
		t.Fatalf("after a late error the write did not land: %q, %v", r, err)
	}
	if m.ops.Load() != 2 {
		t.Errorf("backend saw %d operations, want 2", m.ops.Load())
	}
}

// elapsed runs f and returns how long it took (in a synctest bubble: fake
// time, exact).
func elapsed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func TestDelays(t *testing.T) {
	for _, c := range []struct {
		specs  []string
		opTime time.Duration
		op     string
		n      int64
		want   time.Duration
	}{
		{[]string{"--latency 20ms"}, 0, "read", 4096, 20 * time.Millisecond},
		{[]string{"--latency 20ms --op write"}, 0, "read", 4096, 0},
		{[]string{"--latency 20ms"}, 5 * time.Millisecond, "flush", 0, 25 * time.Millisecond},
		{[]string{"--latency 20ms --op read"}, 5 * time.Millisecond, "flush", 0, 5 * time.Millisecond},
		{[]string{"--slow 3"}, 10 * time.Millisecond, "write", 4096, 30 * time.Millisecond},
		{[]string{"--slow 2.5x --latency 1ms"}, 10 * time.Millisecond, "read", 4096, 26 * time.Millisecond},
		{[]string{"--bandwidth 1M"}, 0, "read", 256 << 10, 250 * time.Millisecond},
		{[]string{"--bandwidth 1M"}, 0, "flush", 0, 0},
		{[]string{"--bandwidth 4k/s --op write"}, 0, "read", 65536, 0},
		// stacking: delays add up, slow factors too
		{[]string{"--latency 10ms", "--latency 20ms --op read"}, 0, "read", 4096, 30 * time.Millisecond},
		{[]string{"--slow 2", "--slow 3"}, 10 * time.Millisecond, "read", 4096, 40 * time.Millisecond},
		{[]string{"--latency 10ms", "--error device-error"}, 0, "read", 4096, 10 * time.Millisecond},
	} {
		t.Run(strings.Join(c.specs, "+")+" "+c.op, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fb, m := newFB(t, 1)
				m.opTime = c.opTime
				for _, s := range c.specs {
					inject(t, fb, s)
				}
				got := elapsed(func() { do(t.Context(), fb, c.op, 0, c.n) })
				if got != c.want {
					t.Errorf("took %v, want %v", got, c.want)
				}
			})
		})
	}
}

func TestJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, _ := newFB(t, 7)
		inject(t, fb, "--latency 10ms --jitter 5ms")
		seen := map[time.Duration]bool{}
		for i := 0; i < 100; i++ {
			d := elapsed(func() { do(t.Context(), fb, "read", 0, 512) })
			if d < 10*time.Millisecond || d >= 15*time.Millisecond {
				t.Fatalf("delay %v outside [10ms, 15ms)", d)
			}
			seen[d] = true
		}
		if len(seen) < 50 {
			t.Errorf("only %d distinct delays in 100 operations", len(seen))
		}
	})
}

func TestBandwidthShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, _ := newFB(t, 1)
		inject(t, fb, "--bandwidth 1M --op read,write")
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last time.Duration
		for i := 0; i < 4; i++ {
			wg.Go(func() {
				op := []string{"read", "write"}[i%2]
				if err := do(t.Context(), fb, op, int64(i)<<18, 256<<10); err != nil {
					t.Error(err)
				}
				mu.Lock()
				last = max(last, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		if last != time.Second {
			t.Errorf("4 × 256 KiB at 1 MiB/s took %v, want 1s", last)
		}
	})
}

func TestContextEndsDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, m := newFB(t, 1)
		inject(t, fb, "--latency 1h")
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		var err error
		d := elapsed(func() { _, err = fb.WriteAt(ctx, make([]byte, 512), 0) })
		if !errors.Is(err, ioerr.ErrPathFailure) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a path failure wrapping the deadline", err)
		}
		if d != time.Second || m.ops.Load() != 0 {
			t.Errorf("took %v with %d backend ops, want 1s and none", d, m.ops.Load())
		}
	})
}

// startRead runs a read in a goroutine and returns a channel with its error.
func startRead(ctx context.Context, b backends.Backend) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := b.ReadAt(ctx, make([]byte, 512), 0)
		ch <- err
	}()
	return ch
}

func TestHang(t *testing.T) {
	t.Run("ReleasedByClear", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, m := newFB(t, 1)
			id := inject(t, fb, "--hang")
			res := startRead(t.Context(), fb)
			time.Sleep(time.Hour)
			synctest.Wait()
			if l := fb.List(); len(l) != 1 || l[0].Held != 1 || m.ops.Load() != 0 {
				t.Fatalf("List = %+v, backend ops %d; want one held, none run", l, m.ops.Load())
			}
			if err := fb.Clear(id); err != nil {
				t.Fatal(err)
			}
			if err := <-res; err != nil {
				t.Fatalf("released read: %v", err)
			}
			if m.ops.Load() != 1 {
				t.Errorf("the released read did not reach the backend")
			}
		})
	})
	t.Run("ReleasedByClearAll", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, _ := newFB(t, 1)
			inject(t, fb, "--hang --op read")
			inject(t, fb, "--hang")
			res := startRead(t.Context(), fb)
			synctest.Wait()
			fb.ClearAll()
			if err := <-res; err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("Deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, m := newFB(t, 1)
			inject(t, fb, "--hang")
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			err := <-startRead(ctx, fb)
			if !errors.Is(err, ioerr.ErrPathFailure) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want a path failure wrapping the deadline", err)
			}
			if d := time.Since(start); d != 5*time.Second {
				t.Errorf("returned after %v, want 5s", d)
			}
			if m.ops.Load() != 0 || fb.List()[0].Held != 0 {
				t.Errorf("a timed-out held read reached the backend or is still held")
			}
		})
	})
	t.Run("Expires", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, _ := newFB(t, 1)
			inject(t, fb, "--hang --for 3s")
			start := time.Now()
			if err := <-startRead(t.Context(), fb); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d != 3*time.Second {
				t.Errorf("held for %v, want 3s", d)
			}
			if l := fb.List(); len(l) != 0 {
				t.Errorf("expired fault still listed: %+v", l)
			}
		})
	})
	t.Run("Abort", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, m := newFB(t, 1)
			inject(t, fb, "--hang")
			res := startRead(t.Context(), fb)
			synctest.Wait()
			reason := errors.New("I/O deadline")
			fb.Abort(reason)
			err := <-res
			if !errors.Is(err, ioerr.ErrPathFailure) || !errors.Is(err, reason) {
				t.Fatalf("err = %v, want a path failure wrapping the abort reason", err)
			}
			if m.aborts.Load() != 1 {
				t.Errorf("Abort did not reach the backend underneath")
			}
			// a new operation is not affected by the earlier abort
			fb.ClearAll()
			if err := <-startRead(t.Context(), fb); err != nil {
				t.Errorf("read after Abort: %v", err)
			}
		})
	})
	t.Run("CountHoldsUntilCleared", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, _ := newFB(t, 1)
			id := inject(t, fb, "--hang --count 1")
			first := startRead(t.Context(), fb)
			synctest.Wait()
			if err := <-startRead(t.Context(), fb); err != nil {
				t.Fatalf("second read: %v", err)
			}
			l := fb.List()
			if len(l) != 1 || !l[0].Exhausted || l[0].Held != 1 || l[0].Injected != 1 {
				t.Fatalf("List = %+v, want one exhausted fault holding one read", l)
			}
			select {
			case err := <-first:
				t.Fatalf("first read returned early: %v", err)
			default:
			}
			fb.Clear(id)
			if err := <-first; err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("ReleasedByClose", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, m := newFB(t, 1)
			inject(t, fb, "--hang")
			res := startRead(t.Context(), fb)
			synctest.Wait()
			if err := fb.Close(); err != nil {
				t.Fatal(err)
			}
			<-res
			if !m.closed.Load() {
				t.Error("Close did not close the backend underneath")
			}
			if _, err := fb.Inject(fault.Spec{Error: "path-failure"}); err == nil {
				t.Error("Inject after Close succeeded")
			}
		})
	})
}

func TestStackingFirstErrorWins(t *testing.T) {
	fb, _ := newFB(t, 1)
	a := inject(t, fb, "--error device-error --every 2")
	b := inject(t, fb, "--error path-failure")
	c := inject(t, fb, "--latency 1ns")
	for i, want := range []error{ioerr.ErrPathFailure, ioerr.ErrDeviceError, ioerr.ErrPathFailure, ioerr.ErrDeviceError} {
		if err := do(t.Context(), fb, "read", 0, 512); !errors.Is(err, want) {
			t.Errorf("read %d: %v, want %v", i, err, want)
		}
	}
	got := map[int][2]uint64{}
	for _, x := range fb.List() {
		got[x.ID] = [2]uint64{x.Matched, x.Injected}
	}
	want := map[int][2]uint64{a: {4, 2}, b: {2, 2}, c: {0, 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("matched/injected = %v, want %v", got, want)
	}
}

func TestList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fb, _ := newFB(t, 99)
		t0 := time.Now()
		a := inject(t, fb, "--error retryable --op read --for 1m")
		time.Sleep(time.Second)
		b := inject(t, fb, "--latency 1ms --seed 1234")
		do(t.Context(), fb, "read", 0, 512)
		do(t.Context(), fb, "write", 0, 512)
		l := fb.List()
		if len(l) != 2 || l[0].ID != a || l[1].ID != b || a != 1 || b != 2 {
			t.Fatalf("List = %+v", l)
		}
		if s := l[0].Spec.String(); s != "--error retryable --op read --for 1m0s" {
			t.Errorf("spec %q", s)
		}
		if l[0].Matched != 1 || l[0].Injected != 1 || l[1].Matched != 1 || l[1].Injected != 1 {
			t.Errorf("counters %+v", l)
		}
		if !l[0].Added.Equal(t0) || !l[0].Expires.Equal(t0.Add(time.Minute)) || !l[1].Added.Equal(t0.Add(time.Second)) || !l[1].Expires.IsZero() {
			t.Errorf("times %+v", l)
		}
		if l[0].Seed == 0 || l[1].Seed != 1234 {
			t.Errorf("seeds %d, %d", l[0].Seed, l[1].Seed)
		}
		l[0].Spec.Ops[0] = "scribble" // List returns copies
		if fb.List()[0].Spec.Ops[0] != "read" {
			t.Error("List exposes the fault's spec")
		}
		if err := fb.Clear(a); err != nil {
			t.Fatal(err)
		}
		if err := fb.Clear(a); err == nil || !strings.Contains(err.Error(), "#1") {
			t.Errorf("second Clear(%d) = %v", a, err)
		}
		if l := fb.List(); len(l) != 1 || l[0].ID != b {
			t.Errorf("after Clear: %+v", l)
		}
		fb.ClearAll()
		if l := fb.List(); len(l) != 0 {
			t.Errorf("after ClearAll: %+v", l)
		}
		if c := inject(t, fb, "--hang"); c != 3 {
			t.Errorf("IDs are reused: got %d", c)
		}
	})
}

func TestInjectRejectsBadSpec(t *testing.T) {
	fb, _ := newFB(t, 1)
	for _, s := range []fault.Spec{
		{},
		{Error: "oops"},
		{Error: "path-failure", Hang: true},
		{Error: "path-failure", Ops: []string{"reed"}},
		{Latency: -1},
	} {
		if _, err := fb.Inject(s); err == nil {
			t.Errorf("Inject(%+v) succeeded", s)
		}
	}
	if len(fb.List()) != 0 {
		t.Error("a rejected spec is listed")
	}
}

func TestExpiry(t *testing.T) {
	t.Run("Duration", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fb, _ := newFB(t, 1)
			inject(t, fb, "--error path-failure --for 3s")
			if outcomes(fb, 1) != "X" {
				t.Fatal("fault not active at once")
			}
			time.Sleep(3*time.Second - time.Nanosecond)
			if outcomes(fb, 1) != "X" {
				t.Fatal("fault expired early")
			}
			time.Sleep(time.Nanosecond)
			if outcomes(fb, 1) != "." {
				t.Fatal("fault did not expire after 3s")
			}
			synctest.Wait()
			if l := fb.List(); len(l) != 0 {
				t.Errorf("expired fault listed: %+v", l)
			}
		})
	})
	t.Run("Count", func(t *testing.T) {
		fb, _ := newFB(t, 1)
		inject(t, fb, "--error path-failure --count 3")
		if got := outcomes(fb, 5); got != "XXX.." {
			t.Errorf("got %s", got)
		}
		if l := fb.List(); len(l) != 0 {
			t.Errorf("used-up fault listed: %+v", l)
		}
	})
}

// trace runs a fixed mix of operations under randomised faults and
// returns what happened to each, with its (fake) duration.
func trace(t *testing.T, wrapSeed uint64, specs ...string) string {
	var out strings.Builder
	synctest.Test(t, func(t *testing.T) {
		fb, _ := newFB(t, wrapSeed)
		for _, s := range specs {
			inject(t, fb, s)
		}
		ops := []string{"read", "write", "flush", "read", "discard", "probe"}
		for i := 0; i < 300; i++ {
			op := ops[i%len(ops)]
			var err error
			d := elapsed(func() { err = do(t.Context(), fb, op, int64(i%64)*4096, 4096) })
			fmt.Fprintf(&out, "%s %v %v\n", op, d, ioerr.ClassOf(err))
		}
	})
	return out.String()
}

func TestDeterminism(t *testing.T) {
	specs := []string{
		"--error retryable --probability 0.2",
		"--latency 1ms --jitter 9ms --probability 0.5 --op read,write",
		"--error path-failure --probability 0.1 --op read --after 10",
	}
	a, b := trace(t, 1, specs...), trace(t, 1, specs...)
	if a != b {
		t.Fatal("the same seed gave different runs")
	}
	if c := trace(t, 2, specs...); c == a {
		t.Fatal("a different seed gave the same run")
	}
	if !strings.Contains(a, "retryable") || !strings.Contains(a, "path-failure") || !strings.Contains(a, "read 0s none") {
		t.Fatalf("the trace does not mix outcomes:\n%s", a)
	}
	// A spec's own seed does not depend on Wrap's seed.
	own := "--error retryable --probability 0.3 --jitter 1ms --seed 77"
	if trace(t, 1, own) != trace(t, 2, own) {
		t.Fatal("a fault with its own seed depends on Wrap's seed")
	}
}

func TestConcurrentInjectClear(t *testing.T) {
	fb, _ := newFB(t, 1)
	specs := []string{
		"--error path-failure --probability 0.3",
		"--error retryable --every 3 --op write",
		"--latency 10us --jitter 10us",
		"--hang --for 1ms --op read",
		"--error device-error --range 64k:64k --count 5",
		"--bandwidth 1G --slow 1.5",
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { // the operator
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; ctx.Err() == nil; i++ {
			id := inject(t, fb, specs[rng.IntN(len(specs))])
			if rng.IntN(2) == 0 {
				fb.Clear(id)
			}
			fb.List()
			if i%10 == 9 {
				fb.ClearAll()
			}
			time.Sleep(50 * time.Microsecond)
		}
	})
	var ios sync.WaitGroup
	for w := 0; w < 8; w++ {
		ios.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			for i := 0; i < 300; i++ {
				op := []string{"read", "write", "flush", "discard", "zero", "probe"}[rng.IntN(6)]
				ictx, icancel := context.WithTimeout(ctx, 100*time.Millisecond)
				err := do(ictx, fb, op, int64(rng.IntN(64))*4096, 4096)
				icancel()
				// The I/O's own deadline may pass on a loaded machine:
				// that is the caller's context, not a fault to classify.
				if err != nil && ioerr.ClassOf(err) == ioerr.ClassNone && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: unclassified error %v", op, err)
				}
			}
		})
	}
	ios.Wait()
	cancel()
	wg.Wait()
	fb.ClearAll()
	if outcomes(fb, 4) != "...." {
		t.Error("operations fail after ClearAll")
	}
}

func TestCapabilities(t *testing.T) {
	ctx := t.Context()
	caps := []backends.Capability{backends.CapDiscard, backends.CapWriteZeroes, backends.CapProbe, backends.CapInquiry, backends.CapAbort}
	full := fault.Wrap(fault.Wrap(newMem(memSize), 1), 2) // stacked decorators
	for _, c := range caps {
		if !backends.Can(full, c) {
			t.Errorf("Can(%v) through the decorator = false", c)
		}
	}
	if m, ok := backends.As[*mem](full); !ok || m == nil {
		t.Error("backends.As does not find the backend under two decorators")
	}
	if _, ok := full.Unwrap().(*fault.Backend); !ok {
		t.Error("Unwrap does not return the backend underneath")
	}
	if q, err := full.Inquiry(ctx); err != nil || q.Model != "MEM" {
		t.Errorf("Inquiry = %+v, %v", q, err)
	}

	bare := fault.Wrap(plain{newMem(memSize)}, 1)
	for c, want := range map[backends.Capability]bool{
		backends.CapDiscard: false, backends.CapWriteZeroes: false, backends.CapInquiry: false,
		backends.CapProbe: true, backends.CapAbort: true,
	} {
		if got := backends.Can(bare, c); got != want {
			t.Errorf("Can(%v) over a bare backend = %v, want %v", c, got, want)
		}
	}
	for name, err := range map[string]error{
		"discard":      bare.Discard(ctx, 0, 4096),
		"write-zeroes": bare.WriteZeroes(ctx, 0, 4096),
	} {
		if !errors.Is(err, backends.ErrNotSupported) || !errors.Is(err, ioerr.ErrDeviceError) {
			t.Errorf("%s over a bare backend: %v, want a device error wrapping ErrNotSupported", name, err)
		}
	}
	if _, err := bare.Inquiry(ctx); !errors.Is(err, backends.ErrNotSupported) {
		t.Errorf("Inquiry over a bare backend: %v", err)
	}
	if err := bare.Probe(ctx); err != nil {
		t.Errorf("Probe over a bare backend: %v", err)
	}
	inject(t, bare, "--error not-ready --op probe")
	if err := bare.Probe(ctx); !errors.Is(err, ioerr.ErrNotReady) {
		t.Errorf("injected probe fault over a bare backend: %v", err)
	}
	bare.Abort(nil) // no Aborter underneath: must not panic

	// A Capable backend underneath that declines keeps declining.
	if backends.Can(fault.Wrap(declining{newMem(memSize)}, 1), backends.CapDiscard) {
		t.Error("Can(discard) = true over a backend that declines it")
	}
}

// declining has Discard but says it cannot (like an NBD export without
// NBD_FLAG_SEND_TRIM).
type declining struct{ *mem }

func (declining) Can(c backends.Capability) bool { return c != backends.CapDiscard }

func TestProbeForwarded(t *testing.T) {
	fb, m := newFB(t, 1)
	if err := fb.Probe(t.Context()); err != nil || m.probes.Load() != 1 {
		t.Fatalf("Probe = %v, backend probes %d", err, m.probes.Load())
	}
}

func TestNoAllocsWithoutFaults(t *testing.T) {
	fb, _ := newFB(t, 1)
	ctx := context.Background()
	p := make([]byte, 4096)
	check := func(when string) {
		t.Helper()
		for name, f := range map[string]func(){
			"ReadAt":  func() { fb.ReadAt(ctx, p, 4096) },
			"WriteAt": func() { fb.WriteAt(ctx, p, 4096) },
			"Flush":   func() { fb.Flush(ctx) },
		} {
			if n := testing.AllocsPerRun(200, f); n != 0 {
				t.Errorf("%s %s: %v allocs/op, want 0", name, when, n)
			}
		}
	}
	check("on a new decorator")
	inject(t, fb, "--error path-failure")
	inject(t, fb, "--latency 1ms")
	fb.ClearAll()
	check("after ClearAll")
}

func BenchmarkReadAt(b *testing.B) {
	for _, c := range []struct{ name, spec string }{
		{"NoFaults", ""},
		{"NonMatchingFault", "--error path-failure --op flush"},
		{"ZeroLatencyJitter", "--jitter 1ns"},
	} {
		b.Run(c.name, func(b *testing.B) {
			fb, _ := newFB(b, 1)
			if c.spec != "" {
				inject(b, fb, c.spec)
			}
			ctx := context.Background()
			p := make([]byte, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(p)))
			for b.Loop() {
				if _, err := fb.ReadAt(ctx, p, 8192); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
