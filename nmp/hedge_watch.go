package nmp

import (
	"sync"
	"sync/atomic"
	"time"
)

// The hedging watchdog: one goroutine per device with hedging on. Reads in
// flight are listed in a few sharded lists. The watchdog sleeps until the
// earliest due time among the listed reads (at least hedgeTick from now),
// then sends a hedge for each read past its due time and sleeps again;
// with no read listed it sleeps until one is. A read listed with a due
// time more than hedgeTick before the watchdog's wake-up (a path whose
// threshold is shorter than the others') wakes it early. So a healthy
// device whose reads finish well within their thresholds wakes the
// watchdog about once per threshold, not once per millisecond: in an
// emulated guest, where every timer wake-up is an emulated interrupt and
// a context switch, the 1-ms tick this replaces cost more than its reads.
const (
	hedgeTick   = time.Millisecond
	watchShards = 8
)

type watchShard struct {
	mu   sync.Mutex
	head *hedgeRun
	_    [48]byte // one cache line each
}

type hedgeWatch struct {
	shards [watchShards]watchShard
	next   atomic.Uint32
	// wakeAt is when the watchdog wakes next (Unix ns); 0 while it sweeps
	// or sleeps with no read listed: every read listed then pokes it.
	wakeAt atomic.Int64
	// sweeps counts the watchdog's wake-ups (tests).
	sweeps atomic.Uint64
	wake   chan struct{}
	stop   chan struct{} // closed when hedging is turned off
}

func (w *hedgeWatch) init() {
	w.wake = make(chan struct{}, 1)
	w.stop = make(chan struct{})
}

// add lists a run (armed) for the watchdog.
func (w *hedgeWatch) add(r *hedgeRun) {
	s := &w.shards[w.next.Add(1)%watchShards]
	r.shard = s
	s.mu.Lock()
	r.prev, r.next = nil, s.head
	if s.head != nil {
		s.head.prev = r
	}
	s.head = r
	s.mu.Unlock()
	// The watchdog stores wakeAt after its sweep: a read it missed sees
	// either 0 (and pokes) or a wake-up that comes in time for it.
	if at := w.wakeAt.Load(); at == 0 || r.due.UnixNano() < at-int64(hedgeTick) {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// unlinkLocked takes r off its shard's list.
func (s *watchShard) unlinkLocked(r *hedgeRun) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		s.head = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	}
	r.prev, r.next = nil, nil
}

// finish is the caller's end of a run whose primary returned: true if no
// hedge was sent (the run is unlisted and the caller's to pool), false if
// the watchdog sent one (it unlisted the run).
func (w *hedgeWatch) finish(r *hedgeRun) bool {
	s := r.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if !r.state.CompareAndSwap(runArmed, runDone) {
		return false
	}
	s.unlinkLocked(r)
	return true
}

// sweep sends the hedges that are due and returns the earliest due time
// of the reads still listed (zero if none).
func (w *hedgeWatch) sweep(now time.Time) (next time.Time) {
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		for r := s.head; r != nil; {
			nr := r.next
			if now.Before(r.due) {
				if next.IsZero() || r.due.Before(next) {
					next = r.due
				}
			} else {
				r.done = make(chan struct{})
				if r.state.CompareAndSwap(runArmed, runHedged) {
					s.unlinkLocked(r)
					go r.fire()
				}
			}
			r = nr
		}
		s.mu.Unlock()
	}
	return next
}

// hedgeWatchdog is the watchdog of hedger h, until the device closes or
// hedging is turned off.
func (d *Device) hedgeWatchdog(h *hedger) {
	w := &h.watch
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		w.wakeAt.Store(0) // reads listed from here on poke
		w.sweeps.Add(1)
		now := time.Now()
		if next := w.sweep(now); !next.IsZero() {
			wait := max(next.Sub(now), hedgeTick)
			w.wakeAt.Store(now.Add(wait).UnixNano())
			t.Reset(wait)
		}
		select {
		case <-d.stopper.done():
			return
		case <-w.stop:
			return
		case <-t.C:
		case <-w.wake:
			t.Stop()
		}
	}
}
