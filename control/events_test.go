package control

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
)

func eventsServer(t *testing.T) (*mpath.Events, *Client) {
	t.Helper()
	events := &mpath.Events{}
	s, err := Listen(filepath.Join(shortDir(t), "c.sock"), NewRuntime("/nowhere", host.New(host.Options{Events: events})))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	c, err := Dial(s.Path())
	require.NoError(t, err)
	return events, c
}

func TestEventsRouteHistoryThenEnd(t *testing.T) {
	events, c := eventsServer(t)
	for i := 0; i < 5; i++ {
		events.Publish(mpath.Event{Kind: "test", Path: strconv.Itoa(i)})
	}
	var got []string
	err := c.Stream(context.Background(), Endpoint("/v1/events", "history", "3", "follow", "0"), func(line []byte) bool {
		var ev mpath.Event
		require.NoError(t, json.Unmarshal(line, &ev))
		got = append(got, ev.Path)
		return true
	})
	require.NoError(t, err, "follow=0 ends the stream after the history")
	assert.Equal(t, []string{"2", "3", "4"}, got)

	err = c.Stream(context.Background(), Endpoint("/v1/events", "history", "x"), func([]byte) bool { return true })
	assert.ErrorContains(t, err, "history")
}

func TestEventsRouteHistoryThenFollow(t *testing.T) {
	events, c := eventsServer(t)
	events.Publish(mpath.Event{Kind: "test", Path: "old"})
	var got []string
	err := c.Stream(context.Background(), Endpoint("/v1/events", "history", "10", "follow", "1"), func(line []byte) bool {
		var ev mpath.Event
		require.NoError(t, json.Unmarshal(line, &ev))
		got = append(got, ev.Path)
		if ev.Path == "old" {
			// The history arrived; the subscription is live: this one
			// must follow it.
			events.Publish(mpath.Event{Kind: "test", Path: "new"})
		}
		return ev.Path != "new"
	})
	require.NoError(t, err)
	assert.Equal(t, []string{"old", "new"}, got)
}
