package nmp

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

func flushCounts(r *rig) []int64 {
	out := make([]int64, len(r.fakes))
	for i, f := range r.fakes {
		out[i] = f.flushes.Load()
	}
	return out
}

func equalCounts(a []int64, b ...int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFlushReachesDirtyPaths: a flush reaches every path that carried
// writes since the last flush, and only those.
func TestFlushReachesDirtyPaths(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 4, testConfig(PSPRR, map[string]string{"iops": "1"}))
	// Three writes: p1, p2, p3 carry one each; p4 carries a read.
	r.write(t, 0)
	r.write(t, 4096)
	r.write(t, 8192)
	r.read(t, 0)
	if err := r.d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := flushCounts(r); !equalCounts(got, 1, 1, 1, 0) {
		t.Fatalf("flushes per path %v, want [1 1 1 0]", got)
	}
	// Nothing written since: a flush has nothing to do.
	if err := r.d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := flushCounts(r); !equalCounts(got, 1, 1, 1, 0) {
		t.Fatalf("an idle flush reached paths: %v", got)
	}
	// Reads do not dirty a path; writes on p4 and p1 do.
	r.read(t, 0)
	r.read(t, 0)
	r.read(t, 0)
	r.write(t, 0) // p4
	r.write(t, 0) // p1
	if err := r.d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := flushCounts(r); !equalCounts(got, 2, 1, 1, 1) {
		t.Fatalf("flushes per path %v, want [2 1 1 1]", got)
	}
	for _, p := range r.d.Paths() {
		if p.Dirty() {
			t.Errorf("%s still dirty after a flush", p.Name)
		}
	}
}

// TestFlushCoversDeadDirtyPath: a dirty path that died is covered by a
// flush on a usable path; a dirty path whose flush fails over is covered
// the same way; a device error on a flush is returned and the path stays
// dirty.
func TestFlushCoversDeadDirtyPath(t *testing.T) {
	ctx := context.Background()
	t.Run("died before the flush", func(t *testing.T) {
		r := newRig(t, 3, testConfig(PSPFixed, nil))
		r.write(t, 0) // p1
		r.fake("p1").failClass(ioerr.ClassPathFailure)
		if err := r.d.FailPath("p1", "test: hot removed"); err != nil {
			t.Fatal(err)
		}
		if err := r.d.Flush(ctx); err != nil {
			t.Fatalf("flush with a dead dirty path: %v", err)
		}
		if got := flushCounts(r); !equalCounts(got, 0, 1, 0) {
			t.Fatalf("flushes per path %v, want the orphan covered on p2: [0 1 0]", got)
		}
	})
	t.Run("dies during the flush", func(t *testing.T) {
		r := newRig(t, 3, testConfig(PSPRR, map[string]string{"iops": "1"}))
		r.write(t, 0) // p1
		r.write(t, 0) // p2
		r.fake("p1").failClass(ioerr.ClassPathFailure, "flush")
		if err := r.d.Flush(ctx); err != nil {
			t.Fatalf("flush with a failing dirty path: %v", err)
		}
		if r.state("p1") != mpath.StateDead {
			t.Errorf("p1 is %s after its flush failed", r.state("p1"))
		}
		got := flushCounts(r)
		if got[0] != 0 || got[1] < 1 {
			t.Fatalf("flushes per path %v: p2's own flush, which may also cover p1 (they share a cache)", got)
		}
	})
	t.Run("device error", func(t *testing.T) {
		r := newRig(t, 2, testConfig(PSPFixed, nil))
		r.write(t, 0)
		r.fake("p1").failClass(ioerr.ClassDeviceError, "flush")
		err := r.d.Flush(ctx)
		if !errors.Is(err, ioerr.ErrDeviceError) {
			t.Fatalf("flush device error: %v", err)
		}
		if !r.path("p1").Dirty() {
			t.Errorf("p1 forgot its unflushed writes")
		}
		r.fake("p1").recover()
		if err := r.d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := flushCounts(r); !equalCounts(got, 1, 0) {
			t.Fatalf("flushes per path %v after the retry", got)
		}
	})
}

// TestCapabilities: discard and write-zeroes are offered only when every
// path can; a path added live that cannot turns them off.
func TestCapabilities(t *testing.T) {
	ctx := context.Background()
	newDev := func(t *testing.T, fakes ...*fakePath) *Device {
		var paths []*mpath.Path
		for _, f := range fakes {
			paths = append(paths, &mpath.Path{Name: f.name, Backend: f})
		}
		d, err := NewDevice(testConfig("", nil), paths, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	s := backendtest.NewMem(1 << 16)
	s.Update(func(d []byte) { copy(d, strings.Repeat("x", 1<<16)) })

	d := newDev(t, newFakePath("p1", s), newFakePath("p2", s))
	if err := d.Discard(ctx, 0, 4096); err != nil {
		t.Fatalf("discard with every path able: %v", err)
	}
	if err := d.WriteZeroes(ctx, 8192, 4096); err != nil {
		t.Fatalf("write-zeroes with every path able: %v", err)
	}
	if d := s.Snapshot(); d[0] != 0 || d[8192] != 0 || d[4096] != 'x' || d[12288] != 'x' {
		t.Fatalf("discard/write-zeroes did not zero their ranges only")
	}
	if err := d.Discard(ctx, 1<<16-4096, 8192); !errors.Is(err, ioerr.ErrDeviceError) {
		t.Fatalf("discard past the end: %v", err)
	}

	p3 := newFakePath("p3", s)
	p3.noDiscard = true
	if err := d.AddPath(&mpath.Path{Name: "p3", Backend: p3}); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(ctx, 0, 4096); !errors.Is(err, backends.ErrNotSupported) || !errors.Is(err, ioerr.ErrDeviceError) {
		t.Fatalf("discard with p3 unable: %v, want ErrNotSupported", err)
	}
	if err := d.WriteZeroes(ctx, 0, 4096); err != nil {
		t.Fatalf("write-zeroes, which p3 can: %v", err)
	}
	if err := d.RemovePath("p3"); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(ctx, 0, 4096); err != nil {
		t.Fatalf("discard after the unable path left: %v", err)
	}

	nz := newFakePath("p2", s)
	nz.noZero = true
	d2 := newDev(t, newFakePath("p1", s), nz)
	if err := d2.WriteZeroes(ctx, 0, 4096); !errors.Is(err, backends.ErrNotSupported) {
		t.Fatalf("write-zeroes with p2 unable: %v", err)
	}
	if err := d2.Discard(ctx, 0, 4096); err != nil {
		t.Fatalf("discard, which both can: %v", err)
	}
}

// TestIdentityChecks: a device refuses paths that lead to another store (a
// different size or WWID), at creation and when added live, naming the
// path.
func TestIdentityChecks(t *testing.T) {
	s := backendtest.NewMem(1 << 16)
	other := backendtest.NewMem(1 << 17)
	path := func(name string, st *backendtest.Mem, wwid string) *mpath.Path {
		return &mpath.Path{Name: name, URI: "fake://" + name, Backend: newFakePath(name, st), Inquiry: backends.Inquiry{WWID: wwid}}
	}
	tests := []struct {
		name  string
		cfg   mpath.Identity
		paths []*mpath.Path
		want  []string
	}{
		{"size", mpath.Identity{}, []*mpath.Path{path("p1", s, ""), path("p2", other, "")},
			[]string{"path p2", "fake://p2", "size 131072", "has 65536", "different stores"}},
		{"wwid", mpath.Identity{}, []*mpath.Path{path("p1", s, "naa.1"), path("p2", s, "naa.1"), path("p3", s, "naa.2")},
			[]string{"path p3", "WWID naa.2", "device is naa.1"}},
		{"configured wwid", mpath.Identity{WWID: "naa.9"}, []*mpath.Path{path("p1", s, "naa.1")},
			[]string{"path p1", "WWID naa.1", "device is naa.9"}},
		{"duplicate name", mpath.Identity{}, []*mpath.Path{path("p1", s, ""), path("p1", s, "")},
			[]string{"two paths named p1"}},
		{"no paths", mpath.Identity{}, nil, []string{"dev0 has no paths"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig("", nil)
			cfg.Identity = tc.cfg
			d, err := NewDevice(cfg, tc.paths, nil)
			if err == nil {
				d.Close()
				t.Fatal("NewDevice accepted the paths")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	t.Run("AddPath", func(t *testing.T) {
		d, err := NewDevice(testConfig("", nil), []*mpath.Path{path("p1", s, "naa.1")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if id := d.Identity(); id.WWID != "naa.1" {
			t.Fatalf("device identity %+v, want the path's WWID", id)
		}
		for _, tc := range []struct {
			p    *mpath.Path
			want []string
		}{
			{path("p2", other, "naa.1"), []string{"path p2", "size 131072"}},
			{path("p3", s, "naa.7"), []string{"path p3", "WWID naa.7", "device is naa.1"}},
			{path("p1", s, "naa.1"), []string{"two paths named p1"}},
		} {
			err := d.AddPath(tc.p)
			if err == nil {
				t.Fatalf("AddPath accepted %s", tc.p.Name)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("AddPath error %q does not say %q", err, w)
				}
			}
		}
		if n := len(d.Paths()); n != 1 {
			t.Fatalf("refused paths joined: %d paths", n)
		}
		if err := d.AddPath(path("p4", s, "")); err != nil {
			t.Fatalf("AddPath of a matching path: %v", err)
		}
		if err := d.AddPath(path("p5", s, "naa.1")); err != nil {
			t.Fatalf("AddPath of a matching path: %v", err)
		}
		if got := d.Paths(); len(got) != 3 || got[2].State() != mpath.StateActive {
			t.Fatalf("paths after AddPath: %d", len(got))
		}
	})
}

// TestReadWriteBounds pins the edges: reads crossing the end return what
// is there and io.EOF; writes crossing it are refused as device errors.
func TestReadWriteBounds(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 2, testConfig("", nil))
	buf := make([]byte, 8192)
	n, err := r.d.ReadAt(ctx, buf, rigSize-4096)
	if n != 4096 || err != io.EOF {
		t.Fatalf("read across the end: %d, %v", n, err)
	}
	if n, err := r.d.ReadAt(ctx, buf, rigSize); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v", n, err)
	}
	if _, err := r.d.ReadAt(ctx, buf, rigSize+1); !errors.Is(err, ioerr.ErrDeviceError) {
		t.Fatalf("read past the end: %v", err)
	}
	if _, err := r.d.WriteAt(ctx, buf, rigSize-4096); !errors.Is(err, ioerr.ErrDeviceError) {
		t.Fatalf("write across the end: %v", err)
	}
	if _, err := r.d.WriteAt(ctx, buf, -1); !errors.Is(err, ioerr.ErrDeviceError) {
		t.Fatalf("write at -1: %v", err)
	}
	if n := r.fake("p1").reads.Load() + r.fake("p1").writes.Load(); n != 1 {
		t.Fatalf("%d operations reached p1, want only the partial read", n)
	}
}
