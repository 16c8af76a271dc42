package host

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
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

func buildPaths(t *testing.T, wwid string, files ...string) (*Host, error) {
	t.Helper()
	dc := DeviceConfig{Name: "d0", WWID: wwid, CheckInterval: Duration(3600e9)}
	for _, f := range files {
		dc.Paths = append(dc.Paths, PathConfig{URI: "file://" + f})
	}
	h := New(Options{})
	t.Cleanup(func() { h.Close() })
	return h, h.Build(context.Background(), []DeviceConfig{dc})
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
	assert.Empty(t, b.Notes())
	b.Close()

	// A copy: the same bytes in another inode, as two mounts show one file.
	cp := randomFile(t, dir, "copy.img", size, 1)
	const wwid = "naa.6000000000000000000000000000002"
	b, err = buildPaths(t, wwid, a, cp)
	require.NoError(t, err)
	require.NotEmpty(t, b.Notes())
	assert.Contains(t, b.Notes()[0], "sample blocks agree")
	assert.Equal(t, wwid, b.Devices()[0].Identity().WWID)
	b.Close()
	got, lerr := backends.ReadLabel(a)
	if errors.Is(lerr, backends.ErrLabelsUnsupported) {
		t.Skipf("%s keeps no user extended attributes: the label part cannot run here", dir)
	}
	require.NoError(t, lerr)
	assert.Equal(t, wwid, got, "the first mount labels the file through the first path")
	assert.Contains(t, b.Notes()[len(b.Notes())-1], "labelled the file of path file://"+a)

	// The next mount catches the copy: it carries no label.
	_, err = buildPaths(t, wwid, a, cp)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "carries no user.mpathfs.wwid label")

	// A label that contradicts the asserted wwid refuses the path.
	_, err = buildPaths(t, "naa.6000000000000000000000000000003", a)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `is labelled "`+wwid+`"`)
}
