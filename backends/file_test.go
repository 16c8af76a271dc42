package backends_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
)

func newFileStore(t *testing.T, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestFileConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		b, err := backends.OpenFile(newFileStore(t, size), backends.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestFileConformanceDirect(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		name := newFileStore(t, size)
		b, err := backends.OpenFile(name, backends.FileOptions{Direct: true})
		if err != nil {
			t.Skipf("O_DIRECT not supported on %s: %v", filepath.Dir(name), err)
		}
		return b
	})
}

func TestOpenURIErrors(t *testing.T) {
	ctx := t.Context()
	for _, c := range []struct{ uri, want string }{
		{"", "empty path URI"},
		{"bogus://x/y", `unknown scheme "bogus"`},
		{"/nonexistent/store.img", "does not exist"},
		{"file://otherhost/x", "host"},
	} {
		_, err := backends.Open(ctx, c.uri)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", c.uri, err, c.want)
		}
	}
	name := newFileStore(t, 1<<20)
	for _, uri := range []string{name, "file://" + name} {
		b, err := backends.Open(ctx, uri)
		if err != nil {
			t.Fatalf("Open(%q): %v", uri, err)
		}
		if b.Size() != 1<<20 {
			t.Errorf("Open(%q).Size() = %d", uri, b.Size())
		}
		b.Close()
	}
}
