package nbd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
)

func openT(t testing.TB, uri string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := backends.Open(ctx, uri)
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	return b.(*Client)
}

func TestConformanceNbdkitFileTCP(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		s := startNbdkit(t, true, "file", sparseFile(t, size))
		return openT(t, s.uri(""))
	})
}

func TestConformanceNbdkitMemoryUnix(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		s := startNbdkit(t, false, "memory", fmt.Sprintf("size=%d", size))
		return openT(t, s.uri(""))
	})
}

func TestConformanceNbdkitSimpleReplies(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		s := startNbdkit(t, false, "memory", fmt.Sprintf("size=%d", size))
		c := openT(t, s.uri("")+"&structured=false")
		if c.StructuredReplies() {
			t.Fatal("structured replies negotiated although structured=false")
		}
		return c
	})
}

func TestConformanceQemuNbd(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		s := startQemuNbd(t, sparseFile(t, size), "disk0")
		return openT(t, s.uri("disk0"))
	})
}
