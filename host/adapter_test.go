package host

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// fourPaths is a device of four names of one file over two adapters, two
// targets each: vmhba1:C0:T0/T1 and vmhba2:C0:T0/T1.
func fourPaths(t *testing.T) (*Host, Device) {
	t.Helper()
	files := store(t, 1<<20, 3)
	dc := fileDevice("d0", files...)
	for i := range dc.Paths {
		dc.Paths[i].Location = []string{"vmhba1:C0:T0:L0", "vmhba1:C0:T1:L0", "vmhba2:C0:T0:L0", "vmhba2:C0:T1:L0"}[i]
	}
	h := newHost(t, Options{})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{dc}))
	d, err := h.Device("d0")
	require.NoError(t, err)
	return h, d
}

func pathStates(d Device) map[string]string {
	out := map[string]string{}
	for _, p := range d.Paths() {
		out[p.Name] = p.State().String()
	}
	return out
}

// TestAdapterList: adapters, their targets, paths and devices come from
// the paths' runtime names.
func TestAdapterList(t *testing.T) {
	h, _ := fourPaths(t)
	as := h.Adapters()
	require.Len(t, as, 2)
	a := as[0]
	assert.Equal(t, "vmhba1", a.Name)
	assert.Equal(t, AdapterOnline, a.State)
	assert.Equal(t, 2, a.Paths)
	assert.Equal(t, 0, a.Dead)
	assert.Equal(t, []string{"d0"}, a.Devices)
	require.Len(t, a.Targets, 2)
	assert.Equal(t, "vmhba1:C0:T0", a.Targets[0].Name)
	require.Len(t, a.Targets[0].Paths, 1)
	assert.Equal(t, "vmhba1:C0:T0:L0", a.Targets[0].Paths[0].Location)
	assert.Equal(t, "d0", a.Targets[0].Paths[0].Device)
	assert.Equal(t, "vmhba1:C0:T1", a.Targets[1].Name)
	assert.Equal(t, "vmhba2", as[1].Name)

	_, err := h.Adapter("vmhba9")
	require.ErrorIs(t, err, ErrNotFound)
	assert.ErrorContains(t, err, "adapters: vmhba1, vmhba2")
}

// TestAdapterFailRestore: failing an adapter fails its two paths together
// and leaves the other adapter's; I/O goes on over the other adapter;
// restore clears the adapter's faults and no hand-injected fault, and the
// paths come back.
func TestAdapterFailRestore(t *testing.T) {
	h, d := fourPaths(t)
	// An operator's own fault on a path of vmhba1 survives the restore.
	f, _, err := h.Fault("vmhba1:C0:T1:L0")
	require.NoError(t, err)
	own, err := f.Inject(fault.Spec{Latency: 1, Ops: []string{fault.OpRead}})
	require.NoError(t, err)

	st, err := h.FailAdapter("vmhba1", "")
	require.NoError(t, err)
	assert.Equal(t, AdapterFailed, st.State)
	assert.Equal(t, 2, st.Dead)
	assert.Equal(t, map[string]string{"vmhba1:C0:T0:L0": "dead", "vmhba1:C0:T1:L0": "dead",
		"vmhba2:C0:T0:L0": "active", "vmhba2:C0:T1:L0": "active"}, pathStates(d))
	require.Len(t, h.Faults(), 3, "one path-failure fault per path of vmhba1, plus the operator's")

	_, err = h.FailAdapter("vmhba1", "")
	assert.ErrorIs(t, err, ErrExists)

	buf := make([]byte, 4096)
	for i := 0; i < 16; i++ {
		_, err := d.WriteAt(context.Background(), buf, int64(i)*4096)
		require.NoError(t, err, "I/O goes on over vmhba2")
	}
	// A probe of a failed adapter's path fails: the checker keeps it dead.
	require.Error(t, d.Probe(context.Background(), "vmhba1:C0:T0:L0"))

	st, err = h.RestoreAdapter(context.Background(), "vmhba1")
	require.NoError(t, err)
	assert.Equal(t, AdapterOnline, st.State)
	assert.Equal(t, 0, st.Dead)
	for name, s := range pathStates(d) {
		assert.Equal(t, "active", s, name)
	}
	left := h.Faults()
	require.Len(t, left, 1, "restore clears the adapter's faults only")
	assert.Equal(t, own, left[0].ID)

	_, err = h.RestoreAdapter(context.Background(), "vmhba1")
	assert.ErrorIs(t, err, ErrInvalid, "restoring an adapter that is not failed")
	_, err = h.FailAdapter("vmhba7", "")
	assert.ErrorIs(t, err, ErrNotFound)

	kinds := map[string]int{}
	for _, ev := range h.Events().Recent(mpath.EventHistory) {
		if ev.Adapter != "" {
			kinds[ev.Kind]++
			assert.Equal(t, "vmhba1", ev.Adapter)
			assert.Equal(t, "d0", ev.Device)
		}
	}
	assert.Equal(t, map[string]int{"adapter-failed": 1, "adapter-restored": 1}, kinds)
}

// TestAdapterDeadState: an adapter nobody failed whose paths are all dead
// is dead.
func TestAdapterDeadState(t *testing.T) {
	h, d := fourPaths(t)
	require.NoError(t, d.FailPath("vmhba2:C0:T0:L0", "test"))
	a, err := h.Adapter("vmhba2")
	require.NoError(t, err)
	assert.Equal(t, AdapterOnline, a.State, "one of two paths dead")
	require.NoError(t, d.FailPath("vmhba2:C0:T1:L0", "test"))
	a, err = h.Adapter("vmhba2")
	require.NoError(t, err)
	assert.Equal(t, AdapterDead, a.State)
}

// TestAdapterReset: each path of the adapter answers its next data I/O
// with the unit attention 06/29/00, once.
func TestAdapterReset(t *testing.T) {
	h, _ := fourPaths(t)
	_, err := h.ResetAdapter("vmhba2")
	require.NoError(t, err)
	faults := h.Faults()
	require.Len(t, faults, 2)
	for _, f := range faults {
		assert.Contains(t, []string{"vmhba2:C0:T0:L0", "vmhba2:C0:T1:L0"}, f.Path)
		assert.Equal(t, SenseResetUA, f.Spec.Sense)
		assert.Equal(t, 1, f.Spec.Count)
	}
	fb, _, err := h.Fault("vmhba2:C0:T0:L0")
	require.NoError(t, err)
	buf := make([]byte, 512)
	_, err = fb.ReadAt(context.Background(), buf, 0)
	require.Error(t, err)
	var ie *ioerr.Error
	require.True(t, errors.As(err, &ie), "a classified error: %v", err)
	require.NotNil(t, ie.Sense, "the error carries sense")
	assert.Equal(t, ioerr.Sense{Key: 0x06, ASC: 0x29, ASCQ: 0x00}, *ie.Sense)
	_, err = fb.ReadAt(context.Background(), buf, 0)
	require.NoError(t, err, "the unit attention is reported once")
	_, err = h.ResetAdapter("vmhba3")
	assert.ErrorIs(t, err, ErrNotFound)
}

// TestRemovePathLive: a dirty path is flushed on its way out; the last
// path is refused without force.
func TestRemovePathLive(t *testing.T) {
	files := store(t, 1<<20, 1)
	h := newHost(t, Options{})
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{fileDevice("d0", files...)}))
	d, err := h.Device("d0")
	require.NoError(t, err)
	buf := make([]byte, 4096)
	for i := 0; i < 8; i++ {
		_, err := d.WriteAt(context.Background(), buf, int64(i)*4096)
		require.NoError(t, err)
	}
	var dirty string
	for _, p := range d.Paths() {
		if p.Dirty() {
			dirty = p.Name
		}
	}
	require.NotEmpty(t, dirty, "a write marked a path dirty")
	r, err := h.RemovePathLive(context.Background(), dirty, false)
	require.NoError(t, err)
	assert.True(t, r.Dirty)
	assert.True(t, r.Flushed, "flushed on its way out: %s", r.FlushError)
	assert.Equal(t, 1, r.Left)
	_, _, err = h.Fault(dirty)
	assert.ErrorIs(t, err, ErrNotFound, "the removed path is gone")

	last := d.Paths()[0].Name
	_, err = h.RemovePathLive(context.Background(), last, false)
	require.ErrorIs(t, err, ErrRefused)
	assert.ErrorContains(t, err, "last path")
	assert.ErrorContains(t, err, "--force")
	r, err = h.RemovePathLive(context.Background(), last, true)
	require.NoError(t, err)
	assert.True(t, r.Forced)
	assert.Equal(t, 0, r.Left)
	_, err = h.RemovePathLive(context.Background(), "nope", false)
	assert.ErrorIs(t, err, ErrNotFound)
}
