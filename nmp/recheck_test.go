package nmp

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/mpath"
)

// Recheck (hotplug's uevent-triggered probe) brings a returning path back
// at once, with the cause in the path-state event; it leaves a path in
// service alone and reports a failing probe as a dead path still.
func TestRecheckBringsBackADeadPath(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, map[string]string{"iops": "1"})) // checker: an hour
	require.NoError(t, r.d.FailPath("p1", "test: path failed"))
	require.Equal(t, mpath.StateDead, r.state("p1"))
	r.drainEvents()

	// In service: no probe.
	before := r.fake("p2").probes.Load()
	probed, err := r.d.Recheck("p2", "uevent: change: device changed")
	require.NoError(t, err)
	assert.False(t, probed, "a path in service was probed")
	assert.Equal(t, before, r.fake("p2").probes.Load())

	// Still failing: probed, still dead.
	r.fake("p1").failClass(errProbeFault.Class, "probe")
	probed, err = r.d.Recheck("p1", "uevent: change: device changed")
	require.NoError(t, err)
	assert.True(t, probed)
	assert.Equal(t, mpath.StateDead, r.state("p1"))

	// Back: active at once, the reason naming the uevent.
	r.fake("p1").recover()
	probed, err = r.d.Recheck("p1", "uevent: change: device changed")
	require.NoError(t, err)
	assert.True(t, probed)
	assert.Equal(t, mpath.StateActive, r.state("p1"))
	found := false
	for _, ev := range r.drainEvents() {
		if ev.Path == "p1" && strings.Contains(ev.Reason, "uevent: change: device changed") {
			found = true
		}
	}
	assert.True(t, found, "no event for p1 names the uevent")
	assert.Contains(t, r.ios(t, 4), "p1", "the returned path carries I/O again")

	_, err = r.d.Recheck("p9", "uevent")
	assert.ErrorContains(t, err, `no path "p9"`)
}
