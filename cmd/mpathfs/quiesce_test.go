package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestConfigQuiesce: a path's quiesce time is accepted as a YAML field or
// a URI parameter, not both; a bad one is an error naming the path.
func TestConfigQuiesce(t *testing.T) {
	ok := `devices:
  - name: a
    paths:
      - uri: nbd://127.0.0.1:10809/x?quiesce=2s
      - uri: nbd://127.0.0.1:10810/x
        quiesce: 3s
`
	c, err := ParseConfig("t.yaml", []byte(ok))
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, time.Duration(c.Devices[0].Paths[1].Quiesce))

	for bad, want := range map[string]string{
		"devices:\n  - name: a\n    paths:\n      - uri: nbd://h/x?quiesce=2s\n        quiesce: 3s\n": "quiesce given both",
		"devices:\n  - name: a\n    paths:\n      - uri: nbd://h/x?quiesce=later\n":                   "paths[0]",
		"devices:\n  - name: a\n    paths:\n      - uri: nbd://h/x\n        quiesce: soon\n":          "not a duration",
	} {
		_, err := ParseConfig("t.yaml", []byte(bad))
		assert.ErrorContains(t, err, want)
	}
}

// TestStatusShowsAmbiguous: the text status lists a device's ambiguous
// write ranges, expired ones marked.
func TestStatusShowsAmbiguous(t *testing.T) {
	st := control.Status{Devices: []mpath.DeviceStatus{{Name: "d0", Size: 1 << 20, Ambiguous: []mpath.AmbiguousRange{
		{Path: "A", Op: "write", Offset: 4096, Length: 4096, Age: "3s", WaitingFor: "the late reply"},
		{Path: "A", Op: "discard", Offset: 0, Length: 512, Age: "2m30s", WaitingFor: "`mpathfs path fence A`", Expired: true},
	}}}}
	var b strings.Builder
	printTopology(&b, st)
	out := b.String()
	assert.Contains(t, out, "ambiguous writes=2 ")
	assert.Contains(t, out, "! A write bytes 4096+4096 for 3s, waiting for the late reply\n")
	assert.Contains(t, out, "! A discard bytes 0+512 for 2m30s, waiting for `mpathfs path fence A` EXPIRED: overlapping writes fail with EIO\n")
}
