package host

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/mpathfs/mpathfs/nmp"
)

func satpInfo(h *Host, name string) SATPInfo {
	for _, s := range h.SATPs() {
		if s.Name == name {
			return s
		}
	}
	return SATPInfo{}
}

// TestSATPDefaultPSPPersists: `satp set --default-psp` goes to the config
// file's satp_default_psp, keeping the rest of the file; a host made from
// that file again (the next mount) has it, and says where it came from; a
// bad name is refused and leaves the file as it was; "" restores the
// plugin's own and removes the key.
func TestSATPDefaultPSPPersists(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "m.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("# my mount\ncontrol: /tmp/x.sock # the socket\ndevices: []\n"), 0o640))
	h := newHost(t, Options{ConfigFile: cfg})
	own := satpInfo(h, nmp.SATPDefaultAA).DefaultPSP
	require.NotEqual(t, nmp.PSPRR, own)
	assert.Equal(t, "plugin", satpInfo(h, nmp.SATPDefaultAA).DefaultPSPSource)

	info, err := h.SetSATPDefaultPSP(nmp.SATPDefaultAA, nmp.PSPRR)
	require.NoError(t, err)
	assert.Equal(t, nmp.PSPRR, info.DefaultPSP)
	assert.Equal(t, "config file "+cfg, info.DefaultPSPSource)
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	assert.Contains(t, string(b), "# the socket")
	var doc struct {
		DefaultPSP map[string]string `yaml:"satp_default_psp"`
	}
	require.NoError(t, yaml.Unmarshal(b, &doc))
	assert.Equal(t, map[string]string{nmp.SATPDefaultAA: nmp.PSPRR}, doc.DefaultPSP)

	// The next mount with the same file.
	_, rules, err := Rules(nil, nil)
	require.NoError(t, err)
	require.NoError(t, SetDefaultPSPs(rules, doc.DefaultPSP))
	again := newHost(t, Options{ConfigFile: cfg, SATPRules: rules})
	got := satpInfo(again, nmp.SATPDefaultAA)
	assert.Equal(t, nmp.PSPRR, got.DefaultPSP, "the default PSP survives the remount")
	assert.Equal(t, "config file "+cfg, got.DefaultPSPSource)
	psp, err := rules.DefaultPSP(nmp.SATPDefaultAA)
	require.NoError(t, err)
	assert.Equal(t, nmp.PSPRR, psp, "devices claimed after the remount get it")

	// Bad names: refused, the file untouched.
	_, err = again.SetSATPDefaultPSP(nmp.SATPDefaultAA, "VMW_PSP_NOPE")
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "VMW_PSP_NOPE")
	_, err = again.SetSATPDefaultPSP("VMW_SATP_NOPE", nmp.PSPRR)
	require.ErrorIs(t, err, ErrInvalid)
	after, err := os.ReadFile(cfg)
	require.NoError(t, err)
	assert.Equal(t, string(b), string(after), "a refused change leaves the file as it was")
	assert.Equal(t, nmp.PSPRR, satpInfo(again, nmp.SATPDefaultAA).DefaultPSP)

	// A bad entry in the file is a clear error at mount.
	err = SetDefaultPSPs(rules, map[string]string{nmp.SATPDefaultAA: "VMW_PSP_NOPE"})
	assert.ErrorContains(t, err, "satp_default_psp")
	assert.ErrorContains(t, err, "VMW_PSP_NOPE")

	// Back to the plugin's own: the key goes.
	_, err = again.SetSATPDefaultPSP(nmp.SATPDefaultAA, "")
	require.NoError(t, err)
	b, err = os.ReadFile(cfg)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "satp_default_psp")
	assert.Equal(t, "plugin", satpInfo(again, nmp.SATPDefaultAA).DefaultPSPSource)
}

// TestSATPDefaultPSPWithoutConfigFile: without a config file the change
// lasts for the mount, and `satp list` says so.
func TestSATPDefaultPSPWithoutConfigFile(t *testing.T) {
	h := newHost(t, Options{})
	info, err := h.SetSATPDefaultPSP(nmp.SATPDefaultAA, nmp.PSPRR)
	require.NoError(t, err)
	assert.Contains(t, info.DefaultPSPSource, "memory")
}
