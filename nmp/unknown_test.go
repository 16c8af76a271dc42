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

// A path is unknown until its first probe: NewDevice returns with its paths
// judged, a path added live joins unknown and carries no I/O until its
// probe says active, and a device whose only candidates are unknown is not
// in All-Paths-Down: its I/O waits for the probe instead of failing.

// addPathAsync adds a fake path named name over the rig's store, whose
// probes hang until recover() and then answer probeErr, and returns the
// channel AddPath's result arrives on once the path joined (unknown).
func addPathAsync(t *testing.T, r *rig, name string, probeErr error) (*fakePath, chan error) {
	t.Helper()
	f := newFakePath(name, r.store)
	f.setFault(&fakeFault{hang: true, err: probeErr, ops: opSet([]string{"probe"})})
	r.fakes = append(r.fakes, f)
	p := &mpath.Path{Name: name, URI: "fake://" + name, Transport: "fake", Location: mpath.Location{Adapter: len(r.fakes)}, Backend: f}
	done := make(chan error, 1)
	go func() { done <- r.d.AddPath(p) }()
	waitFor(t, name+" joined and its probe started", func() bool { return r.d.FindPath(name) != nil && f.hung.Load() > 0 })
	return f, done
}

var errProbeFault = &ioerr.Error{Class: ioerr.ClassPathFailure, Err: errFakeFault}

func pathStatus(t *testing.T, st mpath.DeviceStatus, name string) mpath.PathStatus {
	t.Helper()
	for _, ps := range st.Paths {
		if ps.Name == name {
			return ps
		}
	}
	t.Fatalf("status has no path %s", name)
	return mpath.PathStatus{}
}

func TestAddedPathUnknownUntilProbed(t *testing.T) {
	r := newRig(t, 1, testConfig(PSPRR, map[string]string{"iops": "1"}))
	r.drainEvents()
	f2, done := addPathAsync(t, r, "p2", nil)

	p2 := r.path("p2")
	assert.Equal(t, mpath.StateUnknown, p2.State())
	st := r.d.Status()
	ps := pathStatus(t, st, "p2")
	assert.Equal(t, "unknown", ps.State)
	assert.Equal(t, ReasonUnprobed, ps.Reason)
	assert.Equal(t, "undef", ps.Checker)
	assert.Equal(t, "undef", ps.DMState)
	assert.Equal(t, -1, ps.Group, "an unknown path is in no usable group")
	assert.Equal(t, []string{"p1"}, st.WorkingPaths)
	assert.False(t, st.APD)
	// No I/O goes to the unknown path.
	for i := range 8 {
		assert.Equal(t, "p1", r.write(t, int64(i)*4096))
		assert.Equal(t, "p1", r.read(t, int64(i)*4096))
	}
	assert.Zero(t, f2.writes.Load()+f2.reads.Load(), "I/O reached a path not probed yet")
	select {
	case err := <-done:
		t.Fatalf("AddPath returned (%v) before its probe did", err)
	default:
	}

	f2.recover() // the probe passes
	require.NoError(t, <-done)
	assert.Equal(t, mpath.StateActive, p2.State())
	evs := r.drainEvents()
	var kinds []string
	for _, ev := range evs {
		if ev.Path == "p2" {
			kinds = append(kinds, ev.Kind+" "+ev.From+">"+ev.To)
		}
	}
	assert.Equal(t, []string{"path-added >unknown", "path-state unknown>active"}, kinds)
	served := map[string]bool{}
	for i := range 8 {
		served[r.write(t, int64(i)*4096)] = true
	}
	assert.True(t, served["p2"], "the probed path carries I/O: %v", served)

	// A path whose first probe fails joins dead, from unknown.
	f3, done3 := addPathAsync(t, r, "p3", errProbeFault)
	assert.Equal(t, mpath.StateUnknown, r.path("p3").State())
	f3.recover()
	require.NoError(t, <-done3)
	assert.Equal(t, mpath.StateDead, r.path("p3").State())
	var got []string
	for _, ev := range r.drainEvents() {
		if ev.Kind == "path-state" && ev.Path == "p3" {
			got = append(got, ev.From+">"+ev.To)
		}
	}
	assert.Equal(t, []string{"unknown>dead"}, got)
}

// TestAllUnknownNotAPD: with its only path gone and the new one still
// waiting for its probe, the device is not in APD, and a write waits for
// the probe's verdict and goes to the new path.
func TestAllUnknownNotAPD(t *testing.T) {
	r := newRig(t, 1, testConfig(PSPFixed, nil))
	f2, done := addPathAsync(t, r, "p2", nil)
	require.NoError(t, r.d.FailPath("p1", "test: hot removed"))
	r.drainEvents()
	st := r.d.Status()
	assert.False(t, st.APD, "paths waiting for their first probe are not all down")
	assert.Equal(t, uint64(0), st.APDEntries)
	assert.Equal(t, "on", st.State)

	wrote := make(chan error, 1)
	go func() {
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), 0)
		wrote <- err
	}()
	waitFor(t, "the write to queue", func() bool { return r.d.Status().QueueDepth == 1 })
	select {
	case err := <-wrote:
		t.Fatalf("the write returned (%v) while the only candidate path waited for its probe", err)
	default:
	}
	f2.recover()
	require.NoError(t, <-done)
	require.NoError(t, <-wrote)
	assert.Equal(t, int64(1), f2.writes.Load())
	assert.False(t, sawEvent(r, "apd-enter"))

	// Its probe failing instead is All-Paths-Down.
	f3, done3 := addPathAsync(t, r, "p3", errProbeFault)
	require.NoError(t, r.d.FailPath("p2", "test: hot removed"))
	assert.False(t, r.d.Status().APD)
	f3.recover()
	require.NoError(t, <-done3)
	assert.True(t, r.d.Status().APD, "every path judged dead: APD")
	assert.True(t, sawEvent(r, "apd-enter"))
}

// TestNewDeviceProbesFirst: NewDevice returns with every path judged by
// its first probe; a hung probe fails its path at the probe timeout.
func TestNewDeviceProbesFirst(t *testing.T) {
	r := newRigSetup(t, 3, mpath.DeviceConfig{Name: "dev0", CheckInterval: time.Hour, HedgeReads: "off", ProbeTimeout: 100 * time.Millisecond},
		func(p *mpath.Path) {
			f := p.Backend.(*fakePath)
			switch p.Name {
			case "p2":
				f.hangOps("probe")
			case "p3":
				f.failClass(ioerr.ClassNotReady, "probe")
			}
		})
	defer r.fake("p2").recover()
	assert.Equal(t, "p1=active p2=dead p3=standby", r.states())
	for _, f := range r.fakes {
		assert.Equal(t, int64(0), f.writes.Load()+f.reads.Load(), "%s: I/O before the first probe", f.name)
	}
	st := r.d.Status()
	assert.False(t, st.APD)
	assert.Equal(t, uint64(0), st.APDEntries)
	var trans []string
	for _, ev := range r.drainEvents() {
		if ev.Kind == "path-state" {
			trans = append(trans, ev.Path+" "+ev.From+">"+ev.To)
		}
	}
	assert.ElementsMatch(t, []string{"p1 unknown>active", "p2 unknown>dead", "p3 unknown>standby"}, trans)
	assert.Equal(t, "p1", r.write(t, 0))
}

// TestBusyFirstProbeProbedAgainSoon: a first probe answered busy leaves
// the path unknown (no verdict, no I/O); the checker probes it again soon
// rather than a whole check interval (an hour here) later.
func TestBusyFirstProbeProbedAgainSoon(t *testing.T) {
	r := newRig(t, 1, testConfig(PSPRR, nil))
	f := newFakePath("p2", r.store)
	f.setFault(&fakeFault{err: &ioerr.Error{Class: ioerr.ClassRetryable, Err: errFakeFault}, ops: opSet([]string{"probe"}), times: 1})
	r.fakes = append(r.fakes, f)
	require.NoError(t, r.d.AddPath(&mpath.Path{Name: "p2", URI: "fake://p2", Transport: "fake", Location: mpath.Location{Adapter: 2}, Backend: f}))
	assert.Equal(t, mpath.StateUnknown, r.path("p2").State(), "a busy probe judges nothing")
	assert.False(t, r.d.Status().APD)
	waitFor(t, "p2 probed again and active", func() bool { return r.path("p2").State() == mpath.StateActive })
	assert.Equal(t, int64(1), f.probes.Load(), "the second probe passed")
}
