package nmp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// The rig's fake paths lead to one in-memory store: they share its cache.
func (f *fakePath) CacheDomain() string { return fmt.Sprintf("mem:%p", f.store) }

// flushFake is a path for the flush tests: writes land in a shared buffer,
// flushes can be held (each waits for a permit when gated) or failed, and
// the path names a cache domain.
type flushFake struct {
	name   string
	domain string
	data   []byte
	dataMu *sync.Mutex

	mu       sync.Mutex
	gated    bool
	flushErr error

	permits chan struct{} // one per held flush allowed to finish
	started chan struct{} // one per flush that started
	flushes atomic.Int64  // flushes that succeeded
}

var (
	_ backends.Backend     = (*flushFake)(nil)
	_ backends.Prober      = (*flushFake)(nil)
	_ backends.CacheSharer = (*flushFake)(nil)
)

func (f *flushFake) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	return copy(p, f.data[off:]), nil
}

func (f *flushFake) WriteAt(_ context.Context, p []byte, off int64) (int, error) {
	f.dataMu.Lock()
	defer f.dataMu.Unlock()
	return copy(f.data[off:], p), nil
}

func (f *flushFake) Flush(ctx context.Context) error {
	f.mu.Lock()
	gated, ferr := f.gated, f.flushErr
	f.mu.Unlock()
	f.started <- struct{}{}
	if gated {
		select {
		case <-f.permits:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if ferr != nil {
		return ferr
	}
	f.flushes.Add(1)
	return nil
}

func (f *flushFake) Probe(context.Context) error { return nil }
func (f *flushFake) Size() int64                 { return int64(len(f.data)) }
func (f *flushFake) Close() error                { return nil }
func (f *flushFake) CacheDomain() string         { return f.domain }

func (f *flushFake) set(gated bool, err error) {
	f.mu.Lock()
	f.gated, f.flushErr = gated, err
	f.mu.Unlock()
}

// flushRig is a device over flushFakes with the given cache domains, I/O
// preferring the first path. Its APD timeout is 1ms unless longAPD is set:
// a Flush that waits for a dead path to return gives up at once.
type flushRig struct {
	d     *Device
	fakes map[string]*flushFake
}

func newFlushRig(t *testing.T, domains ...string) *flushRig {
	t.Helper()
	return newFlushRigAPD(t, time.Millisecond, domains...)
}

func newFlushRigAPD(t *testing.T, apd time.Duration, domains ...string) *flushRig {
	t.Helper()
	data, mu := make([]byte, 1<<20), &sync.Mutex{}
	r := &flushRig{fakes: map[string]*flushFake{}}
	var paths []*mpath.Path
	for i, dom := range domains {
		f := &flushFake{name: fmt.Sprintf("p%d", i+1), domain: dom, data: data, dataMu: mu,
			permits: make(chan struct{}, 16), started: make(chan struct{}, 64)}
		r.fakes[f.name] = f
		paths = append(paths, &mpath.Path{Name: f.name, URI: "fake://" + f.name, Transport: "fake",
			Location: mpath.Location{Adapter: i + 1}, Backend: f})
	}
	d, err := NewDevice(mpath.DeviceConfig{Name: "dev0", PSP: PSPFixed, PSPOptions: map[string]string{"preferred": "p1"},
		CheckInterval: time.Hour, IOTimeout: 10 * time.Second, APDTimeout: apd}, paths, nil)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	r.d = d
	return r
}

func (r *flushRig) write(t *testing.T) {
	t.Helper()
	_, err := r.d.WriteAt(context.Background(), []byte("acknowledged"), 4096)
	require.NoError(t, err)
}

// flushAsync runs a Flush in the background.
func (r *flushRig) flushAsync() chan error {
	done := make(chan error, 1)
	go func() { done <- r.d.Flush(context.Background()) }()
	return done
}

// notYet asserts that a flush has not returned: it would have returned at
// once if it did not wait for the flush that covers its writes.
func notYet(t *testing.T, done chan error, why string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("Flush returned (%v) %s", err, why)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestFlushConcurrent: a Flush that finds the dirty flag already taken by a
// Flush whose flush is still running waits for that flush; a Flush whose
// writes were acknowledged after that flush started waits for a new one;
// Flushes that find the same flush in progress share it.
func TestFlushConcurrent(t *testing.T) {
	r := newFlushRig(t, "A", "A")
	p1 := r.fakes["p1"]
	p1.set(true, nil)
	r.write(t)
	f1 := r.flushAsync()
	<-p1.started // F1's flush is running, held
	f2 := r.flushAsync()
	notYet(t, f2, "while the flush covering its writes was still running")
	r.write(t) // acknowledged after the running flush started
	f3 := r.flushAsync()
	f4 := r.flushAsync()
	p1.permits <- struct{}{} // the first flush completes
	require.NoError(t, <-f1)
	require.NoError(t, <-f2)
	<-p1.started // F3 and F4 need a flush that started after their writes
	notYet(t, f3, "before a flush that started after its write completed")
	p1.permits <- struct{}{}
	require.NoError(t, <-f3)
	require.NoError(t, <-f4)
	assert.Equal(t, int64(2), p1.flushes.Load(), "F3 and F4 share one flush")
	assert.Equal(t, int64(0), r.fakes["p2"].flushes.Load(), "p2 carried no write")
	assert.False(t, r.d.FindPath("p1").Dirty())
	require.NoError(t, r.d.Flush(context.Background()))
	assert.Equal(t, int64(2), p1.flushes.Load(), "nothing written since: no flush")
}

// TestFlushFailedKeepsDirty: a failed flush (a device error: the path
// stays) fails every Flush that waited for it and keeps the path dirty;
// the next Flush tries again.
func TestFlushFailedKeepsDirty(t *testing.T) {
	r := newFlushRig(t, "A")
	p1 := r.fakes["p1"]
	r.write(t)
	p1.set(true, &ioerr.Error{Class: ioerr.ClassDeviceError, Err: errors.New("cache write-back failed")})
	f1 := r.flushAsync()
	<-p1.started
	f2 := r.flushAsync()
	notYet(t, f2, "while the flush covering its writes was still running")
	p1.permits <- struct{}{}
	for _, f := range []chan error{f1, f2} {
		err := <-f
		require.Error(t, err)
		assert.ErrorIs(t, err, ioerr.ErrDeviceError)
	}
	assert.True(t, r.d.FindPath("p1").Dirty(), "a failed flush keeps the path dirty")
	assert.Equal(t, mpath.StateActive, r.d.FindPath("p1").State())
	p1.set(false, nil)
	require.NoError(t, r.d.Flush(context.Background()))
	assert.Equal(t, int64(1), p1.flushes.Load())
	assert.False(t, r.d.FindPath("p1").Dirty())
}

// TestFlushCacheDomains: a dead dirty path is covered only by a flush on
// a usable path in its cache domain; with none, Flush waits for it to
// return until the APD timeout, then fails with EIO naming it; it stays
// dirty until it returns and its own flush succeeds. An empty domain
// covers nothing.
func TestFlushCacheDomains(t *testing.T) {
	ctx := context.Background()
	t.Run("same domain covers", func(t *testing.T) {
		r := newFlushRig(t, "A", "B", "A")
		r.write(t) // p1
		require.NoError(t, r.d.FailPath("p1", "test"))
		require.NoError(t, r.d.Flush(ctx))
		assert.Equal(t, int64(0), r.fakes["p2"].flushes.Load(), "p2 is another cache")
		assert.Equal(t, int64(1), r.fakes["p3"].flushes.Load(), "p3 shares p1's cache")
		require.NoError(t, r.d.Flush(ctx))
		assert.Equal(t, int64(1), r.fakes["p3"].flushes.Load(), "covered once, clean since")
	})
	for _, doms := range [][]string{{"A", "B"}, {"", ""}} {
		t.Run(fmt.Sprintf("domains %q", doms), func(t *testing.T) {
			r := newFlushRig(t, doms...)
			r.write(t) // p1
			require.NoError(t, r.d.FailPath("p1", "test"))
			err := r.d.Flush(ctx)
			require.Error(t, err)
			assert.ErrorIs(t, err, syscall.EIO)
			assert.Contains(t, err.Error(), "p1")
			assert.Equal(t, int64(0), r.fakes["p2"].flushes.Load())
			require.Error(t, r.d.Flush(ctx), "still not durable")
			// p1 returns: its own flush makes its writes durable.
			require.NoError(t, r.d.SetPathAdmin("p1", true))
			require.NoError(t, r.d.Flush(ctx))
			assert.Equal(t, int64(1), r.fakes["p1"].flushes.Load())
			require.NoError(t, r.d.Flush(ctx))
		})
	}
	t.Run("waits for the path to return", func(t *testing.T) {
		r := newFlushRigAPD(t, time.Hour, "A", "B")
		r.write(t) // p1
		require.NoError(t, r.d.FailPath("p1", "test"))
		f := r.flushAsync()
		notYet(t, f, "while the dead path might still return")
		require.NoError(t, r.d.SetPathAdmin("p1", true))
		require.NoError(t, <-f)
		assert.Equal(t, int64(1), r.fakes["p1"].flushes.Load())
		assert.Equal(t, int64(0), r.fakes["p2"].flushes.Load())
	})
	t.Run("path dies during its flush", func(t *testing.T) {
		r := newFlushRig(t, "A", "A")
		r.write(t)
		r.fakes["p1"].set(false, &ioerr.Error{Class: ioerr.ClassPathFailure, Err: errors.New("link down")})
		require.NoError(t, r.d.Flush(ctx))
		assert.Equal(t, mpath.StateDead, r.d.FindPath("p1").State())
		assert.Equal(t, int64(1), r.fakes["p2"].flushes.Load())
	})
}

// TestFlushRemovedDirtyPath: a dirty path removed while it works is
// flushed on its way out; one removed while dead is covered by the next
// Flush through its cache domain, or reported failed to the next Flush
// (once) when no path shares its cache.
func TestFlushRemovedDirtyPath(t *testing.T) {
	ctx := context.Background()
	t.Run("working", func(t *testing.T) {
		r := newFlushRig(t, "", "")
		r.write(t)
		require.NoError(t, r.d.RemovePath("p1"))
		assert.Equal(t, int64(1), r.fakes["p1"].flushes.Load(), "flushed on its way out")
		require.NoError(t, r.d.Flush(ctx))
		assert.Equal(t, int64(0), r.fakes["p2"].flushes.Load())
	})
	t.Run("dead, cache shared", func(t *testing.T) {
		r := newFlushRig(t, "A", "A")
		r.write(t)
		require.NoError(t, r.d.FailPath("p1", "hot removed"))
		require.NoError(t, r.d.RemovePath("p1"))
		require.NoError(t, r.d.Flush(ctx))
		assert.Equal(t, int64(1), r.fakes["p2"].flushes.Load(), "covered on p2")
	})
	t.Run("dead, cache not shared", func(t *testing.T) {
		r := newFlushRig(t, "A", "B")
		r.write(t)
		require.NoError(t, r.d.FailPath("p1", "hot removed"))
		require.NoError(t, r.d.RemovePath("p1"))
		err := r.d.Flush(ctx)
		require.Error(t, err)
		assert.ErrorIs(t, err, syscall.EIO)
		assert.Contains(t, err.Error(), "p1")
		require.NoError(t, r.d.Flush(ctx), "reported once")
	})
	t.Run("removed while a Flush waits", func(t *testing.T) {
		r := newFlushRig(t, "A", "B")
		p1 := r.fakes["p1"]
		p1.set(true, nil)
		r.write(t)
		f1 := r.flushAsync()
		<-p1.started
		removed := make(chan error, 1)
		go func() { removed <- r.d.RemovePath("p1") }()
		notYet(t, f1, "while p1's flush was held")
		p1.permits <- struct{}{}
		require.NoError(t, <-f1)
		require.NoError(t, <-removed)
		require.NoError(t, r.d.Flush(ctx))
		assert.Equal(t, int64(1), p1.flushes.Load())
	})
}
