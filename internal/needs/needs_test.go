package needs

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestMissing(t *testing.T) {
	assert.Empty(t, Missing("/", "sh"), "the root directory and sh exist")
	assert.Equal(t, []string{"/no/such/node", "no-such-program-mpathfs"}, Missing("/", "/no/such/node", "sh", "no-such-program-mpathfs"))
	if os.Geteuid() == 0 {
		assert.Empty(t, Missing("root"))
	} else {
		assert.Equal(t, []string{"root"}, Missing("root"))
	}
}

// fakeTB records how a test was stopped.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skipf(format string, args ...any)  { f.skipped = format }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = format }

func TestUnavailable(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeTB{}
	Unavailable(f, "needs x")
	assert.NotEmpty(t, f.skipped, "outside CI: skipped")
	assert.Empty(t, f.failed)

	t.Setenv("CI", "1")
	f = &fakeTB{}
	Tools(f, "no-such-program-mpathfs")
	assert.NotEmpty(t, f.failed, "in CI: failed")
	assert.Empty(t, f.skipped)

	f = &fakeTB{}
	Tools(f, "sh")
	assert.Empty(t, f.failed+f.skipped, "nothing missing")
}
