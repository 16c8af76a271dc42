package nmp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/backendtest"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// This file holds the hand-written fakes the nmp tests drive real devices
// over: an in-memory store shared by several paths, each path a fake
// backend with hooks to fail, hang and slow down, counting its operations.

// fakeFault is what a fake path does instead of (or before) an operation.
type fakeFault struct {
	err     error           // returned instead of running the operation
	ops     map[string]bool // operations it applies to; nil: all, probe included
	hang    bool            // hold the operation until recover() or ctx done
	latency time.Duration   // delay before the operation runs
	times   int             // > 0: fire this many times, then vanish
	// landLate > 0: a write-class operation (write, discard,
	// write-zeroes) is held until its context ends and lands on the store
	// landLate after it was issued; its error is a backends.Pending
	// settled once it landed, or with silent a plain timeout (no proof).
	// Other operations are held as by hang.
	landLate time.Duration
	silent   bool
}

// fakePath is one path's backend. The zero fault is healthy.
type fakePath struct {
	name  string
	store *backendtest.Mem
	size  int64 // reported size; 0: the store's

	noDiscard, noZero bool // capabilities it lacks

	mu      sync.Mutex
	fault   *fakeFault
	release chan struct{} // closed by recover(): hung operations proceed

	reads, writes, flushes, probes, discards, zeroes atomic.Int64
	hung                                             atomic.Int64 // operations held right now
	landing, landed                                  atomic.Int64 // late operations waiting to land, landed
	closed                                           atomic.Bool
}

var (
	_ backends.Backend    = (*fakePath)(nil)
	_ backends.Discarder  = (*fakePath)(nil)
	_ backends.ZeroWriter = (*fakePath)(nil)
	_ backends.Prober     = (*fakePath)(nil)
	_ backends.Capable    = (*fakePath)(nil)
)

func newFakePath(name string, s *backendtest.Mem) *fakePath {
	return &fakePath{name: name, store: s, release: make(chan struct{})}
}

// failClass makes operations fail with an *ioerr.Error of class c. ops
// limits it to some operations (e.g. read,write: a gray failure the probe
// does not see).
func (f *fakePath) failClass(c ioerr.Class, ops ...string) {
	f.setFault(&fakeFault{err: &ioerr.Error{Class: c, Path: f.name, Err: errFakeFault}, ops: opSet(ops)})
}

// failErr makes operations fail with a raw error (an errno, a network error).
func (f *fakePath) failErr(err error, ops ...string) {
	f.setFault(&fakeFault{err: err, ops: opSet(ops)})
}

// hangOps holds operations until recover() or their context ends.
func (f *fakePath) hangOps(ops ...string) {
	f.setFault(&fakeFault{hang: true, ops: opSet(ops)})
}

// landLate makes write-class operations (write, discard, write-zeroes;
// ops limits them further) time out for their caller and land on the
// store d after they were issued: the stale write of multipath. With proof
// the caller's error is a backends.Pending settled once the operation
// landed; without, a plain timeout. Reads and probes are held as by
// hangOps unless ops leaves them out.
func (f *fakePath) landLate(d time.Duration, proof bool, ops ...string) {
	f.setFault(&fakeFault{landLate: d, silent: !proof, ops: opSet(ops)})
}

// slow delays every operation by d.
func (f *fakePath) slow(d time.Duration) { f.setFault(&fakeFault{latency: d}) }

func (f *fakePath) setFault(ff *fakeFault) {
	f.mu.Lock()
	f.fault = ff
	f.mu.Unlock()
}

// recover clears the fault and releases every hung operation.
func (f *fakePath) recover() {
	f.mu.Lock()
	f.fault = nil
	close(f.release)
	f.release = make(chan struct{})
	f.mu.Unlock()
}

var errFakeFault = errors.New("fake fault")

func opSet(ops []string) map[string]bool {
	if len(ops) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, o := range ops {
		for _, x := range strings.Split(o, ",") {
			m[x] = true
		}
	}
	return m
}

// gate applies the path's fault to an operation. late, for write-class
// operations, prepares the operation's effect on the store for a late
// landing (copying what it needs of the caller's arguments).
func (f *fakePath) gate(ctx context.Context, op string, late func() func()) error {
	f.mu.Lock()
	ff := f.fault
	release := f.release
	if ff != nil && ff.ops != nil && !ff.ops[op] {
		ff = nil
	}
	if ff != nil && ff.times > 0 {
		ff.times--
		if ff.times == 0 {
			f.fault = nil
		}
	}
	f.mu.Unlock()
	if ff == nil {
		return ctx.Err()
	}
	if ff.landLate > 0 && late != nil {
		return f.land(ctx, ff, op, late())
	}
	if ff.latency > 0 {
		t := time.NewTimer(ff.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return dropped(ctx.Err())
		}
	}
	if ff.hang || ff.landLate > 0 {
		f.hung.Add(1)
		defer f.hung.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
			return dropped(ctx.Err())
		}
	}
	if ff.err != nil {
		var me *ioerr.Error
		if errors.As(ff.err, &me) {
			e := *me
			e.Op = op
			return &e
		}
		return ff.err
	}
	return nil
}

// dropped is the error of an operation the fake held or delayed and gave
// up at its context's end without running it: it will never land, and the
// fake says so, as the fault decorator does (a settled backends.Pending),
// so the NMP does not take the timed-out write for one that may land.
func dropped(err error) error {
	return &backends.PendingError{Err: err, Done: backends.Settled, Waiting: "nothing: the fake path dropped the operation"}
}

// land holds a write-class operation under a land-late fault until its
// context ends; apply changes the store ff.landLate after the call.
func (f *fakePath) land(ctx context.Context, ff *fakeFault, op string, apply func()) error {
	done := make(chan struct{})
	f.landing.Add(1)
	time.AfterFunc(ff.landLate, func() {
		apply()
		f.landed.Add(1)
		f.landing.Add(-1)
		close(done)
	})
	f.hung.Add(1)
	defer f.hung.Add(-1)
	<-ctx.Done()
	err := &ioerr.Error{Class: ioerr.ClassPathFailure, Op: op, Path: f.name, Err: ctx.Err()}
	if ff.silent {
		return err
	}
	return &backends.PendingError{Err: err, Done: done, Waiting: "the fake path " + f.name + " to land the " + op + " late"}
}

func (f *fakePath) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := f.gate(ctx, "read", nil); err != nil {
		return 0, err
	}
	f.reads.Add(1)
	var n int
	f.store.View(func(d []byte) { n = copy(p, d[off:]) })
	return n, nil
}

func (f *fakePath) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	apply := func(p []byte) int {
		f.writes.Add(1)
		var n int
		f.store.Update(func(d []byte) { n = copy(d[off:], p) })
		return n
	}
	late := func() func() {
		q := append([]byte(nil), p...)
		return func() { apply(q) }
	}
	if err := f.gate(ctx, "write", late); err != nil {
		return 0, err
	}
	return apply(p), nil
}

func (f *fakePath) Flush(ctx context.Context) error {
	if err := f.gate(ctx, "flush", nil); err != nil {
		return err
	}
	f.flushes.Add(1)
	return nil
}

func (f *fakePath) Probe(ctx context.Context) error {
	if err := f.gate(ctx, "probe", nil); err != nil {
		return err
	}
	f.probes.Add(1)
	return nil
}

func (f *fakePath) Discard(ctx context.Context, off, length int64) error {
	if f.noDiscard {
		return backends.ErrNotSupported
	}
	apply := func() {
		f.discards.Add(1)
		f.store.Update(func(d []byte) { clear(d[off : off+length]) })
	}
	if err := f.gate(ctx, "discard", func() func() { return apply }); err != nil {
		return err
	}
	apply()
	return nil
}

func (f *fakePath) WriteZeroes(ctx context.Context, off, length int64) error {
	if f.noZero {
		return backends.ErrNotSupported
	}
	apply := func() {
		f.zeroes.Add(1)
		f.store.Update(func(d []byte) { clear(d[off : off+length]) })
	}
	if err := f.gate(ctx, "discard", func() func() { return apply }); err != nil {
		return err
	}
	apply()
	return nil
}

func (f *fakePath) Can(c backends.Capability) bool {
	switch c {
	case backends.CapDiscard:
		return !f.noDiscard
	case backends.CapWriteZeroes:
		return !f.noZero
	case backends.CapProbe:
		return true
	}
	return false
}

func (f *fakePath) Size() int64 {
	if f.size != 0 {
		return f.size
	}
	return f.store.Size()
}

func (f *fakePath) Close() error {
	f.closed.Store(true)
	return nil
}

// rig is a device over fake paths p1…pN, with a decisions tracer and an
// event subscription.
type rig struct {
	d      *Device
	store  *backendtest.Mem
	fakes  []*fakePath
	tracer *Tracer
	events *mpath.Subscription
	seen   int // trace records already consumed
}

const rigSize = 1 << 20

// testConfig is a device configuration for tests: the checker only runs
// when a test calls CheckNow (or waits an hour), reads are not hedged (the
// hedge tests turn it on), everything else default.
func testConfig(psp string, opts map[string]string) mpath.DeviceConfig {
	return mpath.DeviceConfig{Name: "dev0", PSP: psp, PSPOptions: opts, CheckInterval: time.Hour, HedgeReads: "off"}
}

func newRig(t testing.TB, n int, cfg mpath.DeviceConfig) *rig {
	t.Helper()
	return newRigSetup(t, n, cfg, nil)
}

// newRigSetup is newRig with setup called on every path before the device
// is made (per-path settings such as the quiesce time).
func newRigSetup(t testing.TB, n int, cfg mpath.DeviceConfig, setup func(*mpath.Path)) *rig {
	t.Helper()
	r := &rig{store: backendtest.NewMem(rigSize)}
	var paths []*mpath.Path
	for i := range n {
		f := newFakePath(fmt.Sprintf("p%d", i+1), r.store)
		r.fakes = append(r.fakes, f)
		paths = append(paths, &mpath.Path{Name: f.name, URI: "fake://" + f.name, Transport: "fake",
			Location: mpath.Location{Adapter: i + 1}, Backend: f})
		if setup != nil {
			setup(paths[i])
		}
	}
	if cfg.Name == "" {
		cfg.Name = "dev0"
	}
	events := &mpath.Events{}
	r.events = events.Subscribe(4096)
	d, err := NewDevice(cfg, paths, events)
	if err != nil {
		t.Fatalf("NewDevice: %v", err)
	}
	r.d = d
	r.tracer = NewTracer(1<<16, nil)
	r.tracer.Decisions = true
	d.SetTracer(r.tracer)
	t.Cleanup(func() { d.Close() })
	return r
}

// fake returns the fake of path name ("p2").
func (r *rig) fake(name string) *fakePath {
	for _, f := range r.fakes {
		if f.name == name {
			return f
		}
	}
	panic("no fake path " + name)
}

func (r *rig) path(name string) *mpath.Path {
	p := r.d.FindPath(name)
	if p == nil {
		panic("no path " + name)
	}
	return p
}

// records returns the trace records since the last call.
func (r *rig) records() []TraceRecord {
	all := r.tracer.Records()
	out := all[r.seen:]
	r.seen = len(all)
	return out
}

// served returns the path that completed the last traced I/O ("" if none
// or it failed).
func (r *rig) served() string {
	recs := r.records()
	if len(recs) == 0 {
		return ""
	}
	rec := recs[len(recs)-1]
	if rec.Status != "ok" || len(rec.Attempts) == 0 {
		return ""
	}
	return rec.Attempts[len(rec.Attempts)-1].Path
}

// write writes 4 KiB at off and returns the path that carried it.
func (r *rig) write(t testing.TB, off int64) string {
	t.Helper()
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(off>>12) + byte(i)
	}
	if _, err := r.d.WriteAt(context.Background(), buf, off); err != nil {
		t.Fatalf("write at %d: %v", off, err)
	}
	return r.served()
}

// read reads 4 KiB at off and returns the path that carried it.
func (r *rig) read(t testing.TB, off int64) string {
	t.Helper()
	buf := make([]byte, 4096)
	if _, err := r.d.ReadAt(context.Background(), buf, off); err != nil {
		t.Fatalf("read at %d: %v", off, err)
	}
	return r.served()
}

// ios runs n 4 KiB writes and returns the serving path of each.
func (r *rig) ios(t testing.TB, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = r.write(t, int64(i%64)*4096)
	}
	return out
}

func (r *rig) state(name string) mpath.PathState { return r.path(name).State() }

// states prints every path's state, "p1=active p2=dead".
func (r *rig) states() string {
	var b strings.Builder
	for i, p := range r.d.Paths() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", p.Name, p.State())
		if p.PDL() {
			b.WriteString("(pdl)")
		}
	}
	return b.String()
}

// drainEvents returns the events published since the last call.
func (r *rig) drainEvents() []mpath.Event {
	var out []mpath.Event
	for {
		select {
		case ev := <-r.events.C:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// groupedSATP is a test SATP with two priority groups, like ALUA's AO and
// ANO: the paths named in option ano=p3,p4 are in group 1, the others in
// group 0. Errors and probes are judged as VMW_SATP_DEFAULT_AA judges them.
const satpTestGrouped = "TEST_SATP_GROUPED"

type groupedSATP struct {
	*defaultSATP
	ano map[string]bool
}

func init() {
	RegisterSATP(satpTestGrouped, "test: two priority groups", PSPRR, func(o map[string]string) (SATP, error) {
		opts := NewOptions(satpTestGrouped, o)
		ano := opSet([]string{opts.String("ano", "")})
		if err := opts.Done(); err != nil {
			return nil, err
		}
		return &groupedSATP{defaultSATP: &defaultSATP{name: satpTestGrouped, retryBackoff: time.Millisecond}, ano: ano}, nil
	})
}

func (s *groupedSATP) DefaultPSP() string { return PSPRR }

func (s *groupedSATP) Group(p *mpath.Path) (int, bool) {
	if s.ano[p.Name] {
		return 1, p.State() == mpath.StateActive
	}
	return 0, p.State() == mpath.StateActive
}

// TestFakeLandLate checks the fakes' land-late fault itself: the caller
// times out, the write lands later, the Pending settles only then (or,
// silent, there is no Pending); reads are held, never landed.
func TestFakeLandLate(t *testing.T) {
	for _, proof := range []bool{true, false} {
		f := newFakePath("p1", backendtest.NewMem(1<<16))
		f.landLate(50*time.Millisecond, proof)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		_, err := f.WriteAt(ctx, []byte{1, 2, 3, 4}, 8)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ioerr.ErrPathFailure) {
			t.Fatalf("proof=%v: err = %v, want a path failure wrapping the deadline", proof, err)
		}
		var p backends.Pending
		if errors.As(err, &p) != proof {
			t.Fatalf("proof=%v: err %v is a Pending: %v", proof, err, !proof)
		}
		if proof {
			select {
			case <-p.Settled():
				t.Fatal("settled before the write landed")
			default:
			}
			<-p.Settled()
		} else {
			for f.landing.Load() > 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if got := f.store.Snapshot()[8:12]; string(got) != "\x01\x02\x03\x04" || f.landed.Load() != 1 {
			t.Fatalf("proof=%v: after the landing the store holds %v (landed %d)", proof, got, f.landed.Load())
		}
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
		_, err = f.ReadAt(ctx, make([]byte, 4), 0)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || f.reads.Load() != 0 {
			t.Fatalf("proof=%v: read under land-late: %v (reads %d), want held until the deadline", proof, err, f.reads.Load())
		}
	}
}
