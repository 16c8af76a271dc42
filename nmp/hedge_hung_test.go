package nmp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/internal/hangfs"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestHedgeKernelHang: p1 is a file on a FUSE mount whose requests the test
// holds, so its preads hang in the kernel; the I/O deadline is a minute.
// Hedged reads are answered by p2 and the hung preads are given up on (the
// sysio watchdog sees their contexts ended) instead of being waited for;
// p1 is reported slow, not failed.
func TestHedgeKernelHang(t *testing.T) {
	store := make([]byte, 1<<20)
	for i := range store {
		store[i] = byte(i*13 + i>>12)
	}
	name := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.WriteFile(name, store, 0o600))
	fsys := hangfs.MountOver(t, name)
	f1, err := backends.OpenFile(fsys.Path(), backends.FileOptions{})
	require.NoError(t, err)
	require.False(t, f1.Inline(), "p1 must run its system calls in workers for this test")
	f2, err := backends.OpenFile(name, backends.FileOptions{})
	require.NoError(t, err)
	p1 := &mpath.Path{Name: "p1", URI: "file://" + fsys.Path(), Transport: "file", Backend: f1}
	p2 := &mpath.Path{Name: "p2", URI: "file://" + name, Transport: "file", Backend: f2}
	d, err := NewDevice(mpath.DeviceConfig{Name: "hedged", PSP: PSPFixed, PSPOptions: map[string]string{"preferred": "p1"},
		IOTimeout: time.Minute, CheckInterval: time.Hour, HedgeReads: "on"}, []*mpath.Path{p1, p2}, nil)
	require.NoError(t, err)
	buf := make([]byte, 4096)
	_, err = d.ReadAt(t.Context(), buf, 0)
	require.NoError(t, err)

	fsys.Hold(hangfs.All)
	for i := range DefaultSlowLosses {
		off := int64(i+1) * 4096
		_, err := d.ReadAt(t.Context(), buf, off)
		require.NoError(t, err, "read %d", i)
		require.True(t, bytes.Equal(store[off:off+4096], buf), "read %d: wrong data", i)
	}
	assert.Positive(t, f1.Hung(), "the hung pread was given up on")
	st := d.Status()
	assert.Equal(t, "active", st.Paths[0].State)
	assert.True(t, st.Paths[0].Slow, "p1 is reported slow")
	assert.Equal(t, uint64(DefaultSlowLosses), st.HedgeWins)
	fsys.Release()
	closes(t, d)
}
