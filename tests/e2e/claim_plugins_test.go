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
	"github.com/mpathfs/mpathfs/internal/needs"
)

// satpList reads `mpathfs satp list --json` of a mount.
func satpList(t *testing.T, m *mount) map[string]struct{ psp, from string } {
	t.Helper()
	var rep control.SATPsReply
	require.NoError(t, json.Unmarshal([]byte(m.mustCtl("satp", "list", "--json")), &rep))
	out := map[string]struct{ psp, from string }{}
	for _, s := range rep.SATPs {
		out[s.Name] = struct{ psp, from string }{s.DefaultPSP, s.DefaultPSPSource}
	}
	return out
}

// TestReclaimRepicksPluginsUnderFio: a device of two file paths runs fio
// --verify. An SATP rule that now matches it (VMW_SATP_DEFAULT_AA for
// transport file) and a new default PSP of that SATP (`satp set
// --default-psp VMW_PSP_RR`, written to the config file; a bad name is
// refused and leaves the file alone) reach the device through `claiming
// reclaim`: its SATP and PSP change live and fio sees no error. The next
// mount with the same config file claims the device with them at once,
// and `satp list` says the default PSP comes from the config file.
func TestReclaimRepicksPluginsUnderFio(t *testing.T) {
	needs.Tools(t, "fio")
	dir := t.TempDir()
	img := filepath.Join(dir, "lun.img")
	cfg := filepath.Join(dir, "plugins.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`# the reclaim test's mount
devices:
  - name: d0
    size: 96M
    check_interval: 300ms
    paths:
      - {uri: "file://`+img+`", location: vmhba1:C0:T0:L0}
      - {uri: "file://`+img+`", location: vmhba2:C0:T0:L0}
`), 0o600))
	m := startMount(t, "--config", cfg)
	st := m.status()
	require.Len(t, st.Devices, 1)
	require.Equal(t, "VMW_SATP_LOCAL", st.Devices[0].SATP)
	before := st.Devices[0].PSP
	require.NotEqual(t, "VMW_PSP_RR", before)
	assert.Equal(t, "plugin", satpList(t, m)["VMW_SATP_DEFAULT_AA"].from)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	fio := startFio(ctx, verifyJob(m.file("d0"), 12)...)
	waitFor(t, 20*time.Second, "I/O on d0", func() bool { return pathIO(m.status(), "d0")["vmhba1:C0:T0:L0"] > 0 })

	m.mustCtl("satp", "rule", "add", "--satp", "VMW_SATP_DEFAULT_AA", "--transport", "file", "--description", "reclaim test")
	out := m.mustCtl("satp", "set", "--satp", "VMW_SATP_DEFAULT_AA", "--default-psp", "VMW_PSP_RR")
	assert.Contains(t, out, "config file "+cfg)
	saved, err := os.ReadFile(cfg)
	require.NoError(t, err)
	assert.Contains(t, string(saved), "satp_default_psp:")
	assert.Contains(t, string(saved), "VMW_SATP_DEFAULT_AA: VMW_PSP_RR")
	assert.Contains(t, string(saved), "# the reclaim test's mount")
	bad, err := m.ctl("satp", "set", "--satp", "VMW_SATP_DEFAULT_AA", "--default-psp", "VMW_PSP_NOPE")
	require.Error(t, err, "a bad PSP name is refused")
	assert.Contains(t, bad, "VMW_PSP_NOPE")
	after, err := os.ReadFile(cfg)
	require.NoError(t, err)
	assert.Equal(t, string(saved), string(after), "a refused change leaves the config file alone")
	assert.Equal(t, "VMW_SATP_LOCAL", m.status().Devices[0].SATP, "rules alone do not change a running device")

	time.Sleep(time.Second)
	out = m.mustCtl("claiming", "reclaim", "--device", "d0")
	assert.Contains(t, out, "d0: SATP and PSP VMW_SATP_LOCAL "+before+" -> VMW_SATP_DEFAULT_AA VMW_PSP_RR")
	st = m.status()
	assert.Equal(t, "VMW_SATP_DEFAULT_AA", st.Devices[0].SATP)
	assert.Equal(t, "VMW_PSP_RR", st.Devices[0].PSP)
	io2 := pathIO(st, "d0")["vmhba2:C0:T0:L0"]
	waitFor(t, 20*time.Second, "round robin sends I/O on the second path too", func() bool {
		return pathIO(m.status(), "d0")["vmhba2:C0:T0:L0"] > io2
	})

	r, fout, err := fio.wait()
	require.NoError(t, err, "fio: %s", fout)
	require.Len(t, r.Jobs, 1)
	assert.Equal(t, 0, r.Jobs[0].Error, "fio error")
	assert.Equal(t, 0, r.Jobs[0].TotalErr, "fio I/O errors")
	assert.Contains(t, m.mustCtl("events", "--last", "1000"), "device-reclaimed")
	m.stopClean(t)

	// The next mount with the same config file.
	m2 := startMount(t, "--config", cfg)
	got := satpList(t, m2)["VMW_SATP_DEFAULT_AA"]
	assert.Equal(t, "VMW_PSP_RR", got.psp, "the default PSP survived the remount")
	assert.Equal(t, "config file "+cfg, got.from)
	st = m2.status()
	assert.Equal(t, "VMW_SATP_DEFAULT_AA", st.Devices[0].SATP)
	assert.Equal(t, "VMW_PSP_RR", st.Devices[0].PSP)
	m2.stopClean(t)
}
