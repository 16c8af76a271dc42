package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
