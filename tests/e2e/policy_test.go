package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/internal/needs"
)

// TestPathSwitchUnderFio: MRU fails over and does not fail back when its
// path returns; `path switch` moves I/O back by hand (ESXi's "fail back by
// hand"), under fio --verify without an error; a switched-off path is
// refused with the reason. Hedging is off: a hedge of a slow read goes to
// another usable path whatever the PSP prefers, so with it on the returned
// path may see a read that MRU did not send it.
func TestPathSwitchUnderFio(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 96<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_MRU", "--check-interval", "300ms", "--flap-threshold", "1000", "--hedge", "off"}, filePaths(st, 3)...)...)
	p1, p2, p3 := "vmhba1:C0:T0:L0", "vmhba2:C0:T0:L0", "vmhba3:C0:T0:L0"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 10)...)
	waitFor(t, 20*time.Second, "I/O on "+p1, func() bool { return pathIO(m.status(), "d0")[p1] > 0 })
	m.mustCtl("fault", "inject", p1, "--error", "path-failure")
	waitFor(t, 20*time.Second, p1+" dead and I/O elsewhere", func() bool {
		st := m.status()
		io := pathIO(st, "d0")
		return pathState(st, "d0", p1) == "dead" && io[p2]+io[p3] > 0
	})
	m.mustCtl("fault", "clear", p1)
	waitFor(t, 20*time.Second, p1+" back", func() bool { return pathState(m.status(), "d0", p1) == "active" })
	// MRU stays where it is: p1's counters do not move while fio runs.
	before := pathIO(m.status(), "d0")[p1]
	waitFor(t, 20*time.Second, "more I/O elsewhere", func() bool {
		io := pathIO(m.status(), "d0")
		return io[p2]+io[p3] > 0
	})
	time.Sleep(500 * time.Millisecond)
	assert.Equal(t, before, pathIO(m.status(), "d0")[p1], "MRU does not fail back by itself")

	out := m.mustCtl("path", "switch", p1)
	assert.Contains(t, out, "switched to "+p1)
	waitFor(t, 20*time.Second, "I/O back on "+p1, func() bool { return pathIO(m.status(), "d0")[p1] > before })

	m.mustCtl("path", "set", "--state", "off", p3)
	out, err := m.ctl("path", "switch", p3)
	require.Error(t, err, "switching to a path that is off: %s", out)
	assert.Contains(t, out, "switched off")
	out, err = m.ctl("path", "switch", "vmhba9:C0:T0:L0")
	require.Error(t, err, "switching to no path: %s", out)
	assert.Contains(t, out, "no path")

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	assert.Contains(t, m.mustCtl("events", "--last", "1000"), "path-switch")
	m.stopClean(t)
}

// TestQueueOffFailsQueuedIO: with no_path_retry queue and every path dead,
// fio's I/O waits (no error, however long); `queue off` fails it at once
// with EIO (dm's disablequeueing); `queue on` restores queueing and the
// device serves again once a path returns.
func TestQueueOffFailsQueuedIO(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 96<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1",
		"--check-interval", "300ms", "--no-path-retry", "queue", "--flap-threshold", "1000"}, filePaths(st, 2)...)...)
	p1, p2 := "vmhba1:C0:T0:L0", "vmhba2:C0:T0:L0"
	assert.Contains(t, m.mustCtl("status"), "queueing=on no_path_retry=queue")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 60)...)
	waitFor(t, 20*time.Second, "I/O on both paths", func() bool {
		io := pathIO(m.status(), "d0")
		return io[p1] > 0 && io[p2] > 0
	})
	m.mustCtl("fault", "inject", p1, "--error", "path-failure")
	m.mustCtl("fault", "inject", p2, "--error", "path-failure")
	waitFor(t, 20*time.Second, "all paths down", func() bool { return m.status().Devices[0].APD })
	// Queued, not failed: fio is still running.
	time.Sleep(time.Second)
	select {
	case <-fio.done:
		_, fout, _ := fio.wait()
		t.Fatalf("fio ended while I/O should be queued: %s", fout)
	default:
	}
	out := m.mustCtl("queue", "off", "d0")
	assert.Contains(t, out, "queueing=off")
	select {
	case <-fio.done:
	case <-time.After(30 * time.Second):
		t.Fatal("fio still running 30s after queue off: the queued I/O did not fail")
	}
	_, fout, err := fio.wait()
	require.Error(t, err, "fio must fail once queueing is off: %s", fout)
	assert.Contains(t, fout, "Input/output error")
	assert.Contains(t, m.mustCtl("events", "--last", "1000"), "disablequeueing")

	out = m.mustCtl("queue", "on", "d0")
	assert.Contains(t, out, "queueing=on")
	m.mustCtl("fault", "clear", p1)
	m.mustCtl("fault", "clear", p2)
	waitFor(t, 20*time.Second, "paths back", func() bool { return !m.status().Devices[0].APD })
	r, fout, err := runFio(ctx, verifyJob(m.file("d0"), 2)...)
	require.NoError(t, err, "fio after the paths returned: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].TotalErr)
	m.stopClean(t)
}
