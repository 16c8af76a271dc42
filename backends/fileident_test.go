package backends

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// labelDir is a directory on a file system that keeps user extended
// attributes; the test skips (saying so) where none is at hand.
func labelDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	require.NoError(t, os.WriteFile(probe, []byte("x"), 0o600))
	if err := WriteLabel(probe, "naa.probe"); errors.Is(err, ErrLabelsUnsupported) {
		t.Skipf("the temporary directory %s keeps no user extended attributes: %v", dir, err)
	} else {
		require.NoError(t, err)
	}
	return dir
}

func TestFileLabel(t *testing.T) {
	dir := labelDir(t)
	name := filepath.Join(dir, "lun.img")
	require.NoError(t, os.WriteFile(name, make([]byte, 8192), 0o600))
	ctx := context.Background()
	a, err := OpenFile(name, FileOptions{})
	require.NoError(t, err)
	defer a.Close()
	b, err := OpenFile(name, FileOptions{ReadOnly: true})
	require.NoError(t, err)
	defer b.Close()

	_, err = a.Label(ctx)
	require.ErrorIs(t, err, ErrNoLabel)
	require.NoError(t, a.SetLabel(ctx, "naa.600a0b80001"))
	got, err := b.Label(ctx)
	require.NoError(t, err)
	assert.Equal(t, "naa.600a0b80001", got, "a label written through one path reads back through the other")
	got, err = ReadLabel(name)
	require.NoError(t, err)
	assert.Equal(t, "naa.600a0b80001", got)

	require.NoError(t, RemoveLabel(name))
	require.NoError(t, RemoveLabel(name), "removing a missing label is no error")
	_, err = b.Label(ctx)
	require.ErrorIs(t, err, ErrNoLabel)

	assert.Error(t, a.SetLabel(ctx, "has space"))
	assert.Error(t, a.SetLabel(ctx, ""))
}

// TestFileInquiryPerInode: the synthetic identity follows the inode: two
// opens of one file agree, another file of the same size does not.
func TestFileInquiryPerInode(t *testing.T) {
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	require.NoError(t, os.WriteFile(one, make([]byte, 4096), 0o600))
	require.NoError(t, os.WriteFile(two, make([]byte, 4096), 0o600))
	require.NoError(t, os.Link(one, filepath.Join(dir, "hardlink")))
	inq := func(name string) Inquiry {
		f, err := OpenFile(name, FileOptions{ReadOnly: true})
		require.NoError(t, err)
		defer f.Close()
		i, err := f.Inquiry(context.Background())
		require.NoError(t, err)
		return i
	}
	assert.Equal(t, inq(one).WWID, inq(filepath.Join(dir, "hardlink")).WWID)
	assert.NotEqual(t, inq(one).WWID, inq(two).WWID)
}
