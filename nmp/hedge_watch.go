package nmp

import (
	"sync"
	"sync/atomic"
	"time"
)

// The hedging watchdog: one goroutine per device with hedging on. Reads in
// flight are listed in a few sharded lists; every hedgeTick the watchdog
// sends a hedge for each read past its due time. With no read listed for
// watchIdle ticks it stops its ticker and sleeps until a read is listed.
const (
	hedgeTick   = time.Millisecond
	watchIdle   = 20
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
	asleep atomic.Bool
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
	if w.asleep.Load() && w.asleep.CompareAndSwap(true, false) {
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

// sweep sends the hedges that are due and reports whether any read is
// listed.
func (w *hedgeWatch) sweep(now time.Time) bool {
	listed := false
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		for r := s.head; r != nil; {
			next := r.next
			listed = true
			if !now.Before(r.due) {
				r.done = make(chan struct{})
				if r.state.CompareAndSwap(runArmed, runHedged) {
					s.unlinkLocked(r)
					go r.fire()
				}
			}
			r = next
		}
		s.mu.Unlock()
	}
	return listed
}

// hedgeWatchdog is the watchdog of hedger h, until the device closes or
// hedging is turned off.
func (d *Device) hedgeWatchdog(h *hedger) {
	w := &h.watch
	t := time.NewTicker(hedgeTick)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-d.stopper.done():
			return
		case <-w.stop:
			return
		case now := <-t.C:
			if w.sweep(now) {
				idle = 0
				continue
			}
			if idle++; idle < watchIdle {
				continue
			}
			t.Stop()
			w.asleep.Store(true)
			// A read listed before asleep was set is seen here; one listed
			// after it sees asleep and wakes us.
			if w.sweep(time.Now()) {
				w.asleep.Store(false)
			} else {
				select {
				case <-w.wake:
				case <-d.stopper.done():
					return
				case <-w.stop:
					return
				}
			}
			idle = 0
			t.Reset(hedgeTick)
		}
	}
}
