package control

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/host"
)

// TestAdapterRoutes: adapter list, fail, restore and reset and path
// remove over the socket, with their errors' kinds.
func TestAdapterRoutes(t *testing.T) {
	c, _, _ := apiServer(t)
	ctx := context.Background()

	ar, err := c.Adapters(ctx)
	require.NoError(t, err)
	require.Len(t, ar.Adapters, 2)
	assert.Equal(t, "vmhba1", ar.Adapters[0].Name)
	assert.Equal(t, host.AdapterOnline, ar.Adapters[0].State)
	assert.Equal(t, []string{"d0"}, ar.Adapters[0].Devices)

	st, err := c.Adapter(ctx, AdapterRequest{Adapter: "vmhba2", Action: "fail", Reason: "cable pulled"})
	require.NoError(t, err)
	assert.Equal(t, host.AdapterFailed, st.State)
	assert.Equal(t, "cable pulled", st.Reason)
	assert.Equal(t, 1, st.Dead)
	status, err := c.Status(ctx)
	require.NoError(t, err)
	for _, p := range status.Devices[0].Paths {
		want := map[string]string{"vmhba1:C0:T0:L0": "active", "vmhba2:C0:T0:L0": "dead"}[p.Name]
		assert.Equal(t, want, p.State, p.Name)
	}
	st, err = c.Adapter(ctx, AdapterRequest{Adapter: "vmhba2", Action: "restore"})
	require.NoError(t, err)
	assert.Equal(t, host.AdapterOnline, st.State)
	assert.Equal(t, 0, st.Dead)
	_, err = c.Adapter(ctx, AdapterRequest{Adapter: "vmhba1", Action: "reset"})
	require.NoError(t, err)
	fl, err := c.FaultList(ctx)
	require.NoError(t, err)
	require.Len(t, fl.Faults, 1)
	assert.Equal(t, host.SenseResetUA, fl.Faults[0].Spec.Sense)

	_, err = c.Adapter(ctx, AdapterRequest{Adapter: "vmhba5", Action: "fail"})
	require.ErrorIs(t, err, ErrNotFound)
	assert.ErrorContains(t, err, "adapters: vmhba1, vmhba2")
	_, err = c.Adapter(ctx, AdapterRequest{Adapter: "vmhba1", Action: "explode"})
	assert.ErrorIs(t, err, ErrInvalid)

	r, err := c.PathRemove(ctx, PathRemoveRequest{Path: "vmhba2:C0:T0:L0"})
	require.NoError(t, err)
	assert.Equal(t, "d0", r.Device)
	assert.Equal(t, 1, r.Left)
	_, err = c.PathRemove(ctx, PathRemoveRequest{Path: "vmhba1:C0:T0:L0"})
	assert.ErrorIs(t, err, ErrRefused, "the last path without force")
	_, err = c.PathRemove(ctx, PathRemoveRequest{})
	assert.ErrorIs(t, err, ErrInvalid)
}
