package control

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPolicyRoutes: policy set's failback, no_path_retry and APD timeout,
// queue on|off and path switch over the socket, with their errors typed.
func TestPolicyRoutes(t *testing.T) {
	c, _, _ := apiServer(t)
	ctx := context.Background()
	psp := func() string {
		st, err := c.Status(ctx)
		require.NoError(t, err)
		return st.Devices[0].PSP
	}
	before := psp()

	st, err := c.Policy(ctx, PolicyRequest{Device: "d0", Failback: "manual", NoPathRetry: "queue", APDTimeout: "30s"})
	require.NoError(t, err)
	assert.Equal(t, "manual", st.Options.Failback)
	assert.Equal(t, "queue", st.Options.NoPathRetry)
	assert.Equal(t, "30s", st.Options.APDTimeout)
	assert.Equal(t, before, psp(), "the PSP is kept when only the policy knobs are given")

	_, err = c.Policy(ctx, PolicyRequest{Device: "d0", APDTimeout: "0s"})
	require.ErrorIs(t, err, ErrInvalid)
	assert.ErrorContains(t, err, "no_path_retry fail")
	_, err = c.Policy(ctx, PolicyRequest{Device: "d0", APDTimeout: "soon"})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = c.Policy(ctx, PolicyRequest{Device: "d0", Failback: "sometimes"})
	require.ErrorIs(t, err, ErrInvalid)

	st, err = c.Queue(ctx, "d0", false)
	require.NoError(t, err)
	assert.Equal(t, "off", st.Options.Queueing)
	st, err = c.Queue(ctx, "d0", true)
	require.NoError(t, err)
	assert.Equal(t, "on", st.Options.Queueing)
	_, err = c.Queue(ctx, "nodev", true)
	require.ErrorIs(t, err, ErrNotFound)

	_, err = c.PathSwitch(ctx, "vmhba9:C0:T0:L0")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.PathSwitch(ctx, "")
	require.ErrorIs(t, err, ErrInvalid)
	_, err = c.PathAdmin(ctx, PathAdminRequest{Path: "vmhba2:C0:T0:L0", State: "off"})
	require.NoError(t, err)
	_, err = c.PathSwitch(ctx, "vmhba2:C0:T0:L0")
	require.ErrorIs(t, err, ErrInvalid)
	assert.ErrorContains(t, err, "switched off")
	_, err = c.PathSwitch(ctx, "vmhba1:C0:T0:L0")
	require.NoError(t, err)
}
