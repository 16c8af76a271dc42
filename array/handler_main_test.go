package array

import (
	"testing"

	"github.com/mpathfs/mpathfs/internal/leakcheck"
)

// TestMain fails the package's tests if a goroutine of the module outlives
// them (a land-late write's timer, a Close waiter).
func TestMain(m *testing.M) { leakcheck.Main(m) }
