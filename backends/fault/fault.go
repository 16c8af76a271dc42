package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

// Backend is the fault-injection decorator: a backends.Backend that passes
// every operation to the backend it wraps, except where an active fault
// says otherwise. Inject, Clear and ClearAll may be called from any
// goroutine while I/O runs.
type Backend struct {
	inner backends.Backend
	seed  uint64

	// active is the immutable list of active faults in ID order, replaced
	// whole (copy on write) under mu; nil when there is none.
	active atomic.Pointer[[]*fault]
	// abort is closed by Abort, which puts a fresh one in its place.
	abort atomic.Pointer[abortGen]
	// closing is closed by Close: callers of late-landing operations stop
	// waiting.
	closing chan struct{}
	// landing counts the late-landing operations not yet executed.
	landing atomic.Int64
	// delayed counts the operations waiting out a delay now; lateWaiting
	// the callers of late-landing operations waiting (AbortTasks' count).
	delayed, lateWaiting atomic.Int64

	mu struct {
		sync.Mutex
		nextID int
		closed bool
	}
}

var (
	_ backends.Backend    = (*Backend)(nil)
	_ backends.Discarder  = (*Backend)(nil)
	_ backends.ZeroWriter = (*Backend)(nil)
	_ backends.Prober     = (*Backend)(nil)
	_ backends.Inquirer   = (*Backend)(nil)
	_ backends.Aborter    = (*Backend)(nil)
	_ backends.Capable    = (*Backend)(nil)
	_ backends.Unwrapper  = (*Backend)(nil)
)

// ErrInjected matches every injected error with errors.Is.
var ErrInjected = errors.New("injected fault")

// InjectedError is the error under an injected *ioerr.Error.
type InjectedError struct {
	ID int // the fault's ID
}

func (e *InjectedError) Error() string { return fmt.Sprintf("injected fault #%d", e.ID) }

// Is makes every InjectedError match ErrInjected.
func (e *InjectedError) Is(target error) bool { return target == ErrInjected }

// ErrAborted is what a held or delayed operation fails with (wrapped in a
// path failure) when Abort is called with a nil reason.
var ErrAborted = errors.New("aborted")

type abortGen struct {
	ch     chan struct{}
	reason error // set before ch is closed
	// task is set (before ch is closed) by AbortTasks: the operations it
	// ends fail with this error (the op's name filled in), not with a path
	// failure, and late-landing operations are not woken.
	task *ioerr.Error
}

// Wrap returns a fault-injection decorator over b with no active fault.
// Faults whose spec has no seed draw their randomness from a generator
// seeded with seed and the fault's ID, so a run is reproducible.
func Wrap(b backends.Backend, seed uint64) *Backend {
	f := &Backend{inner: b, seed: seed, closing: make(chan struct{})}
	f.abort.Store(&abortGen{ch: make(chan struct{})})
	return f
}

// Active is an active fault as List reports it.
type Active struct {
	ID   int  `json:"id"`
	Spec Spec `json:"spec"`
	// Seed is the seed the fault's generator actually uses.
	Seed uint64 `json:"seed"`
	// Matched counts the operations that passed the fault's filters,
	// Injected those it fired on.
	Matched  uint64 `json:"matched"`
	Injected uint64 `json:"injected"`
	// Held is how many operations a hang or land-late fault holds right
	// now.
	Held int64 `json:"held,omitempty"`
	// Landing is how many operations a land-late fault has yet to land.
	Landing int64 `json:"landing,omitempty"`
	// Exhausted: a hang or land-late fault whose Count is used up catches
	// no new operation but holds those it caught until it is cleared or
	// expires.
	Exhausted bool      `json:"exhausted,omitempty"`
	Added     time.Time `json:"added"`
	Expires   time.Time `json:"expires,omitzero"`
}

// fault is one active fault. Its spec and compiled form never change.
type fault struct {
	id      int
	spec    Spec
	c       compiled
	seed    uint64
	added   time.Time
	expires time.Time // zero: never
	injErr  *InjectedError

	released chan struct{} // closed when the fault is cleared or expires
	retired  atomic.Bool
	held     atomic.Int64
	landing  atomic.Int64
	timer    *time.Timer

	mu struct {
		sync.Mutex
		rng      *rand.Rand
		matched  uint64
		injected uint64
		next     time.Time // bandwidth: when the bucket is free again
	}
}

// Inject validates spec and makes it active. It returns the fault's ID, unique
// for this Backend and increasing from 1.
func (b *Backend) Inject(spec Spec) (int, error) {
	c, err := spec.compile()
	if err != nil {
		return 0, err
	}
	spec.Ops = slices.Clone(spec.Ops)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mu.closed {
		return 0, errors.New("fault: backend closed")
	}
	b.mu.nextID++
	f := &fault{
		id:       b.mu.nextID,
		spec:     spec,
		c:        c,
		added:    time.Now(),
		released: make(chan struct{}),
	}
	f.injErr = &InjectedError{ID: f.id}
	if spec.Seed != 0 {
		f.seed = spec.Seed
	} else {
		f.seed = mix(b.seed, uint64(f.id))
	}
	f.mu.rng = rand.New(rand.NewPCG(f.seed, 0x6d70617468667321))
	if spec.Duration > 0 {
		f.expires = f.added.Add(spec.Duration)
		f.timer = time.AfterFunc(spec.Duration, func() { b.retire(f) })
	}
	list := b.list()
	next := make([]*fault, len(list), len(list)+1)
	copy(next, list)
	next = append(next, f)
	b.active.Store(&next)
	return f.id, nil
}

// mix derives a fault's seed from the decorator's seed and the fault's ID
// (splitmix64).
func mix(seed, id uint64) uint64 {
	z := seed + id*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func (b *Backend) list() []*fault {
	if p := b.active.Load(); p != nil {
		return *p
	}
	return nil
}

// removeLocked takes f out of the active list and releases what it holds.
func (b *Backend) removeLocked(f *fault) bool {
	if f.retired.Swap(true) {
		return false
	}
	if f.timer != nil {
		f.timer.Stop()
	}
	list := b.list()
	next := make([]*fault, 0, len(list))
	for _, g := range list {
		if g != f {
			next = append(next, g)
		}
	}
	if len(next) == 0 {
		b.active.Store(nil)
	} else {
		b.active.Store(&next)
	}
	// Released operations wake only after the fault left the list, so
	// whoever they wake sees it gone.
	close(f.released)
	return true
}

func (b *Backend) retire(f *fault) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removeLocked(f)
}

// Clear removes the fault with the given ID. Operations it holds proceed to
// the backend underneath.
func (b *Backend) Clear(id int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.list() {
		if f.id == id {
			b.removeLocked(f)
			return nil
		}
	}
	return fmt.Errorf("fault: no active fault #%d", id)
}

// ClearAll removes every fault. Operations they hold proceed.
func (b *Backend) ClearAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.list() {
		b.removeLocked(f)
	}
}

// List reports the active faults in ID order.
func (b *Backend) List() []Active {
	list := b.list()
	out := make([]Active, 0, len(list))
	for _, f := range list {
		a := Active{
			ID:      f.id,
			Spec:    f.spec,
			Seed:    f.seed,
			Held:    f.held.Load(),
			Landing: f.landing.Load(),
			Added:   f.added,
			Expires: f.expires,
		}
		a.Spec.Ops = slices.Clone(f.spec.Ops)
		f.mu.Lock()
		a.Matched, a.Injected = f.mu.matched, f.mu.injected
		f.mu.Unlock()
		a.Exhausted = f.spec.Count > 0 && a.Injected >= uint64(f.spec.Count)
		out = append(out, a)
	}
	return out
}

// Unwrap returns the backend underneath.
func (b *Backend) Unwrap() backends.Backend { return b.inner }

// Can asks the backend underneath, except that probe and abort are always
// offered: with no Prober underneath a probe is a no-op that succeeds
// (injected probe faults still apply), and Abort always releases the
// operations the decorator holds or delays.
func (b *Backend) Can(c backends.Capability) bool {
	switch c {
	case backends.CapProbe, backends.CapAbort:
		return true
	}
	return backends.Can(b.inner, c)
}

// op describes one operation for the evaluation of faults.
type op struct {
	name   string
	mask   opMask
	off    int64
	length int64 // the range it touches (0 for flush and probe)
	xfer   int64 // the bytes it transfers (reads and writes only)
	own    bool  // set by run: the error is the decorator's, not the backend's
	// corr is the corruption the first corrupting fault that fired chose
	// (set by run, read by exec).
	corr *corruption
	// late, for write-class operations, prepares the operation for a late
	// execution: it copies what it needs of the caller's arguments and
	// returns the execution, which runs under a background context.
	late func() func() error
}

// Landing reports how many late-landing operations (--land-late) have not
// executed yet, over every fault, cleared ones included.
func (b *Backend) Landing() int64 { return b.landing.Load() }

func (b *Backend) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	list := b.active.Load()
	if list == nil {
		return b.inner.ReadAt(ctx, p, off)
	}
	var n int
	o := op{name: "read", mask: maskRead, off: off, length: int64(len(p)), xfer: int64(len(p))}
	err := b.run(ctx, *list, &o, func() (err error) {
		n, err = b.inner.ReadAt(ctx, p, off)
		if o.corr != nil {
			o.corr.flip(p[:n])
		}
		return err
	})
	if o.own {
		n = 0 // the decorator's error: whatever ran underneath counts for nothing
	}
	return n, err
}

func (b *Backend) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	list := b.active.Load()
	if list == nil {
		return b.inner.WriteAt(ctx, p, off)
	}
	var n int
	o := op{name: "write", mask: maskWrite, off: off, length: int64(len(p)), xfer: int64(len(p))}
	o.late = func() func() error {
		q := bytes.Clone(p)
		return func() error {
			_, err := b.inner.WriteAt(context.Background(), q, off)
			return err
		}
	}
	err := b.run(ctx, *list, &o, func() (err error) {
		if o.corr != nil {
			n, err = b.corruptWrite(ctx, o.corr, p, off)
			return err
		}
		n, err = b.inner.WriteAt(ctx, p, off)
		return err
	})
	if o.own {
		n = 0 // the decorator's error: the write may have landed, its ack is lost
	}
	return n, err
}

func (b *Backend) Flush(ctx context.Context) error {
	list := b.active.Load()
	if list == nil {
		return b.inner.Flush(ctx)
	}
	return b.run(ctx, *list, &op{name: "flush", mask: maskFlush}, func() error { return b.inner.Flush(ctx) })
}

func notSupported(op string) error {
	return ioerr.NewError(ioerr.ClassDeviceError, op, backends.ErrNotSupported)
}

// Discard forwards to the backend underneath, or fails with a device error
// wrapping backends.ErrNotSupported if it cannot discard.
func (b *Backend) Discard(ctx context.Context, off, length int64) error {
	d, ok := b.inner.(backends.Discarder)
	if !ok || !backends.Can(b.inner, backends.CapDiscard) {
		return notSupported("discard")
	}
	list := b.active.Load()
	if list == nil {
		return d.Discard(ctx, off, length)
	}
	o := op{name: "discard", mask: maskDiscard, off: off, length: length}
	o.late = func() func() error { return func() error { return d.Discard(context.Background(), off, length) } }
	return b.run(ctx, *list, &o, func() error { return d.Discard(ctx, off, length) })
}

// WriteZeroes forwards to the backend underneath, or fails with a device
// error wrapping backends.ErrNotSupported. Faults for "discard" apply.
func (b *Backend) WriteZeroes(ctx context.Context, off, length int64) error {
	z, ok := b.inner.(backends.ZeroWriter)
	if !ok || !backends.Can(b.inner, backends.CapWriteZeroes) {
		return notSupported("write-zeroes")
	}
	list := b.active.Load()
	if list == nil {
		return z.WriteZeroes(ctx, off, length)
	}
	o := op{name: "write-zeroes", mask: maskDiscard, off: off, length: length}
	o.late = func() func() error { return func() error { return z.WriteZeroes(context.Background(), off, length) } }
	return b.run(ctx, *list, &o, func() error { return z.WriteZeroes(ctx, off, length) })
}

// Probe forwards to the backend underneath; with no Prober there it
// succeeds without doing anything. Probe faults apply either way.
func (b *Backend) Probe(ctx context.Context) error {
	do := func() error { return nil }
	if p, ok := b.inner.(backends.Prober); ok && backends.Can(b.inner, backends.CapProbe) {
		do = func() error { return p.Probe(ctx) }
	}
	list := b.active.Load()
	if list == nil {
		return do()
	}
	return b.run(ctx, *list, &op{name: "probe", mask: maskProbe}, do)
}

// Inquiry forwards to the backend underneath; no fault applies to it.
func (b *Backend) Inquiry(ctx context.Context) (backends.Inquiry, error) {
	q, ok := b.inner.(backends.Inquirer)
	if !ok || !backends.Can(b.inner, backends.CapInquiry) {
		return backends.Inquiry{}, notSupported("inquiry")
	}
	return q.Inquiry(ctx)
}

// Abort fails every operation the decorator holds (hang) or delays
// (latency, bandwidth, slow) with a path failure wrapping reason, then
// aborts the backend underneath if it can.
func (b *Backend) Abort(reason error) {
	if reason == nil {
		reason = ErrAborted
	}
	old := b.abort.Swap(&abortGen{ch: make(chan struct{})})
	old.reason = reason
	close(old.ch)
	if a, ok := b.inner.(backends.Aborter); ok && backends.Can(b.inner, backends.CapAbort) {
		a.Abort(reason)
	}
}

// AbortTasks ends every operation the decorator holds (hang) or delays
// (latency, bandwidth, slow) with err, its Op set to the operation's name:
// what a LOGICAL UNIT RESET, a target or bus reset or a cleared task set
// does to the tasks in a task set. Unlike Abort it leaves the backend
// underneath alone (the transport survives a reset) and does not wake
// late-landing operations (their server does not answer whatever
// happens). An operation already handed to the backend underneath
// completes as it would have: the reset came after it. Ended operations
// never reach the backend underneath, so they cannot land later. It
// returns how many operations it ended.
func (b *Backend) AbortTasks(err *ioerr.Error) int {
	if err == nil {
		err = ioerr.NewError(ioerr.ClassRetryable, "", ErrAborted)
	}
	var held int64
	for _, f := range b.list() {
		held += f.held.Load()
	}
	n := b.delayed.Load() + held - b.landingHeld()
	old := b.abort.Swap(&abortGen{ch: make(chan struct{})})
	old.task = err
	old.reason = err
	close(old.ch)
	return int(max(n, 0))
}

// landingHeld counts the callers of late-landing operations waiting now
// (counted in their fault's held, but not ended by AbortTasks).
func (b *Backend) landingHeld() int64 { return b.lateWaiting.Load() }

// taskError is the error of an operation named op that AbortTasks ended.
func taskError(gen *abortGen, op string) error {
	e := *gen.task
	e.Op = op
	return dropped(&e)
}

func (b *Backend) Size() int64 { return b.inner.Size() }

// Close clears every fault (held operations proceed and meet the closed
// backend; callers of late-landing operations stop waiting, while the
// operations still land on time and meet the closed backend), refuses new
// ones and closes the backend underneath.
func (b *Backend) Close() error {
	b.mu.Lock()
	if !b.mu.closed {
		close(b.closing)
	}
	b.mu.closed = true
	for _, f := range b.list() {
		b.removeLocked(f)
	}
	b.mu.Unlock()
	return b.inner.Close()
}

// effect is what one fault does to one operation.
type effect struct {
	delay time.Duration
	slow  float64 // extra factor of the natural duration
	hang  bool
	// landLate: land the (write-class) operation this long after it was
	// issued; silent: with no proof.
	landLate time.Duration
	silent   bool
	err      error
	late     bool
	expire   bool // the fault used up its Count
	corr     *corruption
}

// evaluate decides whether f fires on o and what it does.
func (f *fault) evaluate(o *op, now time.Time) (effect, bool) {
	if f.c.ops&o.mask == 0 {
		return effect{}, false
	}
	if s := &f.spec; s.Length > 0 {
		if o.length <= 0 || o.off >= s.Offset+s.Length || o.off+o.length <= s.Offset {
			return effect{}, false
		}
	}
	if !f.expires.IsZero() && !now.Before(f.expires) {
		return effect{}, false
	}
	s := &f.spec
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Count > 0 && f.mu.injected >= uint64(s.Count) {
		return effect{}, false
	}
	f.mu.matched++
	n := f.mu.matched
	if n <= uint64(s.After) {
		return effect{}, false
	}
	if s.Every > 0 && (n-uint64(s.After))%uint64(s.Every) != 0 {
		return effect{}, false
	}
	if s.Probability > 0 && s.Probability < 1 && f.mu.rng.Float64() >= s.Probability {
		return effect{}, false
	}
	f.mu.injected++
	e := effect{delay: s.Latency, hang: s.Hang, late: s.Late}
	if s.LandLate > 0 {
		if o.mask&maskLandable != 0 {
			e.landLate, e.silent = s.LandLate, s.Silent
		} else {
			e.hang = true // reads, flushes, probes: held, then dropped
		}
	}
	if s.Jitter > 0 {
		e.delay += time.Duration(f.mu.rng.Int64N(int64(s.Jitter)))
	}
	if s.SlowFactor > 1 {
		e.slow = s.SlowFactor - 1
	}
	if s.Bandwidth > 0 && o.xfer > 0 {
		start := f.mu.next
		if start.Before(now) {
			start = now
		}
		f.mu.next = start.Add(time.Duration(float64(o.xfer) / float64(s.Bandwidth) * float64(time.Second)))
		e.delay += f.mu.next.Sub(now)
	}
	if f.c.class != ioerr.ClassNone {
		e.err = &ioerr.Error{Class: f.c.class, Op: o.name, Sense: f.sense(o), Err: f.injErr}
	}
	if s.Corrupt != "" {
		e.corr = f.corruption(o)
	}
	e.expire = s.Count > 0 && f.mu.injected >= uint64(s.Count) && !s.Hang && s.LandLate == 0
	return e, true
}

// sense is the sense data of the error f injects into o.
func (f *fault) sense(o *op) *ioerr.Sense {
	if f.spec.Sense == "" && f.c.class == ioerr.ClassDeviceError && o.mask != maskRead && o.mask != maskProbe {
		return &writeError
	}
	return f.c.sense
}

// writeError is the default device-error sense of everything but reads:
// 03/0c/00 MEDIUM ERROR, WRITE ERROR.
var writeError = ioerr.Sense{Key: ioerr.SenseMediumError, ASC: 0x0c}

// run evaluates the faults in list on o, in ID order, and carries out
// their effects around exec, the operation on the backend underneath.
func (b *Backend) run(ctx context.Context, list []*fault, o *op, exec func() error) error {
	abort := b.abort.Load()
	now := time.Now()
	issued := now
	var delay time.Duration
	var slow float64
	own := func(err error) error {
		o.own = true
		return err
	}
	for _, f := range list {
		if f.retired.Load() {
			continue
		}
		e, ok := f.evaluate(o, now)
		if !ok {
			continue
		}
		if e.expire {
			b.retire(f)
		}
		delay += e.delay
		slow += e.slow
		if e.corr != nil && o.corr == nil {
			o.corr = e.corr
		}
		if e.landLate > 0 && o.late != nil {
			return own(b.landLate(ctx, f, o, issued.Add(e.landLate), e.silent, abort))
		}
		if e.hang {
			if err := b.hold(ctx, f, o.name, abort); err != nil {
				return own(err)
			}
			now = time.Now()
		}
		if e.err != nil {
			if err := b.wait(ctx, o.name, delay, abort); err != nil {
				return own(err)
			}
			if e.late {
				_ = exec() // the operation ran; its outcome is lost
			}
			return own(e.err)
		}
	}
	if err := b.wait(ctx, o.name, delay, abort); err != nil {
		return own(err)
	}
	start := time.Now()
	err := exec()
	if slow > 0 {
		extra := time.Duration(slow * float64(time.Since(start)))
		if werr := b.wait(ctx, o.name, extra, abort); werr != nil {
			return own(werr)
		}
	}
	return err
}

// ErrClosed is what the caller of a late-landing operation fails with
// (wrapped in a path failure) when the decorator is closed while it waits.
var ErrClosed = errors.New("fault decorator closed")

// landLate schedules o to execute on the backend underneath at land, under
// a background context, and holds the caller until ctx ends, Abort is
// called (unless silent) or the decorator is closed. The caller's error is
// a path failure; unless silent it is a backends.Pending whose Settled
// closes once the late execution has returned. Clearing f does not end the
// wait: the operation is in the hands of a server that will not answer.
func (b *Backend) landLate(ctx context.Context, f *fault, o *op, land time.Time, silent bool, abort *abortGen) error {
	exec := o.late() // copies the data now: the caller's buffer is not retained
	done := make(chan struct{})
	b.landing.Add(1)
	f.landing.Add(1)
	time.AfterFunc(time.Until(land), func() {
		_ = exec() // its outcome reaches nobody, as from a server nobody listens to
		f.landing.Add(-1)
		b.landing.Add(-1)
		close(done)
	})
	f.held.Add(1)
	defer f.held.Add(-1)
	b.lateWaiting.Add(1)
	defer b.lateWaiting.Add(-1)
	var cause error
	for cause == nil {
		var aborted <-chan struct{}
		if !silent {
			aborted = abort.ch
		}
		select {
		case <-ctx.Done():
			cause = ctx.Err()
		case <-aborted:
			if abort.task != nil { // AbortTasks: this server does not answer
				abort = b.abort.Load()
				continue
			}
			cause = abort.reason
		case <-b.closing:
			cause = ErrClosed
		}
	}
	err := ioerr.NewError(ioerr.ClassPathFailure, o.name, cause)
	if silent {
		return err
	}
	return &backends.PendingError{Err: err, Done: done,
		Waiting: fmt.Sprintf("fault #%d to land the %s at offset %d late, at %s", f.id, o.name, o.off, land.UTC().Format("15:04:05.000"))}
}

// hold waits until f is released, ctx ends or Abort is called.
func (b *Backend) hold(ctx context.Context, f *fault, opName string, abort *abortGen) error {
	f.held.Add(1)
	defer f.held.Add(-1)
	select {
	case <-f.released:
		return nil
	case <-ctx.Done():
		return dropped(ioerr.NewError(ioerr.ClassPathFailure, opName, ctx.Err()))
	case <-abort.ch:
		if abort.task != nil {
			return taskError(abort, opName)
		}
		return dropped(ioerr.NewError(ioerr.ClassPathFailure, opName, abort.reason))
	}
}

// wait sleeps for d unless ctx ends or Abort is called first.
func (b *Backend) wait(ctx context.Context, opName string, d time.Duration, abort *abortGen) error {
	if d <= 0 {
		return nil
	}
	b.delayed.Add(1)
	defer b.delayed.Add(-1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return dropped(ioerr.NewError(ioerr.ClassPathFailure, opName, ctx.Err()))
	case <-abort.ch:
		if abort.task != nil {
			return taskError(abort, opName)
		}
		return dropped(ioerr.NewError(ioerr.ClassPathFailure, opName, abort.reason))
	}
}

// dropped marks the error of an operation the decorator gave up before it
// reached the backend underneath, or after it had run there: it will not
// land later, so its range is not ambiguous (backends.Pending, settled).
func dropped(err error) error {
	return &backends.PendingError{Err: err, Done: backends.Settled, Waiting: "nothing: the fault decorator dropped the operation"}
}
