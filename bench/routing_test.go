package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	_ "github.com/mpathfs/mpathfs/backends/nbd"
	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

const storeSize = 64 << 20

func device(b *testing.B, uri string) *nmp.Device {
	b.Helper()
	be, err := backends.Open(context.Background(), uri)
	if err != nil {
		b.Fatal(err)
	}
	p := &mpath.Path{Name: "p1", URI: uri, Backend: be}
	d, err := nmp.NewDevice(mpath.DeviceConfig{Name: "bench"}, []*mpath.Path{p}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

func fileURI(b *testing.B) string {
	name := filepath.Join(b.TempDir(), "store")
	if err := os.WriteFile(name, make([]byte, storeSize), 0o600); err != nil {
		b.Fatal(err)
	}
	return "file://" + name
}

func nbdURI(b *testing.B) string {
	needs.Tools(b, "nbdkit")
	dir := b.TempDir()
	sock := filepath.Join(dir, "s")
	cmd := exec.Command("nbdkit", "-f", "-U", sock, "memory", "64M")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "nbd+unix:///?socket=" + sock
}

func benchRead(b *testing.B, d *nmp.Device, ctx context.Context) { benchIO(b, d, ctx, d.ReadAt) }

func benchWrite(b *testing.B, d *nmp.Device, ctx context.Context) { benchIO(b, d, ctx, d.WriteAt) }

// benchIO runs 4k I/Os at QD1 through io (d.ReadAt or d.WriteAt).
func benchIO(b *testing.B, d *nmp.Device, ctx context.Context, io func(context.Context, []byte, int64) (int, error)) {
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	n := 0
	for i := 0; b.Loop(); i++ {
		if _, err := io(ctx, buf, int64(i%1024)*4096); err != nil {
			b.Fatal(err)
		}
		n++
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	reportRusage(b, &before, &after, n)
}

// reportRusage reports what an I/O cost this process between two
// getrusage samples over n I/Os, beside the wall time that the machine's
// load blurs: CPU time (user + system) and context switches (voluntary +
// involuntary) per I/O.
func reportRusage(b *testing.B, before, after *syscall.Rusage, n int) {
	cpu := func(r *syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	if n > 0 {
		b.ReportMetric(float64(cpu(after)-cpu(before))/float64(n)/1e3, "cpu-µs/op")
		b.ReportMetric(float64(after.Nvcsw+after.Nivcsw-before.Nvcsw-before.Nivcsw)/float64(n), "switches/op")
	}
}

func BenchmarkDeviceRead(b *testing.B) {
	cancellable := func() context.Context {
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		return ctx
	}
	b.Run("file/background", func(b *testing.B) { benchRead(b, device(b, fileURI(b)), context.Background()) })
	b.Run("file/cancellable", func(b *testing.B) { benchRead(b, device(b, fileURI(b)), cancellable()) })
	b.Run("nbd/background", func(b *testing.B) { benchRead(b, device(b, nbdURI(b)), context.Background()) })
	b.Run("nbd/cancellable", func(b *testing.B) { benchRead(b, device(b, nbdURI(b)), cancellable()) })
	// foreign: a cancellable context that is not one of package context's
	// own, as go-fuse's per-request fuse.Context is; what the NBD path
	// costs under a FUSE mount.
	b.Run("nbd/foreign", func(b *testing.B) {
		benchRead(b, device(b, nbdURI(b)), foreignCtx{Context: context.Background(), done: make(chan struct{})})
	})
}

// BenchmarkDeviceWrite is BenchmarkDeviceRead's 4k QD1 loop with writes,
// under the context a FUSE mount gives (foreign): beside the read, what a
// write costs the same path.
func BenchmarkDeviceWrite(b *testing.B) {
	foreign := func() context.Context {
		return foreignCtx{Context: context.Background(), done: make(chan struct{})}
	}
	b.Run("file/foreign", func(b *testing.B) { benchWrite(b, device(b, fileURI(b)), foreign()) })
	b.Run("nbd/foreign", func(b *testing.B) { benchWrite(b, device(b, nbdURI(b)), foreign()) })
}

// foreignCtx is a context with a Done channel that package context does not
// know (go-fuse's fuse.Context is one): context.AfterFunc on it, or on a
// context derived from it, watches it from a goroutine of its own.
type foreignCtx struct {
	context.Context
	done chan struct{}
}

func (c foreignCtx) Done() <-chan struct{} { return c.done }

func (c foreignCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// BenchmarkDeviceDepth is the 4k loop at queue depth: qd goroutines each
// send 4k I/Os to one device over one NBD path (its default connections)
// to `nbdkit memory`, under the context a FUSE mount gives (foreign).
// ns/op is the wall time per I/O over all of them; cpu-µs/op and
// switches/op are the process's, per I/O. What the NBD client costs once
// requests overlap, beside the QD1 loops above.
func BenchmarkDeviceDepth(b *testing.B) {
	type op int
	const (
		read op = iota
		write
		randrw
	)
	for _, tc := range []struct {
		name  string
		op    op
		qd    int
		conns string // the URI's connections=, or "" for the default
	}{
		{"read/qd32", read, 32, ""},
		{"write/qd32", write, 32, ""},
		{"randrw/qd2", randrw, 2, ""},
		{"randrw/qd4", randrw, 4, ""},
		{"randrw/qd8", randrw, 8, ""},
		{"randrw/qd32", randrw, 32, ""},
		{"randrw/qd64", randrw, 64, ""},
		{"randrw/qd32/conn1", randrw, 32, "1"},
	} {
		b.Run("nbd/"+tc.name, func(b *testing.B) {
			uri := nbdURI(b)
			if tc.conns != "" {
				uri += "&connections=" + tc.conns
			}
			d := device(b, uri)
			var ctx context.Context = foreignCtx{Context: context.Background(), done: make(chan struct{})}
			benchDepth(b, tc.qd, func(g, i int, buf []byte) error {
				// Spread the I/Os over the store, each goroutine on
				// its own 4k blocks.
				off := int64((i*tc.qd+g)%(storeSize/4096)) * 4096
				rd := tc.op == read || (tc.op == randrw && (i+g)%2 == 0)
				var err error
				if rd {
					_, err = d.ReadAt(ctx, buf, off)
				} else {
					_, err = d.WriteAt(ctx, buf, off)
				}
				return err
			})
		})
	}
}

// benchDepth runs b.N I/Os (io) from qd goroutines, reporting what
// benchIO reports per I/O. io gets the goroutine's number, its I/O count
// and its own 4k buffer.
func benchDepth(b *testing.B, qd int, io func(g, i int, buf []byte) error) {
	b.ReportAllocs()
	b.SetBytes(4096)
	var next atomic.Int64
	var failMu sync.Mutex
	var failed error
	var before, after syscall.Rusage
	b.ResetTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	var wg sync.WaitGroup
	for g := range qd {
		wg.Go(func() {
			buf := make([]byte, 4096)
			for i := 0; next.Add(1) <= int64(b.N); i++ {
				if err := io(g, i, buf); err != nil {
					failMu.Lock()
					failed = err
					failMu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	reportRusage(b, &before, &after, b.N)
}
