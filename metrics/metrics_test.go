package metrics

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the value of the metric of a family whose labels include want.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		l := labels(m)
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestScrape(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store.img")
	os.WriteFile(store, nil, 0o600)
	os.Truncate(store, 16<<20)
	var paths []*mpath.Path
	var faults []*fault.Backend
	for i := 0; i < 2; i++ {
		f, err := backends.OpenFile(store, backends.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fb := fault.Wrap(f, 1)
		faults = append(faults, fb)
		loc := mpath.Location{Adapter: i + 1}
		paths = append(paths, &mpath.Path{Name: loc.RuntimeName(), URI: "file://" + store, Location: loc, Transport: "file", Backend: fb})
	}
	d, err := nmp.NewDevice(mpath.DeviceConfig{Name: "m", PSP: nmp.PSPFixed}, paths, nil)
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

	ctx := context.Background()
	buf := make([]byte, 4096)
	for i := 0; i < 10; i++ {
		if _, err := d.WriteAt(ctx, buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	faults[0].Inject(fault.Spec{Error: "path-failure"}) // fail over to the second path
	for i := 0; i < 5; i++ {
		if _, err := d.ReadAt(ctx, buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}

	resp, err := http.Get("http://" + srv.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p0, p1 := paths[0].Name, paths[1].Name
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mpathfs_path_io_total", map[string]string{"path": p0, "op": "write"}, 10},
		{"mpathfs_path_io_total", map[string]string{"path": p1, "op": "read"}, 5},
		{"mpathfs_path_bytes_total", map[string]string{"path": p0, "op": "write"}, 40960},
		{"mpathfs_path_errors_total", map[string]string{"path": p0, "class": "path-failure"}, 1},
		{"mpathfs_path_latency_seconds", map[string]string{"path": p0, "op": "write"}, 10},
		{"mpathfs_path_state", map[string]string{"path": p0, "state": "dead"}, 1},
		{"mpathfs_path_state", map[string]string{"path": p0, "state": "active"}, 0},
		{"mpathfs_path_state", map[string]string{"path": p1, "state": "active"}, 1},
		{"mpathfs_device_failovers_total", map[string]string{"device": "m"}, 1},
		{"mpathfs_device_apd_entries_total", map[string]string{"device": "m"}, 0},
		{"mpathfs_device_queue_depth", map[string]string{"device": "m"}, 0},
	} {
		got, ok := find(t, fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
}

func TestResolveAddr(t *testing.T) {
	for _, c := range []struct {
		in, want string
		remote   bool
		err      string
	}{
		{"", DefaultAddr, false, ""},
		{"9475", "127.0.0.1:9475", false, ""},
		{":9100", "127.0.0.1:9100", false, ""},
		{"localhost:9100", "localhost:9100", false, ""},
		{"[::1]:9100", "[::1]:9100", false, ""},
		{"0.0.0.0:9475", "", false, "not a loopback address"},
		{"0.0.0.0:9475", "0.0.0.0:9475", true, ""},
		{"example.com:80", "", false, "not a loopback address"},
	} {
		got, err := ResolveAddr(c.in, c.remote)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: got %q, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
