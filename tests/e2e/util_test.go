package e2e

import (
	"testing"
	"unsafe"
)

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// startMountAt is startMount on a given mountpoint.
func startMountAt(t *testing.T, dir string, args ...string) *mount {
	t.Helper()
	return startMountDir(t, dir, args...)
}
