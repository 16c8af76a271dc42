package nmp

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// The per-path read latency histogram the hedging threshold is taken from:
// log-linear buckets (four per power of two) from 1 µs to about a minute,
// counted with atomic adds. Every hedgeRecompute reads on a path, the read
// that crosses the mark (and only it: a CAS) computes the p99, stores the
// threshold, and halves every bucket, so the histogram weighs the last few
// hundred reads most: "recent" p99 without a clock or a lock on the read
// path.
const (
	latMinShift    = 10 // the first octave starts at 2^10 ns ≈ 1 µs
	latSubBits     = 2  // 4 buckets per octave
	latBuckets     = 27 << latSubBits
	hedgeRecompute = 256
	// hedgeMinSamples is how many reads a path must have completed before
	// its p99 is trusted; until then its threshold is the ceiling.
	hedgeMinSamples = 64
)

// pathLat is one path's latency histogram, threshold and hedge counters.
type pathLat struct {
	buckets [latBuckets]atomic.Uint64
	count   atomic.Uint64
	busy    atomic.Bool
	// thresh is the current hedging threshold in ns (0: not enough samples
	// yet, the ceiling applies); p99 the last p99 computed.
	thresh, p99 atomic.Int64

	// hedged counts reads on this path that outlived the threshold and were
	// issued again elsewhere; lost, those whose hedge answered first; won,
	// hedges this path carried that answered first.
	hedged, lost, won atomic.Uint64
	// streak counts reads lost in a row; a good read ends it.
	streak atomic.Uint32

	// slow state (hedge_slow.go): slow is read without the lock (by the
	// owner as it publishes a view, under the device lock), the rest under
	// mu. mu is never held while the device lock is taken.
	slow      atomic.Bool
	mu        sync.Mutex
	winStart  time.Time
	winReads0 uint64 // count when the window began
	winLosses uint64
	slowUntil time.Time
	slowSince time.Time
	level     int
	timer     *time.Timer
	// errs are the recent retryable errors of the path (marginal.go).
	errs []time.Time
}

// latBucket is the bucket of a latency in ns.
func latBucket(ns uint64) int {
	if ns < 1<<latMinShift {
		return 0
	}
	b := bits.Len64(ns) // ns is in [2^(b-1), 2^b)
	sub := int(ns>>(b-1-latSubBits)) & (1<<latSubBits - 1)
	i := (b-1-latMinShift)<<latSubBits + sub
	if i >= latBuckets {
		return latBuckets - 1
	}
	return i
}

// latUpper is the upper bound, in ns, of bucket i.
func latUpper(i int) int64 {
	oct := i>>latSubBits + latMinShift
	sub := int64(i&(1<<latSubBits-1)) + 1
	return (1<<oct + sub<<(oct-latSubBits))
}

// record adds a completed read's latency.
func (l *pathLat) record(h *hedgeConfig, lat time.Duration) {
	ns := uint64(max(lat, 0))
	l.buckets[latBucket(ns)].Add(1)
	if l.streak.Load() != 0 {
		l.streak.Store(0)
	}
	if l.count.Add(1)%hedgeRecompute == 0 {
		l.recompute(h)
	}
}

// recompute takes the p99 from the histogram, sets the threshold from it and
// decays the histogram. One caller at a time; others skip.
func (l *pathLat) recompute(h *hedgeConfig) {
	if !l.busy.CompareAndSwap(false, true) {
		return
	}
	defer l.busy.Store(false)
	var counts [latBuckets]uint64
	var total uint64
	for i := range l.buckets {
		counts[i] = l.buckets[i].Load()
		total += counts[i]
	}
	if total < hedgeMinSamples {
		return
	}
	want := total - total/100 // the 99th percentile
	var acc uint64
	p99 := latUpper(latBuckets - 1)
	for i, c := range counts {
		acc += c
		if acc >= want {
			p99 = latUpper(i)
			break
		}
	}
	l.p99.Store(p99)
	l.thresh.Store(int64(h.clamp(time.Duration(float64(p99) * h.multiplier))))
	for i := range l.buckets {
		if c := counts[i] / 2; c > 0 {
			l.buckets[i].Add(^(c - 1)) // subtract c; adds since the load stay
		}
	}
}

// threshold is how long a read on the path may be outstanding before it is
// hedged.
func (l *pathLat) threshold(h *hedgeConfig) time.Duration {
	if t := l.thresh.Load(); t > 0 {
		return time.Duration(t)
	}
	return h.ceiling
}

// latTable maps paths to their histograms. It is copied on write (a path
// seen the first time) and read with one atomic load.
type latTable struct {
	mu sync.Mutex
	m  atomic.Pointer[map[*mpath.Path]*pathLat]
}

func (t *latTable) get(p *mpath.Path) *pathLat {
	if m := t.m.Load(); m != nil {
		if l := (*m)[p]; l != nil {
			return l
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.m.Load()
	if old != nil {
		if l := (*old)[p]; l != nil {
			return l
		}
	}
	nm := make(map[*mpath.Path]*pathLat, 4)
	if old != nil {
		for k, v := range *old {
			nm[k] = v
		}
	}
	l := &pathLat{}
	nm[p] = l
	t.m.Store(&nm)
	return l
}

// peek returns the path's histogram if it has one.
func (t *latTable) peek(p *mpath.Path) *pathLat {
	if m := t.m.Load(); m != nil {
		return (*m)[p]
	}
	return nil
}

// all returns every histogram.
func (t *latTable) all() map[*mpath.Path]*pathLat {
	if m := t.m.Load(); m != nil {
		return *m
	}
	return nil
}
