package metrics

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// TestScrapeUnknownPath: a path added live is mpathfs_path_state{state=
// "unknown"} 1 while its first probe is held, then active.
func TestScrapeUnknownPath(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(store, 16<<20); err != nil {
		t.Fatal(err)
	}
	open := func(i int) (*mpath.Path, *fault.Backend) {
		f, err := backends.OpenFile(store, backends.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fb := fault.Wrap(f, uint64(i))
		loc := mpath.Location{Adapter: i}
		return &mpath.Path{Name: loc.RuntimeName(), URI: "file://" + store, Location: loc, Transport: "file", Backend: fb}, fb
	}
	p1, _ := open(1)
	d, err := nmp.NewDevice(mpath.DeviceConfig{Name: "m", PSP: nmp.PSPFixed, CheckInterval: time.Hour, ProbeTimeout: time.Minute}, []*mpath.Path{p1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := New()
	c.Add(d)
	srv, err := Serve("127.0.0.1:0", c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	scrape := func() map[string]*dto.MetricFamily {
		resp, err := http.Get("http://" + srv.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return fams
	}

	p2, fb := open(2)
	id, err := fb.Inject(fault.Spec{Hang: true, Ops: []string{"probe"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.AddPath(p2) }()
	deadline := time.Now().Add(10 * time.Second)
	for d.FindPath(p2.Name) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the path did not join")
		}
		time.Sleep(time.Millisecond)
	}
	fams := scrape()
	for state, want := range map[string]float64{"unknown": 1, "active": 0} {
		if got, ok := find(t, fams, "mpathfs_path_state", map[string]string{"path": p2.Name, "state": state}); !ok || got != want {
			t.Errorf("while its probe is held: mpathfs_path_state{%s} = %v (found %v), want %v", state, got, ok, want)
		}
	}
	fb.Clear(id)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(context.Background(), make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	fams = scrape()
	for state, want := range map[string]float64{"unknown": 0, "active": 1} {
		if got, ok := find(t, fams, "mpathfs_path_state", map[string]string{"path": p2.Name, "state": state}); !ok || got != want {
			t.Errorf("after its probe: mpathfs_path_state{%s} = %v (found %v), want %v", state, got, ok, want)
		}
	}
}
