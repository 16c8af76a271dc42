package nmp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
)

// TestStress runs a device with four file paths over one store while eight
// workers write and read their own regions and a seeded injector fails,
// stalls, hangs and slows random paths (never all of them at once) and
// changes the policy. No I/O may fail, and afterwards every byte of the
// store, read through the device and straight from the file, must be what
// the workers' models say: no lost, stale or misdirected write.
func TestStress(t *testing.T) {
	const (
		npaths   = 4
		nworkers = 8
		region   = 1 << 20
		seed     = 20261122
	)
	dur := 3 * time.Second
	if testing.Short() {
		dur = time.Second
	}
	name := filepath.Join(t.TempDir(), "store")
	if err := os.WriteFile(name, make([]byte, nworkers*region), 0o600); err != nil {
		t.Fatal(err)
	}
	var fbs []*fault.Backend
	var paths []*mpath.Path
	for i := range npaths {
		f, err := backends.OpenFile(name, backends.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fb := fault.Wrap(f, seed+uint64(i))
		fbs = append(fbs, fb)
		paths = append(paths, &mpath.Path{Name: fmt.Sprintf("p%d", i+1), URI: "file://" + name, Transport: "file",
			Location: mpath.Location{Adapter: i + 1}, Backend: fb})
	}
	cfg := mpath.DeviceConfig{
		Name: "stress", PSP: PSPRR, PSPOptions: map[string]string{"iops": "3"},
		IOTimeout:     time.Second,
		CheckInterval: 20 * time.Millisecond,
		FlapThreshold: 1 << 20, // no damping: a cleared path must come back quickly
	}
	d, err := NewDevice(cfg, paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The models: worker g owns [g*region, (g+1)*region).
	model := make([]byte, nworkers*region)
	var ios, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range nworkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			base := int64(g) * region
			mine := model[base : base+region]
			buf := make([]byte, 64<<10)
			// Random data from a pool, each 4 KiB block stamped with the
			// worker and a sequence number, so no two writes look alike.
			pool := make([]byte, 128<<10)
			for i := 0; i < len(pool); i += 8 {
				binary.LittleEndian.PutUint64(pool[i:], rng.Uint64())
			}
			var seq uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := (1 + rng.IntN(16)) * 4096
				off := int64(rng.IntN((region-n)/4096+1)) * 4096
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				switch k := rng.IntN(100); {
				case k < 55:
					p := buf[:n]
					copy(p, pool[rng.IntN(len(pool)-n+1):])
					seq++
					for b := 0; b < n; b += 4096 {
						binary.LittleEndian.PutUint64(p[b:], uint64(g)<<56|seq)
					}
					if _, err := d.WriteAt(ctx, p, base+off); err != nil {
						t.Errorf("worker %d: write %d@%d: %v", g, n, base+off, err)
						failed.Add(1)
					} else {
						copy(mine[off:], p)
					}
				case k < 99:
					p := buf[:n]
					if _, err := d.ReadAt(ctx, p, base+off); err != nil {
						t.Errorf("worker %d: read %d@%d: %v", g, n, base+off, err)
						failed.Add(1)
					} else if i := firstDiff(p, mine[off:off+int64(n)]); i >= 0 {
						t.Errorf("worker %d: read %d@%d: byte %d is %#x, the model says %#x", g, n, base+off, base+off+int64(i), p[i], mine[off+int64(i)])
						failed.Add(1)
					}
				default:
					if err := d.Flush(ctx); err != nil {
						t.Errorf("worker %d: flush: %v", g, err)
						failed.Add(1)
					}
				}
				cancel()
				ios.Add(1)
				if failed.Load() > 5 {
					return
				}
			}
		}()
	}

	// The injector: seeded, never faults every path at once.
	specs := []fault.Spec{
		{Error: "path-failure", Probability: 0.05},
		{Error: "path-failure", Duration: 80 * time.Millisecond},
		{Error: "path-failure", Ops: []string{"read", "write"}, Probability: 0.2, Duration: 150 * time.Millisecond},
		{Error: "retryable", Probability: 0.1},
		{Error: "retryable", Sense: "02/04/0a", Count: 5},
		{Hang: true, Probability: 0.3, Duration: 60 * time.Millisecond},
		{Latency: time.Millisecond, Jitter: 3 * time.Millisecond},
	}
	policies := []struct {
		name string
		opts map[string]string
	}{
		{PSPRR, map[string]string{"iops": "1"}},
		{PSPFixed, nil},
		{PSPMRU, nil},
		{PSPQueueLength, nil},
		{PSPServiceTime, nil},
		{PSPRR, map[string]string{"type": "bytes", "bytes": "65536"}},
	}
	injected := map[string]int{}
	active := make([][]int, npaths)
	irng := rand.New(rand.NewPCG(seed, 99))
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) && failed.Load() == 0 {
		time.Sleep(time.Duration(5+irng.IntN(20)) * time.Millisecond)
		i := irng.IntN(npaths)
		switch k := irng.IntN(10); {
		case k < 4 && len(active[i]) > 0: // clear one fault
			j := irng.IntN(len(active[i]))
			_ = fbs[i].Clear(active[i][j]) // it may have expired already
			active[i] = append(active[i][:j], active[i][j+1:]...)
		case k < 8: // inject, unless i is the last fault-free path
			free := 0
			for j := range active {
				if j != i && len(active[j]) == 0 {
					free++
				}
			}
			if free == 0 {
				fbs[i].ClearAll()
				active[i] = nil
				continue
			}
			s := specs[irng.IntN(len(specs))]
			id, err := fbs[i].Inject(s)
			if err != nil {
				t.Fatalf("inject %v: %v", s, err)
			}
			active[i] = append(active[i], id)
			injected[s.String()]++
		case k < 9:
			p := policies[irng.IntN(len(policies))]
			if err := d.SetPolicy(p.name, p.opts); err != nil {
				t.Fatal(err)
			}
		default:
			fbs[i].ClearAll()
			active[i] = nil
		}
	}
	close(stop)
	wg.Wait()
	for _, fb := range fbs {
		fb.ClearAll()
	}
	t.Logf("%d I/Os in %v; faults injected: %v", ios.Load(), dur, injected)
	st := d.Status()
	var errs uint64
	for _, p := range st.Paths {
		t.Logf("%s: %s reads=%d writes=%d flushes=%d errors=%v", p.Name, p.State, p.Reads, p.Writes, p.Flushes, p.ErrorsBy)
		errs += p.Errors
		if p.Reads+p.Writes == 0 {
			t.Errorf("%s carried no I/O", p.Name)
		}
	}
	t.Logf("failovers=%d apd entries=%d", st.Failovers, st.APDEntries)
	if errs == 0 || st.Failovers == 0 {
		t.Errorf("the injector caused no path errors (%d) or failovers (%d): the test tests nothing", errs, st.Failovers)
	}
	if t.Failed() {
		return
	}

	// Every path comes back once the faults are gone.
	d.CheckNow()
	for _, p := range d.Paths() {
		if p.State() != mpath.StateActive {
			t.Errorf("%s is %s after every fault was cleared", p.Name, p.State())
		}
	}
	if err := d.Flush(context.Background()); err != nil {
		t.Fatalf("final flush: %v", err)
	}
	// Verify through the device, on every path in turn…
	if err := d.SetPolicy(PSPRR, map[string]string{"iops": "1"}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<10)
	for off := 0; off < len(model); off += len(got) {
		if _, err := d.ReadAt(context.Background(), got, int64(off)); err != nil {
			t.Fatalf("verify read at %d: %v", off, err)
		}
		if i := firstDiff(got, model[off:off+len(got)]); i >= 0 {
			t.Fatalf("through the device: byte %d is %#x, the model says %#x", off+i, got[i], model[off+i])
		}
	}
	// …and straight from the file.
	file, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(file, model); i >= 0 {
		t.Fatalf("in the file: byte %d (region %d) is %#x, the model says %#x", i, i/region, file[i], model[i])
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
