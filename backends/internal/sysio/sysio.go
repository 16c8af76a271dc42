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
// data; it allocates nothing (calls, timers, workers and buffers are pooled).
package sysio

import (
	"context"
	"fmt"
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
// it, the worker owns buf; once abandoned, the worker owns the whole call
// and recycles it when the system call returns.
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
	done  chan struct{} // capacity 1: the worker's completion signal
	timer *time.Timer
	r     *Runner
	// settled is made by the caller before it abandons a write-class call
	// and closed by the worker when the system call returns.
	settled chan struct{}
}

var callPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &call{done: make(chan struct{}, 1), timer: t}
}}

func getCall() *call { return callPool.Get().(*call) }

// recycle returns a completed call (and its buffer) to the pools.
func (c *call) recycle() {
	if c.bufp != nil {
		putBuf(c.bufp)
	}
	c.io, c.fn, c.buf, c.bufp, c.err, c.r, c.settled = nil, nil, nil, nil, nil, nil, nil
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
// the caller gave up, settle and recycle the call.
func (c *call) finish() {
	if c.state.CompareAndSwap(running, completed) {
		c.done <- struct{}{} // the caller owns c from here on
		return
	}
	c.r.hung.Add(-1)
	if c.settled != nil {
		close(c.settled)
	}
	c.recycle()
}

// wait hands c to a worker and waits for it to complete (nil) or for ctx to
// end; then it abandons c to the worker — the caller must not touch c any
// more — and returns why, with the channel the worker closes when the system
// call returns (for write-class calls).
func (r *Runner) wait(ctx context.Context, c *call) (<-chan struct{}, error) {
	c.r = r
	start(c)
	var cause error
	if dl, ok := ctx.Deadline(); ok {
		// The deadline, not ctx.Done(): a per-I/O context may make its Done
		// channel and timer on demand, which a healthy call must not pay
		// for. The call's own pooled timer is cheaper.
		c.timer.Reset(time.Until(dl))
		select {
		case <-c.done:
			c.timer.Stop()
			return nil, nil
		case <-c.timer.C:
			cause = context.DeadlineExceeded
		}
	} else if dc := ctx.Done(); dc != nil {
		select {
		case <-c.done:
			return nil, nil
		case <-dc:
			cause = ctx.Err()
		}
	} else {
		<-c.done
		return nil, nil
	}
	var settled chan struct{}
	if c.kind == kindWrite || c.kind == kindFuncWrite {
		settled = make(chan struct{})
		c.settled = settled
	}
	r.hung.Add(1)
	if !c.state.CompareAndSwap(running, abandoned) {
		// The call completed as the deadline passed: take its result.
		r.hung.Add(-1)
		c.settled = nil
		<-c.done
		return nil, nil
	}
	return settled, cause
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
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & (Align - 1)); r != 0 {
		skip = Align - r
	}
	b := raw[skip : skip+n : skip+n]
	return &b
}
