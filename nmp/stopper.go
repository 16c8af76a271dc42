package nmp

import (
	"context"
	"sync"
	"time"
)

// stopper owns every goroutine of a device: the owner, the path checker's
// rounds, SATP activations, the watchers of ambiguous ranges, and the
// goroutines that run one backend call each (a probe, an identity check).
// Each is started through it, and Close stops them all through it: the
// stop channel closes and the context is cancelled, then stop waits.
//
// A goroutine inside a backend call is a special case: a system call that
// cannot be interrupted does not return when asked. Those are started with
// goCall, and Close waits for them only after it closed the backends (which
// ends most such calls) and only for a bounded time; a call stuck beyond
// that belongs to the kernel, not to the device.
type stopper struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	stopped bool
	work    sync.WaitGroup // service goroutines: stop waits for them
	calls   sync.WaitGroup // goroutines inside a backend call: waitCalls
}

func newStopper() *stopper {
	ctx, cancel := context.WithCancel(context.Background())
	return &stopper{ctx: ctx, cancel: cancel}
}

// done is closed when the device stops.
func (s *stopper) done() <-chan struct{} { return s.ctx.Done() }

// goWork runs f in a goroutine that stop waits for. It reports false, and
// does not run f, once the device is stopping.
func (s *stopper) goWork(f func()) bool { return s.start(&s.work, f) }

// goCall runs f, which makes one backend call, in a goroutine that Close
// waits for after closing the backends (waitCalls). It reports false, and
// does not run f, once the device is stopping.
func (s *stopper) goCall(f func()) bool { return s.start(&s.calls, f) }

func (s *stopper) start(wg *sync.WaitGroup, f func()) bool {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return false
	}
	wg.Add(1) // under mu: never concurrent with stop's Wait starting
	s.mu.Unlock()
	go func() {
		defer wg.Done()
		f()
	}()
	return true
}

// stop tells every goroutine to stop and waits for the service goroutines.
// It is idempotent.
func (s *stopper) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cancel()
	s.work.Wait()
}

// waitCalls waits up to bound for the goroutines inside a backend call and
// reports whether they all returned.
func (s *stopper) waitCalls(bound time.Duration) bool {
	done := make(chan struct{})
	go func() {
		s.calls.Wait()
		close(done)
	}()
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
