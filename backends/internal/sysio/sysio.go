// Package sysio runs the system calls of file and block paths so that a
// caller can give up at its context's deadline while a call is hung in the
// kernel (an NFS server gone, a FUSE-mounted store whose server stopped, a
// dying disk). A pread or pwrite cannot be interrupted; what can be done is
// to stop waiting for it:
//
//   - each call runs in a pooled worker goroutine, and the caller waits for
//     it or for its context's deadline, whichever comes first;
//   - the call works on a private buffer (copied in for writes, copied out on
//     completion for reads), because a call the caller gave up on may still
//     read or fill its buffer, and the backend contract says the caller's
//     buffer is never touched after the call returned;
//   - a write-class call given up on returns a PendingError whose Settled
//     channel closes when the system call returns at last (the proof that it
//     cannot land any more); other calls return a HungError.
//
// A healthy call costs one hand-off to a worker and back, and a copy of its
// data; it allocates nothing (calls, workers and buffers are pooled, and one
// watchdog goroutine enforces every deadline).
package sysio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// IOFunc does one data transfer at an offset, as io.ReaderAt or io.WriterAt.
type IOFunc func(p []byte, off int64) (int, error)

// Runner runs the system calls of one path (one descriptor). Its methods
// are safe to call in parallel.
type Runner struct {
	name   string
	inline bool
	hung   atomic.Int64
}

// New returns a runner for the path name (used in messages). An inline
// runner runs every call in the caller's goroutine on the caller's buffer:
// no hand-off, no copy, and no escape from a hung call (for files in memory,
// whose system calls do not wait for a device).
func New(name string, inline bool) *Runner {
	return &Runner{name: name, inline: inline}
}

// Inline reports whether calls run in the caller's goroutine.
func (r *Runner) Inline() bool { return r.inline }

// Hung is the number of calls given up on at a deadline whose system call
// has not returned yet.
func (r *Runner) Hung() int64 { return r.hung.Load() }

// HungError is the error of a call the caller stopped waiting for while its
// system call was still running. It unwraps to the context's error
// (context.DeadlineExceeded at a deadline).
type HungError struct {
	Call  string // pread, pwrite, fdatasync, …
	Name  string // the file or device
	Cause error
}

func (e *HungError) Error() string {
	return fmt.Sprintf("%s %s: system call still running, given up on: %v", e.Call, e.Name, e.Cause)
}

func (e *HungError) Unwrap() error { return e.Cause }

// PendingError is the error of a write-class call (pwrite, punch hole, zero
// range, BLKDISCARD, BLKZEROOUT) the caller stopped waiting for: the call
// may still change the store until Settled is closed, which happens when its
// system call returns. It implements backends.Pending.
type PendingError struct {
	HungError
	done <-chan struct{}
}

// Settled is closed when the abandoned system call returned.
func (e *PendingError) Settled() <-chan struct{} { return e.done }

// WaitingFor says what will settle the operation.
func (e *PendingError) WaitingFor() string {
	return "the " + e.Call + " system call on " + e.Name + " to return"
}

// ReadAt runs fn(p, off) — a read — and returns when it completed or when
// ctx's deadline passed (or, for a context without a deadline, when ctx was
// cancelled). A read given up on returns 0 and a *HungError; reads are never
// ambiguous.
func (r *Runner) ReadAt(ctx context.Context, call string, fn IOFunc, p []byte, off int64) (int, error) {
	if r.inline || len(p) == 0 {
		return fn(p, off)
	}
	c := getCall()
	c.kind, c.io, c.off = kindRead, fn, off
	c.bufp = getBuf(len(p))
	c.buf = (*c.bufp)[:len(p)]
	if _, cause := r.wait(ctx, c); cause != nil {
		return 0, &HungError{Call: call, Name: r.name, Cause: cause}
	}
	n, err := c.n, c.err
	copy(p[:n], c.buf[:n])
	c.recycle()
	return n, err
}

// WriteAt runs fn(private copy of p, off) — a write — and returns when it
// completed or when ctx's deadline passed. A write given up on returns 0 and
// a *PendingError.
func (r *Runner) WriteAt(ctx context.Context, call string, fn IOFunc, p []byte, off int64) (int, error) {
	if r.inline || len(p) == 0 {
		return fn(p, off)
	}
	c := getCall()
	c.kind, c.io, c.off = kindWrite, fn, off
	c.bufp = getBuf(len(p))
	c.buf = (*c.bufp)[:len(p)]
	copy(c.buf, p)
	if settled, cause := r.wait(ctx, c); cause != nil {
		return 0, &PendingError{HungError: HungError{Call: call, Name: r.name, Cause: cause}, done: settled}
	}
	n, err := c.n, c.err
	c.recycle()
	return n, err
}

// Do runs fn, a call without a data buffer (fdatasync, fallocate, an ioctl,
// a probe), and returns when it completed or when ctx's deadline passed.
// write tells whether fn may change the store: a write given up on returns
// a *PendingError, anything else a *HungError.
func (r *Runner) Do(ctx context.Context, call string, write bool, fn func() error) error {
	if r.inline {
		return fn()
	}
	c := getCall()
	c.kind, c.fn = kindFunc, fn
	if write {
		c.kind = kindFuncWrite
	}
	if settled, cause := r.wait(ctx, c); cause != nil {
		h := HungError{Call: call, Name: r.name, Cause: cause}
		if write {
			return &PendingError{HungError: h, done: settled}
		}
		return &h
	}
	err := c.err
	c.recycle()
	return err
}

// Single keeps a kind of call (a probe) from piling up on a hung path:
// while one given up on is still in its system call, DoSingle fails at once
// instead of starting another. The zero value is ready.
type Single struct {
	mu    sync.Mutex
	stuck int
}

// ErrStillRunning is the cause of a DoSingle refused because the last call
// given up on has not returned; it wraps context.DeadlineExceeded.
var ErrStillRunning = fmt.Errorf("the previous call, given up on at its deadline, has not returned: %w", context.DeadlineExceeded)

// DoSingle is Do for a call that must not pile up (see Single); the call
// is not write-class.
func (r *Runner) DoSingle(ctx context.Context, s *Single, call string, fn func() error) error {
	s.mu.Lock()
	stuck := s.stuck > 0
	s.mu.Unlock()
	if stuck {
		return &HungError{Call: call, Name: r.name, Cause: ErrStillRunning}
	}
	var finished, counted bool // guarded by s.mu
	err := r.Do(ctx, call, false, func() error {
		err := fn()
		s.mu.Lock()
		finished = true
		if counted {
			s.stuck--
		}
		s.mu.Unlock()
		return err
	})
	var he *HungError
	if errors.As(err, &he) {
		s.mu.Lock()
		if !finished {
			counted = true
			s.stuck++
		}
		s.mu.Unlock()
	}
	return err
}

type kind uint8

const (
	kindRead kind = iota
	kindWrite
	kindFunc
	kindFuncWrite
)

const (
	running uint32 = iota
	completed
	abandoned
)

// call is one system call handed to a worker. Until the worker completed
// it, the worker owns buf. A call given up on is never recycled: the worker
// drops it when its system call returns.
type call struct {
	kind  kind
	io    IOFunc
	fn    func() error
	buf   []byte
	bufp  *[]byte
	off   int64
	n     int
	err   error
	state atomic.Uint32
	done  chan struct{} // capacity 1: completed or abandoned, whoever won
	r     *Runner

	// Set while the call waits for a deadline: its place in a watchdog
	// shard, and, once abandoned, why and (write-class) the channel the
	// worker closes when the system call returns.
	deadline   time.Time
	ctx        context.Context // ended early (cancelled): given up on too
	shard      *shard
	prev, next *call
	listed     bool
	cause      error
	settled    chan struct{}
}

var (
	callPool  = sync.Pool{New: newCall}
	callCount atomic.Uint32
)

func newCall() any {
	return &call{done: make(chan struct{}, 1), shard: &shards[callCount.Add(1)%uint32(len(shards))]}
}

func getCall() *call { return callPool.Get().(*call) }

// recycle returns a completed call (and its buffer) to the pools.
func (c *call) recycle() {
	if c.bufp != nil {
		putBuf(c.bufp)
	}
	c.io, c.fn, c.buf, c.bufp, c.err, c.r = nil, nil, nil, nil, nil, nil
	c.n, c.off = 0, 0
	c.state.Store(running)
	callPool.Put(c)
}

func (c *call) run() {
	switch c.kind {
	case kindRead, kindWrite:
		c.n, c.err = c.io(c.buf, c.off)
	default:
		c.err = c.fn()
	}
}

// finish is the worker's end of a call: signal the waiting caller, or, if
// the caller gave up, settle the call and free its buffer.
func (c *call) finish() {
	if c.state.CompareAndSwap(running, completed) {
		c.done <- struct{}{} // the caller owns c from here on
		return
	}
	if c.bufp != nil {
		putBuf(c.bufp)
	}
	c.r.hung.Add(-1)
	if c.settled != nil {
		close(c.settled)
	}
}

// abandon gives c up (the caller stops waiting); false if it completed
// first. The caller of abandon must be the only one trying.
func (c *call) abandon(cause error) bool {
	if c.kind == kindWrite || c.kind == kindFuncWrite {
		c.settled = make(chan struct{})
	}
	c.cause = cause
	c.r.hung.Add(1)
	if !c.state.CompareAndSwap(running, abandoned) {
		c.r.hung.Add(-1)
		c.settled, c.cause = nil, nil
		return false
	}
	return true
}

// wait hands c to a worker and waits for it to complete (nil) or for ctx to
// end; then it abandons c to the worker — nobody touches c afterwards but
// the worker — and returns why, with the channel the worker closes when the
// system call returns (for write-class calls).
func (r *Runner) wait(ctx context.Context, c *call) (<-chan struct{}, error) {
	c.r = r
	if dl, ok := ctx.Deadline(); ok {
		// The deadline, not ctx.Done(): a per-I/O context may make its Done
		// channel and timer on demand, which a healthy call must not pay
		// for. The watchdog enforces deadlines for every call at once.
		c.deadline = dl
		c.ctx = ctx
		c.shard.add(c)
		start(c)
		<-c.done
		if c.state.Load() == abandoned { // by the watchdog, which unlisted c
			return c.settled, c.cause
		}
		c.shard.remove(c)
		c.ctx = nil
		return nil, nil
	}
	start(c)
	if dc := ctx.Done(); dc != nil {
		select {
		case <-c.done:
			return nil, nil
		case <-dc:
		}
		if c.abandon(ctx.Err()) {
			return c.settled, c.cause
		}
	}
	<-c.done
	return nil, nil
}

// The watchdog gives up on calls whose deadline passed or whose context
// was cancelled before it. It looks every watchdogTick while calls wait,
// and sleeps when none has for a while.
const (
	watchdogTick = 10 * time.Millisecond
	watchdogIdle = 10 // ticks without a waiting call before it sleeps
	shardCount   = 16
)

type shard struct {
	mu   sync.Mutex
	head *call
	_    [40]byte // keep shards on separate cache lines
}

var (
	shards   [shardCount]shard
	wdOnce   sync.Once
	wdAsleep atomic.Bool
	wdWake   = make(chan struct{}, 1)
)

func (s *shard) add(c *call) {
	s.mu.Lock()
	c.prev, c.next = nil, s.head
	if s.head != nil {
		s.head.prev = c
	}
	s.head = c
	c.listed = true
	s.mu.Unlock()
	wdOnce.Do(func() { go watchdog() })
	if wdAsleep.Load() && wdAsleep.CompareAndSwap(true, false) {
		wdWake <- struct{}{}
	}
}

func (s *shard) remove(c *call) {
	s.mu.Lock()
	s.unlinkLocked(c)
	s.mu.Unlock()
}

func (s *shard) unlinkLocked(c *call) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

// sweep abandons the calls past their deadline or whose context ended
// early, and reports whether any call is waiting.
func sweep(now time.Time) bool {
	waiting := false
	for i := range shards {
		s := &shards[i]
		s.mu.Lock()
		for c := s.head; c != nil; {
			next := c.next
			waiting = true
			var cause error
			if !now.Before(c.deadline) {
				cause = context.DeadlineExceeded
			} else if c.ctx != nil {
				// Cancelled before its deadline (a hedged read whose other
				// leg answered first): given up on within a tick too.
				cause = c.ctx.Err()
			}
			if cause != nil && c.abandon(cause) {
				c.ctx = nil
				s.unlinkLocked(c)
				c.done <- struct{}{} // the caller wakes and returns c.cause
			}
			c = next
		}
		s.mu.Unlock()
	}
	return waiting
}

func watchdog() {
	t := time.NewTicker(watchdogTick)
	defer t.Stop()
	idleTicks := 0
	for now := range t.C {
		if sweep(now) {
			idleTicks = 0
			continue
		}
		if idleTicks++; idleTicks < watchdogIdle {
			continue
		}
		// Sleep until a call registers. A call registering while the flag
		// is set wakes us; one that registered before is seen by sweep.
		t.Stop()
		wdAsleep.Store(true)
		if sweep(time.Now()) && wdAsleep.CompareAndSwap(true, false) {
			// A call is waiting and nobody will wake us: keep ticking.
		} else {
			<-wdWake
		}
		idleTicks = 0
		t.Reset(watchdogTick)
	}
}

// Workers: an idle worker waits on work; a call finding none starts a new
// one. At most maxIdle workers stay idle; a worker stuck in a hung system
// call is not idle, so hung calls never starve healthy ones.
const maxIdle = 256

var (
	work = make(chan *call)
	idle atomic.Int32
)

func start(c *call) {
	select {
	case work <- c:
	default:
		go worker(c)
	}
}

func worker(c *call) {
	for {
		c.run()
		c.finish()
		if idle.Add(1) > maxIdle {
			idle.Add(-1)
			return
		}
		c = <-work
		idle.Add(-1)
	}
}

// Private buffers: pooled by power-of-two size class from 4 KiB to 64 MiB,
// aligned to 4 KiB so O_DIRECT accepts them.
const (
	Align    = 4096
	minShift = 12
	maxShift = 26
)

var bufPools [maxShift - minShift + 1]sync.Pool

func class(n int) int {
	s := minShift
	for 1<<s < n {
		s++
	}
	return s - minShift
}

func getBuf(n int) *[]byte {
	if n > 1<<maxShift {
		return alignedBuffer(n)
	}
	k := class(n)
	if b, ok := bufPools[k].Get().(*[]byte); ok {
		return b
	}
	return alignedBuffer(1 << (k + minShift))
}

func putBuf(b *[]byte) {
	n := cap(*b)
	if n > 1<<maxShift || n&(n-1) != 0 {
		return
	}
	bufPools[class(n)].Put(b)
}

// alignedBuffer returns n bytes at an address that is a multiple of Align.
func alignedBuffer(n int) *[]byte {
	raw := make([]byte, n+Align)
	skip := 0
	if r := int(uintptr(addr(raw)) & (Align - 1)); r != 0 {
		skip = Align - r
	}
	b := raw[skip : skip+n : skip+n]
	return &b
}

func addr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// CloseWait bounds how long CloseWithin waits for close(2), which on a
// FUSE or network file system, or a device that no longer answers, may ask
// the server or write back and hang.
const CloseWait = 2 * time.Second

// CloseWithin closes c, waiting at most d; a close still running then is
// left to finish in the background and reported as an error naming what.
func CloseWithin(c io.Closer, what string, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%s: close(2) still running after %v: left to finish in the background", what, d)
	}
}
