package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/host"
)

// cliMount serves a host with device d0 of three names of one file
// (vmhba1..3) on a control socket, with a config file, and points
// MPATHFS_CONTROL at it.
func cliMount(t *testing.T) (*host.Host, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mpcli")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	img := filepath.Join(dir, "lun.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 1<<20), 0o600))
	var paths []host.PathConfig
	for _, n := range []string{"a", "b"} {
		l := filepath.Join(dir, n+".img")
		require.NoError(t, os.Link(img, l))
		paths = append(paths, host.PathConfig{URI: "file://" + l})
	}
	paths = append([]host.PathConfig{{URI: "file://" + img}}, paths...)
	cfgFile := filepath.Join(dir, "m.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("devices: []\n"), 0o600))
	h := host.New(host.Options{ConfigFile: cfgFile})
	t.Cleanup(func() { h.Close() })
	require.NoError(t, h.Build(context.Background(), []host.DeviceConfig{{Name: "d0", CheckInterval: host.Duration(time.Hour), Paths: paths}}))
	s, err := control.Listen(filepath.Join(dir, "c.sock"), control.NewRuntime("/nowhere", h))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	t.Setenv("MPATHFS_CONTROL", s.Path())
	return h, cfgFile
}

func cli(t *testing.T, want int, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	require.Equal(t, want, code, "mpathfs %s: stdout %q stderr %q", strings.Join(args, " "), stdout.String(), stderr.String())
	return stdout.String() + stderr.String()
}

// TestClaimRuleCLI: the lifecycle through the command — add (to the
// config file), list (file row only), load, run (masks live), path list
// (masked stays visible), unclaim, reclaim — and its usage errors.
func TestClaimRuleCLI(t *testing.T) {
	h, cfgFile := cliMount(t)
	out := cli(t, 0, "claimrule", "add", "--rule", "120", "--type", "location", "--adapter", "vmhba2", "--plugin", "MASK_PATH")
	assert.Contains(t, out, "claim rule 120 (location MASK_PATH location=vmhba2:*:*:*) added to the config file "+cfgFile)
	b, err := os.ReadFile(cfgFile)
	require.NoError(t, err)
	assert.Contains(t, string(b), "120 location MASK_PATH location=vmhba2:*:*:*")
	out = cli(t, 0, "claimrule", "list")
	assert.Regexp(t, `MP\s+120\s+file\s+location\s+MASK_PATH`, out)
	assert.NotRegexp(t, `MP\s+120\s+runtime`, out, "not loaded yet")
	assert.Contains(t, cli(t, 0, "claimrule", "run"), "no path changed")
	out = cli(t, 0, "claimrule", "load")
	assert.Contains(t, out, "1 runtime rule(s) added")
	assert.Regexp(t, `MP\s+120\s+runtime`, cli(t, 0, "claimrule", "list"))
	out = cli(t, 0, "claimrule", "run")
	assert.Contains(t, out, "d0: path vmhba2:C0:T0:L0 claimed -> masked (claim rule 120)")
	out = cli(t, 0, "path", "list")
	assert.Contains(t, out, "vmhba2:C0:T0:L0\n")
	assert.Contains(t, out, "State: masked")
	assert.Contains(t, out, "Plugin: MASK_PATH")
	assert.Contains(t, cli(t, 0, "claiming", "list"), "masked")

	out = cli(t, 0, "claiming", "unclaim", "--path", "vmhba3:C0:T0:L0")
	assert.Contains(t, out, "claimed -> unclaimed")
	out = cli(t, 1, "claiming", "unclaim", "--path", "vmhba1:C0:T0:L0")
	assert.Contains(t, out, "the device is in use")
	cli(t, 0, "claimrule", "remove", "--rule", "120")
	cli(t, 0, "claimrule", "load")
	out = cli(t, 0, "claiming", "reclaim", "--device", "d0")
	assert.Contains(t, out, "vmhba2:C0:T0:L0 masked -> claimed")
	assert.Contains(t, out, "vmhba3:C0:T0:L0 unclaimed -> claimed")
	d, err := h.Device("d0")
	require.NoError(t, err)
	assert.Len(t, d.Paths(), 3)

	out = cli(t, 0, "claimrule", "add", "-u", "-t", "transport", "-R", "nbd", "-P", "NMP")
	assert.Contains(t, out, "claim rule 5000")
	cli(t, 0, "claimrule", "move", "--rule", "5000", "--new-rule", "5001")
	assert.Regexp(t, `MP\s+5001\s+file`, cli(t, 0, "claimrule", "list"))

	// Usage errors name what is wrong.
	assert.Contains(t, cli(t, 2, "claimrule", "add", "--type", "vendor", "--plugin", "NMP"), "--rule N")
	assert.Contains(t, cli(t, 2, "claimrule", "add", "--rule", "50", "--type", "vendor", "--vendor", "X", "--plugin", "NMP"), "are yours")
	assert.Contains(t, cli(t, 2, "claimrule", "add", "--rule", "150", "--type", "transport", "--transport", "scsi", "--plugin", "NMP"), "want one of fc, iscsi")
	assert.Contains(t, cli(t, 2, "claiming", "unclaim"), "exactly one of --path")
	assert.Contains(t, cli(t, 1, "claimrule", "remove", "--rule", "65535"), "system rule")

	// SATP rules and default PSPs at runtime.
	out = cli(t, 0, "satp", "rule", "add", "--satp", "VMW_SATP_LOCAL", "--transport", "nbd", "--psp", "VMW_PSP_RR", "--psp-option", "iops=1")
	assert.Contains(t, out, "added to the config file")
	assert.Contains(t, cli(t, 0, "satp", "rule", "list"), "iops=1")
	cli(t, 0, "satp", "rule", "remove", "--satp", "VMW_SATP_LOCAL", "--transport", "nbd")
	assert.Contains(t, cli(t, 0, "satp", "set", "--satp", "VMW_SATP_LOCAL", "--default-psp", "VMW_PSP_MRU"), "default PSP VMW_PSP_MRU")
	assert.Regexp(t, `VMW_SATP_LOCAL\s+VMW_PSP_MRU`, cli(t, 0, "satp", "list"))
	assert.Contains(t, cli(t, 1, "satp", "set", "--satp", "VMW_SATP_LOCAL", "--default-psp", "VMW_PSP_NOPE"), "VMW_PSP_NOPE")

	assert.Contains(t, cli(t, 0, "adapter", "rescan"), "0 new path(s), 0 new device(s)")
}
