package nmp

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/integrity"
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

// The stale-write hazard of multipath: a write times out on path A, is
// retried on path B and acknowledged, newer data is written to the same
// blocks, then A's abandoned attempt executes and rolls them back. The
// fault decorator's land-late effect (and the fakes' landLate) produce it;
// the tests below prove that no acknowledged write ever goes back in time,
// with proof of the late landing (a settled backends.Pending) and without
// (silent: the path's quiesce time resolves it).

// stressSeed is the seed of a land-late stress run: STRESS_SEED in the
// environment, else def.
func stressSeed(t *testing.T, def uint64) uint64 {
	if s := os.Getenv("STRESS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("STRESS_SEED=%q: want an unsigned integer", s)
		}
		return v
	}
	return def
}

// TestLandLateNoRollback is the hazard, step by step, on fake paths: the
// write of A times out on p1 and lands there 200 ms after it was issued,
// while the device retried it on p2 and acknowledged it, and then
// acknowledged B to the same block. The store must end with B.
func TestLandLateNoRollback(t *testing.T) {
	for _, c := range []struct {
		name  string
		proof bool
	}{{"Proof", true}, {"Silent", false}} {
		t.Run(c.name, func(t *testing.T) {
			const land = 200 * time.Millisecond
			cfg := testConfig(PSPFixed, nil)
			cfg.IOTimeout = 50 * time.Millisecond
			r := newRigSetup(t, 2, cfg, func(p *mpath.Path) {
				if !c.proof {
					p.Quiesce = land + 100*time.Millisecond
				}
			})
			p1 := r.fake("p1")
			p1.landLate(land, c.proof, "write")
			a, b := bytes.Repeat([]byte{0xaa}, 4096), bytes.Repeat([]byte{0xbb}, 4096)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := r.d.WriteAt(ctx, a, 0)
			require.NoError(t, err, "write of A")
			require.Equal(t, int64(1), p1.landing.Load()+p1.landed.Load(), "the write of A was not caught by p1's land-late fault")
			_, err = r.d.WriteAt(ctx, b, 0)
			require.NoError(t, err, "write of B")
			for p1.landing.Load() > 0 {
				time.Sleep(5 * time.Millisecond)
			}
			got := r.store.Snapshot()[:4096]
			if !bytes.Equal(got, b) {
				what := "neither A nor B"
				if bytes.Equal(got, a) {
					what = "A: rolled back by the late attempt on p1"
				}
				t.Fatalf("after the late landing the block holds %s; the last acknowledged write was B", what)
			}
		})
	}
}

// TestStressLandLate is TestStress's seeded mix of faults with land-late
// faults added, judged by the integrity oracle: four file paths over one
// store, four workers writing, zeroing, discarding and reading small
// regions of their own so that newer writes keep hitting the blocks a late
// attempt lands on. No I/O may fail, and the oracle must find nothing: no
// rolled-back, stale, lost, torn, misdirected or corrupt block.
func TestStressLandLate(t *testing.T) {
	t.Run("Proof", func(t *testing.T) { stressLandLate(t, false) })
	t.Run("Silent", func(t *testing.T) { stressLandLate(t, true) })
}

func stressLandLate(t *testing.T, silent bool) {
	const (
		npaths   = 4
		nworkers = 4
		region   = 64 * 4096
		ioTO     = 100 * time.Millisecond
		maxLand  = 400 * time.Millisecond
	)
	def := uint64(20261202)
	if silent {
		def++
	}
	seed := stressSeed(t, def)
	dur := 3 * time.Second
	if testing.Short() {
		dur = time.Second
	}
	name := filepath.Join(t.TempDir(), "store")
	require.NoError(t, os.WriteFile(name, make([]byte, nworkers*region), 0o600))
	var fbs []*fault.Backend
	var paths []*mpath.Path
	for i := range npaths {
		f, err := backends.OpenFile(name, backends.FileOptions{})
		require.NoError(t, err)
		fb := fault.Wrap(f, seed+uint64(i))
		fbs = append(fbs, fb)
		p := &mpath.Path{Name: fmt.Sprintf("p%d", i+1), URI: "file://" + name, Transport: "file",
			Location: mpath.Location{Adapter: i + 1}, Backend: fb}
		if silent {
			p.Quiesce = maxLand + 100*time.Millisecond
		}
		paths = append(paths, p)
	}
	cfg := mpath.DeviceConfig{
		Name: "landlate", PSP: PSPRR, PSPOptions: map[string]string{"iops": "1"},
		IOTimeout:     ioTO,
		CheckInterval: 20 * time.Millisecond,
		FlapThreshold: 1 << 20,
	}
	d, err := NewDevice(cfg, paths, nil)
	require.NoError(t, err)
	defer d.Close()
	o := integrity.New(d, integrity.Options{Paths: integrity.PathReaders(d.Paths)})

	var ios, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range nworkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			base := int64(g) * region
			buf := make([]byte, 8*4096)
			var seq uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var err error
				what := ""
				switch k := rng.IntN(100); {
				case k < 50:
					n := (1 + rng.IntN(4)) * 4096
					off := base + int64(rng.IntN((region-n)/4096+1))*4096
					p := buf[:n]
					seq++
					for b := 0; b < n; b += 8 {
						binary.LittleEndian.PutUint64(p[b:], uint64(g)<<56|seq<<16|uint64(b))
					}
					what = fmt.Sprintf("write %d@%d", n, off)
					_, err = o.WriteAt(ctx, p, off)
				case k < 53:
					n := int64(1+rng.IntN(2)) * 4096
					off := base + int64(rng.IntN(region/4096-1))*4096
					what = fmt.Sprintf("write-zeroes %d@%d", n, off)
					err = o.WriteZeroes(ctx, off, n)
				case k < 55:
					n := int64(1+rng.IntN(2)) * 4096
					off := base + int64(rng.IntN(region/4096-1))*4096
					what = fmt.Sprintf("discard %d@%d", n, off)
					err = o.Discard(ctx, off, n)
				case k < 99:
					n := (1 + rng.IntN(8)) * 4096
					off := base + int64(rng.IntN((region-n)/4096+1))*4096
					what = fmt.Sprintf("read %d@%d", n, off)
					_, err = o.ReadAt(ctx, buf[:n], off)
				default:
					what = "flush"
					err = o.Flush(ctx)
				}
				cancel()
				ios.Add(1)
				if err != nil {
					t.Errorf("seed %d: worker %d: %s: %v", seed, g, what, err)
					if failed.Add(1) > 5 {
						return
					}
				}
			}
		}()
	}

	// The injector: land-late faults mixed with TestStress's kinds; it
	// never faults every path at once.
	specs := []fault.Spec{
		{LandLate: 150 * time.Millisecond, Silent: silent, Ops: []string{"write", "discard"}, Probability: 0.5, Duration: 200 * time.Millisecond},
		{LandLate: 250 * time.Millisecond, Silent: silent, Ops: []string{"write", "discard"}, Probability: 0.3, Duration: 300 * time.Millisecond},
		{LandLate: maxLand, Silent: silent, Ops: []string{"write"}, Count: 3},
		{LandLate: 200 * time.Millisecond, Silent: silent, Ops: []string{"write"}, Every: 4, Duration: 250 * time.Millisecond},
		{Error: "path-failure", Probability: 0.05},
		{Error: "retryable", Probability: 0.1},
		{Hang: true, Probability: 0.3, Duration: 60 * time.Millisecond},
		{Latency: time.Millisecond, Jitter: 3 * time.Millisecond},
	}
	injected := map[string]int{}
	caught := map[[2]int]uint64{} // (path, fault ID) → operations a land-late fault caught
	active := make([][]int, npaths)
	irng := rand.New(rand.NewPCG(seed, 99))
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) && failed.Load() == 0 {
		time.Sleep(time.Duration(10+irng.IntN(30)) * time.Millisecond)
		for i, fb := range fbs {
			for _, a := range fb.List() {
				if a.Spec.LandLate > 0 {
					caught[[2]int{i, a.ID}] = a.Injected
				}
			}
		}
		i := irng.IntN(npaths)
		switch k := irng.IntN(10); {
		case k < 3 && len(active[i]) > 0:
			j := irng.IntN(len(active[i]))
			_ = fbs[i].Clear(active[i][j]) // it may have expired already
			active[i] = append(active[i][:j], active[i][j+1:]...)
		case k < 9:
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
			require.NoError(t, err, "inject %v", s)
			active[i] = append(active[i], id)
			injected[s.String()]++
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
	// Every late attempt lands (or is dropped) before the verdict.
	landBy := time.Now().Add(30 * time.Second)
	for {
		var n int64
		for _, fb := range fbs {
			n += fb.Landing()
		}
		if n == 0 {
			break
		}
		if time.Now().After(landBy) {
			t.Fatalf("seed %d: %d late operations never landed", seed, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var late uint64
	for _, n := range caught {
		late += n
	}
	t.Logf("seed %d: %d I/Os in %v, at least %d caught by land-late faults; faults injected: %v", seed, ios.Load(), dur, late, injected)
	if late == 0 {
		t.Errorf("seed %d: no operation was caught by a land-late fault: the test tests nothing", seed)
	}
	if t.Failed() {
		return
	}
	d.CheckNow()
	require.NoError(t, o.Flush(context.Background()), "final flush")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := o.Check(ctx)
	require.NoError(t, err, "oracle check")
	t.Logf("oracle: %d blocks tracked, %d read blocks verified, readers %v", rep.Tracked, rep.ReadsVerified, rep.Readers)
	if rep.Tracked == 0 || rep.ReadsVerified == 0 {
		t.Errorf("seed %d: the oracle tracked %d blocks and verified %d: the test tests nothing", seed, rep.Tracked, rep.ReadsVerified)
	}
	if !rep.OK() {
		// Up to 8 findings of each kind, in offset order.
		kinds := map[string]int{}
		var b strings.Builder
		shown := 0
		for _, p := range rep.Problems {
			kinds[p.Kind]++
			if kinds[p.Kind] <= 8 {
				fmt.Fprintf(&b, "  %s\n", p)
				shown++
			}
		}
		if len(rep.Problems) > shown {
			fmt.Fprintf(&b, "  … and %d more\n", len(rep.Problems)-shown)
		}
		t.Fatalf("seed %d (STRESS_SEED=%d reruns it): the oracle found %d wrong blocks %v — acknowledged writes went back in time:\n%s",
			seed, seed, len(rep.Problems), kinds, b.String())
	}
}
