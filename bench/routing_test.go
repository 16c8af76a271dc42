package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
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
	// What an I/O costs this process, beside the wall time that the
	// machine's load blurs: CPU time (user + system) and context switches
	// (voluntary + involuntary) per I/O.
	cpu := func(r *syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	if n > 0 {
		b.ReportMetric(float64(cpu(&after)-cpu(&before))/float64(n)/1e3, "cpu-µs/op")
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
