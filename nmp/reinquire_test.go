package nmp

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// satpTestUpdater judges errors as VMW_SATP_DEFAULT_AA does but, as the
// ALUA SATP does, asks for a re-inquiry of the path states after a path
// failure; its re-inquiry (Update) waits for the test's gate.
const satpTestUpdater = "TEST_SATP_UPDATER"

type updaterGate struct {
	calls   atomic.Int32
	release chan struct{}
}

// theUpdaterGate is the gate of the SATP the current test made (tests of
// this package do not run in parallel).
var theUpdaterGate atomic.Pointer[updaterGate]

type updaterSATP struct{ *defaultSATP }

func init() {
	RegisterSATP(satpTestUpdater, "test: re-inquires after a path failure", PSPRR, func(o map[string]string) (SATP, error) {
		return &updaterSATP{defaultSATP: &defaultSATP{name: satpTestUpdater, retryBackoff: time.Millisecond}}, nil
	})
}

func (s *updaterSATP) Classify(p *mpath.Path, op mpath.OpKind, err error) Verdict {
	v := s.defaultSATP.Classify(p, op, err)
	if v.Class == ioerr.ClassPathFailure {
		v.Update = true
	}
	return v
}

func (s *updaterSATP) Update(ctx context.Context, _ []*mpath.Path) ([]Change, error) {
	g := theUpdaterGate.Load()
	if g == nil {
		return nil, nil
	}
	g.calls.Add(1)
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return nil, nil
}

// TestPathFailureRetriesBeforeReinquiry: I/Os failing together on a dying
// path retry on the other usable path at once, without waiting for the
// SATP's re-inquiry of the path states, which runs once in the background
// for all of them (and once more for the requests made while it ran).
// When no usable path is left, the I/O waits for the re-inquiry, whose
// answer may bring a path back.
func TestPathFailureRetriesBeforeReinquiry(t *testing.T) {
	cfg := testConfig(PSPRR, map[string]string{"iops": "1"})
	cfg.SATP = satpTestUpdater
	r := newRig(t, 2, cfg) // its first checker round re-inquires, ungated
	g := &updaterGate{release: make(chan struct{})}
	theUpdaterGate.Store(g)
	t.Cleanup(func() { theUpdaterGate.Store(nil) })
	r.fake("p1").failClass(ioerr.ClassPathFailure, "read", "write")

	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.d.ReadAt(context.Background(), make([]byte, 512), int64(i)*512)
			errs <- err
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(g.release)
		t.Fatal("reads waited for the re-inquiry although another path was usable")
	}
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, mpath.StateDead, r.state("p1"))
	waitFor(t, "the background re-inquiry to start", func() bool { return g.calls.Load() >= 1 })
	assert.Equal(t, int32(1), g.calls.Load(), "one re-inquiry runs at a time, shared by the failed I/Os")
	close(g.release)
	waitFor(t, "the re-inquiries to finish", func() bool { return r.d.reinquireReqs.Load() == 0 })
	assert.LessOrEqual(t, g.calls.Load(), int32(2), "requests made while one ran make one more, not one each")

	// No usable path left: the I/O waits for the re-inquiry (here it
	// answers at once, changes nothing, and the I/O waits out APD).
	calls := g.calls.Load()
	r.fake("p2").failClass(ioerr.ClassPathFailure, "read", "write")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := r.d.ReadAt(ctx, make([]byte, 512), 0)
	require.Error(t, err)
	assert.Greater(t, g.calls.Load(), calls, "the last path's failure re-inquired")
}
