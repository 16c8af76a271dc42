package backends_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
)

// TestFileCacheDomain: two paths to one file share its page cache (one
// domain); a path to a copy of it does not.
func TestFileCacheDomain(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *backends.File {
		t.Helper()
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			require.NoError(t, os.WriteFile(p, make([]byte, 1<<20), 0o600))
		}
		f, err := backends.OpenFile(p, backends.FileOptions{})
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b, c := open("a.img"), open("a.img"), open("copy.img")
	require.NotEmpty(t, a.CacheDomain())
	assert.Equal(t, a.CacheDomain(), b.CacheDomain())
	assert.NotEqual(t, a.CacheDomain(), c.CacheDomain())
	var _ backends.CacheSharer = a
}
