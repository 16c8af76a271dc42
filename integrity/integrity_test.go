package integrity

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

const size = 8 << 20

// misdirect is a test-only faulty path: the write to offset `at` lands at
// at+4096 instead (and is acknowledged).
type misdirect struct {
	backends.Backend
	mu   sync.Mutex
	at   int64
	done bool
}

func (m *misdirect) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	hit := off == m.at && !m.done
	if hit {
		m.done = true
	}
	m.mu.Unlock()
	if hit {
		off += 4096
	}
	return m.Backend.WriteAt(ctx, p, off)
}

// stale is a test-only faulty path that serves reads of one block from a
// snapshot taken when it was armed (an old cache).
type stale struct {
	backends.Backend
	mu    sync.Mutex
	at    int64
	old   []byte
	armed bool
}

func (s *stale) arm(ctx context.Context, at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at, s.old, s.armed = at, make([]byte, 4096), true
	s.Backend.ReadAt(ctx, s.old, at)
}

func (s *stale) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := s.Backend.ReadAt(ctx, p, off)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed && off <= s.at && s.at+4096 <= off+int64(len(p)) {
		copy(p[s.at-off:], s.old)
	}
	return n, err
}

// device makes an nmp device over two file paths of one store, the first
// wrapped by wrap, with the Fixed PSP (the first path carries the I/O).
func device(t *testing.T, wrap func(backends.Backend) backends.Backend) (*nmp.Device, []*mpath.Path) {
	t.Helper()
	store := filepath.Join(t.TempDir(), "store.img")
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(store, size); err != nil {
		t.Fatal(err)
	}
	var paths []*mpath.Path
	for i := 0; i < 2; i++ {
		f, err := backends.OpenFile(store, backends.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var b backends.Backend = f
		if i == 0 && wrap != nil {
			b = wrap(f)
		}
		loc := mpath.Location{Adapter: i + 1}
		paths = append(paths, &mpath.Path{Name: loc.RuntimeName(), URI: "file://" + store, Location: loc, Transport: "file", Backend: b})
	}
	d, err := nmp.NewDevice(mpath.DeviceConfig{Name: "t", PSP: nmp.PSPFixed}, paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, paths
}

func fill(v byte) []byte { return bytes.Repeat([]byte{v}, 4096) }

func TestCleanRunReportsNothing(t *testing.T) {
	ctx := context.Background()
	d, _ := device(t, nil)
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 16384)
			for i := 0; i < 200; i++ {
				// Each worker owns its blocks: a read racing another
				// worker's write to the same block may see either version.
				off := int64(w*125+i%120) * 4096
				for j := range buf {
					buf[j] = byte(w + i + j/512)
				}
				if _, err := o.WriteAt(ctx, buf, off); err != nil {
					t.Error(err)
				}
				if _, err := o.ReadAt(ctx, buf, off); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	// A partial-block write and a discard are tracked (or dropped) right.
	if _, err := o.WriteAt(ctx, []byte("hello"), 4096*3+10); err != nil {
		t.Fatal(err)
	}
	if err := o.Discard(ctx, 4096*4, 8192); err != nil {
		t.Fatal(err)
	}
	rep, err := o.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Tracked == 0 || rep.ReadsVerified == 0 || len(rep.Readers) != 3 {
		t.Fatalf("clean run: %+v", rep)
	}
}

func TestMisdirectedWriteIsCaught(t *testing.T) {
	ctx := context.Background()
	const at = 40 * 4096
	d, _ := device(t, func(b backends.Backend) backends.Backend { return &misdirect{Backend: b, at: at} })
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	for i := int64(0); i < 100; i++ {
		if i*4096 == at || i*4096 == at+4096 {
			continue // the neighbour is never written: the oracle must search for it
		}
		if _, err := o.WriteAt(ctx, fill(byte(i)), i*4096); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.WriteAt(ctx, fill(0xab), at); err != nil {
		t.Fatal(err)
	}
	rep, err := o.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("the misdirected write went unnoticed")
	}
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		if p.Kind != KindMisdirected || p.Offset != at || p.FoundAt != at+4096 {
			t.Errorf("want misdirected at %d found at %d, got %s", at, at+4096, p)
		}
	}
}

func TestMisdirectedOverTrackedBlock(t *testing.T) {
	ctx := context.Background()
	const at = 10 * 4096
	m := &misdirect{at: -1}
	d, _ := device(t, func(b backends.Backend) backends.Backend { m.Backend = b; return m })
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	for i := int64(0); i < 20; i++ {
		o.WriteAt(ctx, fill(byte(i+1)), i*4096)
	}
	m.mu.Lock()
	m.at = at
	m.mu.Unlock()
	o.WriteAt(ctx, fill(0xcd), at)
	rep, _ := o.Check(ctx)
	found := false
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		if p.Kind == KindMisdirected && p.Offset == at && p.FoundAt == at+4096 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no misdirected problem at %d→%d: %+v", at, at+4096, rep.Problems)
	}
}

func TestStaleReadIsCaught(t *testing.T) {
	ctx := context.Background()
	const at = 7 * 4096
	s := &stale{}
	d, _ := device(t, func(b backends.Backend) backends.Backend { s.Backend = b; return s })
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	if _, err := o.WriteAt(ctx, fill(1), at); err != nil {
		t.Fatal(err)
	}
	s.arm(ctx, at) // the first path now serves version 1 forever
	if _, err := o.WriteAt(ctx, fill(2), at); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := o.ReadAt(ctx, buf, at); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 1 {
		t.Fatalf("the stale backend did not serve old data")
	}
	p := o.Problems()
	if len(p) != 1 || p[0].Kind != KindStale || p[0].Offset != at || p[0].Via != "read" {
		t.Fatalf("read: %+v", p)
	}
	rep, err := o.Check(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var vias []string
	for _, p := range rep.Problems {
		t.Logf("%s", p)
		if p.Kind != KindStale || p.Offset != at {
			t.Errorf("unexpected %s", p)
		}
		vias = append(vias, p.Via)
	}
	// The application read, the device read and the first path are
	// stale; the second path has the new data.
	if len(vias) != 3 || vias[1] != "device" || vias[2] != "vmhba1:C0:T0:L0" {
		t.Errorf("stale via %v", vias)
	}
}

func TestTornBlock(t *testing.T) {
	ctx := context.Background()
	d, paths := device(t, nil)
	o := New(d, Options{})
	o.WriteAt(ctx, fill(1), 0)
	o.WriteAt(ctx, fill(2), 0)
	// Half the block goes back to version 1 behind the oracle's back.
	paths[1].Backend.WriteAt(ctx, fill(1)[:2048], 0)
	rep, _ := o.Check(ctx)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != KindTorn {
		t.Fatalf("%+v", rep.Problems)
	}
}

// reorder is a test-only path on which two concurrent writes to one block
// land in the opposite order of their acknowledgements: the write of 2
// reaches the store first and is acknowledged last.
type reorder struct {
	backends.Backend
	at           int64
	twoOn, oneOn chan struct{}
}

func (r *reorder) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off != r.at {
		return r.Backend.WriteAt(ctx, p, off)
	}
	switch p[0] {
	case 1:
		<-r.twoOn // lands after 2
		n, err := r.Backend.WriteAt(ctx, p, off)
		close(r.oneOn)
		return n, err
	case 2:
		n, err := r.Backend.WriteAt(ctx, p, off)
		close(r.twoOn)
		<-r.oneOn // acknowledged after 1
		return n, err
	}
	return r.Backend.WriteAt(ctx, p, off)
}

// TestOverlappingWritesAreNotJudged: the order of two overlapping writes
// on the store is undefined, so the oracle must not call the block stale
// whichever of them a later read returns; the next lone write is tracked
// again.
func TestOverlappingWritesAreNotJudged(t *testing.T) {
	ctx := context.Background()
	const at = 3 * 4096
	r := &reorder{at: at, twoOn: make(chan struct{}), oneOn: make(chan struct{})}
	d, _ := device(t, func(b backends.Backend) backends.Backend { r.Backend = b; return r })
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	var wg sync.WaitGroup
	for _, v := range []byte{1, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := o.WriteAt(ctx, fill(v), at); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	buf := make([]byte, 4096)
	if _, err := o.ReadAt(ctx, buf, at); err != nil {
		t.Fatal(err)
	}
	if buf[0] != 1 {
		t.Fatalf("the store holds %d, want 1 (the write that landed last)", buf[0])
	}
	if p := o.Problems(); len(p) != 0 {
		t.Fatalf("overlapping writes judged: %+v", p)
	}
	// A lone write afterwards is tracked and verified again.
	if _, err := o.WriteAt(ctx, fill(3), at); err != nil {
		t.Fatal(err)
	}
	before := o.verified.Load()
	if _, err := o.ReadAt(ctx, buf, at); err != nil {
		t.Fatal(err)
	}
	if o.verified.Load() != before+1 || len(o.Problems()) != 0 {
		t.Fatalf("the block is not verified again after a lone write (verified %d -> %d, problems %v)", before, o.verified.Load(), o.Problems())
	}
}

// attention is a test-only path whose next read, once armed, fails with a
// unit attention (retryable), as a port does once after an ALUA change.
type attention struct {
	backends.Backend
	mu    sync.Mutex
	armed bool
}

func (a *attention) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	a.mu.Lock()
	fire := a.armed
	a.armed = false
	a.mu.Unlock()
	if fire {
		return 0, ioerr.NewError(ioerr.ClassRetryable, "read", errors.New("unit attention: asymmetric access state changed"))
	}
	return a.Backend.ReadAt(ctx, p, off)
}

// TestPathReaderRetriesUnitAttention: Check's direct read of a path that
// reports a unit attention once reads again instead of failing the block.
func TestPathReaderRetriesUnitAttention(t *testing.T) {
	ctx := context.Background()
	a := &attention{}
	d, _ := device(t, func(b backends.Backend) backends.Backend { a.Backend = b; return a })
	o := New(d, Options{Paths: PathReaders(d.Paths)})
	if _, err := o.WriteAt(ctx, fill(5), 0); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.armed = true
	a.mu.Unlock()
	buf := make([]byte, 4096)
	r := PathReaders(d.Paths)()[0]
	if _, err := r.ReadAt(ctx, buf, 0); err != nil || buf[0] != 5 {
		t.Fatalf("path read after one unit attention: %v (got %d)", err, buf[0])
	}
	rep, err := o.Check(ctx)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("Check: %v %v", err, rep.Problems)
	}
}
