package nmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Defaults, faithful to ESXi where ESXi has one.
const (
	DefaultIOTimeout     = 5 * time.Second
	DefaultAPDTimeout    = 140 * time.Second
	DefaultCheckInterval = 2 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultFlapThreshold = 3
	DefaultFlapWindow    = 60 * time.Second
	DefaultHoldDown      = 10 * time.Second
	DefaultMaxRetries    = 32
	maxHoldDown          = 10 * time.Minute
)

// Device is a multipath device served by the NMP.
type Device struct {
	name  string
	size  int64
	ident mpath.Identity
	cfg   mpath.DeviceConfig

	events *mpath.Events
	view   atomic.Pointer[View]
	psp    atomic.Pointer[pspBox]
	satp   SATP
	tracer atomic.Pointer[tracerBox]
	obs    atomic.Pointer[observerBox]

	canDiscard, canZero atomic.Bool

	failovers  atomic.Uint64
	apdEntries atomic.Uint64
	queueDepth atomic.Int64
	ioSeq      atomic.Uint64

	// hedgeState holds hedged reads' state (hedge.go).
	hedgeState

	// fence holds the ranges failed writes left ambiguous (fence.go).
	fence fencing
	flush flushState // flush.go

	mu struct {
		sync.Mutex
		paths    []*mpath.Path
		gen      uint64
		flap     map[*mpath.Path]*flapState
		apdSince time.Time
		closed   bool
		// activating is set while an SATP activation runs.
		activating bool
	}

	stop chan struct{}
	wg   sync.WaitGroup

	// ids remembers each path's identity (identity.go).
	ids identities

	// stuck holds the paths whose last probe outlived its deadline and has
	// not returned yet, with the time it started: such a path gets no
	// second probe (each would hang a goroutine more) and fails every check
	// until the stuck one returns (checker.go).
	stuck struct {
		sync.Mutex
		m map[*mpath.Path]time.Time
	}
}

type pspBox struct{ psp PSP }

type flapState struct {
	failures  []time.Time
	holdUntil time.Time
	level     int // escalation of the hold-down period
	heldNoted bool
}

var _ mpath.Device = (*Device)(nil)

// NewDevice makes a device from paths that lead to one store. Paths must
// have names; sizes must agree; identities, where paths report one, must
// agree with each other and with cfg.Identity.
func NewDevice(cfg mpath.DeviceConfig, paths []*mpath.Path, events *mpath.Events) (*Device, error) {
	if cfg.Name == "" {
		return nil, errors.New("device has no name")
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("device %s has no paths: give at least one --path", cfg.Name)
	}
	setDefaults(&cfg)
	if events == nil {
		events = &mpath.Events{}
	}
	d := &Device{name: cfg.Name, cfg: cfg, events: events, stop: make(chan struct{})}
	d.ident = cfg.Identity
	d.size = paths[0].Backend.Size()
	seen := map[string]bool{}
	for _, p := range paths {
		if err := d.admit(p, seen); err != nil {
			return nil, err
		}
	}
	satpName := cfg.SATP
	if satpName == "" {
		satpName = SATPDefaultAA
	}
	satp, err := NewSATP(satpName, cfg.SATPOptions)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, err)
	}
	d.satp = satp
	d.cfg.SATP = satpName
	pspName := cfg.PSP
	if pspName == "" {
		pspName = satp.DefaultPSP()
	}
	psp, err := NewPSP(pspName, cfg.PSPOptions, paths)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, err)
	}
	d.cfg.PSP = pspName
	d.psp.Store(&pspBox{psp})
	d.mu.paths = paths
	d.mu.flap = map[*mpath.Path]*flapState{}
	if err := d.initHedge(); err != nil { // hedge.go
		return nil, err
	}
	now := time.Now()
	for _, p := range paths {
		if p.State() == mpath.StateUnknown {
			p.SetState(mpath.StateActive, "claimed", now)
		}
	}
	d.view.Store(&View{changed: make(chan struct{})})
	d.mu.Lock()
	d.updateCapsLocked()
	d.rebuildLocked(now)
	d.mu.Unlock()
	// An SATP that learns path groups from the paths (ALUA) asks them now,
	// before the first I/O.
	if _, ok := satp.(Updater); ok {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ProbeTimeout)
		d.update(ctx)
		cancel()
	}
	d.wg.Add(1)
	go d.checker()
	return d, nil
}

func setDefaults(cfg *mpath.DeviceConfig) {
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = DefaultIOTimeout
	}
	if cfg.APDTimeout <= 0 {
		cfg.APDTimeout = DefaultAPDTimeout
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = min(DefaultProbeTimeout, cfg.IOTimeout)
	}
	if cfg.FlapThreshold <= 0 {
		cfg.FlapThreshold = DefaultFlapThreshold
	}
	if cfg.FlapWindow <= 0 {
		cfg.FlapWindow = DefaultFlapWindow
	}
	if cfg.HoldDown <= 0 {
		cfg.HoldDown = DefaultHoldDown
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
}

// admit checks that a path leads to this device's store.
func (d *Device) admit(p *mpath.Path, seen map[string]bool) error {
	if p.Name == "" {
		p.Name = p.Location.RuntimeName()
	}
	if seen[p.Name] {
		return fmt.Errorf("device %s: two paths named %s: give each path its own name", d.name, p.Name)
	}
	seen[p.Name] = true
	if s := p.Backend.Size(); s != d.size {
		return fmt.Errorf("device %s: path %s (%s) has size %d but the device has %d: the paths lead to different stores; fix the path list", d.name, p.Name, p.URI, s, d.size)
	}
	if d.ident.Vendor == "" && d.ident.Model == "" {
		d.ident.Vendor, d.ident.Model = p.Inquiry.Vendor, p.Inquiry.Model
	}
	if w := p.Inquiry.WWID; w != "" {
		if d.ident.WWID == "" {
			d.ident.WWID = w
			d.ident.Vendor, d.ident.Model, d.ident.Serial = p.Inquiry.Vendor, p.Inquiry.Model, p.Inquiry.Serial
		} else if w != d.ident.WWID {
			return fmt.Errorf("device %s: path %s (%s) reports WWID %s but the device is %s: the paths lead to different stores (mixing them destroys data); remove the path or fix the configured wwid (one file through two mounts reports two synthetic WWIDs: assert the device's wwid, which is then checked by label and sample blocks)", d.name, p.Name, p.URI, w, d.ident.WWID)
		}
	}
	d.admitted(p) // identity.go
	return nil
}

func (d *Device) Name() string          { return d.name }
func (d *Device) Size() int64           { return d.size }
func (d *Device) Events() *mpath.Events { return d.events }

// Identity returns the device's identity. A device whose paths reported
// none adopts the first WWID a path added later reports, so it is read
// under the lock.
func (d *Device) Identity() mpath.Identity {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ident
}

// Config returns the device's configuration with defaults filled in.
// SetPolicy changes it, so it is read under the lock.
func (d *Device) Config() mpath.DeviceConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Paths returns the device's paths in claim order.
func (d *Device) Paths() []*mpath.Path {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*mpath.Path(nil), d.mu.paths...)
}

// View returns the current routing snapshot.
func (d *Device) View() *View { return d.view.Load() }

// PSP returns the current path selection plugin.
func (d *Device) PSP() PSP { return d.psp.Load().psp }

// SATP returns the device's storage array type plugin.
func (d *Device) SATP() SATP { return d.satp }

// ReadAt reads len(p) bytes at off. A read crossing the end of the device
// returns the bytes before it and io.EOF.
func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > d.size {
		return 0, ioerr.ErrOutOfRange
	}
	var eof error
	if rest := d.size - off; int64(len(p)) > rest {
		p, eof = p[:rest], io.EOF
	}
	if len(p) == 0 {
		return 0, eof
	}
	n, err := d.do(ctx, mpath.OpRead, p, off, int64(len(p)))
	if err == nil {
		err = eof
	}
	return n, err
}

// WriteAt writes p at off; the write is acknowledged only after a path's
// backend acknowledged all of it.
func (d *Device) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, ioerr.ErrOutOfRange
	}
	if len(p) == 0 {
		return 0, nil
	}
	return d.do(ctx, mpath.OpWrite, p, off, int64(len(p)))
}

// Discard deallocates a range, when every path can.
func (d *Device) Discard(ctx context.Context, off, length int64) error {
	if !d.canDiscard.Load() {
		return ioerr.NewError(ioerr.ClassDeviceError, "discard", backends.ErrNotSupported)
	}
	if off < 0 || length < 0 || off+length > d.size {
		return ioerr.ErrOutOfRange
	}
	_, err := d.do(ctx, mpath.OpDiscard, nil, off, length)
	return err
}

// WriteZeroes zeroes a range without transferring data, when every path can.
func (d *Device) WriteZeroes(ctx context.Context, off, length int64) error {
	if !d.canZero.Load() {
		return ioerr.NewError(ioerr.ClassDeviceError, "write-zeroes", backends.ErrNotSupported)
	}
	if off < 0 || length < 0 || off+length > d.size {
		return ioerr.ErrOutOfRange
	}
	_, err := d.do(ctx, mpath.OpWriteZeroes, nil, off, length)
	return err
}

// do routes one I/O: select a path, run the I/O under the per-I/O
// deadline, judge errors, retry elsewhere, wait out All-Paths-Down.
func (d *Device) do(ctx context.Context, op mpath.OpKind, p []byte, off, length int64) (int, error) {
	d.queueDepth.Add(1)
	defer d.queueDepth.Add(-1)
	var tr *ioTrace
	if tb := d.tracer.Load(); tb != nil {
		tr = tb.t.begin(d, op, off, length)
	}
	attempts := 0
	for {
		// Fencing: a write-class operation never overlaps a range an
		// earlier write may still land on. One atomic load when none is.
		if writeClass(op) && d.fence.active.Load() != 0 {
			if err := d.awaitFence(ctx, op, off, length); err != nil {
				if tr != nil {
					tr.finish(err)
				}
				return 0, err
			}
		}
		v := d.view.Load()
		path, reason := d.psp.Load().psp.Select(v, op, int(length))
		if path == nil {
			if err := d.waitForPath(ctx, v); err != nil {
				if tr != nil {
					tr.finish(err)
				}
				return 0, err
			}
			continue
		}
		if tr != nil {
			tr.attempt(path, reason)
		}
		var n int
		var err error
		if op == mpath.OpRead {
			n, err = d.read(ctx, path, p, off) // hedge.go
		} else {
			n, err = d.exec(ctx, path, op, p, off, length)
		}
		if err == nil {
			if tr != nil {
				tr.finish(nil)
			}
			return n, nil
		}
		if cerr := ctx.Err(); cerr != nil {
			if tr != nil {
				tr.finish(cerr)
			}
			return n, cerr
		}
		verdict := d.judge(ctx, path, op, err)
		if tr != nil {
			tr.failed(verdict.Class, err)
		}
		if !verdict.Retry {
			err = d.finalError(op, path, verdict.Class, err)
			if tr != nil {
				tr.finish(err)
			}
			return n, err
		}
		attempts++
		if attempts > d.cfg.MaxRetries {
			err = &ioerr.Error{Class: verdict.Class, Op: op.String(), Path: path.Name,
				Err: fmt.Errorf("gave up after %d attempts: %w", attempts, err)}
			if tr != nil {
				tr.finish(err)
			}
			return n, err
		}
		if verdict.Backoff > 0 {
			t := time.NewTimer(verdict.Backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				if tr != nil {
					tr.finish(ctx.Err())
				}
				return n, ctx.Err()
			}
		}
	}
}

func (d *Device) finalError(op mpath.OpKind, p *mpath.Path, c ioerr.Class, err error) error {
	var me *ioerr.Error
	if errors.As(err, &me) && me.Class == c {
		return err
	}
	return &ioerr.Error{Class: c, Op: op.String(), Path: p.Name, Err: err}
}

// exec runs one I/O on one path under the per-I/O deadline.
func (d *Device) exec(ctx context.Context, path *mpath.Path, op mpath.OpKind, p []byte, off, length int64) (int, error) {
	return d.execLeg(ctx, path, op, p, off, length, nil)
}

// execLeg is exec for one leg of a hedged read (hedge.go): the leg's
// context can be ended by the other leg, and a leg so beaten returns
// errBeaten without counting as a failure of its path.
func (d *Device) execLeg(ctx context.Context, path *mpath.Path, op mpath.OpKind, p []byte, off, length int64, leg *hedgeLeg) (int, error) {
	start := time.Now()
	ictx := newIOCtx(ctx, start, d.cfg.IOTimeout)
	if leg != nil {
		leg.started(ictx)
	}
	path.Inflight.Add(1)
	path.InflightBytes.Add(length)
	b := path.Backend
	var n int
	var err error
	switch op {
	case mpath.OpRead:
		n, err = b.ReadAt(ictx, p, off)
	case mpath.OpWrite:
		n, err = b.WriteAt(ictx, p, off)
	case mpath.OpFlush:
		err = b.Flush(ictx)
	case mpath.OpDiscard:
		if dd, ok := backends.As[backends.Discarder](b); ok {
			err = dd.Discard(ictx, off, length)
		} else {
			err = backends.ErrNotSupported
		}
	case mpath.OpWriteZeroes:
		if z, ok := backends.As[backends.ZeroWriter](b); ok {
			err = z.WriteZeroes(ictx, off, length)
		} else {
			err = backends.ErrNotSupported
		}
	}
	lat := time.Since(start)
	timedOut := err != nil && ictx.expired()
	beaten := leg != nil && leg.finished(err, lat, &leg.r.h.cfg)
	ictx.release()
	path.Inflight.Add(-1)
	path.InflightBytes.Add(-length)
	if beaten {
		return n, errBeaten
	}
	if err == nil && (op == mpath.OpRead || op == mpath.OpWrite) && n != len(p) {
		err = io.ErrShortWrite
		if op == mpath.OpRead {
			err = io.ErrUnexpectedEOF
		}
	}
	if ob := d.obs.Load(); ob != nil {
		c := ioerr.ClassNone
		if err != nil {
			c = ClassifyError(err)
			if timedOut {
				c = ioerr.ClassPathFailure
			}
		}
		ob.o.Completed(d, path, op, n, lat, c)
	}
	if err == nil {
		path.Done(op, n, lat)
		if op == mpath.OpWrite || op == mpath.OpDiscard || op == mpath.OpWriteZeroes {
			path.MarkDirty()
		}
		return n, nil
	}
	if writeClass(op) {
		d.noteAttempt(path, op, off, length, err, timedOut)
	}
	if timedOut {
		if a, ok := backends.As[backends.Aborter](b); ok {
			a.Abort(err)
		}
		err = &ioerr.Error{Class: ioerr.ClassPathFailure, Op: op.String(), Path: path.Name,
			Err: fmt.Errorf("I/O deadline of %v exceeded: %w", d.cfg.IOTimeout, err)}
	}
	return n, err
}

// judge asks the SATP what an error means and applies the verdict's state
// change.
func (d *Device) judge(ctx context.Context, path *mpath.Path, op mpath.OpKind, err error) Verdict {
	err = d.mediumCheck(path, op, err) // satp_default.go: a bad block is not a dead path
	v := d.satp.Classify(path, op, err)
	path.Failed(v.Class)
	now := time.Now()
	if v.State != mpath.StateUnknown || v.Class == ioerr.ClassPermanentLoss {
		d.mu.Lock()
		changed := false
		if v.Class == ioerr.ClassPermanentLoss && !path.PDL() {
			path.SetPDL(true)
			changed = true
		}
		if v.State != mpath.StateUnknown && path.State() == mpath.StateActive && !path.AdminOff() {
			reason := fmt.Sprintf("%s on %s: %v", v.Class, op, err)
			d.setStateLocked(path, v.State, reason, now)
			if v.State == mpath.StateDead {
				d.noteFailureLocked(path, now)
			}
			changed = true
		}
		if changed {
			d.rebuildLocked(now)
		}
		d.mu.Unlock()
	}
	if v.Update {
		d.update(ctx)
	}
	return v
}

// setStateLocked changes a path's state and tells the world.
func (d *Device) setStateLocked(p *mpath.Path, s mpath.PathState, reason string, now time.Time) {
	old := p.SetState(s, reason, now)
	if old == s {
		return
	}
	if old == mpath.StateActive {
		d.failovers.Add(1)
	}
	d.events.Publish(mpath.Event{Time: now, Kind: "path-state", Device: d.name, Path: p.Name, From: old.String(), To: s.String(), Reason: reason})
}

// noteFailureLocked records a path failure for flap damping: N failures in
// the window hold the path out for the hold-down period, which doubles each
// time the path keeps flapping (a gray failure that passes probes but fails
// I/O cannot bounce back into service forever).
func (d *Device) noteFailureLocked(p *mpath.Path, now time.Time) {
	f := d.mu.flap[p]
	if f == nil {
		f = &flapState{}
		d.mu.flap[p] = f
	}
	cut := now.Add(-d.cfg.FlapWindow)
	keep := f.failures[:0]
	for _, t := range f.failures {
		if t.After(cut) {
			keep = append(keep, t)
		}
	}
	f.failures = append(keep, now)
	if len(f.failures) >= d.cfg.FlapThreshold {
		hold := d.cfg.HoldDown << f.level
		if hold > maxHoldDown || hold <= 0 {
			hold = maxHoldDown
		}
		f.holdUntil = now.Add(hold)
		f.level++
		f.failures = f.failures[:0]
		f.heldNoted = false
		d.events.Publish(mpath.Event{Time: now, Kind: "path-held-down", Device: d.name, Path: p.Name,
			Reason: fmt.Sprintf("%d failures within %v: held out of service for %v", d.cfg.FlapThreshold, d.cfg.FlapWindow, hold)})
	}
}

// heldDownLocked reports whether damping keeps the path out of service.
func (d *Device) heldDownLocked(p *mpath.Path, now time.Time) bool {
	f := d.mu.flap[p]
	if f == nil {
		return false
	}
	if now.Before(f.holdUntil) {
		return true
	}
	// A path that stayed healthy for a whole window after its last hold
	// is forgiven its escalation.
	if f.level > 0 && len(f.failures) == 0 && now.Sub(f.holdUntil) > 2*d.cfg.FlapWindow {
		f.level = 0
	}
	return false
}

// rebuildLocked publishes a new routing view after a state change.
func (d *Device) rebuildLocked(now time.Time) {
	d.mu.gen++
	nv := &View{Gen: d.mu.gen, All: append([]*mpath.Path(nil), d.mu.paths...), GroupOf: map[*mpath.Path]int{}, changed: make(chan struct{})}
	type gp struct {
		g int
		p *mpath.Path
	}
	var usable []gp
	standby := false
	for _, p := range d.mu.paths {
		if p.AdminOff() {
			continue
		}
		st := p.State()
		if st == mpath.StateStandby {
			standby = true
		}
		if st != mpath.StateActive {
			continue
		}
		g, ok := d.satp.Group(p)
		if !ok {
			continue
		}
		usable = append(usable, gp{g, p})
		nv.GroupOf[p] = g
	}
	sort.SliceStable(usable, func(i, j int) bool { return usable[i].g < usable[j].g })
	for i, u := range usable {
		if i == 0 || u.g != usable[i-1].g {
			nv.Groups = append(nv.Groups, nil)
		}
		nv.Groups[len(nv.Groups)-1] = append(nv.Groups[len(nv.Groups)-1], u.p)
		nv.Usable = append(nv.Usable, u.p)
	}
	d.demoteSlowLocked(nv, now) // hedge_slow.go
	d.psp.Load().psp.ViewChanged(nv)
	old := d.view.Swap(nv)
	if old != nil {
		close(old.changed)
	}
	if len(nv.Usable) == 0 && !d.mu.closed {
		if d.mu.apdSince.IsZero() {
			d.mu.apdSince = now
			d.apdEntries.Add(1)
			d.events.Publish(mpath.Event{Time: now, Kind: "apd-enter", Device: d.name, Reason: "no usable path"})
		}
		if standby {
			d.kickActivateLocked()
		}
	} else if len(nv.Usable) > 0 && !d.mu.apdSince.IsZero() {
		d.events.Publish(mpath.Event{Time: now, Kind: "apd-exit", Device: d.name,
			Reason: fmt.Sprintf("a path returned after %v", now.Sub(d.mu.apdSince).Round(time.Millisecond))})
		d.mu.apdSince = time.Time{}
	}
}

// updateCapsLocked offers discard and write-zeroes only when every path can.
func (d *Device) updateCapsLocked() {
	disc, zero := true, true
	for _, p := range d.mu.paths {
		disc = disc && backends.Can(p.Backend, backends.CapDiscard)
		zero = zero && backends.Can(p.Backend, backends.CapWriteZeroes)
	}
	d.canDiscard.Store(disc)
	d.canZero.Store(zero)
}

// waitForPath waits out All-Paths-Down: until a path returns (nil), the
// APD timeout expires (ErrAllPathsDown) or the caller gives up.
func (d *Device) waitForPath(ctx context.Context, v *View) error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return ioerr.ErrClosed
	}
	if d.view.Load() != v {
		d.mu.Unlock()
		return nil
	}
	allPDL := true
	for _, p := range d.mu.paths {
		if !p.PDL() {
			allPDL = false
		}
	}
	since := d.mu.apdSince
	d.mu.Unlock()
	if allPDL {
		return &ioerr.Error{Class: ioerr.ClassPermanentLoss, Op: "io", Err: fmt.Errorf("device %s: every path reports permanent device loss: %w", d.name, ioerr.ErrNoPaths)}
	}
	if since.IsZero() {
		return nil
	}
	remaining := time.Until(since.Add(d.cfg.APDTimeout))
	if remaining <= 0 {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "io", Err: fmt.Errorf("device %s: %w after %v", d.name, ioerr.ErrAllPathsDown, d.cfg.APDTimeout)}
	}
	t := time.NewTimer(remaining)
	defer t.Stop()
	select {
	case <-v.Changed():
		return nil
	case <-t.C:
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "io", Err: fmt.Errorf("device %s: %w after %v", d.name, ioerr.ErrAllPathsDown, d.cfg.APDTimeout)}
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stop:
		return ioerr.ErrClosed
	}
}

// Close stops the path checker and closes every path's backend.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return nil
	}
	d.mu.closed = true
	close(d.stop)
	paths := d.mu.paths
	d.mu.Unlock()
	d.closeFence()
	d.closeHedge() // hedge_slow.go
	d.wg.Wait()
	var first error
	for _, p := range paths {
		if err := p.Backend.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
