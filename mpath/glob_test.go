package mpath

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"", "anything", true},
		{"*", "", true},
		{"LIO-ORG", "lio-org ", true}, // case and trailing padding do not count
		{"LIO*", "LIO-ORG", true},
		{"?IO-ORG", "LIO-ORG", true},
		{"vmhba[1-2]", "VMHBA2", true},
		{"LIO", "LIO-ORG", false},
		{" LIO", "LIO", false}, // leading spaces count
		{"[", "[", false},      // malformed: matches nothing
	} {
		assert.Equal(t, tc.want, Glob(tc.pattern, tc.s), "Glob(%q, %q)", tc.pattern, tc.s)
	}
	assert.NoError(t, CheckGlob("vmhba*"))
	assert.Error(t, CheckGlob("[a-"))
}
