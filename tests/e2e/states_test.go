package e2e

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestResetsUnderLoad: four paths over two adapters under fio --verify; a
// LUN reset, a target reset, a bus reset, an ABORT TASK SET and an adapter
// reset — with a slow path whose delayed I/Os the resets abort — cost fio
// nothing: every aborted task and every unit attention is retried.
// Hedging is off: it would send the slow path's reads elsewhere and demote
// the path as slow, leaving nothing on it for the resets to abort.
func TestResetsUnderLoad(t *testing.T) {
	needs.Tools(t, "fio")
	m := startTwoAdapterMount(t, "--hedge", "off")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 12)...)
	waitFor(t, 20*time.Second, "I/O on every path", func() bool {
		io := pathIO(m.status(), "d0")
		return len(io) == 4 && io["vmhba1:C0:T0:L0"] > 0 && io["vmhba2:C0:T1:L0"] > 0
	})
	// A slow path: its I/Os wait in the fault layer, where a reset ends them.
	m.mustCtl("fault", "inject", "vmhba1:C0:T0:L0", "--latency", "50ms", "--op", "read,write")
	time.Sleep(500 * time.Millisecond)
	reset := func(kind, path string) host.ResetReport {
		var rep host.ResetReport
		require.NoError(t, json.Unmarshal([]byte(m.mustCtl("reset", kind, path, "--json")), &rep))
		return rep
	}
	rep := reset("lun", "vmhba1:C0:T0:L0")
	assert.Equal(t, "06/29/03", rep.Sense)
	assert.Len(t, rep.Paths, 4, "a LUN reset reaches every path to the LU")
	assert.Positive(t, rep.Aborted, "the slow path's delayed I/Os were aborted")
	time.Sleep(time.Second)
	rep = reset("target", "vmhba2:C0:T1:L0")
	assert.Equal(t, "target vmhba2:C0:T1", rep.Scope)
	assert.Len(t, rep.Paths, 1)
	time.Sleep(time.Second)
	rep = reset("bus", "vmhba1:C0:T1:L0")
	assert.Equal(t, "06/29/02", rep.Sense)
	assert.Len(t, rep.Paths, 2)
	time.Sleep(time.Second)
	rep = reset("abort-task-set", "vmhba1:C0:T0:L0")
	assert.Equal(t, "06/2f/00", rep.Sense)
	ua := 0
	for _, p := range rep.Paths {
		if p.UnitAttention != "" {
			ua++
		}
	}
	assert.Equal(t, 3, ua, "the other three paths are told their commands were cleared")
	time.Sleep(time.Second)
	out := m.mustCtl("adapter", "reset", "vmhba2")
	assert.Contains(t, out, "06/29/00")
	out, err := m.ctl("reset", "warm", "vmhba1:C0:T0:L0")
	require.Error(t, err, "an unknown reset kind: %s", out)
	assert.Contains(t, out, "lun, target, bus, abort-task-set")

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	st := m.status()
	for _, p := range st.Devices[0].Paths {
		assert.Equal(t, "active", p.State, "%s: a reset fails no path", p.Name)
	}
	events := m.mustCtl("events", "--last", "1000")
	assert.Contains(t, events, "LUN reset on vmhba1:C0:T0:L0")
	assert.Contains(t, events, "ABORT TASK SET")
	assert.Contains(t, events, "adapter-reset")
	m.mustCtl("fault", "clear", "vmhba1:C0:T0:L0")
	m.stopClean(t)
}

// deviceStatus reads one device of `status --json`.
func deviceStatus(t *testing.T, m *mount, dev string) mpath.DeviceStatus {
	t.Helper()
	for _, d := range m.status().Devices {
		if d.Name == dev {
			return d
		}
	}
	t.Fatalf("no device %s", dev)
	return mpath.DeviceStatus{}
}

// TestPDLDetachAndDeviceState: fio --verify runs clean; then every path
// reports permanent device loss (05/25/00): the device is detached (dead)
// and says so in status and events, its open file gets EIO, a new open
// ENXIO; the LU comes back and `device set --state on` attaches it, fio
// --verify runs clean again; `device set --state off|on` detaches and
// attaches by hand.
func TestPDLDetachAndDeviceState(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 96<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--check-interval", "300ms"}, filePaths(st, 2)...)...)
	fioClean := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		r, out, err := runFio(ctx, verifyJob(m.file("d0"), 4)...)
		require.NoError(t, err, "%s: fio: %s", what, out)
		require.Len(t, r.Jobs, 1)
		assert.Equal(t, 0, r.Jobs[0].Error, "%s: fio error", what)
		assert.Equal(t, 0, r.Jobs[0].TotalErr, "%s: fio I/O errors", what)
	}
	fioClean("before")
	assert.Equal(t, "on", deviceStatus(t, m, "d0").State)

	f, err := os.OpenFile(m.file("d0"), os.O_RDWR|syscall.O_DIRECT, 0)
	require.NoError(t, err)
	defer f.Close()
	paths := []string{"vmhba1:C0:T0:L0", "vmhba2:C0:T0:L0"}
	for _, p := range paths {
		m.mustCtl("fault", "inject", p, "--error", "permanent-loss")
	}
	buf := alignedBlock(4096)
	_, err = f.ReadAt(buf, 0)
	require.ErrorIs(t, err, syscall.EIO, "I/O on the open file of a device whose every path is in PDL")
	d := deviceStatus(t, m, "d0")
	assert.Equal(t, "dead", d.State)
	assert.Contains(t, d.StateReason, "permanent device loss on every path")
	for _, p := range d.Paths {
		assert.True(t, p.PDL, "%s in PDL", p.Name)
		assert.Equal(t, "offline", p.DevState)
	}
	_, err = f.WriteAt(buf, 0)
	assert.ErrorIs(t, err, syscall.EIO)
	_, err = os.OpenFile(m.file("d0"), os.O_RDWR, 0)
	assert.ErrorIs(t, err, syscall.ENXIO, "opening a detached device's file")
	out := m.mustCtl("status", "d0")
	assert.Contains(t, out, "state=dead")
	var dl control.DevicesReply
	require.NoError(t, json.Unmarshal([]byte(m.mustCtl("device", "list", "--json")), &dl))
	require.Len(t, dl.Devices, 1)
	assert.Equal(t, "dead", dl.Devices[0].State)
	assert.Contains(t, m.mustCtl("events", "--last", "1000"), "device-detached")

	// The LU comes back; the administrator attaches the device.
	for _, p := range paths {
		m.mustCtl("fault", "clear", p)
	}
	assert.Equal(t, "dead", deviceStatus(t, m, "d0").State, "only the administrator attaches it")
	out = m.mustCtl("device", "set", "--state", "on", "d0")
	assert.Contains(t, out, "d0: on")
	d = deviceStatus(t, m, "d0")
	assert.Equal(t, "on", d.State)
	for _, p := range d.Paths {
		assert.False(t, p.PDL, "%s: PDL forgotten", p.Name)
		assert.Equal(t, "active", p.State)
	}
	assert.Contains(t, m.mustCtl("events", "--last", "1000"), "device-attached")
	fioClean("after attach")

	// By hand: off detaches, on attaches.
	out = m.mustCtl("device", "set", "--state", "off", "--reason", "maintenance", "d0")
	assert.Contains(t, out, "d0: off (maintenance)")
	_, err = os.OpenFile(m.file("d0"), os.O_RDWR, 0)
	assert.ErrorIs(t, err, syscall.ENXIO)
	_, err = f.ReadAt(buf, 0)
	assert.ErrorIs(t, err, syscall.EIO)
	d = deviceStatus(t, m, "d0")
	assert.Equal(t, "off", d.State)
	assert.Equal(t, "maintenance", d.StateReason)
	out, err = m.ctl("device", "set", "--state", "off", "d0")
	require.Error(t, err, "switching an off device off: %s", out)
	assert.Contains(t, out, "--state on")
	out, err = m.ctl("device", "set", "--state", "sideways", "d0")
	require.Error(t, err, out)
	assert.Contains(t, out, "--state on or --state off")
	m.mustCtl("device", "set", "--state", "on", "d0")
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err, "the open file works again")
	require.NoError(t, f.Close())
	fioClean("after off and on")
	m.stopClean(t)
}

// TestStatusFieldsCLI: status shows multipath -ll's fields, path list
// esxcli's.
func TestStatusFieldsCLI(t *testing.T) {
	st := store(t, 16<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_FIXED"}, filePaths(st, 2)...)...)
	out := m.mustCtl("status")
	for _, want := range []string{"hwhandler='0'", "prio=1 status=active", "active ready running", "NumIOsPending="} {
		assert.Contains(t, out, want)
	}
	out = m.mustCtl("path", "list")
	for _, want := range []string{"Group State: active", "Storage Array Type Path Config: SATP", "Path Selection Policy Path Config: {current: "} {
		assert.Contains(t, out, want)
	}
	d := deviceStatus(t, m, "d0")
	assert.Equal(t, "0", d.HWHandler)
	assert.NotEmpty(t, d.WorkingPaths)
	require.NotEmpty(t, d.Groups)
	assert.Equal(t, "active", d.Groups[0].Status)
	m.stopClean(t)
}
