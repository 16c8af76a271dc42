package nbd

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNextForRole: the hand-off decision, case by case.
func TestNextForRole(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    roleState
		want roleNext
	}{
		{"idle", roleState{}, roleGiveBack},
		{"requests in flight", roleState{inflight: 3}, roleRead},
		{"down, nothing unsettled", roleState{down: true, inflight: 2}, roleDrop},
		{"down, abandoned write unsettled", roleState{down: true, pendingWrites: 1}, roleRead},
		{"down and killed: no proof can come", roleState{down: true, pendingWrites: 1, killed: true}, roleDrop},
		{"killed only matters once down", roleState{killed: true}, roleGiveBack},
		{"unsettled writes only matter once down", roleState{pendingWrites: 2}, roleGiveBack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, nextForRole(tc.s), "%+v", tc.s)
		})
	}
}

// TestReaderRoleTakeGive: the role is taken once, given back once; giving
// back a free role panics.
func TestReaderRoleTakeGive(t *testing.T) {
	r := newReaderRole(true)
	assert.False(t, r.free(), "a new role is held by its creator until start gives it")
	assert.False(t, r.take())
	r.give()
	require.True(t, r.free())
	require.True(t, r.take())
	assert.False(t, r.take(), "taken twice")
	assert.False(t, r.free())
	r.give()
	assert.Panics(t, r.give, "given back while free")
}

// TestReaderRoleTenure: a wake-up meant for an earlier tenure finds it over.
func TestReaderRoleTenure(t *testing.T) {
	r := newReaderRole(true)
	g1 := r.beginTenure()
	assert.True(t, r.inTenure(g1))
	r.endTenure()
	assert.False(t, r.inTenure(g1), "ended")
	g2 := r.beginTenure()
	assert.NotEqual(t, g1, g2)
	assert.True(t, r.inTenure(g2))
	assert.False(t, r.inTenure(g1))
}

// TestReaderRoleExclusive: many goroutines taking and giving the role never
// hold it two at a time. Run with -race.
func TestReaderRoleExclusive(t *testing.T) {
	r := newReaderRole(true)
	r.give()
	var holders, turns atomic.Int32
	var overlap atomic.Bool
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				if !r.take() {
					continue
				}
				if holders.Add(1) > 1 {
					overlap.Store(true)
				}
				turns.Add(1)
				holders.Add(-1)
				r.give()
			}
		}()
	}
	wg.Wait()
	assert.False(t, overlap.Load(), "two holders at once")
	assert.Positive(t, turns.Load())
	assert.True(t, r.free(), "the role ends up free")
}
