package host

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/nmp"
)

// pluginOutcome is a reclaim's outcome for the device itself.
func pluginOutcome(out []ClaimOutcome) (ClaimOutcome, bool) {
	for _, o := range out {
		if o.Plugins {
			return o, true
		}
	}
	return ClaimOutcome{}, false
}

// TestReclaimRepicksPlugins: under I/O, an SATP rule that now matches the
// device and then a new default PSP of its SATP reach the device through
// `claiming reclaim` — its SATP and PSP are replaced live, the I/O sees
// no error — and a reclaim with nothing new changes nothing.
func TestReclaimRepicksPlugins(t *testing.T) {
	h, d := fourPaths(t)
	ctx := context.Background()
	st := d.Status()
	require.Equal(t, nmp.SATPLocal, st.SATP)
	before := st.PSP

	var stop atomic.Bool
	var ios, errs atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for i := 0; !stop.Load(); i++ {
				off := int64((w*64 + i%64) * 4096)
				var err error
				if i%2 == 0 {
					_, err = d.WriteAt(ctx, buf, off)
				} else {
					_, err = d.ReadAt(ctx, buf, off)
				}
				ios.Add(1)
				if err != nil {
					errs.Add(1)
				}
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()

	out, err := h.Reclaim(ctx, "d0")
	require.NoError(t, err)
	_, changed := pluginOutcome(out)
	assert.False(t, changed, "nothing new in the rules: the plugins stay")

	_, err = h.SATPRuleAdd(nmp.SATPRule{SATP: nmp.SATPDefaultAA, Transport: "file", PSP: nmp.PSPRR, PSPOptions: map[string]string{"iops": "1"}})
	require.NoError(t, err)
	assert.Equal(t, nmp.SATPLocal, d.Status().SATP, "a rule change alone leaves the running device as it is")
	out, err = h.Reclaim(ctx, "d0")
	require.NoError(t, err)
	o, changed := pluginOutcome(out)
	require.True(t, changed, "%+v", out)
	assert.Empty(t, o.Error)
	assert.Equal(t, nmp.SATPLocal+" "+before, o.From)
	assert.Equal(t, nmp.SATPDefaultAA+" "+nmp.PSPRR, o.To)
	assert.Contains(t, o.Why, "satp rule")
	st = d.Status()
	assert.Equal(t, nmp.SATPDefaultAA, st.SATP)
	assert.Equal(t, nmp.PSPRR, st.PSP)
	e, err := h.Explain("d0")
	require.NoError(t, err)
	assert.Equal(t, nmp.SATPDefaultAA, e.SATP.Value, "explain says what the reclaim picked")

	// The rule without a PSP, and a new default PSP of the SATP.
	_, err = h.SATPRuleRemove(nmp.SATPRule{SATP: nmp.SATPDefaultAA, Transport: "file"})
	require.NoError(t, err)
	_, err = h.SATPRuleAdd(nmp.SATPRule{SATP: nmp.SATPDefaultAA, Transport: "file"})
	require.NoError(t, err)
	_, err = h.SetSATPDefaultPSP(nmp.SATPDefaultAA, nmp.PSPMRU)
	require.NoError(t, err)
	out, err = h.Reclaim(ctx, "d0")
	require.NoError(t, err)
	o, changed = pluginOutcome(out)
	require.True(t, changed, "%+v", out)
	assert.Equal(t, nmp.SATPDefaultAA+" "+nmp.PSPMRU, o.To)
	assert.Equal(t, nmp.PSPMRU, d.Status().PSP)
	for _, p := range d.Paths() {
		assert.Equal(t, "active", p.State().String(), "path %s", p.Name)
	}

	stop.Store(true)
	wg.Wait()
	assert.Positive(t, ios.Load())
	assert.Zero(t, errs.Load(), "I/O errors across the live SATP and PSP changes")
}
