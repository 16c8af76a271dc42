package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/internal/needs"
)

// offline reads `mpathfs claiming list --json`: the masked and unclaimed
// paths by name.
func offline(t *testing.T, m *mount) map[string]string {
	t.Helper()
	var rep control.OfflineReply
	require.NoError(t, json.Unmarshal([]byte(m.mustCtl("claiming", "list", "--json")), &rep))
	out := map[string]string{}
	for _, p := range rep.Paths {
		out[p.Name] = p.State
	}
	return out
}

// TestLiveMaskAndUnmask: under fio --verify, a MASK_PATH claim rule on a
// path in use (add, load, run) hides it from the device without an I/O
// error, the path stays in `path list` as masked; removing the rule,
// loading and reclaiming brings it back and it carries I/O again. The
// rule went to the mount's config file.
func TestLiveMaskAndUnmask(t *testing.T) {
	needs.Tools(t, "fio")
	dir := t.TempDir()
	img := filepath.Join(dir, "lun.img")
	cfg := filepath.Join(dir, "mask.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`devices:
  - name: d0
    size: 96M
    psp: VMW_PSP_RR
    psp_options: {iops: "1"}
    check_interval: 300ms
    paths:
      - {uri: "file://`+img+`", location: vmhba1:C0:T0:L0}
      - {uri: "file://`+img+`", location: vmhba2:C0:T0:L0}
      - {uri: "file://`+img+`", location: vmhba3:C0:T0:L0}
`), 0o600))
	m := startMount(t, "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 12)...)
	const victim = "vmhba2:C0:T0:L0"
	waitFor(t, 20*time.Second, "I/O on "+victim, func() bool { return pathIO(m.status(), "d0")[victim] > 0 })

	out := m.mustCtl("claimrule", "add", "--rule", "110", "--type", "location", "--adapter", "vmhba2", "--channel", "0", "--target", "0", "--lun", "0", "--plugin", "MASK_PATH")
	assert.Contains(t, out, "config file "+cfg)
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	assert.Contains(t, string(b), "110 location MASK_PATH location=vmhba2:C0:T0:L0")
	assert.Equal(t, "active", pathState(m.status(), "d0", victim), "a rule not loaded claims nothing")
	m.mustCtl("claimrule", "load")
	out = m.mustCtl("claimrule", "run")
	assert.Contains(t, out, victim+" claimed -> masked (claim rule 110)")
	assert.Equal(t, "missing", pathState(m.status(), "d0", victim), "the device no longer has the path")
	assert.Equal(t, "masked", offline(t, m)[victim])
	list := m.mustCtl("path", "list")
	assert.Contains(t, list, victim+"\n")
	assert.Contains(t, list, "State: masked")
	time.Sleep(2 * time.Second) // fio runs on two paths for a while

	m.mustCtl("claimrule", "remove", "--rule", "110")
	m.mustCtl("claimrule", "load")
	out = m.mustCtl("claiming", "reclaim", "--device", "d0")
	assert.Contains(t, out, victim+" masked -> claimed")
	assert.Empty(t, offline(t, m))
	before := pathIO(m.status(), "d0")[victim]
	waitFor(t, 20*time.Second, victim+" carries I/O again", func() bool { return pathIO(m.status(), "d0")[victim] > before })

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	events := m.mustCtl("events", "--last", "1000")
	assert.Contains(t, events, "path-masked")
	assert.Contains(t, events, "path-claimed")
	m.stopClean(t)
}

// TestAdapterRescan: under fio --verify on d0, the config file gains a
// path of d0 on vmhba3 and a new device d1; `adapter rescan vmhba3`
// claims the path (it carries I/O), `adapter rescan` makes d1, whose
// file appears in the mount and passes its own fio --verify.
func TestAdapterRescan(t *testing.T) {
	needs.Tools(t, "fio")
	dir := t.TempDir()
	img := filepath.Join(dir, "lun.img")
	img1 := filepath.Join(dir, "lun1.img")
	cfg := filepath.Join(dir, "rescan.yaml")
	head := `devices:
  - name: d0
    size: 96M
    psp: VMW_PSP_RR
    psp_options: {iops: "1"}
    check_interval: 300ms
    paths:
      - {uri: "file://` + img + `", location: vmhba1:C0:T0:L0}
      - {uri: "file://` + img + `", location: vmhba2:C0:T0:L0}
`
	require.NoError(t, os.WriteFile(cfg, []byte(head), 0o600))
	m := startMount(t, "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 10)...)
	waitFor(t, 20*time.Second, "I/O on d0", func() bool { return pathIO(m.status(), "d0")["vmhba2:C0:T0:L0"] > 0 })

	out := m.mustCtl("adapter", "rescan")
	assert.Contains(t, out, "0 new path(s), 0 new device(s)")
	require.NoError(t, os.WriteFile(cfg, []byte(head+`      - {uri: "file://`+img+`", location: vmhba3:C0:T0:L0}
  - name: d1
    size: 64M
    paths:
      - {uri: "file://`+img1+`", location: vmhba1:C0:T0:L1}
      - {uri: "file://`+img1+`", location: vmhba2:C0:T0:L1}
`), 0o600))
	out = m.mustCtl("adapter", "rescan", "vmhba3")
	assert.Contains(t, out, "1 new path(s), 0 new device(s)", out)
	waitFor(t, 20*time.Second, "I/O on the rescanned path", func() bool { return pathIO(m.status(), "d0")["vmhba3:C0:T0:L0"] > 0 })
	out = m.mustCtl("adapter", "rescan")
	assert.Contains(t, out, "new device d1", out)
	_, err := os.Stat(m.file("d1"))
	require.NoError(t, err, "d1's file appears in the mount")
	r1, fout1, err := runFio(ctx, verifyJob(m.file("d1"), 3)...)
	require.NoError(t, err, "fio on d1: %s", fout1)
	require.Len(t, r1.Jobs, 1)
	assert.Equal(t, 0, r1.Jobs[0].TotalErr, "fio I/O errors on d1")

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	assert.True(t, strings.Contains(m.mustCtl("events", "--last", "1000"), "device-added"))
	m.stopClean(t)
}
