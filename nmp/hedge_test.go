package nmp

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/mpath"
)

// hedgeConfigFor is testConfig with hedged reads on.
func hedgeConfigFor(psp string, opts map[string]string) mpath.DeviceConfig {
	cfg := testConfig(psp, opts)
	cfg.HedgeReads = "on"
	return cfg
}

// fillStore writes a recognisable pattern into the rig's store.
func fillStore(r *rig) {
	r.store.Update(func(d []byte) {
		for i := range d {
			d[i] = byte(i*7 + i>>12)
		}
	})
}

func (r *rig) want(off int64, n int) []byte {
	return append([]byte(nil), r.store.Snapshot()[off:off+int64(n)]...)
}

func TestHedgeThreshold(t *testing.T) {
	h := &hedgeConfig{multiplier: 3, floor: 2 * time.Millisecond, ceiling: 200 * time.Millisecond}
	var l pathLat
	// Too few samples: the ceiling.
	for range hedgeMinSamples - 1 {
		l.record(h, 100*time.Microsecond)
	}
	assert.Equal(t, h.ceiling, l.threshold(h), "threshold before enough samples")

	// Fast reads: 3×p99 is below the floor.
	var fast pathLat
	for range 4 * hedgeRecompute {
		fast.record(h, 100*time.Microsecond)
	}
	assert.Equal(t, h.floor, fast.threshold(h), "threshold of a fast path")

	// 1 ms reads with 0.5% at 50 ms: the p99 is the top of the 1 ms
	// bucket (2^20 ns), the threshold 3× that.
	var mid pathLat
	for i := range 8 * hedgeRecompute {
		lat := time.Millisecond
		if i%200 == 0 {
			lat = 50 * time.Millisecond
		}
		mid.record(h, lat)
	}
	assert.Equal(t, time.Duration(1<<20), time.Duration(mid.p99.Load()))
	assert.Equal(t, time.Duration(3<<20), mid.threshold(h))

	// 2% at 100 ms: the p99 is theirs, 3× is above the ceiling.
	var slow pathLat
	for i := range 8 * hedgeRecompute {
		lat := time.Millisecond
		if i%50 == 0 {
			lat = 100 * time.Millisecond
		}
		slow.record(h, lat)
	}
	assert.Equal(t, h.ceiling, slow.threshold(h))

	// Recent reads weigh most: the same path turning fast again comes back
	// down within a few recomputations.
	for range 8 * hedgeRecompute {
		slow.record(h, 100*time.Microsecond)
	}
	assert.Equal(t, h.floor, slow.threshold(h), "threshold after the path turned fast")
}

func TestLatBuckets(t *testing.T) {
	for _, ns := range []uint64{0, 1, 1023, 1024, 1500, 4095, 4096, 1e6, 123456789, 1e12} {
		i := latBucket(ns)
		require.GreaterOrEqual(t, i, 0)
		require.Less(t, i, latBuckets)
		if i < latBuckets-1 {
			assert.Less(t, ns, uint64(latUpper(i)), "ns %d above its bucket %d's top", ns, i)
		}
		if i > 0 {
			assert.GreaterOrEqual(t, ns, uint64(latUpper(i-1)), "ns %d below its bucket %d's bottom", ns, i)
		}
	}
}

func TestHedgeConfig(t *testing.T) {
	cfg := mpath.DeviceConfig{IOTimeout: 5 * time.Second}
	hc, on, err := normaliseHedge(&cfg)
	require.NoError(t, err)
	assert.True(t, on, "hedging is on by default")
	assert.Equal(t, "on", cfg.HedgeReads)
	assert.Equal(t, DefaultHedgeCeiling, hc.ceiling)
	assert.Equal(t, DefaultHedgeFloor, hc.floor)

	// A short I/O timeout pulls the default ceiling (and floor) down.
	cfg = mpath.DeviceConfig{IOTimeout: 2 * time.Millisecond}
	hc, _, err = normaliseHedge(&cfg)
	require.NoError(t, err)
	assert.Equal(t, time.Millisecond, hc.ceiling)
	assert.Equal(t, time.Millisecond, hc.floor)

	for _, bad := range []mpath.DeviceConfig{
		{HedgeReads: "maybe", IOTimeout: time.Second},
		{HedgeMultiplier: 0.5, IOTimeout: time.Second},
		{HedgeFloor: 300 * time.Millisecond, HedgeCeiling: 100 * time.Millisecond, IOTimeout: time.Second},
		{HedgeCeiling: 2 * time.Second, IOTimeout: time.Second},
	} {
		_, _, err := normaliseHedge(&bad)
		assert.Error(t, err, "%+v", bad)
	}
	_, err = NewDevice(mpath.DeviceConfig{Name: "x", HedgeReads: "sometimes"}, []*mpath.Path{{Name: "p1", Backend: newFakePath("p1", backendtest.NewMem(4096))}}, nil)
	require.ErrorContains(t, err, "want on or off")
}

// TestHedgeFirstAnswerWins: a read on a hung path is sent again on another
// path once it outlived the threshold (the ceiling, on a path without
// samples); the hedge's answer is returned, the hung path is not failed,
// and its read is ended.
func TestHedgeFirstAnswerWins(t *testing.T) {
	for _, psp := range []string{PSPFixed, PSPMRU, PSPRR, PSPQueueLength, PSPServiceTime} {
		t.Run(psp, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, 3, hedgeConfigFor(psp, nil))
				fillStore(r)
				first := r.path("p1")
				r.fake("p1").hangOps("read")
				// Read until a read lands on p1 (the first one, but for the
				// load balancers, which start their scan anywhere).
				var took time.Duration
				for i := range 6 {
					buf := make([]byte, 4096)
					off := int64(i) * 4096
					start := time.Now()
					n, err := r.d.ReadAt(context.Background(), buf, off)
					require.NoError(t, err)
					assert.Equal(t, 4096, n)
					assert.Equal(t, r.want(off, 4096), buf)
					if took = time.Since(start); took > 0 {
						break
					}
				}
				assert.Equal(t, DefaultHedgeCeiling, took, "the hedge goes out at the threshold")
				synctest.Wait()
				assert.Zero(t, r.fake(first.Name).hung.Load(), "the losing read is ended")
				assert.Equal(t, mpath.StateActive, first.State(), "losing a race is no path failure")
				st := r.d.Status()
				assert.Equal(t, uint64(1), st.HedgedReads)
				assert.Equal(t, uint64(1), st.HedgeWins)
				for _, ps := range st.Paths {
					if ps.Name == first.Name {
						assert.Equal(t, uint64(1), ps.HedgeLost)
						assert.Zero(t, ps.Errors)
					}
				}
				if f, ok := r.d.PSP().(*fixed); ok {
					assert.Contains(t, f.Config(), "current="+first.Name, "the hedge does not move FIXED's current path")
				}
				if m, ok := r.d.PSP().(*mru); ok {
					assert.Contains(t, m.Config(), "current="+first.Name, "the hedge does not move MRU's current path")
				}
			})
		})
	}
}

// TestHedgePrimaryWins: a primary slower than the threshold but faster than
// its hedge wins; the hedge is ended and counts for nothing.
func TestHedgePrimaryWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 2, hedgeConfigFor(PSPFixed, nil))
		fillStore(r)
		r.fake("p1").slow(300 * time.Millisecond)
		r.fake("p2").slow(time.Second)
		buf := make([]byte, 4096)
		start := time.Now()
		_, err := r.d.ReadAt(context.Background(), buf, 4096)
		require.NoError(t, err)
		assert.Equal(t, 300*time.Millisecond, time.Since(start))
		assert.Equal(t, r.want(4096, 4096), buf)
		synctest.Wait()
		assert.Zero(t, r.fake("p2").reads.Load(), "the hedge was ended before it read")
		st := r.d.Status()
		assert.Equal(t, uint64(1), st.HedgedReads)
		assert.Zero(t, st.HedgeWins)
		assert.Zero(t, st.Paths[0].HedgeLost)
		assert.Zero(t, st.Paths[1].Errors, "an ended hedge is no path failure")
	})
}

// TestHedgeNoWrites: writes are never hedged: a write on a hung path waits
// for the I/O deadline, whatever the threshold.
func TestHedgeNoWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hedgeConfigFor(PSPFixed, nil)
		cfg.IOTimeout = time.Second
		r := newRig(t, 2, cfg)
		r.fake("p1").hangOps("write")
		start := time.Now()
		_, err := r.d.WriteAt(context.Background(), make([]byte, 4096), 0)
		require.NoError(t, err, "the write goes on on p2 after p1's deadline")
		assert.Equal(t, time.Second, time.Since(start), "the write waited for the I/O deadline")
		st := r.d.Status()
		assert.Zero(t, st.HedgedReads)
		assert.Equal(t, int64(0), r.fake("p2").reads.Load())
		assert.Equal(t, mpath.StateDead, r.state("p1"))
	})
}

// lateScribbler is a fake path whose reads, when hung and ended, scribble
// over the buffer they were given before returning: the latest a backend may
// touch a buffer. The caller's data must still be the winner's.
type lateScribbler struct {
	*fakePath
	scribbled atomic.Int64
}

func (s *lateScribbler) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := s.fakePath.ReadAt(ctx, p, off)
	if err != nil {
		time.Sleep(5 * time.Millisecond)
		for i := range p {
			p[i] = 0xEE
		}
		s.scribbled.Add(1)
		return len(p) / 2, err
	}
	return n, err
}

// slowScribbler answers after a delay and scribbles over its buffer after
// it answered (as a hedge that lost would if it were given the caller's
// buffer).
type slowScribbler struct {
	*fakePath
	delay time.Duration
	bufs  chan []byte
}

func (s *slowScribbler) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	time.Sleep(s.delay)
	n := copy(p, s.store.Snapshot()[off:])
	s.bufs <- p
	return n, nil
}

// TestHedgeBufferOwnership: neither leg's late writes reach the caller.
func TestHedgeBufferOwnership(t *testing.T) {
	t.Run("primary loses and scribbles", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := backendtest.NewMem(1 << 16)
			s.Update(func(d []byte) {
				for i := range d {
					d[i] = byte(i)
				}
			})
			a := &lateScribbler{fakePath: newFakePath("p1", s)}
			b := newFakePath("p2", s)
			cfg := hedgeConfigFor(PSPFixed, nil)
			d, err := NewDevice(cfg, []*mpath.Path{{Name: "p1", Backend: a}, {Name: "p2", Backend: b}}, nil)
			require.NoError(t, err)
			defer d.Close()
			a.hangOps("read")
			buf := make([]byte, 4096)
			n, err := d.ReadAt(context.Background(), buf, 4096)
			require.NoError(t, err)
			assert.Equal(t, 4096, n)
			assert.Equal(t, int64(1), a.scribbled.Load(), "the loser scribbled before it returned")
			assert.Equal(t, s.Snapshot()[4096:8192], buf, "the caller has the winner's bytes")
			time.Sleep(time.Second)
			assert.Equal(t, s.Snapshot()[4096:8192], buf, "and keeps them")
		})
	})
	t.Run("hedge loses and scribbles", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := backendtest.NewMem(1 << 16)
			s.Update(func(d []byte) {
				for i := range d {
					d[i] = byte(i)
				}
			})
			a := newFakePath("p1", s)
			b := &slowScribbler{fakePath: newFakePath("p2", s), delay: time.Second, bufs: make(chan []byte, 1)}
			d, err := NewDevice(hedgeConfigFor(PSPFixed, nil), []*mpath.Path{{Name: "p1", Backend: a}, {Name: "p2", Backend: b}}, nil)
			require.NoError(t, err)
			defer d.Close()
			a.slow(300 * time.Millisecond)
			buf := make([]byte, 4096)
			_, err = d.ReadAt(context.Background(), buf, 0)
			require.NoError(t, err)
			// The hedge answers long after the caller has its data, in a
			// buffer of its own.
			hb := <-b.bufs
			assert.NotSame(t, &buf[0], &hb[0], "the hedge read into the caller's buffer")
			for i := range hb {
				hb[i] = 0xEE
			}
			assert.Equal(t, s.Snapshot()[:4096], buf)
		})
	})
}

// TestHedgeSlowPathDemoted: a path whose reads keep losing is marked slow
// (event path-slow), put in the marginal group after the others, and comes
// back after the hold-down period (event path-slow-end).
func TestHedgeSlowPathDemoted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hedgeConfigFor(PSPFixed, nil)
		r := newRig(t, 2, cfg)
		fillStore(r)
		r.fake("p1").hangOps("read")
		buf := make([]byte, 4096)
		for i := range DefaultSlowLosses {
			_, err := r.d.ReadAt(context.Background(), buf, int64(i)*4096)
			require.NoError(t, err)
		}
		synctest.Wait()
		var kinds []string
		for _, ev := range r.drainEvents() {
			kinds = append(kinds, ev.Kind+" "+ev.Path)
		}
		assert.Contains(t, kinds, "path-slow p1")
		v := r.d.View()
		require.Len(t, v.Groups, 2)
		assert.Equal(t, []*mpath.Path{r.path("p2")}, v.Groups[0])
		assert.Equal(t, []*mpath.Path{r.path("p1")}, v.Groups[1], "p1 is marginal")
		assert.True(t, r.d.Status().Paths[0].Slow)
		// Reads now go to p2 at once: no wait for a threshold.
		start := time.Now()
		_, err := r.d.ReadAt(context.Background(), buf, 0)
		require.NoError(t, err)
		assert.Zero(t, time.Since(start))
		assert.Equal(t, mpath.StateActive, r.state("p1"))

		r.fake("p1").recover()
		time.Sleep(DefaultHoldDown)
		synctest.Wait()
		kinds = kinds[:0]
		for _, ev := range r.drainEvents() {
			kinds = append(kinds, ev.Kind+" "+ev.Path)
		}
		assert.Contains(t, kinds, "path-slow-end p1")
		assert.Len(t, r.d.View().Groups, 1)
		assert.False(t, r.d.Status().Paths[0].Slow)
	})
}

// TestHedgeCallerCancels: the caller giving up ends both legs; nobody is
// blamed and nothing is left running.
func TestHedgeCallerCancels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 2, hedgeConfigFor(PSPFixed, nil))
		r.fake("p1").hangOps("read")
		r.fake("p2").hangOps("read")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := r.d.ReadAt(ctx, make([]byte, 4096), 0)
		require.True(t, errors.Is(err, context.DeadlineExceeded), "got %v", err)
		synctest.Wait()
		assert.Zero(t, r.fake("p1").hung.Load()+r.fake("p2").hung.Load(), "a leg is still running")
		assert.Equal(t, "p1=active p2=active", r.states())
	})
}

// TestHedgeBothFail: when the primary and its hedge both fail, the read
// fails over the ordinary way (the primary's error is judged).
func TestHedgeBothFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hedgeConfigFor(PSPFixed, nil)
		cfg.IOTimeout = time.Second
		r := newRig(t, 3, cfg)
		fillStore(r)
		r.fake("p1").hangOps("read")
		r.fake("p2").hangOps("read")
		buf := make([]byte, 4096)
		_, err := r.d.ReadAt(context.Background(), buf, 0)
		require.NoError(t, err)
		assert.Equal(t, r.want(0, 4096), buf)
		assert.Equal(t, mpath.StateDead, r.state("p1"))
	})
}

// TestHedgeOff: with hedge_reads off a hung read waits for the deadline.
func TestHedgeOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(PSPFixed, nil)
		cfg.IOTimeout = time.Second
		r := newRig(t, 2, cfg)
		r.fake("p1").hangOps("read")
		start := time.Now()
		_, err := r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
		require.NoError(t, err)
		assert.Equal(t, time.Second, time.Since(start))
		assert.Zero(t, r.d.Status().HedgedReads)
		assert.Equal(t, "off", r.d.Status().Options.HedgeReads)
		r.d.SetHedge(true)
		assert.Equal(t, "on", r.d.Status().Options.HedgeReads)
	})
}

// apTestSATP is VMW_SATP_DEFAULT_AA marked ActivePassive, as the
// active/passive SATP is (package alua).
const satpTestAP = "TEST_SATP_AP"

type apTestSATP struct{ *defaultSATP }

func (apTestSATP) ActivePassive() {}

func init() {
	RegisterSATP(satpTestAP, "test: active/passive", PSPMRU, func(map[string]string) (SATP, error) {
		return apTestSATP{&defaultSATP{name: satpTestAP, retryBackoff: time.Millisecond}}, nil
	})
}

// TestHedgeNotOnActivePassive: on an active/passive LU a read that
// outlives the threshold is not hedged (the hedge's path could be the
// passive controller's, and the I/O a trespass): it waits for its own
// path. Once the SATP is replaced by one that is not active/passive, the
// same slow read is hedged at the threshold.
func TestHedgeNotOnActivePassive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hedgeConfigFor(PSPMRU, nil)
		cfg.SATP = satpTestAP
		cfg.IOTimeout = time.Second
		r := newRig(t, 2, cfg)
		slow := 300 * time.Millisecond // past the hedge's ceiling, within the I/O timeout
		r.fake("p1").setFault(&fakeFault{latency: slow, ops: opSet([]string{"read"}), times: 1})
		start := time.Now()
		_, err := r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
		require.NoError(t, err)
		assert.Equal(t, slow, time.Since(start), "the read waited for its own path")
		assert.Zero(t, r.d.Status().HedgedReads, "no hedge on an active/passive LU")
		assert.Equal(t, "on", r.d.Status().Options.HedgeReads)

		require.NoError(t, r.d.SetSATP(SATPDefaultAA, nil))
		r.fake("p1").setFault(&fakeFault{latency: slow, ops: opSet([]string{"read"}), times: 1})
		start = time.Now()
		_, err = r.d.ReadAt(context.Background(), make([]byte, 4096), 0)
		require.NoError(t, err)
		assert.Equal(t, DefaultHedgeCeiling, time.Since(start), "hedged at the threshold")
		assert.Equal(t, uint64(1), r.d.Status().HedgedReads)
	})
}

// TestHedgeWatchdogSleepsUntilDue: reads that finish well within their
// threshold do not wake the watchdog every hedgeTick: 400 reads of 1 ms
// each, one after another, with a 20-ms threshold, wake it about once
// per threshold (the old 1-ms tick woke it 400 times).
func TestHedgeWatchdogSleepsUntilDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hedgeConfigFor(PSPFixed, nil)
		cfg.HedgeFloor, cfg.HedgeCeiling = 20*time.Millisecond, 20*time.Millisecond
		r := newRig(t, 2, cfg)
		r.fake("p1").setFault(&fakeFault{latency: time.Millisecond, ops: opSet([]string{"read"})})
		w := &r.d.hedge.Load().watch
		before := w.sweeps.Load()
		buf := make([]byte, 4096)
		start := time.Now()
		for i := range 400 {
			_, err := r.d.ReadAt(context.Background(), buf, int64(i%64)*4096)
			require.NoError(t, err)
		}
		elapsed := time.Since(start)
		synctest.Wait()
		sweeps := w.sweeps.Load() - before
		t.Logf("%d reads in %v woke the watchdog %d times", 400, elapsed, sweeps)
		assert.Zero(t, r.d.Status().HedgedReads)
		assert.LessOrEqual(t, sweeps, uint64(2*elapsed/(20*time.Millisecond)+2), "about one wake-up per threshold")
	})
}

// TestHedgeWatchPoke: a read listed with a due time earlier than the
// watchdog's next wake-up (by more than a tick) wakes it; one due later
// does not, and neither does one within a tick of it.
func TestHedgeWatchPoke(t *testing.T) {
	var w hedgeWatch
	w.init()
	now := time.Now()
	w.wakeAt.Store(now.Add(50 * time.Millisecond).UnixNano())
	poked := func() bool {
		select {
		case <-w.wake:
			return true
		default:
			return false
		}
	}
	for _, tc := range []struct {
		due  time.Duration
		poke bool
	}{{60 * time.Millisecond, false}, {50*time.Millisecond - hedgeTick/2, false}, {2 * time.Millisecond, true}} {
		r := &hedgeRun{due: now.Add(tc.due)}
		w.add(r)
		assert.Equal(t, tc.poke, poked(), "a read due in %v", tc.due)
		w.finish(r)
	}
	w.wakeAt.Store(0) // sweeping or asleep: every read pokes
	r := &hedgeRun{due: now.Add(time.Hour)}
	w.add(r)
	assert.True(t, poked())
}

// TestHedgeHealthyReadAllocs: a healthy read with hedging on allocates
// nothing.
func TestHedgeHealthyReadAllocs(t *testing.T) {
	d := fileDevice(t)
	d.SetHedge(true)
	require.Equal(t, "on", d.Status().Options.HedgeReads)
	ctx := context.Background()
	buf := make([]byte, 4096)
	for range 10 { // warm the pools
		_, err := d.ReadAt(ctx, buf, 0)
		require.NoError(t, err)
	}
	n := testing.AllocsPerRun(500, func() {
		if _, err := d.ReadAt(ctx, buf, 0); err != nil {
			t.Fatal(err)
		}
	})
	if raceEnabled {
		t.Logf("%.1f allocations per healthy hedged read (not asserted under -race: sync.Pool drops objects at random)", n)
	} else {
		assert.Zero(t, n, "allocations per healthy hedged read")
	}
	assert.True(t, bytes.Equal(buf, make([]byte, 4096)))
}

// BenchmarkReadHealthyHedge compares a healthy 4 KiB read over two file
// paths with hedging on and off (the cost of the per-read timer and
// histogram).
func BenchmarkReadHealthyHedge(b *testing.B) {
	for _, mode := range []string{"on", "off"} {
		b.Run("hedge="+mode, func(b *testing.B) {
			d := fileDevice(b)
			d.SetHedge(mode == "on")
			ctx := context.Background()
			buf := make([]byte, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(len(buf)))
			for i := 0; b.Loop(); i++ {
				if _, err := d.ReadAt(ctx, buf, int64(i%256)*4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHedgeOccasionalLossIsNotSlow: a path that loses a race now and then
// among many good reads is not marked slow.
func TestHedgeOccasionalLossIsNotSlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 2, hedgeConfigFor(PSPFixed, nil))
		buf := make([]byte, 4096)
		for range 2 * DefaultSlowLosses {
			for i := range 20 {
				_, err := r.d.ReadAt(context.Background(), buf, int64(i)*4096)
				require.NoError(t, err)
			}
			r.fake("p1").setFault(&fakeFault{hang: true, ops: opSet([]string{"read"}), times: 1})
			_, err := r.d.ReadAt(context.Background(), buf, 0)
			require.NoError(t, err)
		}
		synctest.Wait()
		st := r.d.Status()
		assert.Equal(t, uint64(2*DefaultSlowLosses), st.Paths[0].HedgeLost)
		assert.False(t, st.Paths[0].Slow, "a path that lost %d of %d reads is marked slow", st.Paths[0].HedgeLost, st.Paths[0].Reads)
		assert.Len(t, r.d.View().Groups, 1)
	})
}

// TestHedgeLateGoodPrimaryIsNoError: a primary that succeeds just after its
// hedge won is neither judged nor counted as an error.
func TestHedgeLateGoodPrimaryIsNoError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := backendtest.NewMem(1 << 16)
		a := &ignoresCancel{fakePath: newFakePath("p1", s), delay: 300 * time.Millisecond}
		b := newFakePath("p2", s)
		d, err := NewDevice(hedgeConfigFor(PSPFixed, nil), []*mpath.Path{{Name: "p1", Backend: a}, {Name: "p2", Backend: b}}, nil)
		require.NoError(t, err)
		defer d.Close()
		buf := make([]byte, 4096)
		_, err = d.ReadAt(context.Background(), buf, 0)
		require.NoError(t, err)
		st := d.Status()
		assert.Equal(t, uint64(1), st.HedgeWins)
		assert.Zero(t, st.Paths[0].Errors, "the late but good primary was counted as an error")
		assert.Equal(t, "active", st.Paths[0].State)
	})
}

// ignoresCancel answers after delay whatever its context says.
type ignoresCancel struct {
	*fakePath
	delay time.Duration
}

func (s *ignoresCancel) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	time.Sleep(s.delay)
	return copy(p, s.store.Snapshot()[off:]), nil
}
