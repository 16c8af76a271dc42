package main

import (
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
)

// randomFile writes size bytes of seeded pseudo-random data.
func randomFile(t *testing.T, dir, name string, size int, seed uint64) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

func TestMountWWIDFlag(t *testing.T) {
	err := cmdMount([]string{"--wwid", "naa.1", "--config", "x.yaml", "/mnt"}, io.Discard)
	assert.Error(t, err)
	err = cmdMount([]string{"--wwid", "naa.1", "/mnt"}, io.Discard)
	assert.ErrorContains(t, err, "give it with --path")
}

func TestLabelCommand(t *testing.T) {
	dir := t.TempDir()
	f := randomFile(t, dir, "lun.img", 4096, 3)
	var out strings.Builder
	require.NoError(t, cmdLabel([]string{f}, &out))
	assert.Contains(t, out.String(), "no label")
	if err := cmdLabel([]string{"--wwid", "naa.61", f}, &out); errors.Is(err, backends.ErrLabelsUnsupported) {
		t.Skipf("%s keeps no user extended attributes", dir)
	} else {
		require.NoError(t, err)
	}
	err := cmdLabel([]string{"--wwid", "naa.62", f}, &out)
	assert.ErrorContains(t, err, "--force")
	require.NoError(t, cmdLabel([]string{"--wwid", "naa.62", "--force", f}, &out))
	out.Reset()
	require.NoError(t, cmdLabel([]string{f}, &out))
	assert.Equal(t, f+": naa.62\n", out.String())
	assert.Error(t, cmdLabel([]string{"--wwid", "bad wwid", f}, &out))
	assert.Error(t, cmdLabel([]string{dir}, &out), "a directory is not a store")
}
