package nmp

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/internal/hangfs"
	"github.com/mpathfs/mpathfs/mpath"
)

// countProbes wraps a backend and counts its probes.
type countProbes struct {
	backends.Backend
	n atomic.Int64
}

func (c *countProbes) Probe(ctx context.Context) error {
	c.n.Add(1)
	return c.Backend.(backends.Prober).Probe(ctx)
}

func (c *countProbes) Unwrap() backends.Backend { return c.Backend }

// hungRig is a device with two file paths to one store: p1 through a hangfs
// mount whose requests the test can hold (the preferred path of
// VMW_PSP_FIXED, so I/O goes there first), p2 straight to the file.
type hungRig struct {
	fsys   *hangfs.FS
	d      *Device
	p1, p2 *mpath.Path
	probe2 *countProbes
	store  []byte
}

func newHungRig(t *testing.T) *hungRig {
	t.Helper()
	r := &hungRig{store: make([]byte, 1<<20)}
	for i := range r.store {
		r.store[i] = byte(i*7 + i>>12)
	}
	name := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.WriteFile(name, r.store, 0o600))
	r.fsys = hangfs.MountOver(t, name)
	f1, err := backends.OpenFile(r.fsys.Path(), backends.FileOptions{})
	require.NoError(t, err)
	f2, err := backends.OpenFile(name, backends.FileOptions{})
	require.NoError(t, err)
	r.probe2 = &countProbes{Backend: f2}
	r.p1 = &mpath.Path{Name: "p1", URI: "file://" + r.fsys.Path(), Transport: "file", Backend: f1}
	r.p2 = &mpath.Path{Name: "p2", URI: "file://" + name, Transport: "file", Backend: r.probe2}
	r.d, err = NewDevice(mpath.DeviceConfig{
		Name: "hung", PSP: PSPFixed, PSPOptions: map[string]string{"preferred": "p1"},
		IOTimeout: 300 * time.Millisecond, ProbeTimeout: 200 * time.Millisecond, CheckInterval: 100 * time.Millisecond,
	}, []*mpath.Path{r.p1, r.p2}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { r.d.Close() })
	return r
}

// closes runs Close and fails the test if it does not return.
func closes(t *testing.T, c interface{ Close() error }) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Close hangs behind a hung system call")
	}
}

// TestHungPathReadsFailOver: while every request on p1's file system hangs,
// reads are served by p2 (the read that hit p1 after its deadline), p1 dies,
// the checker keeps probing p2 without stacking probes on p1, and the
// device closes.
func TestHungPathReadsFailOver(t *testing.T) {
	r := newHungRig(t)
	ctx := t.Context()
	p := make([]byte, 4096)
	_, err := r.d.ReadAt(ctx, p, 0)
	require.NoError(t, err)
	require.Equal(t, mpath.StateActive, r.p1.State())

	r.fsys.Hold(hangfs.All)
	for i := range 50 {
		off := int64(rand.IntN(len(r.store)/4096)) * 4096
		n, err := r.d.ReadAt(ctx, p, off)
		require.NoError(t, err, "read %d at %d", i, off)
		require.Equal(t, 4096, n)
		require.True(t, bytes.Equal(r.store[off:off+4096], p), "read %d at %d: wrong data", i, off)
	}
	require.Eventually(t, func() bool { return r.p1.State() == mpath.StateDead }, time.Minute, time.Millisecond, "the hung path dies")
	assert.Equal(t, mpath.StateActive, r.p2.State())
	r.fsys.WaitHeld(t, 1)

	// The checker keeps its schedule for p2 while p1's probe is stuck, and
	// never starts a second probe on p1.
	r.fsys.WaitHeld(t, 2) // the hung pread and the stuck probe's fstat
	before := r.probe2.n.Load()
	require.Eventually(t, func() bool { return r.probe2.n.Load() >= before+5 }, time.Minute, 10*time.Millisecond)
	assert.Equal(t, 1, r.fsys.HeldOf(hangfs.Getattr), "one stuck probe on p1, not one per round")
	assert.Equal(t, mpath.StateDead, r.p1.State())

	closes(t, r.d)
	r.fsys.Release()
}

// TestHungPathWriteLands: a write that hangs on p1 past its deadline
// completes on p2, reads go on meanwhile, and the store holds the write
// after the hung pwrite returned.
func TestHungPathWriteLands(t *testing.T) {
	r := newHungRig(t)
	r.fsys.Hold(hangfs.Write)
	data := bytes.Repeat([]byte{0x5a}, 8192)
	done := make(chan error, 1)
	go func() {
		_, err := r.d.WriteAt(context.Background(), data, 65536)
		done <- err
	}()
	r.fsys.WaitHeld(t, 1)
	// The write outlives its deadline on p1: p1 dies, and the write is
	// retried on p2 (at once, or once the hung pwrite settled).
	require.Eventually(t, func() bool { return r.p1.State() == mpath.StateDead }, time.Minute, time.Millisecond)
	// Reads are never held behind the hung write.
	p := make([]byte, 4096)
	_, err := r.d.ReadAt(t.Context(), p, 0)
	require.NoError(t, err)
	assert.Equal(t, r.store[:4096], p)

	r.fsys.Release()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the write never completed")
	}
	require.Eventually(t, func() bool { return r.p1.Backend.(*backends.File).Hung() == 0 }, time.Minute, time.Millisecond)
	assert.Equal(t, data, r.fsys.Data(65536, 8192))
	_, err = r.d.ReadAt(t.Context(), p, 65536)
	require.NoError(t, err)
	assert.Equal(t, data[:4096], p)
	closes(t, r.d)
}
