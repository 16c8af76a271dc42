package block_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/backends/block"
	"github.com/mpathfs/mpathfs/internal/needs"
	"github.com/mpathfs/mpathfs/ioerr"
)

// needLoop skips (or, under CI, fails) when loop devices cannot be used.
func needLoop(t *testing.T) {
	t.Helper()
	needs.Tools(t, "root", "losetup", "/dev/loop-control")
}

// newImage creates a zero-filled image file of size bytes.
func newImage(t *testing.T, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(name, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
	return name
}

// attach attaches a loop device to img (with direct I/O when the backing
// file system allows it) and detaches it in t.Cleanup.
func attach(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", "--direct-io=on", img).CombinedOutput()
	if err != nil {
		out, err = exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	}
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v: %s", img, err, out)
	}
	dev := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("losetup printed %q, not a loop device", dev)
	}
	t.Cleanup(func() { detach(t, dev) })
	return dev
}

// detach detaches dev; detaching one already detached is not an error.
func detach(t *testing.T, dev string) {
	t.Helper()
	if _, err := os.Stat("/sys/block/" + filepath.Base(dev) + "/loop"); err != nil {
		return
	}
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Errorf("losetup -d %s: %v: %s", dev, err, out)
	}
}

func openDev(t *testing.T, dev string) *block.Device {
	t.Helper()
	d, err := block.OpenDevice(dev, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestLoopConformance(t *testing.T) {
	needLoop(t)
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		dev := attach(t, newImage(t, size))
		b, err := backends.Open(t.Context(), "block://"+dev)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// TestLoopInline: inline=true runs the system calls in the caller's
// goroutine on the caller's buffer (or a bounce buffer when misaligned),
// with the same contract.
func TestLoopInline(t *testing.T) {
	needLoop(t)
	backendtest.Run(t, func(t *testing.T, size int64) backends.Backend {
		dev := attach(t, newImage(t, size))
		b, err := backends.Open(t.Context(), "block://"+dev+"?inline=true")
		if err != nil {
			t.Fatal(err)
		}
		d, ok := backends.As[*block.Device](b)
		if !ok || !d.Inline() {
			t.Fatalf("block://%s?inline=true opened %T, inline %v", dev, b, ok && d.Inline())
		}
		return b
	})
	dev := attach(t, newImage(t, 1<<20))
	b, err := backends.Open(t.Context(), "block://"+dev)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if d, _ := backends.As[*block.Device](b); d == nil || d.Inline() {
		t.Error("a block path without inline=true runs inline")
	}
	if _, err := backends.Open(t.Context(), "block://"+dev+"?inline=maybe"); err == nil || !strings.Contains(err.Error(), "inline") {
		t.Errorf("inline=maybe: %v, want an error naming inline", err)
	}
}

func TestLoopOpenBarePath(t *testing.T) {
	needLoop(t)
	dev := attach(t, newImage(t, 1<<20))
	b, err := backends.Open(t.Context(), dev)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d, ok := b.(*block.Device)
	if !ok {
		t.Fatalf("Open(%s) = %T, want *block.Device", dev, b)
	}
	if d.Size() != 1<<20 {
		t.Errorf("Size = %d", d.Size())
	}
	if lbs := d.LogicalBlockSize(); lbs < 512 || lbs&(lbs-1) != 0 {
		t.Errorf("LogicalBlockSize = %d", lbs)
	}
	if !backends.Can(b, backends.CapProbe) || !backends.Can(b, backends.CapInquiry) || !backends.Can(b, backends.CapWriteZeroes) || backends.Can(b, backends.CapAbort) {
		t.Error("unexpected capability set")
	}
}

func TestLoopIdentity(t *testing.T) {
	needLoop(t)
	ctx := t.Context()
	img := newImage(t, 1<<20)
	a, b := openDev(t, attach(t, img)), openDev(t, attach(t, img))
	other := openDev(t, attach(t, newImage(t, 1<<20)))
	ia, err := a.Inquiry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := b.Inquiry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io, err := other.Inquiry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ia.WWID == "" || ia.WWID != ib.WWID {
		t.Errorf("two loop devices over one image: WWIDs %q and %q", ia.WWID, ib.WWID)
	}
	if io.WWID == ia.WWID {
		t.Errorf("loop devices over different images share WWID %q", io.WWID)
	}
	if ia.Vendor != "LINUX" || ia.Model != "LOOP" || ia.Transport != "block" || ia.TPGS != 0 {
		t.Errorf("loop identity = %+v", ia)
	}
	// sysfs alone (what the hotplug watcher uses) agrees.
	for _, name := range []string{a.Name(), filepath.Base(a.Name())} {
		is, err := block.Identify(name)
		if err != nil {
			t.Fatal(err)
		}
		if is != ia {
			t.Errorf("Identify(%s) = %+v, Inquiry = %+v", name, is, ia)
		}
	}
}

// TestLoopWWIDMatchesFile: a file:// path and a loop device over the same
// image are two paths to the same LU.
func TestLoopWWIDMatchesFile(t *testing.T) {
	needLoop(t)
	ctx := t.Context()
	img := newImage(t, 1<<20)
	ia, err := openDev(t, attach(t, img)).Inquiry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := backends.OpenFile(img, backends.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, perr := func() (inq backends.Inquiry, perr any) {
		defer func() { perr = recover() }()
		inq, err = f.Inquiry(ctx)
		return inq, nil
	}()
	if perr != nil {
		t.Skipf("backends.File.Inquiry panics (%v): its WWID slices 30 hex digits to 31; fix backends/file.go to hash h[:16]", perr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if fi.WWID != ia.WWID {
		t.Errorf("file path WWID %q, loop path WWID %q over the same image", fi.WWID, ia.WWID)
	}
}

// TestLoopMisaligned checks reads and writes at every kind of misalignment
// against a model of the store, and through a second loop device over the
// same image.
func TestLoopMisaligned(t *testing.T) {
	needLoop(t)
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) { testLoopMisaligned(t, block.Options{Inline: inline}) })
	}
}

func testLoopMisaligned(t *testing.T, o block.Options) {
	ctx := t.Context()
	const size = 1 << 20
	img := newImage(t, size)
	d, err := block.OpenDevice(attach(t, img), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	other := openDev(t, attach(t, img))
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	lbs := int64(d.LogicalBlockSize())
	cases := []struct{ off, n int64 }{
		{1, 1}, {0, 1}, {lbs - 1, 2}, {lbs, 1}, {3, lbs}, {lbs + 7, 3*lbs + 5},
		{0, lbs + 1}, {lbs - 1, lbs + 1}, {5, 600 << 10}, {size - 1, 1}, {size - lbs - 3, lbs + 3},
		{4096, 4096}, // aligned, for the buffer-address case below
	}
	for i := 0; i < 40; i++ {
		off := rng.Int64N(size - 1)
		cases = append(cases, struct{ off, n int64 }{off, 1 + rng.Int64N(min(size-off, 300<<10))})
	}
	for _, c := range cases {
		// A buffer whose address is misaligned too.
		w := make([]byte, c.n+3)[3:]
		for i := range w {
			w[i] = byte(rng.Uint32())
		}
		if n, err := d.WriteAt(ctx, w, c.off); err != nil || n != len(w) {
			t.Fatalf("WriteAt(off %d, len %d) = %d, %v", c.off, c.n, n, err)
		}
		copy(model[c.off:], w)
		r := make([]byte, c.n+1)[1:]
		if n, err := d.ReadAt(ctx, r, c.off); err != nil || n != len(r) {
			t.Fatalf("ReadAt(off %d, len %d) = %d, %v", c.off, c.n, n, err)
		}
		if !bytes.Equal(r, w) {
			t.Fatalf("read back at %d+%d differs", c.off, c.n)
		}
	}
	all := make([]byte, size)
	if _, err := other.ReadAt(ctx, all, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, model) {
		t.Fatal("the store differs from the model: a read-modify-write clobbered neighbouring bytes")
	}
	// Misaligned reads across the end: the in-range part and io.EOF.
	r := make([]byte, 10)
	if n, err := d.ReadAt(ctx, r, size-3); n != 3 || err == nil || !bytes.Equal(r[:3], model[size-3:]) {
		t.Errorf("ReadAt across the end = %d, %v", n, err)
	}
	if n, err := d.WriteAt(ctx, r, size-3); n != 3 || err == nil {
		t.Errorf("WriteAt across the end = %d, %v", n, err)
	}
}

// TestLoopParallelSubBlock: writers that each own some bytes of the same
// blocks must not undo one another's read-modify-writes.
func TestLoopParallelSubBlock(t *testing.T) {
	needLoop(t)
	ctx := t.Context()
	d := openDev(t, attach(t, newImage(t, 1<<20)))
	const workers, per, rounds = 8, 64, 50 // worker w owns bytes [w*64, w*64+64) of every block
	blocks := int64(4)
	lbs := int64(d.LogicalBlockSize())
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				for b := int64(0); b < blocks; b++ {
					p := bytes.Repeat([]byte{byte(w + 1 + i)}, per)
					if _, err := d.WriteAt(ctx, p, b*lbs+int64(w*per)); err != nil {
						errs <- err
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for b := int64(0); b < blocks; b++ {
		p := make([]byte, workers*per)
		if _, err := d.ReadAt(ctx, p, b*lbs); err != nil {
			t.Fatal(err)
		}
		for w := 0; w < workers; w++ {
			want := bytes.Repeat([]byte{byte(w + rounds)}, per)
			if !bytes.Equal(p[w*per:(w+1)*per], want) {
				t.Fatalf("block %d: worker %d's bytes were lost (got %x…)", b, w, p[w*per:w*per+4])
			}
		}
	}
}

func TestLoopWriteZeroesMisaligned(t *testing.T) {
	needLoop(t)
	ctx := t.Context()
	d := openDev(t, attach(t, newImage(t, 1<<20)))
	full := bytes.Repeat([]byte{0xab}, 64<<10)
	if _, err := d.WriteAt(ctx, full, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ off, n int64 }{{3, 5}, {100, 5000}, {8192, 8192}, {20000, 30001}} {
		if err := d.WriteZeroes(ctx, c.off, c.n); err != nil {
			t.Fatalf("WriteZeroes(%d, %d): %v", c.off, c.n, err)
		}
		for i := c.off; i < c.off+c.n; i++ {
			full[i] = 0
		}
	}
	got := make([]byte, len(full))
	if _, err := d.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, full) {
		t.Fatal("misaligned write-zeroes zeroed the wrong bytes")
	}
	if err := d.WriteZeroes(ctx, 1<<20-10, 20); ioerr.ClassOf(err) != ioerr.ClassDeviceError {
		t.Errorf("WriteZeroes beyond the end = %v, want a device error", err)
	}
}

func TestLoopProbeAfterDetach(t *testing.T) {
	needLoop(t)
	ctx := t.Context()
	dev := attach(t, newImage(t, 1<<20))
	d, err := block.OpenDevice(dev, block.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Probe(ctx); err != nil {
		t.Fatalf("Probe on an attached loop device: %v", err)
	}
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d %s: %v: %s", dev, err, out)
	}
	// The path still holds the device open, so the kernel only marks it
	// for detach on last close: Probe must say so.
	err = d.Probe(ctx)
	if ioerr.ClassOf(err) != ioerr.ClassPermanentLoss || !errors.Is(err, block.ErrDetachPending) {
		t.Fatalf("Probe after losetup -d = %v, want permanent loss with ErrDetachPending", err)
	}
	d.Close()
	// Now the detach is complete: the device is empty and cannot be opened as a path.
	if _, err := block.OpenDevice(dev, block.Options{}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("OpenDevice on a detached loop device = %v, want an 'empty' error", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := t.Context()
	for _, c := range []struct{ uri, want string }{
		{"block:///dev/nonexistent-mpathfs", "does not exist"},
		{"block://host/dev/sda", "host"},
		{"block:///dev/null?direct=maybe", "not a boolean"},
		{"block:///dev/null?direct=false", "not a block device"},
	} {
		_, err := backends.Open(ctx, c.uri)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", c.uri, err, c.want)
		}
	}
}
