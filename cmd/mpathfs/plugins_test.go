package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mpathfs/mpathfs/nmp"
)

// TestPluginsRegistered: the binary links every SATP the claim rules and
// the default lab name; a package that registers by init must be imported
// somewhere in cmd/mpathfs, or mount fails with "unknown SATP".
func TestPluginsRegistered(t *testing.T) {
	var names []string
	for _, p := range nmp.SATPs() {
		names = append(names, p.Name)
	}
	for _, want := range []string{nmp.SATPNameALUA, nmp.SATPNameDefaultAP, nmp.SATPDefaultAA, nmp.SATPLocal} {
		assert.Contains(t, names, want)
	}
}
