package nmp

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptions(t *testing.T) {
	o := NewOptions("P", map[string]string{"n": " 7 ", "b": "Off", "s": "x"})
	assert.Equal(t, uint64(7), o.Uint("n", 1, 1))
	assert.False(t, o.Bool("b", true))
	assert.Equal(t, "x", o.String("s", ""))
	assert.Equal(t, uint64(5), o.Uint("absent", 5, 0), "the default when absent")
	require.NoError(t, o.Done())

	for _, tc := range []struct {
		opts map[string]string
		get  func(*Options)
		want string
	}{
		{map[string]string{"n": "0"}, func(o *Options) { o.Uint("n", 1, 1) }, `P option n="0": want a whole number ≥ 1`},
		{map[string]string{"n": "-1"}, func(o *Options) { o.Uint("n", 1, 0) }, "want a whole number ≥ 0"},
		{map[string]string{"n": "1e3"}, func(o *Options) { o.Uint("n", 1, 0) }, "want a whole number"},
		{map[string]string{"b": "maybe"}, func(o *Options) { o.Bool("b", false) }, `P option b="maybe": want on or off`},
		{map[string]string{"z": "1", "a": "2", "n": "3"}, func(o *Options) { o.Uint("n", 1, 0); o.Bool("b", false) }, "P: unknown option(s) a, z (known: b, n)"},
	} {
		o := NewOptions("P", tc.opts)
		tc.get(o)
		assert.ErrorContains(t, o.Done(), tc.want)
	}
}
