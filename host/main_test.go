package host

import (
	"testing"

	"github.com/mpathfs/mpathfs/internal/leakcheck"
)

// TestMain fails the tests of the package if they leave a goroutine of the
// module running (see internal/leakcheck).
func TestMain(m *testing.M) { leakcheck.Main(m) }
