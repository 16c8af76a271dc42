package plugin

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRegistry(t *testing.T) {
	r := New[func() int]("widget")
	r.Register("b", func() int { return 2 })
	r.Register("a", func() int { return 1 })
	assert.Equal(t, []string{"a", "b"}, r.Names())
	f, err := r.Lookup("b")
	require.NoError(t, err)
	assert.Equal(t, 2, f())
	_, ok := r.Get("c")
	assert.False(t, ok)
	_, err = r.Lookup("c")
	assert.EqualError(t, err, `unknown widget "c" (known: a, b)`)
	var got []int
	for _, f := range r.Values() {
		got = append(got, f())
	}
	assert.Equal(t, []int{1, 2}, got, "values in name order")

	assert.PanicsWithValue(t, `plugin: widget "a" registered twice`, func() { r.Register("a", func() int { return 3 }) })
	assert.PanicsWithValue(t, `plugin: widget "n" registered as nil`, func() { r.Register("n", nil) })

	type iface interface{ M() }
	ri := New[iface]("thing")
	assert.Panics(t, func() { ri.Register("nil interface", nil) })
	rs := New[struct{ N int }]("value")
	rs.Register("zero", struct{ N int }{}) // a zero struct is not nil
	assert.Equal(t, []string{"zero"}, rs.Names())
}
