package host

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/fault"
)

// uaPaths maps each path with a pending one-shot unit attention to its sense.
func uaPaths(h *Host) map[string]string {
	out := map[string]string{}
	for _, f := range h.Faults() {
		if f.Spec.Count == 1 && f.Spec.Error == "retryable" {
			out[f.Path] = f.Spec.Sense
		}
	}
	return out
}

// TestResetScopes: each kind reaches the paths the real one reaches,
// with its sense.
func TestResetScopes(t *testing.T) {
	for _, tc := range []struct {
		kind, path, sense, scope string
		ua                       []string
	}{
		{ResetLUN, "vmhba1:C0:T0:L0", "06/29/03", "LU d0", []string{"vmhba1:C0:T0:L0", "vmhba1:C0:T1:L0", "vmhba2:C0:T0:L0", "vmhba2:C0:T1:L0"}},
		{ResetTarget, "vmhba2:C0:T1:L0", "06/29/03", "target vmhba2:C0:T1", []string{"vmhba2:C0:T1:L0"}},
		{ResetBus, "vmhba1:C0:T1:L0", "06/29/02", "adapter vmhba1", []string{"vmhba1:C0:T0:L0", "vmhba1:C0:T1:L0"}},
		{ResetAbortTaskSet, "vmhba1:C0:T0:L0", "06/2f/00", "LU d0", []string{"vmhba1:C0:T1:L0", "vmhba2:C0:T0:L0", "vmhba2:C0:T1:L0"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			h, _ := fourPaths(t)
			sub := h.Events().Subscribe(16)
			defer sub.Close()
			rep, err := h.Reset(tc.kind, tc.path)
			require.NoError(t, err)
			assert.Equal(t, tc.kind, rep.Kind)
			assert.Equal(t, tc.scope, rep.Scope)
			assert.Equal(t, tc.sense, rep.Sense)
			got := uaPaths(h)
			assert.Len(t, got, len(tc.ua))
			for _, p := range tc.ua {
				assert.Equal(t, tc.sense, got[p], "%s gets the unit attention", p)
			}
			ev := <-sub.C
			assert.Equal(t, "reset", ev.Kind)
			assert.Equal(t, "d0", ev.Device)
			assert.Contains(t, ev.Reason, tc.sense)
		})
	}
}

func TestResetRefusesBadInput(t *testing.T) {
	h, _ := fourPaths(t)
	_, err := h.Reset("warm", "vmhba1:C0:T0:L0")
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "lun, target, bus, abort-task-set")
	_, err = h.Reset(ResetLUN, "vmhba7:C0:T0:L0")
	assert.ErrorIs(t, err, ErrNotFound)
}

// TestResetAbortsInFlight: a read the fault layer holds on every path is
// ended by a LUN reset and retried; it completes without an error.
func TestResetAbortsInFlight(t *testing.T) {
	h, d := fourPaths(t)
	for _, p := range d.Paths() {
		fb, _, err := h.Fault(p.Name)
		require.NoError(t, err)
		_, err = fb.Inject(fault.Spec{Hang: true, Count: 1, Ops: []string{fault.OpRead}})
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.ReadAt(context.Background(), make([]byte, 4096), 0)
		done <- err
	}()
	var held bool
	for i := 0; i < 500 && !held; i++ {
		for _, f := range h.Faults() {
			held = held || f.Held > 0
		}
		time.Sleep(2 * time.Millisecond)
	}
	require.True(t, held, "the read is held")
	rep, err := h.Reset(ResetLUN, "vmhba1:C0:T0:L0")
	require.NoError(t, err)
	assert.Equal(t, 1, rep.Aborted)
	require.NoError(t, <-done, "the aborted read is retried")
	for _, p := range d.Paths() {
		assert.Equal(t, "active", p.State().String(), "a reset fails no path")
	}
}
