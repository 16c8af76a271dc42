package control

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// fileDevice is a device named name with one file path to a 1 MiB store.
func fileDevice(t *testing.T, name string) *nmp.Device {
	t.Helper()
	store := filepath.Join(t.TempDir(), "store.img")
	require.NoError(t, os.WriteFile(store, make([]byte, 1<<20), 0o600))
	fb, err := backends.OpenFile(store, backends.FileOptions{})
	require.NoError(t, err)
	loc := mpath.Location{Adapter: 1}
	p := &mpath.Path{Name: loc.RuntimeName(), URI: "file://" + store, Location: loc, Transport: "file", Backend: fb}
	d, err := nmp.NewDevice(mpath.DeviceConfig{Name: name, CheckInterval: time.Hour}, []*mpath.Path{p}, &mpath.Events{})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// traceStream follows GET /v1/trace for device and sends the records'
// IDs on the returned channel until ctx ends.
func traceStream(ctx context.Context, t *testing.T, c *Client, device string) <-chan uint64 {
	ids := make(chan uint64, 1<<16)
	go func() {
		defer close(ids)
		err := c.Stream(ctx, Endpoint("/v1/trace", "device", device), func(line []byte) bool {
			var r nmp.TraceRecord
			if json.Unmarshal(line, &r) == nil {
				ids <- r.ID
			}
			return true
		})
		if err != nil {
			t.Errorf("stream: %v", err)
		}
	}()
	return ids
}

// waitFor reads IDs from ch, doing a read on d whenever none is there,
// until an ID above after arrives. It gives up (failing) after a minute:
// a bound against hanging, not a timing assertion.
func waitFor(t *testing.T, d *nmp.Device, ch <-chan uint64, after uint64) uint64 {
	t.Helper()
	deadline := time.After(time.Minute)
	buf := make([]byte, 512)
	for {
		select {
		case id, ok := <-ch:
			require.True(t, ok, "stream ended")
			if id > after {
				return id
			}
			continue
		case <-deadline:
			t.Fatalf("no trace record after id %d", after)
		default:
		}
		_, err := d.ReadAt(context.Background(), buf, 0)
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "waiting for %s", what)
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTraceTwoClients: two `mpathfs trace` clients of one device both
// receive records, and the first one leaving does not cut the second off.
func TestTraceTwoClients(t *testing.T) {
	const name = "dev a/b?c" // escaped in the URL, found by the server
	d := fileDevice(t, name)
	h := host.New(host.Options{})
	require.NoError(t, h.Adopt(d, nil))
	rt := NewRuntime("/nowhere", h)
	s, err := Listen(filepath.Join(shortDir(t), "c.sock"), rt)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	c, err := Dial(s.Path())
	require.NoError(t, err)

	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	s1 := traceStream(ctx1, t, c, name)
	s2 := traceStream(ctx2, t, c, name)
	waitUntil(t, "two subscribers", func() bool { tr := d.Tracer(); return tr != nil && tr.Subscribers() == 2 })

	id1 := waitFor(t, d, s1, 0)
	id2 := waitFor(t, d, s2, 0)
	t.Logf("first records: %d, %d", id1, id2)

	// The first client leaves; once the server has let go of it, the
	// second still gets every new record.
	cancel1()
	for range s1 {
	}
	waitUntil(t, "one subscriber", func() bool { tr := d.Tracer(); return tr != nil && tr.Subscribers() == 1 })
	last := max(id1, id2)
	waitFor(t, d, s2, last)

	cancel2()
	for range s2 {
	}
	waitUntil(t, "the stream's tracer detached", func() bool { return d.Tracer() == nil })
}
