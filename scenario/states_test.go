package scenario

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseResetAndDevice: the reset and device verbs, and their errors.
func TestParseResetAndDevice(t *testing.T) {
	sc, err := Parse("s.scn", "at 1s reset lun path vmhba1:C0:T0:L0\nat 2s reset abort-task-set path vmhba2:C0:T0:L0\nat 3s device lab off\nat 4s device lab on")
	require.NoError(t, err)
	steps := sc.Expand()
	require.Len(t, steps, 4)
	assert.Equal(t, StepReset, steps[0].Kind)
	assert.Equal(t, "lun reset on vmhba1:C0:T0:L0", steps[0].What())
	assert.Equal(t, "abort-task-set", steps[1].Reset)
	assert.Equal(t, StepDevice, steps[2].Kind)
	assert.Equal(t, "device lab off", steps[2].What())
	for src, want := range map[string]string{
		"at 1s reset warm path p":   `reset kind "warm": want lun, target, bus or abort-task-set`,
		"at 1s reset lun p":         `want "path"`,
		"at 1s device lab sideways": `device state "sideways": want on or off`,
	} {
		_, err := Parse("bad.scn", src)
		require.Error(t, err, src)
		assert.Contains(t, err.Error(), want, src)
	}
}

// TestRunResetAndDevice: a LUN reset and a bus reset under a workload cost
// it nothing; the device switched off refuses I/O and on serves again.
func TestRunResetAndDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t, labOpts{})
		sc, err := Parse("states.scn", "at 1s reset lun path vmhba1:C0:T0:L0\nat 2s reset bus path vmhba2:C0:T0:L0\nend 3s")
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		var ioErrs []error
		done := make(chan struct{})
		go func() {
			defer close(done)
			ioErrs = workload(ctx, l.dev, 1<<30, 300*time.Microsecond, 2*time.Millisecond, 9)
		}()
		_, err = Run(context.Background(), sc, RuntimeTarget{RT: l.rt}, Options{SampleInterval: -1, NoTrace: true})
		cancel()
		<-done
		require.NoError(t, err)
		assert.Empty(t, ioErrs, "resets cost the workload nothing")

		sc, err = Parse("off.scn", "at 1s device lab off\nend 2s")
		require.NoError(t, err)
		_, err = Run(context.Background(), sc, RuntimeTarget{RT: l.rt}, Options{SampleInterval: -1, NoTrace: true})
		require.NoError(t, err)
		assert.Equal(t, "off", l.dev.Status().State)
		_, err = l.dev.ReadAt(context.Background(), make([]byte, 4096), 0)
		require.Error(t, err)
		assert.True(t, strings.Contains(err.Error(), "detached"), "%v", err)
		sc, err = Parse("on.scn", "at 1s device lab on\nend 2s")
		require.NoError(t, err)
		_, err = Run(context.Background(), sc, RuntimeTarget{RT: l.rt}, Options{SampleInterval: -1, NoTrace: true})
		require.NoError(t, err)
		_, err = l.dev.ReadAt(context.Background(), make([]byte, 4096), 0)
		require.NoError(t, err)
	})
}
