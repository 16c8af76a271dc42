package mpath

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitQuiesce(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		q       time.Duration
	}{
		{"nbd://127.0.0.1:10809/x?quiesce=2s", "nbd://127.0.0.1:10809/x", 2 * time.Second},
		{"nbd+unix:///x?socket=/run/n.sock&quiesce=500ms", "nbd+unix:///x?socket=/run/n.sock", 500 * time.Millisecond},
		{"nbd+unix:///x?quiesce=1m&socket=/run/n.sock&connections=2", "nbd+unix:///x?socket=/run/n.sock&connections=2", time.Minute},
		{"nbd://h/x?socket=a%2Fb", "nbd://h/x?socket=a%2Fb", 0},
		{"file:///srv/a.img", "file:///srv/a.img", 0},
		{"/srv/a.img", "/srv/a.img", 0},
	} {
		out, q, err := SplitQuiesce(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.out, out, tc.in)
		assert.Equal(t, tc.q, q, tc.in)
	}
	for _, bad := range []string{"nbd://h/x?quiesce=soon", "nbd://h/x?quiesce=-1s", "nbd://h/x?quiesce=0s", "nbd://h/x?quiesce=1s&quiesce=2s"} {
		_, _, err := SplitQuiesce(bad)
		assert.ErrorContains(t, err, "quiesce", bad)
	}
}
