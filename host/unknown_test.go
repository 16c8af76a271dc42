package host

import (
	"context"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// gatedScheme is a test transport: gated:///PATH is the file PATH whose
// probes wait until the test opens the path's gate (or the probe's
// deadline ends): a path checker's first probe that takes as long as the
// test wants.
const gatedScheme = "gated"

var gates = struct {
	sync.Mutex
	m map[string]*gatedBackend
}{m: map[string]*gatedBackend{}}

func init() {
	backends.Register(gatedScheme, func(ctx context.Context, u *url.URL) (backends.Backend, error) {
		b, err := backends.Open(ctx, "file://"+u.Path)
		if err != nil {
			return nil, err
		}
		g := &gatedBackend{Backend: b, open: make(chan struct{})}
		gates.Lock()
		gates.m[u.Path] = g
		gates.Unlock()
		return g, nil
	})
}

func gateOf(path string) *gatedBackend {
	gates.Lock()
	defer gates.Unlock()
	return gates.m[path]
}

type gatedBackend struct {
	backends.Backend
	open    chan struct{}
	waiting atomic.Int32 // probes held at the gate now
}

func (g *gatedBackend) Unwrap() backends.Backend { return g.Backend }

func (g *gatedBackend) Can(c backends.Capability) bool {
	return c == backends.CapProbe || backends.Can(g.Backend, c)
}

func (g *gatedBackend) Inquiry(ctx context.Context) (backends.Inquiry, error) {
	q, ok := backends.As[backends.Inquirer](g.Backend)
	if !ok {
		return backends.Inquiry{}, backends.ErrNotSupported
	}
	return q.Inquiry(ctx)
}

func (g *gatedBackend) Probe(ctx context.Context) error {
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestPathAddUnknownUntilProbed: a path that joins live (path add) is
// unknown while its first probe runs — in status, path list and events —
// and carries no I/O; path add returns once the probe judged it, and the
// events say path-added (unknown), then path-state unknown → active.
func TestPathAddUnknownUntilProbed(t *testing.T) {
	files := store(t, 1<<20, 2)
	h := newHost(t, Options{})
	dc := fileDevice("d0", files[0])
	dc.ProbeTimeout = Duration(time.Minute) // the gate, not the deadline, ends the probe
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{dc}))
	d, err := h.Device("d0")
	require.NoError(t, err)
	for _, p := range d.Paths() {
		assert.Equal(t, mpath.StateActive, p.State(), "%s: the mount returned with its paths probed", p.Name)
	}
	sub := h.Events().Subscribe(64)
	defer sub.Close()

	type added struct {
		st  mpath.PathStatus
		err error
	}
	done := make(chan added, 1)
	go func() {
		st, err := h.AddPath(context.Background(), "d0", gatedScheme+"://"+files[1], "slow")
		done <- added{st, err}
	}()
	var g *gatedBackend
	deadline := time.Now().Add(30 * time.Second)
	for g = gateOf(files[1]); g == nil || g.waiting.Load() == 0; g = gateOf(files[1]) {
		select {
		case a := <-done:
			t.Fatalf("path add returned before its probe started: %v", a.err)
		default:
		}
		require.True(t, time.Now().Before(deadline), "the new path's first probe did not start")
		time.Sleep(time.Millisecond)
	}
	_, p, err := h.FindPath("slow")
	require.NoError(t, err, "the path joined before its probe returned")
	assert.Equal(t, mpath.StateUnknown, p.State())
	var ps *mpath.PathStatus
	st := d.Status()
	for i := range st.Paths {
		if st.Paths[i].Name == "slow" {
			ps = &st.Paths[i]
		}
	}
	require.NotNil(t, ps, "status lists the joining path")
	assert.Equal(t, "unknown", ps.State)
	assert.Equal(t, "undef", ps.Checker)
	assert.False(t, st.APD)
	reads := p.Reads.Load()
	buf := make([]byte, 4096)
	for i := range 16 {
		_, err := d.ReadAt(context.Background(), buf, int64(i)*4096)
		require.NoError(t, err)
	}
	assert.Equal(t, reads, p.Reads.Load(), "no I/O on a path not probed yet")
	select {
	case a := <-done:
		t.Fatalf("path add returned (%+v) before its probe did", a)
	default:
	}

	close(g.open)
	a := <-done
	require.NoError(t, a.err)
	assert.Equal(t, "active", a.st.State, "path add answers with the probe's verdict")
	assert.Equal(t, mpath.StateActive, p.State())
	var seq []string
	for len(sub.C) > 0 {
		ev := <-sub.C
		if ev.Path == "slow" && (ev.Kind == "path-added" || ev.Kind == "path-state") {
			seq = append(seq, ev.Kind+" "+ev.From+"→"+ev.To)
		}
	}
	assert.Equal(t, []string{"path-added →unknown", "path-state unknown→active"}, seq)
}

// TestBuildReturnsWithPathsProbed: a mount (Build) returns once every
// path's first probe judged it; a probe that outlives the probe timeout
// makes its path dead, and the device is not in APD.
func TestBuildReturnsWithPathsProbed(t *testing.T) {
	files := store(t, 1<<20, 1)
	h := newHost(t, Options{})
	dc := fileDevice("d0", files[0])
	dc.Paths = append(dc.Paths, PathConfig{URI: gatedScheme + "://" + files[1]})
	dc.ProbeTimeout = Duration(200 * time.Millisecond)
	require.NoError(t, h.Build(context.Background(), []DeviceConfig{dc}))
	d, err := h.Device("d0")
	require.NoError(t, err)
	g := gateOf(files[1])
	require.NotNil(t, g)
	defer close(g.open)
	st := d.Status()
	require.Len(t, st.Paths, 2)
	assert.Equal(t, "active", st.Paths[0].State)
	assert.Equal(t, "dead", st.Paths[1].State, "its first probe timed out")
	assert.Contains(t, st.Paths[1].Reason, "path checker")
	assert.False(t, st.APD)
	assert.Equal(t, uint64(0), st.APDEntries)
	var trans []string
	for _, ev := range h.Events().Recent(mpath.EventHistory) {
		if ev.Kind == "path-state" {
			trans = append(trans, ev.From+"→"+ev.To)
		}
	}
	assert.ElementsMatch(t, []string{"unknown→active", "unknown→dead"}, trans)
}
