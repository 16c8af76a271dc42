package host

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

func offlineByName(h *Host) map[string]OfflinePath {
	out := map[string]OfflinePath{}
	for _, op := range h.Offline() {
		out[op.Name] = op
	}
	return out
}

// TestClaimRuleLifecycle: a MASK_PATH rule added goes to the file class
// only and claims nothing; load makes it runtime; run masks the claimed
// path live (it stays known as masked); removing the rule, loading and
// reclaiming brings it back under its old name. The last usable path is
// never taken away.
func TestClaimRuleLifecycle(t *testing.T) {
	h, d := fourPaths(t)
	ctx := context.Background()
	rule, err := mpath.ParseRule("200 location MASK_PATH location=vmhba2:C0:T1:L0")
	require.NoError(t, err)
	ch, err := h.ClaimRuleAdd(rule)
	require.NoError(t, err)
	assert.Contains(t, ch.Where, "memory")
	classes := map[string]bool{}
	for _, r := range h.ClaimRules() {
		if r.ID == 200 {
			classes[r.Class] = true
		}
	}
	assert.Equal(t, map[string]bool{"file": true}, classes, "add changes the configuration only")
	assert.Empty(t, h.RunClaimRules(ctx), "a rule not loaded claims nothing")
	require.Len(t, d.Paths(), 4)

	ld := h.ClaimRuleLoad()
	require.NotNil(t, ld.Load)
	require.Len(t, ld.Load.Added, 1)
	assert.Equal(t, 200, ld.Load.Added[0].ID)

	out := h.RunClaimRules(ctx)
	require.Len(t, out, 1)
	assert.Equal(t, "vmhba2:C0:T1:L0", out[0].Path)
	assert.Equal(t, OfflineMasked, out[0].To)
	assert.Empty(t, out[0].Error)
	assert.Len(t, d.Paths(), 3)
	off := offlineByName(h)
	require.Contains(t, off, "vmhba2:C0:T1:L0")
	assert.Equal(t, OfflineMasked, off["vmhba2:C0:T1:L0"].State)
	assert.Equal(t, 200, off["vmhba2:C0:T1:L0"].Rule)
	assert.Equal(t, "d0", off["vmhba2:C0:T1:L0"].Device)

	// Unmask: remove, load, reclaim.
	_, err = h.ClaimRuleRemove(200)
	require.NoError(t, err)
	assert.Empty(t, h.RunClaimRules(ctx), "run leaves masked paths to reclaim")
	h.ClaimRuleLoad()
	out, err = h.Reclaim(ctx, "d0")
	require.NoError(t, err)
	require.Len(t, out, 1)
	assert.Equal(t, ClaimedState, out[0].To, "%+v", out[0])
	require.Len(t, d.Paths(), 4)
	assert.NotNil(t, d.FindPath("vmhba2:C0:T1:L0"), "the path returns under its old name")
	assert.Empty(t, h.Offline())

	// Unclaim takes a path away; run claims it again.
	out, err = h.Unclaim(ctx, UnclaimRequest{Path: "vmhba1:C0:T0:L0"})
	require.NoError(t, err)
	require.Len(t, out, 1)
	assert.Equal(t, OfflineUnclaimed, out[0].To)
	assert.Equal(t, OfflineUnclaimed, offlineByName(h)["vmhba1:C0:T0:L0"].State)
	_, err = h.Unclaim(ctx, UnclaimRequest{Path: "vmhba1:C0:T0:L0"})
	assert.ErrorContains(t, err, "unclaimed already")
	out = h.RunClaimRules(ctx)
	require.Len(t, out, 1)
	assert.Equal(t, ClaimedState, out[0].To, "%+v", out[0])
	assert.Len(t, d.Paths(), 4)

	// Unclaiming the whole device stops at its last usable path.
	out, err = h.Unclaim(ctx, UnclaimRequest{Device: "d0"})
	require.NoError(t, err)
	require.Len(t, out, 4)
	assert.Empty(t, out[0].Error)
	assert.Contains(t, out[3].Error, "the device is in use")
	assert.Len(t, d.Paths(), 1)
	_, err = h.Unclaim(ctx, UnclaimRequest{Path: d.Paths()[0].Name})
	assert.ErrorIs(t, err, ErrRefused)
	out, err = h.Reclaim(ctx, "d0")
	require.NoError(t, err)
	assert.Len(t, out, 3)
	assert.Len(t, d.Paths(), 4)

	_, err = h.Unclaim(ctx, UnclaimRequest{})
	assert.ErrorIs(t, err, ErrInvalid)
	_, err = h.Reclaim(ctx, "nodev")
	assert.ErrorIs(t, err, ErrNotFound)
}

// TestClaimRulesGoToTheConfigFile: with a config file, rule changes
// rewrite its claim_rules and satp_rules and keep the rest.
func TestClaimRulesGoToTheConfigFile(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "m.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("# my mount\ncontrol: /tmp/x.sock # the socket\ndevices: []\n"), 0o640))
	h := newHost(t, Options{ConfigFile: cfg})
	r, err := mpath.ParseRule(`300 vendor MASK_PATH vendor=ACME model="Big Box"`)
	require.NoError(t, err)
	ch, err := h.ClaimRuleAdd(r)
	require.NoError(t, err)
	assert.Equal(t, "config file "+cfg, ch.Where)
	_, err = h.SATPRuleAdd(nmp.SATPRule{SATP: nmp.SATPLocal, Transport: "nbd", PSP: nmp.PSPRR})
	require.NoError(t, err)
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	assert.Contains(t, string(b), "# my mount")
	assert.Contains(t, string(b), "# the socket")
	assert.Contains(t, string(b), `- 300 vendor MASK_PATH vendor=ACME model="Big Box"`)
	assert.Contains(t, string(b), "transport: nbd")
	st, err := os.Stat(cfg)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	// What was written reads back as the same rule.
	back, _, err := Rules([]string{`300 vendor MASK_PATH vendor=ACME model="Big Box"`}, nil)
	require.NoError(t, err)
	assert.Contains(t, back.FileRules(), r.Spec())

	_, err = h.ClaimRuleMove(300, 310)
	require.NoError(t, err)
	_, err = h.ClaimRuleRemove(310)
	require.NoError(t, err)
	_, err = h.SATPRuleRemove(nmp.SATPRule{SATP: nmp.SATPLocal, Transport: "nbd"})
	require.NoError(t, err)
	b, err = os.ReadFile(cfg)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "claim_rules")
	assert.NotContains(t, string(b), "satp_rules")
	assert.Contains(t, string(b), "control: /tmp/x.sock")

	_, err = h.ClaimRuleRemove(65535)
	assert.ErrorContains(t, err, "system rule")
	_, err = h.ClaimRuleRemove(400)
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = h.SATPRuleAdd(nmp.SATPRule{SATP: nmp.SATPLocal, Transport: "scsi"})
	assert.ErrorContains(t, err, "want one of fc, iscsi")
}

// TestRescanFindsNewPathsAndDevices: the sources gain a path of d0 and a
// new device; rescan joins the one and makes and serves the other.
func TestRescanFindsNewPathsAndDevices(t *testing.T) {
	files := store(t, 1<<20, 2)
	other := store(t, 1<<20, 0)
	srcs := []DeviceConfig{fileDevice("d0", files[0], files[1])}
	h := newHost(t, Options{Sources: func(context.Context) ([]DeviceConfig, error) { return srcs, nil }})
	require.NoError(t, h.Build(context.Background(), srcs))
	var served []string
	h.OnDevice(func(io IO) error { served = append(served, io.Name()); return nil })
	res, err := h.Rescan(context.Background(), "")
	require.NoError(t, err)
	assert.Empty(t, res.NewPaths, "nothing new")
	assert.Empty(t, res.NewDevices)

	srcs = []DeviceConfig{fileDevice("d0", files...), fileDevice("d1", other[0])}
	srcs[0].Paths[2].Location = "vmhba7:C0:T0:L0"
	res, err = h.Rescan(context.Background(), "vmhba7")
	require.NoError(t, err)
	require.Len(t, res.NewPaths, 1, "%+v", res)
	assert.Equal(t, ClaimedState, res.NewPaths[0].To, "%+v", res.NewPaths[0])
	assert.Empty(t, res.NewDevices, "d1 has no path on vmhba7")
	d, err := h.Device("d0")
	require.NoError(t, err)
	assert.NotNil(t, d.FindPath("vmhba7:C0:T0:L0"))

	res, err = h.Rescan(context.Background(), "")
	require.NoError(t, err)
	assert.Equal(t, []string{"d1"}, res.NewDevices)
	assert.Equal(t, []string{"d1"}, served)
	assert.Empty(t, res.Errors)
	_, err = h.Device("d1")
	require.NoError(t, err)
}
