package nmp

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// ioResult is the outcome of an I/O run in the background.
type ioResult struct {
	err     error
	elapsed time.Duration
}

// goWrite starts a 4 KiB write in the background.
func goWrite(r *rig, off int64) <-chan ioResult {
	c := make(chan ioResult, 1)
	go func() {
		start := time.Now()
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), off)
		c <- ioResult{err, time.Since(start)}
	}()
	return c
}

// pending reports whether a background I/O is still waiting, after every
// goroutine in the bubble settled.
func pending(c <-chan ioResult) bool {
	synctest.Wait()
	select {
	case res := <-c:
		panic("I/O finished early: " + errString(res.err))
	default:
		return true
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// failAll makes every path fail with a path failure and waits until the
// device noticed (one failed I/O).
func failAll(t *testing.T, r *rig) {
	t.Helper()
	for _, f := range r.fakes {
		f.failClass(ioerr.ClassPathFailure)
	}
	for _, p := range r.d.Paths() {
		if err := r.d.FailPath(p.Name, "test: all paths down"); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.d.Status(); !st.APD {
		t.Fatalf("device not in APD: %+v", st)
	}
}

// TestAPDQueuedIOCompletes: I/O queued during All-Paths-Down completes,
// successfully, when a path returns before the APD timeout; the checker
// (running at its default interval, in fake time) brings it back.
func TestAPDQueuedIOCompletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(PSPFixed, nil)
		cfg.CheckInterval = 0 // the default, 2 s
		r := newRig(t, 2, cfg)
		failAll(t, r)
		start := time.Now()
		w1 := goWrite(r, 0)
		w2 := goWrite(r, 4096)
		pending(w1)
		time.Sleep(100 * time.Second)
		pending(w2)
		if q := r.d.Status().QueueDepth; q != 2 {
			t.Errorf("queue depth %d while two I/Os wait", q)
		}
		r.fake("p2").recover()
		for _, w := range []<-chan ioResult{w1, w2} {
			res := <-w
			if res.err != nil {
				t.Fatalf("queued I/O: %v", res.err)
			}
			// The first check after the recovery: during APD the checker
			// probes every 250ms, so at t=100.25s.
			if el := time.Since(start); el != 100*time.Second+250*time.Millisecond {
				t.Errorf("queued I/O completed after %v, want 100.25s", el)
			}
		}
		if r.fake("p2").writes.Load() != 2 {
			t.Errorf("p2 carried %d writes", r.fake("p2").writes.Load())
		}
		st := r.d.Status()
		if st.APD || st.APDEntries != 1 {
			t.Errorf("after recovery: apd=%v entries=%d", st.APD, st.APDEntries)
		}
		var kinds []string
		for _, ev := range r.drainEvents() {
			if ev.Kind == "apd-enter" || ev.Kind == "apd-exit" {
				kinds = append(kinds, ev.Kind+": "+ev.Reason)
			}
		}
		if len(kinds) != 2 || kinds[1] != "apd-exit: a path returned after 1m40.25s" {
			t.Errorf("APD events %q", kinds)
		}
		r.d.Close()
	})
}

// TestAPDTimeout: queued I/O fails with ErrAllPathsDown when the APD
// timeout (the default 140 s, or a configured one) expires; after it new
// I/O fails at once until a path returns, then succeeds.
func TestAPDTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     time.Duration
		timeout time.Duration
	}{
		{"default", 0, 140 * time.Second},
		{"configured", 20 * time.Second, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig(PSPRR, nil)
				cfg.APDTimeout = tc.cfg
				cfg.CheckInterval = time.Second
				r := newRig(t, 2, cfg)
				if got := r.d.Config().APDTimeout; got != tc.timeout {
					t.Fatalf("APD timeout %v, want %v", got, tc.timeout)
				}
				failAll(t, r)
				apdStart := time.Now()
				w1 := goWrite(r, 0)
				time.Sleep(tc.timeout / 2)
				w2 := goWrite(r, 4096) // joins half-way: its wait ends with the device's APD timer
				res := <-w1
				if !errors.Is(res.err, ioerr.ErrAllPathsDown) {
					t.Fatalf("queued I/O: %v, want ErrAllPathsDown", res.err)
				}
				if res.elapsed != tc.timeout {
					t.Errorf("queued I/O failed after %v, want %v", res.elapsed, tc.timeout)
				}
				res = <-w2
				if !errors.Is(res.err, ioerr.ErrAllPathsDown) || time.Since(apdStart) != tc.timeout {
					t.Errorf("second I/O: %v after %v", res.err, time.Since(apdStart))
				}
				// After the timeout: fail fast.
				for i := range 3 {
					start := time.Now()
					_, err := r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
					if !errors.Is(err, ioerr.ErrAllPathsDown) || time.Since(start) != 0 {
						t.Fatalf("I/O %d after the timeout: %v after %v, want an immediate ErrAllPathsDown", i, err, time.Since(start))
					}
					time.Sleep(5 * time.Second)
				}
				// A path returns; I/O succeeds again.
				r.fake("p1").recover()
				time.Sleep(time.Second)
				synctest.Wait()
				if st := r.d.Status(); st.APD {
					t.Fatalf("still in APD after p1 passed a check")
				}
				if got := r.write(t, 0); got != "p1" {
					t.Fatalf("after recovery served by %q", got)
				}
				// A new outage starts a new APD timer.
				r.fake("p1").failClass(ioerr.ClassPathFailure)
				w3 := goWrite(r, 0)
				res = <-w3
				if !errors.Is(res.err, ioerr.ErrAllPathsDown) || res.elapsed != tc.timeout {
					t.Errorf("second outage: %v after %v", res.err, res.elapsed)
				}
				if n := r.d.Status().APDEntries; n != 2 {
					t.Errorf("%d APD entries, want 2", n)
				}
				r.d.Close()
			})
		})
	}
}

// TestAPDCallerGivesUp: a queued I/O whose context ends returns the
// context's error, and Close releases queued I/O with ErrClosed.
func TestAPDCallerGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 2, testConfig(PSPFixed, nil))
		failAll(t, r)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := r.d.WriteAt(ctx, make([]byte, 4096), 0)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 3*time.Second {
			t.Fatalf("caller deadline: %v after %v", err, time.Since(start))
		}
		w := goWrite(r, 0)
		pending(w)
		r.d.Close()
		if res := <-w; !errors.Is(res.err, ioerr.ErrClosed) {
			t.Fatalf("queued I/O at close: %v", res.err)
		}
	})
}

// TestIODeadline: an I/O on a hung path is failed after the I/O timeout,
// the path is marked dead, and the I/O succeeds on another path.
func TestIODeadline(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     time.Duration
		timeout time.Duration
	}{
		{"default", 0, 5 * time.Second},
		{"configured", 750 * time.Millisecond, 750 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := testConfig(PSPFixed, nil)
				cfg.IOTimeout = tc.cfg
				r := newRig(t, 2, cfg)
				r.fake("p1").hangOps()
				start := time.Now()
				buf := []byte("hello, hung path")
				if _, err := r.d.WriteAt(context.Background(), buf, 0); err != nil {
					t.Fatalf("write over a hung path: %v", err)
				}
				if el := time.Since(start); el != tc.timeout {
					t.Errorf("write took %v, want the I/O timeout %v", el, tc.timeout)
				}
				rec := r.records()[0]
				if len(rec.Attempts) != 2 || rec.Attempts[0].Path != "p1" || rec.Attempts[0].Class != "path-failure" || rec.Attempts[1].Path != "p2" {
					t.Errorf("trace %+v", rec.Attempts)
				}
				if r.state("p1") != mpath.StateDead {
					t.Errorf("hung p1 is %s", r.state("p1"))
				}
				if r.fake("p1").hung.Load() != 0 {
					t.Errorf("an operation is still held on p1")
				}
				if got := string(r.store.Snapshot()[:len(buf)]); got != string(buf) {
					t.Errorf("store holds %q", got)
				}
				// The checker's probe of a hung path is bounded too.
				start = time.Now()
				r.d.CheckNow()
				if el := time.Since(start); el != min(DefaultProbeTimeout, tc.timeout) {
					t.Errorf("check of a hung path took %v", el)
				}
				if r.state("p1") != mpath.StateDead {
					t.Errorf("hung p1 is %s after a check", r.state("p1"))
				}
				r.fake("p1").recover()
				r.d.CheckNow()
				if r.state("p1") != mpath.StateActive {
					t.Errorf("recovered p1 is %s after a check", r.state("p1"))
				}
				// p1 was the default preferred path: p2 replaced it for good.
				if got := r.write(t, 0); got != "p2" {
					t.Errorf("after recovery served by %s", got)
				}
				r.d.Close()
			})
		})
	}
}

// TestAPDEndsWithAddedPath: a path added live during All-Paths-Down ends
// it, and the queued I/O goes out on it.
func TestAPDEndsWithAddedPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 2, testConfig(PSPRR, nil))
		failAll(t, r)
		w := goWrite(r, 0)
		time.Sleep(7 * time.Second)
		pending(w)
		p3 := newFakePath("p3", r.store)
		if err := r.d.AddPath(&mpath.Path{Name: "p3", Backend: p3}); err != nil {
			t.Fatal(err)
		}
		res := <-w
		if res.err != nil || res.elapsed != 7*time.Second {
			t.Fatalf("queued write: %v after %v", res.err, res.elapsed)
		}
		if p3.writes.Load() != 1 {
			t.Fatalf("p3 carried %d writes", p3.writes.Load())
		}
		if r.d.Status().APD {
			t.Fatal("still in APD")
		}
		r.d.Close()
	})
}
