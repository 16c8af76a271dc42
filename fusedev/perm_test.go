package fusedev

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestMountOptionsDefaultPermissions: every mount lets the kernel enforce
// the device files' mode and owner, with allow_other or without it (the
// end-to-end test tests/e2e/perm_test.go checks it as another user).
func TestMountOptionsDefaultPermissions(t *testing.T) {
	for _, allow := range []bool{false, true} {
		mo := MountOptions(Options{AllowOther: allow})
		assert.True(t, slices.Contains(mo.Options, "default_permissions"), "allow_other=%v: %v", allow, mo.Options)
		assert.Equal(t, allow, mo.AllowOther)
	}
}
