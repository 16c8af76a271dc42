package control

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// TestClaimingOverTheSocket: the claim-rule lifecycle (add, load, run,
// unclaim, reclaim), SATP rules and default PSPs, and rescan through the
// client, with the kinds of their errors.
func TestClaimingOverTheSocket(t *testing.T) {
	c, _, _ := apiServer(t)
	ctx := context.Background()
	rule := mpath.Rule{ID: 150, Type: "location", Location: "vmhba2:C0:*:*", Plugin: mpath.PluginMaskPath}
	rep, err := c.ClaimRule(ctx, ClaimRuleRequest{Action: "add", Rule: &rule})
	require.NoError(t, err)
	require.NotNil(t, rep.Change)
	assert.Contains(t, rep.Change.Where, "memory")
	_, err = c.ClaimRule(ctx, ClaimRuleRequest{Action: "add", Rule: &rule})
	assert.ErrorIs(t, err, ErrExists)
	_, err = c.ClaimRule(ctx, ClaimRuleRequest{Action: "load"})
	require.NoError(t, err)
	rep, err = c.ClaimRule(ctx, ClaimRuleRequest{Action: "run"})
	require.NoError(t, err)
	require.Len(t, rep.Outcomes, 1)
	assert.Equal(t, host.OfflineMasked, rep.Outcomes[0].To)
	off, err := c.Offline(ctx)
	require.NoError(t, err)
	require.Len(t, off.Paths, 1)
	assert.Equal(t, "vmhba2:C0:T0:L0", off.Paths[0].Name)
	assert.Equal(t, host.OfflineMasked, off.Paths[0].State)

	_, err = c.Claiming(ctx, ClaimingRequest{Action: "unclaim", Path: "vmhba1:C0:T0:L0"})
	assert.ErrorIs(t, err, ErrRefused, "the last path of a device in use")
	_, err = c.ClaimRule(ctx, ClaimRuleRequest{Action: "remove", ID: 150})
	require.NoError(t, err)
	_, err = c.ClaimRule(ctx, ClaimRuleRequest{Action: "load"})
	require.NoError(t, err)
	cr, err := c.Claiming(ctx, ClaimingRequest{Action: "reclaim", Device: "d0"})
	require.NoError(t, err)
	require.Len(t, cr.Outcomes, 1)
	assert.Equal(t, host.ClaimedState, cr.Outcomes[0].To, "%+v", cr.Outcomes[0])
	_, err = c.Claiming(ctx, ClaimingRequest{Action: "reclaim"})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = c.ClaimRule(ctx, ClaimRuleRequest{Action: "explode"})
	assert.ErrorIs(t, err, ErrInvalid)

	_, err = c.SATPRule(ctx, SATPRuleRequest{Action: "add", Rule: nmp.SATPRule{SATP: nmp.SATPLocal, Driver: "mpathfs_nbd", PSP: nmp.PSPRR}})
	require.NoError(t, err)
	rules, err := c.SATPRules(ctx)
	require.NoError(t, err)
	assert.Equal(t, "mpathfs_nbd", rules.Satprules[0].Driver, "a driver rule is searched first")
	info, err := c.SATPSet(ctx, SATPSetRequest{SATP: nmp.SATPDefaultAA, DefaultPSP: nmp.PSPMRU})
	require.NoError(t, err)
	assert.Equal(t, nmp.PSPMRU, info.DefaultPSP)
	sl, err := c.SATPs(ctx)
	require.NoError(t, err)
	for _, s := range sl.SATPs {
		if s.Name == nmp.SATPDefaultAA {
			assert.Equal(t, nmp.PSPMRU, s.DefaultPSP)
		}
	}
	_, err = c.SATPSet(ctx, SATPSetRequest{SATP: "VMW_SATP_NOPE", DefaultPSP: nmp.PSPMRU})
	assert.ErrorIs(t, err, ErrInvalid)

	res, err := c.Rescan(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, res.NewPaths)
	assert.Empty(t, res.Errors)
}
