package nmp

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/mpath"
)

func TestParseFailbackAndNoPathRetry(t *testing.T) {
	for in, want := range map[string]string{"": "immediate", "Immediate": "immediate", "manual": "manual", "followover": "followover", "30": "30"} {
		f, err := ParseFailback(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, f.String(), in)
	}
	for _, bad := range []string{"0", "-1", "1.5", "soon"} {
		_, err := ParseFailback(bad)
		assert.ErrorContains(t, err, "want immediate, manual, followover or a number of seconds", bad)
	}
	for in, want := range map[string]string{"": "", "queue": "queue", "FAIL": "fail", "12": "12"} {
		n, err := ParseNoPathRetry(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, n.String(), in)
	}
	for _, bad := range []string{"0", "-2", "always"} {
		_, err := ParseNoPathRetry(bad)
		assert.ErrorContains(t, err, "want queue, fail or a number of checker intervals", bad)
	}
	assert.ErrorContains(t, CheckAPDTimeout(0), "no_path_retry fail")
	assert.ErrorContains(t, CheckAPDTimeout(-time.Second), "want a positive duration")
	assert.NoError(t, CheckAPDTimeout(time.Second))
}

// policy set's failback, no_path_retry and APD timeout: checked as the
// config is, shown in status.
func TestSetFailbackPolicy(t *testing.T) {
	s := backendtest.NewMem(4096)
	paths := []*mpath.Path{{Name: "p1", Backend: newFakePath("p1", s)}, {Name: "p2", Backend: newFakePath("p2", s)}}
	_, err := NewDevice(mpath.DeviceConfig{Name: "dev0", APDTimeout: -time.Second}, paths, nil)
	require.ErrorContains(t, err, "apd_timeout -1s")
	_, err = NewDevice(mpath.DeviceConfig{Name: "dev0", Failback: "often"}, paths, nil)
	require.ErrorContains(t, err, `device dev0: failback "often"`)
	d, err := NewDevice(mpath.DeviceConfig{Name: "dev0", Failback: "manual", NoPathRetry: "queue"}, paths, nil)
	require.NoError(t, err)
	defer d.Close()
	st := d.Status()
	assert.Equal(t, "manual", st.Options.Failback)
	assert.Equal(t, "queue", st.Options.NoPathRetry)
	assert.Equal(t, "on", st.Options.Queueing)
	require.ErrorContains(t, d.SetFailbackPolicy(PolicyChange{APDTimeoutSet: true}), "apd_timeout 0s")
	require.ErrorContains(t, d.SetFailbackPolicy(PolicyChange{NoPathRetry: "0"}), "write fail")
	require.NoError(t, d.SetFailbackPolicy(PolicyChange{Failback: "followover", NoPathRetry: "3", APDTimeout: 30 * time.Second, APDTimeoutSet: true}))
	require.NoError(t, d.SetQueueing(false))
	st = d.Status()
	assert.Equal(t, "followover", st.Options.Failback)
	assert.Equal(t, "3", st.Options.NoPathRetry)
	assert.Equal(t, "30s", st.Options.APDTimeout)
	assert.Equal(t, "off", st.Options.Queueing)
	// Path switch applies to MRU and FIXED; the default SATP's PSP here is
	// FIXED, whose usable preferred path wins: switching elsewhere says so.
	require.ErrorContains(t, d.SwitchPath("p2"), "preferred path p1 is usable")
	require.NoError(t, d.SwitchPath("p1"))
	require.ErrorContains(t, d.SwitchPath("p7"), `no path "p7"`)
}
