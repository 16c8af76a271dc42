package iscsipath

import (
	"testing"

	"github.com/mpathfs/mpathfs/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
