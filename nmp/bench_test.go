package nmp

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// fileDevice is a device over two file paths to one store, VMW_PSP_RR.
func fileDevice(tb testing.TB) *Device {
	tb.Helper()
	name := filepath.Join(tb.TempDir(), "store")
	if err := os.WriteFile(name, make([]byte, 1<<20), 0o600); err != nil {
		tb.Fatal(err)
	}
	var paths []*mpath.Path
	for _, n := range []string{"p1", "p2"} {
		f, err := backends.OpenFile(name, backends.FileOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		paths = append(paths, &mpath.Path{Name: n, URI: "file://" + name, Transport: "file", Backend: f})
	}
	d, err := NewDevice(mpath.DeviceConfig{Name: "bench", PSP: PSPRR, PSPOptions: map[string]string{"iops": "1"}}, paths, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// BenchmarkReadHealthy is the cost of a 4 KiB read through a healthy
// device: PSP select, per-I/O deadline, counters, pread.
func BenchmarkReadHealthy(b *testing.B) { benchHealthy(b, (*Device).ReadAt) }

// BenchmarkWriteHealthy is the cost of a 4 KiB write through a healthy
// device with no ambiguous range: the fencing check is one atomic load.
func BenchmarkWriteHealthy(b *testing.B) { benchHealthy(b, (*Device).WriteAt) }

// benchHealthy runs io, 4 KiB at a time, over the first MiB of a healthy
// file-backed device.
func benchHealthy(b *testing.B, io func(*Device, context.Context, []byte, int64) (int, error)) {
	d := fileDevice(b)
	ctx := context.Background()
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for i := 0; b.Loop(); i++ {
		if _, err := io(d, ctx, buf, int64(i%256)*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadAllocs reports (does not assert) what a healthy read allocates,
// without and with a tracer attached.
func TestReadAllocs(t *testing.T) {
	d := fileDevice(t)
	ctx := context.Background()
	buf := make([]byte, 4096)
	n := testing.AllocsPerRun(200, func() {
		if _, err := d.ReadAt(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("a healthy 4 KiB read allocates %.1f times", n)
	d.SetTracer(NewTracer(16, nil))
	n = testing.AllocsPerRun(200, func() {
		if _, err := d.ReadAt(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("with a tracer attached: %.1f allocations", n)
}
