package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCreateOutput(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	require.NoError(t, os.WriteFile(victim, []byte("keep me"), 0o644))
	intact := func() {
		t.Helper()
		b, err := os.ReadFile(victim)
		require.NoError(t, err)
		assert.Equal(t, "keep me", string(b))
	}

	// New file: created with the mode asked for (under the umask).
	p := filepath.Join(dir, "trace.jsonl")
	f, err := createOutput(p, 0o600)
	require.NoError(t, err)
	_, err = f.WriteString("one\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// Our own regular file: emptied and rewritten.
	f, err = createOutput(p, 0o600)
	require.NoError(t, err)
	_, err = f.WriteString("two\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "two\n", string(b))

	// A symlink planted at the name: refused, its target untouched.
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(victim, link))
	_, err = createOutput(link, 0o600)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "symbolic link")
	intact()

	// A hard link to another file: refused before truncating.
	hard := filepath.Join(dir, "hard")
	require.NoError(t, os.Link(victim, hard))
	_, err = createOutput(hard, 0o600)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "hard links")
	intact()

	// A FIFO: refused at once, no hang waiting for a reader.
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	_, err = createOutput(fifo, 0o600)
	require.Error(t, err)

	// A file of another user (root only can make one here).
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other")
		require.NoError(t, os.WriteFile(other, []byte("theirs"), 0o666))
		require.NoError(t, os.Chown(other, 65534, 65534))
		_, err = createOutput(other, 0o600)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "belongs to uid 65534")
		b, err := os.ReadFile(other)
		require.NoError(t, err)
		assert.Equal(t, "theirs", string(b))
	}
}
