package scenario

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/nmp"
)

var allPSPs = []string{nmp.PSPFixed, nmp.PSPMRU, nmp.PSPRR, nmp.PSPQueueLength, nmp.PSPServiceTime}

// TestGrayFailureHeldDown: a path whose probe passes but whose data I/O
// keeps failing must not bounce back into service forever. The checker
// reinstates it (the probe passes), I/O fails it again; damping must hold
// it out for longer and longer, so the failed tries on it die out, and the
// application never sees an error. With every PSP.
func TestGrayFailureHeldDown(t *testing.T) {
	for _, psp := range allPSPs {
		t.Run(psp, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				opts := map[string]string(nil)
				switch psp {
				case nmp.PSPRR:
					opts = map[string]string{"iops": "1"} // the most exposure
				case nmp.PSPFixed:
					// A user-preferred path is failed back to whenever it
					// returns: the worst case for a gray path.
					opts = map[string]string{"preferred": "vmhba1:C0:T0:L0"}
				}
				l := newLab(t, labOpts{psp: psp, pspOpts: opts, latency: 100 * time.Microsecond})
				gray := l.paths[0]
				if _, err := l.outer[0].Inject(fault.Spec{Error: "path-failure", Ops: []string{"read", "write"}}); err != nil {
					t.Fatal(err)
				}
				sub := l.events.Subscribe(1 << 16)
				defer sub.Close()
				const total = 16 * time.Minute
				ctx := context.Background()
				var errs []error
				done := make(chan struct{})
				go func() {
					defer close(done)
					errs = workload(ctx, l.dev, int(total/(20*time.Millisecond)), 300*time.Microsecond, 20*time.Millisecond, 1)
				}()
				time.Sleep(total / 2)
				failedHalf := gray.ErrorsByClass[ioerr.ClassPathFailure].Load()
				<-done
				failedEnd := gray.ErrorsByClass[ioerr.ClassPathFailure].Load()
				var back, held []time.Duration
				start := time.Now().Add(-total - 300*time.Microsecond).Add(-20 * time.Millisecond)
			drain:
				for {
					select {
					case ev := <-sub.C:
						if ev.Path != gray.Name {
							continue
						}
						if ev.Kind == "path-state" && ev.To == "active" {
							back = append(back, ev.Time.Sub(start))
						}
						if ev.Kind == "path-held-down" {
							held = append(held, ev.Time.Sub(start))
						}
					default:
						break drain
					}
				}
				t.Logf("%s: failed tries on the gray path: %d in the first half, %d in the second; reinstated %d times; held-down events %d",
					psp, failedHalf, failedEnd-failedHalf, len(back), len(held))
				if len(errs) > 0 {
					t.Errorf("%d I/O errors reached the application, first: %v", len(errs), errs[0])
				}
				if failedHalf == 0 {
					t.Fatalf("the gray path never failed an I/O: the test does not test anything")
				}
				second := failedEnd - failedHalf
				thr := uint64(nmp.DefaultFlapThreshold)
				if second > 2*thr || (second > 0 && second >= failedHalf) {
					t.Errorf("the gray path keeps bouncing back: %d failed tries in the second half (first half %d; want at most %d and fewer than before); reinstated at %v",
						second, failedHalf, 2*thr, back)
				}
				if psp != nmp.PSPMRU && len(held) == 0 {
					t.Errorf("the gray path was never held down (reinstated at %v)", back)
				}
			})
		})
	}
}

// TestSlowPathLosesTraffic: a path ten times slower than the others (gray:
// slow, not dead) gets much less than its share under queue-length and
// service-time.
func TestSlowPathLosesTraffic(t *testing.T) {
	for _, psp := range []string{nmp.PSPQueueLength, nmp.PSPServiceTime} {
		t.Run(psp, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newLab(t, labOpts{psp: psp, latency: time.Millisecond})
				if _, err := l.outer[0].Inject(fault.Spec{SlowFactor: 10}); err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				var wg sync.WaitGroup
				var mu sync.Mutex
				var errs []error
				for w := 0; w < 8; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						e := workload(ctx, l.dev, 2000, time.Duration(w+1)*100*time.Microsecond, 0, uint64(w))
						mu.Lock()
						errs = append(errs, e...)
						mu.Unlock()
					}()
				}
				wg.Wait()
				if len(errs) > 0 {
					t.Fatalf("%d I/O errors, first %v", len(errs), errs[0])
				}
				var total, slow uint64
				for i, p := range l.paths {
					n := p.Reads.Load() + p.Writes.Load()
					total += n
					if i == 0 {
						slow = n
					}
				}
				share := float64(slow) / float64(total)
				t.Logf("%s: the slow path carried %d of %d I/Os (%.1f%%; a fair share is 25%%)", psp, slow, total, 100*share)
				if share > 0.10 {
					t.Errorf("the x10 slow path carried %.1f%% of the I/O, want under 10%%", 100*share)
				}
			})
		})
	}
}
