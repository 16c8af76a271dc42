package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/internal/needs"
)

// adapters reads `mpathfs adapter list --json`.
func adapters(t *testing.T, m *mount) map[string]host.AdapterStatus {
	t.Helper()
	var rep control.AdaptersReply
	require.NoError(t, json.Unmarshal([]byte(m.mustCtl("adapter", "list", "--json")), &rep))
	out := map[string]host.AdapterStatus{}
	for _, a := range rep.Adapters {
		out[a.Name] = a
	}
	return out
}

// startTwoAdapterMount mounts device d0 (96 MiB, RR switching every I/O,
// checked every 300 ms, never held down for flapping) with four file
// paths to one store over two adapters, vmhba1 and vmhba2, two targets
// each.
func startTwoAdapterMount(t *testing.T, args ...string) *mount {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "lun.img")
	cfg := filepath.Join(dir, "adapters.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`devices:
  - name: d0
    size: 96M
    psp: VMW_PSP_RR
    psp_options: {iops: "1"}
    check_interval: 300ms
    flap_threshold: 1000
    paths:
      - {uri: "file://`+img+`", location: vmhba1:C0:T0:L0}
      - {uri: "file://`+img+`", location: vmhba1:C0:T1:L0}
      - {uri: "file://`+img+`", location: vmhba2:C0:T0:L0}
      - {uri: "file://`+img+`", location: vmhba2:C0:T1:L0}
`), 0o600))
	return startMount(t, append([]string{"--config", cfg}, args...)...)
}

// TestAdapterFailure: four paths over two adapters under fio --verify;
// failing vmhba1 takes its two paths down at once, fio sees no error;
// restoring it brings both back; a reset of vmhba2 (a unit attention on
// each of its paths' next I/O) costs fio nothing either.
func TestAdapterFailure(t *testing.T) {
	needs.Tools(t, "fio")
	m := startTwoAdapterMount(t)
	as := adapters(t, m)
	require.Len(t, as, 2)
	assert.Equal(t, host.AdapterOnline, as["vmhba1"].State)
	assert.Equal(t, 2, as["vmhba1"].Paths)
	assert.Len(t, as["vmhba1"].Targets, 2)
	assert.Equal(t, []string{"d0"}, as["vmhba1"].Devices)

	out, err := m.ctl("adapter", "fail", "vmhba9")
	require.Error(t, err, "failing an unknown adapter: %s", out)
	assert.Contains(t, out, "adapters: vmhba1, vmhba2")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 10)...)
	one := []string{"vmhba1:C0:T0:L0", "vmhba1:C0:T1:L0"}
	waitFor(t, 20*time.Second, "I/O on vmhba1's paths", func() bool {
		io := pathIO(m.status(), "d0")
		return io[one[0]] > 0 && io[one[1]] > 0
	})
	out = m.mustCtl("adapter", "fail", "vmhba1", "--reason", "fabric link lost")
	assert.Contains(t, out, "2 of 2 path(s) dead")
	st := m.status()
	for _, p := range one {
		assert.Equal(t, "dead", pathState(st, "d0", p), "%s fails with its adapter", p)
	}
	for _, p := range []string{"vmhba2:C0:T0:L0", "vmhba2:C0:T1:L0"} {
		assert.Equal(t, "active", pathState(st, "d0", p))
	}
	a := adapters(t, m)["vmhba1"]
	assert.Equal(t, host.AdapterFailed, a.State)
	assert.Equal(t, "fabric link lost", a.Reason)
	// While failed, the checker keeps its paths dead.
	time.Sleep(1500 * time.Millisecond)
	st = m.status()
	for _, p := range one {
		assert.Equal(t, "dead", pathState(st, "d0", p), "%s stays dead while its adapter is failed", p)
	}
	m.mustCtl("adapter", "restore", "vmhba1")
	waitFor(t, 10*time.Second, "vmhba1's paths back", func() bool {
		st := m.status()
		return pathState(st, "d0", one[0]) == "active" && pathState(st, "d0", one[1]) == "active"
	})
	assert.Equal(t, host.AdapterOnline, adapters(t, m)["vmhba1"].State)
	out = m.mustCtl("adapter", "reset", "vmhba2")
	assert.Contains(t, out, "06/29/00")

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	events := m.mustCtl("events", "--last", "1000")
	assert.Contains(t, events, "adapter-failed")
	assert.Contains(t, events, "adapter-restored")
	assert.Contains(t, events, "adapter-reset")
	m.stopClean(t)
}

// TestPathRemoveLive: paths leave a device under fio --verify without an
// error; the last one is refused without --force.
func TestPathRemoveLive(t *testing.T) {
	needs.Tools(t, "fio")
	st := store(t, 96<<20)
	m := startMount(t, append([]string{"--name", "d0", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1", "--check-interval", "300ms"}, filePaths(st, 3)...)...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 8)...)
	waitFor(t, 20*time.Second, "I/O on vmhba2's path", func() bool { return pathIO(m.status(), "d0")["vmhba2:C0:T0:L0"] > 0 })
	out := m.mustCtl("path", "remove", "vmhba2:C0:T0:L0")
	assert.Contains(t, out, "removed")
	assert.Contains(t, out, "2 path(s) left")
	assert.NotContains(t, out, "NOT flushed", "a working path's writes are flushed on its way out")
	assert.Equal(t, "missing", pathState(m.status(), "d0", "vmhba2:C0:T0:L0"))
	time.Sleep(time.Second)
	m.mustCtl("path", "remove", "vmhba3:C0:T0:L0")
	out, err := m.ctl("path", "remove", "vmhba1:C0:T0:L0")
	require.Error(t, err, "removing the last path without --force: %s", out)
	assert.Contains(t, out, "last path")
	assert.Contains(t, out, "--force")
	assert.Equal(t, "active", pathState(m.status(), "d0", "vmhba1:C0:T0:L0"))

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	events := m.mustCtl("events", "--last", "1000")
	assert.Contains(t, events, "path-removed")
	m.stopClean(t)
}
