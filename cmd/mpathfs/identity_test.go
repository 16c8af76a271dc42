package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
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

func buildPaths(t *testing.T, wwid string, files ...string) (*built, error) {
	t.Helper()
	dc := DeviceConfig{Name: "d0", WWID: wwid, CheckInterval: Duration(3600e9)}
	for _, f := range files {
		dc.Paths = append(dc.Paths, PathConfig{URI: "file://" + f})
	}
	b, err := build(context.Background(), &Config{Devices: []DeviceConfig{dc}}, &mpath.Events{})
	if err == nil {
		t.Cleanup(b.Close)
	}
	return b, err
}

// TestIdentityAtMount: two different files of one size are refused at
// mount whether the wwid is asserted or not, with an error naming both
// paths and where they differ; two files with the same bytes (the case the
// sample cannot tell apart) pass, and the first mount labels the file, so
// that the copy is caught at the next mount by its missing label.
func TestIdentityAtMount(t *testing.T) {
	dir := t.TempDir()
	const size = 1 << 20
	a := randomFile(t, dir, "a.img", size, 1)
	other := randomFile(t, dir, "other.img", size, 2)

	_, err := buildPaths(t, "", a, other)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "assert the device's wwid")

	_, err = buildPaths(t, "naa.6000000000000000000000000000001", a, other)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "path file://"+other+" and path file://"+a+" lead to different stores: their data differ at byte offset 0")

	hl := filepath.Join(dir, "hardlink.img")
	require.NoError(t, os.Link(a, hl))
	b, err := buildPaths(t, "", a, hl)
	require.NoError(t, err, "one inode under two names is one store")
	assert.Empty(t, b.notes)
	b.Close()

	// A copy: the same bytes in another inode, as two mounts show one file.
	cp := randomFile(t, dir, "copy.img", size, 1)
	const wwid = "naa.6000000000000000000000000000002"
	b, err = buildPaths(t, wwid, a, cp)
	require.NoError(t, err)
	require.NotEmpty(t, b.notes)
	assert.Contains(t, b.notes[0], "sample blocks agree")
	assert.Equal(t, wwid, b.devices[0].Identity().WWID)
	b.Close()
	got, lerr := backends.ReadLabel(a)
	if errors.Is(lerr, backends.ErrLabelsUnsupported) {
		t.Skipf("%s keeps no user extended attributes: the label part cannot run here", dir)
	}
	require.NoError(t, lerr)
	assert.Equal(t, wwid, got, "the first mount labels the file through the first path")
	assert.Contains(t, b.notes[len(b.notes)-1], "labelled the file of path file://"+a)

	// The next mount catches the copy: it carries no label.
	_, err = buildPaths(t, wwid, a, cp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "carries no user.mpathfs.wwid label")

	// A label that contradicts the asserted wwid refuses the path.
	_, err = buildPaths(t, "naa.6000000000000000000000000000003", a)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `is labelled "`+wwid+`"`)
}

func TestMountWWIDFlag(t *testing.T) {
	err := cmdMount([]string{"--wwid", "naa.1", "--config", "x.yaml", "/mnt"}, nil)
	assert.Error(t, err)
	err = cmdMount([]string{"--wwid", "naa.1", "/mnt"}, nil)
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
