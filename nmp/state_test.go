package nmp

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestPDLDetach: once every path is in permanent device loss the device
// is detached (dead) and says so; its I/O fails at once; attaching it by
// hand after the LU is back forgets the PDL and serves again.
func TestPDLDetach(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, map[string]string{"iops": "1"}))
	buf := make([]byte, 4096)
	for _, f := range r.fakes {
		f.failClass(ioerr.ClassPermanentLoss)
	}
	_, err := r.d.ReadAt(context.Background(), buf, 0)
	require.Error(t, err)
	assert.ErrorIs(t, err, ioerr.ErrPermanentLoss)
	st := r.d.Status()
	assert.Equal(t, DeviceDead, st.State)
	assert.Contains(t, st.StateReason, "permanent device loss on every path")
	require.NotNil(t, st.StateSince)
	for _, p := range st.Paths {
		assert.True(t, p.PDL)
		assert.Equal(t, "faulty", p.Checker)
		assert.Equal(t, "offline", p.DevState)
		assert.Equal(t, "dead", p.GroupState)
	}
	assert.True(t, sawEvent(r, "device-detached"), "the detach is an event")
	_, err = r.d.WriteAt(context.Background(), buf, 0)
	require.Error(t, err)
	assert.ErrorIs(t, err, ioerr.ErrPermanentLoss)

	for _, f := range r.fakes {
		f.recover()
	}
	require.NoError(t, r.d.SetDeviceState(true, ""))
	assert.Equal(t, DeviceOn, r.d.Status().State)
	_, err = r.d.WriteAt(context.Background(), buf, 0)
	require.NoError(t, err, "attached again")
	for _, p := range r.d.Paths() {
		assert.False(t, p.PDL(), "%s: PDL forgotten", p.Name)
		assert.Equal(t, mpath.StateActive, p.State())
	}
	assert.True(t, sawEvent(r, "device-attached"))
	assert.Error(t, r.d.SetDeviceState(true, ""), "attaching an attached device")
}

// TestOneLiveNoDetach: PDL on some paths only keeps the device on.
func TestOneLiveNoDetach(t *testing.T) {
	r := newRig(t, 2, testConfig(PSPRR, map[string]string{"iops": "1"}))
	r.fake("p1").failClass(ioerr.ClassPermanentLoss)
	for i := range 8 {
		r.write(t, int64(i)*4096)
	}
	assert.True(t, r.path("p1").PDL())
	assert.Equal(t, DeviceOn, r.d.Status().State)
}

// TestDeviceOffByHand: off refuses I/O at once and wakes I/O waiting out
// All-Paths-Down; on serves again.
func TestDeviceOffByHand(t *testing.T) {
	cfg := testConfig(PSPFixed, nil)
	cfg.APDTimeout = time.Hour
	r := newRig(t, 1, cfg)
	r.fake("p1").failClass(ioerr.ClassPathFailure)
	done := make(chan error, 1)
	go func() {
		_, err := r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
		done <- err
	}()
	for r.d.Status().APD == false {
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, r.d.SetDeviceState(false, "maintenance"))
	err := <-done
	require.Error(t, err, "the I/O waiting in APD fails once the device is off")
	assert.Contains(t, err.Error(), "maintenance")
	st := r.d.Status()
	assert.Equal(t, DeviceOff, st.State)
	assert.Equal(t, "maintenance", st.StateReason)
	err = r.d.SetDeviceState(false, "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--state on")
	r.fake("p1").recover()
	require.NoError(t, r.d.SetDeviceState(true, ""))
	r.write(t, 0)
	assert.Equal(t, DeviceOn, r.d.Status().State)
}

// TestStatusFields: multipath -ll's and esxcli's fields.
func TestStatusFields(t *testing.T) {
	r := newRig(t, 3, testConfig(PSPFixed, nil))
	r.write(t, 0)
	require.NoError(t, r.d.SetPathAdmin("p3", false))
	st := r.d.Status()
	assert.Equal(t, "0", st.HWHandler)
	assert.Equal(t, DeviceOn, st.State)
	assert.Equal(t, []string{"p1"}, st.WorkingPaths)
	require.Len(t, st.Groups, 2)
	assert.Equal(t, "active", st.Groups[0].Status)
	assert.Equal(t, []string{"p1", "p2"}, st.Groups[0].Paths)
	assert.Equal(t, 1, st.Groups[0].Prio)
	assert.Contains(t, st.Groups[0].Policy, PSPFixed)
	assert.Equal(t, "disabled", st.Groups[1].Status)
	assert.Equal(t, []string{"p3"}, st.Groups[1].Paths)
	byName := map[string]mpath.PathStatus{}
	for _, p := range st.Paths {
		byName[p.Name] = p
	}
	assert.Equal(t, "{current: yes; preferred: yes}", byName["p1"].PSPPathConfig)
	assert.True(t, byName["p1"].Current)
	assert.Equal(t, "{current: no; preferred: no}", byName["p2"].PSPPathConfig)
	assert.Equal(t, "SATP VMW_SATP_DEFAULT_AA does not support path configuration.", byName["p1"].SATPPathConfig)
	for _, n := range []string{"p1", "p2"} {
		assert.Equal(t, "active", byName[n].DMState)
		assert.Equal(t, "ready", byName[n].Checker)
		assert.Equal(t, "running", byName[n].DevState)
		assert.Equal(t, "active", byName[n].GroupState)
	}
	assert.Equal(t, "failed", byName["p3"].DMState)
	assert.Equal(t, "undef", byName["p3"].Checker)
	assert.Equal(t, "disabled", byName["p3"].GroupState)

	rr := newRig(t, 2, testConfig(PSPRR, nil))
	st = rr.d.Status()
	assert.Equal(t, []string{"p1", "p2"}, st.WorkingPaths)
	assert.Equal(t, "PSP VMW_PSP_RR does not support path configuration.", st.Paths[0].PSPPathConfig)
	assert.Equal(t, int64(0), st.IOsPending)
}

func sawEvent(r *rig, kind string) bool {
	for {
		select {
		case ev := <-r.events.C:
			if ev.Kind == kind {
				return true
			}
		default:
			return false
		}
	}
}
