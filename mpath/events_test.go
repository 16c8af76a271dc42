package mpath

import (
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ev(i int) Event { return Event{Kind: "test", Path: strconv.Itoa(i)} }

func paths(evs []Event) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, e.Path)
	}
	return out
}

func TestEventsRecentOrder(t *testing.T) {
	var e Events
	assert.Empty(t, e.Recent(10), "nothing published yet")
	for i := 0; i < 5; i++ {
		e.Publish(ev(i))
	}
	assert.Equal(t, []string{"0", "1", "2", "3", "4"}, paths(e.Recent(100)), "fewer kept than asked: all, oldest first")
	assert.Equal(t, []string{"2", "3", "4"}, paths(e.Recent(3)), "the last three, oldest first")
	assert.Empty(t, e.Recent(0))
	assert.Empty(t, e.Recent(-1))
}

func TestEventsRingBounded(t *testing.T) {
	var e Events
	total := EventHistory*2 + 7
	for i := 0; i < total; i++ {
		e.Publish(ev(i))
	}
	all := e.Recent(EventHistory * 10)
	require.Len(t, all, EventHistory, "the ring keeps at most EventHistory events")
	for i, x := range all {
		require.Equal(t, strconv.Itoa(total-EventHistory+i), x.Path, "event %d of the ring", i)
	}
	assert.Equal(t, []string{strconv.Itoa(total - 2), strconv.Itoa(total - 1)}, paths(e.Recent(2)))
}

// History and the subscription split the stream exactly: nothing twice,
// nothing lost, even while others publish.
func TestEventsSubscribeAfterNoGapNoDuplicate(t *testing.T) {
	var e Events
	for i := 0; i < 10; i++ {
		e.Publish(ev(i))
	}
	const more = 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 10; i < 10+more; i++ {
			e.Publish(ev(i))
		}
	}()
	sub, past := e.SubscribeAfter(EventHistory, EventHistory)
	wg.Wait()
	sub.Close()
	got := paths(past)
	for x := range sub.C {
		got = append(got, x.Path)
	}
	require.Len(t, got, 10+more)
	for i, p := range got {
		require.Equal(t, strconv.Itoa(i), p)
	}
	assert.Zero(t, sub.Dropped())
}

func TestEventsConcurrentPublish(t *testing.T) {
	var e Events
	sub := e.Subscribe(16) // small: it drops, publishers never block
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				e.Publish(Event{Kind: "test", Device: strconv.Itoa(w), Path: strconv.Itoa(i)})
				if i%50 == 0 {
					e.Recent(10)
				}
			}
		}(w)
	}
	wg.Wait()
	sub.Close()
	received := 0
	for range sub.C {
		received++
	}
	assert.Equal(t, uint64(writers*each), uint64(received)+sub.Dropped(), "every event either received or counted as dropped")
	all := e.Recent(EventHistory)
	require.Len(t, all, EventHistory)
	// Per writer, the kept events are in publish order.
	last := map[string]int{}
	for _, x := range all {
		i, err := strconv.Atoi(x.Path)
		require.NoError(t, err)
		if prev, ok := last[x.Device]; ok {
			require.Greater(t, i, prev, "writer %s out of order", x.Device)
		}
		last[x.Device] = i
	}
}
