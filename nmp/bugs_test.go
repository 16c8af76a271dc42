package nmp

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestTraceRecordsCancelledBackoff: an I/O whose caller gives up while it
// backs off before a retry still leaves its trace record.
func TestTraceRecordsCancelledBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(PSPFixed, nil)
		cfg.SATPOptions = map[string]string{"retry_backoff_ms": "1000"}
		r := newRig(t, 1, cfg)
		r.fake("p1").failClass(ioerr.ClassRetryable)
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := r.d.WriteAt(ctx, make([]byte, 4096), 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("write: %v", err)
		}
		recs := r.records()
		if len(recs) != 1 {
			t.Fatalf("%d trace records for one I/O", len(recs))
		}
		if recs[0].Status == "ok" || len(recs[0].Attempts) != 1 || recs[0].Attempts[0].Class != "retryable" {
			t.Fatalf("trace record %+v", recs[0])
		}
		r.d.Close()
	})
}

// TestIdentityAdoptedLive: a device whose paths reported no WWID adopts
// the first one a live-added path reports, while status is being read.
func TestIdentityAdoptedLive(t *testing.T) {
	r := newRig(t, 2, testConfig("", nil))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var reads atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = r.d.Identity()
			_ = r.d.Status()
			reads.Add(1)
		}
	}()
	waitFor(t, "status readers", func() bool { return reads.Load() > 10 })
	p := &mpath.Path{Name: "p3", Backend: newFakePath("p3", r.store), Inquiry: backends.Inquiry{WWID: "naa.42", Vendor: "MPATHFS"}}
	if err := r.d.AddPath(p); err != nil {
		t.Fatal(err)
	}
	n := reads.Load()
	waitFor(t, "status readers", func() bool { return reads.Load() > n+10 })
	close(stop)
	wg.Wait()
	if id := r.d.Identity(); id.WWID != "naa.42" || r.d.Status().WWID != "naa.42" {
		t.Fatalf("identity %+v", id)
	}
	// A refused path does not change the identity.
	bad := &mpath.Path{Name: "p3", Backend: newFakePath("p3", r.store), Inquiry: backends.Inquiry{WWID: "naa.42"}}
	if err := r.d.AddPath(bad); err == nil {
		t.Fatal("a second p3 was accepted")
	}
}

// TestFixedDefaultPreferredRemoved: when the default preferred path is
// removed from the device a new default is chosen, as when it dies.
func TestFixedDefaultPreferredRemoved(t *testing.T) {
	r := newRig(t, 3, testConfig(PSPFixed, nil))
	if got := r.write(t, 0); got != "p1" {
		t.Fatalf("served by %s", got)
	}
	if err := r.d.RemovePath("p1"); err != nil {
		t.Fatal(err)
	}
	pref, _ := r.d.PSP().(*fixed).Preferred()
	if pref == nil || pref.Name != "p2" {
		t.Fatalf("preferred path after p1 was removed: %v", pref)
	}
	r.write(t, 0)
	recs := r.tracer.Records()
	if a := recs[len(recs)-1].Attempts[0]; a.Path != "p2" || a.Reason != ReasonPreferred.String() {
		t.Fatalf("after removal: %+v", a)
	}
	found := false
	for _, p := range r.d.Status().Paths {
		found = found || p.Preferred
	}
	if !found {
		t.Fatal("status shows no preferred path")
	}
}

// abortFake is a fake path that can abort its I/O in flight (like an NBD
// connection torn down), counting the aborts.
type abortFake struct {
	*fakePath
	aborts atomic.Int64
}

func (a *abortFake) Abort(error) {
	a.aborts.Add(1)
	a.recover()
}

// TestCallerDeadlineIsNotAPathTimeout: when the caller's own deadline ends
// an I/O on a slow path, the path is not blamed: it is not aborted (which
// would fail every other I/O in flight on it), not marked dead, and the
// caller gets its context's error. Only the per-I/O deadline is a path
// failure.
func TestCallerDeadlineIsNotAPathTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := backendtest.NewMem(1 << 16)
		a1 := &abortFake{fakePath: newFakePath("p1", s)}
		a2 := &abortFake{fakePath: newFakePath("p2", s)}
		paths := []*mpath.Path{{Name: "p1", Backend: a1}, {Name: "p2", Backend: a2}}
		cfg := testConfig(PSPFixed, nil)
		cfg.IOTimeout = 5 * time.Second
		d, err := NewDevice(cfg, paths, nil)
		if err != nil {
			t.Fatal(err)
		}
		a1.hangOps()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = d.ReadAt(ctx, make([]byte, 4096), 0)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ioerr.ErrPathFailure) {
			t.Fatalf("caller deadline: %v", err)
		}
		if n := a1.aborts.Load(); n != 0 {
			t.Errorf("the caller's deadline aborted p1's I/O %d times", n)
		}
		if st := paths[0].State(); st != mpath.StateActive {
			t.Errorf("p1 is %s after the caller gave up", st)
		}
		// The I/O deadline itself is a path failure: the path is aborted
		// and the I/O goes on elsewhere.
		start := time.Now()
		if _, err := d.ReadAt(context.Background(), make([]byte, 4096), 0); err != nil {
			t.Fatalf("read over a hung path: %v", err)
		}
		if el := time.Since(start); el != 5*time.Second {
			t.Errorf("took %v, want the I/O timeout", el)
		}
		if n := a1.aborts.Load(); n != 1 {
			t.Errorf("p1 aborted %d times after its I/O timed out, want 1", n)
		}
		if st := paths[0].State(); st != mpath.StateDead {
			t.Errorf("p1 is %s after an I/O timeout", st)
		}
		d.Close()
	})
}
