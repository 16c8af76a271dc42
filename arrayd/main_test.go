package arrayd

import (
	"fmt"
	"testing"

	"github.com/mpathfs/mpathfs/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

var sprintf = fmt.Sprintf
