package nmp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// Hedged reads. A read outstanding on its path longer than the path's
// threshold (a multiple of the path's recent p99 read latency, between a
// floor and a ceiling) is issued again on another usable path (the PSP's
// choice over the view without the slow path) and the first good answer
// wins. Reads only: a read has no stale-data hazard, a write may land late
// (fence.go), so writes are never hedged.
//
// Buffer ownership: the first read (the primary) runs in the caller's
// goroutine on the caller's buffer, as without hedging; the hedge runs in
// a goroutine of its own on a private buffer. The caller returns only once
// the primary's ReadAt has returned (a backend never touches the buffer
// after that): when the hedge wins, the primary's per-I/O context is ended,
// the primary returns, and the hedge's bytes are copied into the caller's
// buffer. When the primary wins, the hedge's context is ended and its
// private buffer is dropped when it returns. So no read ever writes into the
// caller's buffer after the device's ReadAt returned, and a losing read's
// bytes never reach the caller.
//
// The threshold is enforced by one watchdog goroutine per device that
// sleeps until the earliest due time of the reads in flight (hedge_watch.go),
// not by a timer per read: arming and stopping a runtime timer on every
// read made a healthy 4 KiB read over two file paths 3-4x slower (each
// Reset of a timer that becomes the earliest wakes the network poller).
// The healthy read pays: a pooled run (sync.Pool, per device), one clock
// read, a sharded list insert and removal (an uncontended mutex each), a
// mutex twice around the backend call, and two atomic adds into the path's
// histogram. No allocation.

// Hedging defaults (see docs/design.md, "Hedged reads", for the measurements).
const (
	DefaultHedgeMultiplier = 3.0
	DefaultHedgeFloor      = 2 * time.Millisecond
	DefaultHedgeCeiling    = 50 * time.Millisecond
	// DefaultSlowLosses reads lost to a hedge within DefaultSlowWindow mark
	// a path slow (hedge_slow.go).
	DefaultSlowLosses = 3
	DefaultSlowWindow = 10 * time.Second
)

// hedgeConfig is a device's normalised hedging configuration.
type hedgeConfig struct {
	multiplier     float64
	floor, ceiling time.Duration
	slowLosses     int
	slowWindow     time.Duration
}

func (h *hedgeConfig) clamp(t time.Duration) time.Duration {
	return min(max(t, h.floor), h.ceiling)
}

// hedger is a device's hedging state; nil (in Device.hedge) when hedging is off.
type hedger struct {
	cfg  hedgeConfig
	pool sync.Pool // *hedgeRun
	// issued counts hedges sent; won, those that answered first.
	issued, won atomic.Uint64
	watch       hedgeWatch
}

// hedgeState is the part of Device that hedging keeps (embedded in Device).
type hedgeState struct {
	hedge atomic.Pointer[hedger]
	lat   latTable
}

// ParseHedgeMode checks a hedge_reads value: "on", "off", or "" (the
// default, on: see docs/hedging.md, "Default").
func ParseHedgeMode(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "on", "true", "yes", "1":
		return true, nil
	case "off", "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("hedge_reads %q: want on or off", s)
}

// normaliseHedge fills in the hedging defaults of cfg and checks them.
func normaliseHedge(cfg *mpath.DeviceConfig) (hedgeConfig, bool, error) {
	on, err := ParseHedgeMode(cfg.HedgeReads)
	if err != nil {
		return hedgeConfig{}, false, err
	}
	cfg.HedgeReads = "off"
	if on {
		cfg.HedgeReads = "on"
	}
	if cfg.HedgeMultiplier == 0 {
		cfg.HedgeMultiplier = DefaultHedgeMultiplier
	}
	if cfg.HedgeCeiling == 0 {
		// Half the I/O timeout at most, so a hedge has time to answer.
		cfg.HedgeCeiling = min(DefaultHedgeCeiling, cfg.IOTimeout/2)
	}
	if cfg.HedgeFloor == 0 {
		cfg.HedgeFloor = min(DefaultHedgeFloor, cfg.HedgeCeiling)
	}
	if cfg.HedgeSlowLosses == 0 {
		cfg.HedgeSlowLosses = DefaultSlowLosses
	}
	switch {
	case cfg.HedgeMultiplier < 1 || cfg.HedgeMultiplier > 1000:
		return hedgeConfig{}, false, fmt.Errorf("hedge_multiplier %g: want a number from 1 to 1000 (times the path's p99 read latency; default %g)", cfg.HedgeMultiplier, DefaultHedgeMultiplier)
	case cfg.HedgeFloor < 0 || cfg.HedgeCeiling < 0:
		return hedgeConfig{}, false, errors.New("hedge_floor and hedge_ceiling must not be negative")
	case cfg.HedgeFloor > cfg.HedgeCeiling:
		return hedgeConfig{}, false, fmt.Errorf("hedge_floor %v is above hedge_ceiling %v: make the floor the smaller", cfg.HedgeFloor, cfg.HedgeCeiling)
	case cfg.HedgeCeiling >= cfg.IOTimeout:
		return hedgeConfig{}, false, fmt.Errorf("hedge_ceiling %v is not below the I/O timeout %v: a hedge would never be sent before the read times out; lower hedge_ceiling or raise io_timeout", cfg.HedgeCeiling, cfg.IOTimeout)
	case cfg.HedgeSlowLosses < 0:
		return hedgeConfig{}, false, fmt.Errorf("hedge_slow_losses %d: want a positive number", cfg.HedgeSlowLosses)
	}
	return hedgeConfig{
		multiplier: cfg.HedgeMultiplier,
		floor:      cfg.HedgeFloor,
		ceiling:    cfg.HedgeCeiling,
		slowLosses: cfg.HedgeSlowLosses,
		slowWindow: DefaultSlowWindow,
	}, on, nil
}

// initHedge sets hedging up from d.cfg (NewDevice).
func (d *Device) initHedge() error {
	hc, on, err := normaliseHedge(&d.cfg)
	if err != nil {
		return fmt.Errorf("device %s: %w", d.name, err)
	}
	if on {
		d.startHedger(hc)
	}
	return nil
}

// startHedger turns hedging on with hc and starts its watchdog.
func (d *Device) startHedger(hc hedgeConfig) {
	h := &hedger{cfg: hc}
	h.watch.init()
	d.hedge.Store(h)
	d.stopper.goWork(func() { d.hedgeWatchdog(h) })
}

// SetHedge turns hedged reads on or off while the device runs.
func (d *Device) SetHedge(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur := d.hedge.Load()
	if on == (cur != nil) {
		return
	}
	if on {
		hc, _, err := normaliseHedge(&mpath.DeviceConfig{HedgeMultiplier: d.cfg.HedgeMultiplier,
			HedgeFloor: d.cfg.HedgeFloor, HedgeCeiling: d.cfg.HedgeCeiling, HedgeSlowLosses: d.cfg.HedgeSlowLosses, IOTimeout: d.cfg.IOTimeout})
		if err != nil { // checked when the device was made
			return
		}
		if d.mu.dec.closed {
			return
		}
		d.startHedger(hc)
		d.cfg.HedgeReads = "on"
	} else {
		d.hedge.Store(nil)
		close(cur.watch.stop)
		d.cfg.HedgeReads = "off"
	}
	d.events.Publish(mpath.Event{Time: time.Now(), Kind: "policy", Device: d.name, Reason: "hedge_reads=" + d.cfg.HedgeReads})
}

// Run states.
const (
	runArmed  int32 = iota // the primary is running, the watchdog watching
	runDone                // the primary finished first: no hedge
	runHedged              // the watchdog sent a hedge
)

// Winners.
const (
	winNone int32 = iota
	winPrimary
	winHedge
)

// hedgeLeg is one of a run's two reads; exec registers its per-I/O context
// so the other leg can end it.
type hedgeLeg struct {
	r        *hedgeRun
	pl       *pathLat
	ictx     *ioCtx // while the leg's backend call runs
	canceled bool   // the other leg won and ended this one
}

// hedgeRun is one hedgeable read.
type hedgeRun struct {
	d     *Device
	h     *hedger
	state atomic.Int32

	// Set before the run is listed; read by the watchdog and fire.
	ctx  context.Context
	path *mpath.Path
	off  int64
	n    int
	due  time.Time // when the hedge goes out
	// The watchdog's list (hedge_watch.go), under its shard's lock.
	shard      *watchShard
	prev, next *hedgeRun

	mu   sync.Mutex // guards legs[*].ictx and .canceled
	legs [2]hedgeLeg

	// done is made by the watchdog before it marks the run hedged, and
	// closed by fire when the hedge leg has finished. The rest is written
	// by fire before winner is set or done closed.
	done   chan struct{}
	winner atomic.Int32
	buf    []byte
	hn     int
	herr   error
	hpath  *mpath.Path
}

// errLostRace ends the per-I/O context of a read whose other leg answered
// first.
var errLostRace = errors.New("the hedged read's other leg answered first")

// errBeaten is what exec returns for a leg the other leg beat.
var errBeaten = errors.New("read beaten by its hedge")

func (h *hedger) getRun(d *Device) *hedgeRun {
	if r, ok := h.pool.Get().(*hedgeRun); ok {
		return r
	}
	r := &hedgeRun{d: d, h: h}
	r.legs[0].r, r.legs[1].r = r, r
	return r
}

// started registers a leg's per-I/O context (exec, before the backend call).
func (l *hedgeLeg) started(c *ioCtx) {
	l.r.mu.Lock()
	l.ictx = c
	l.r.mu.Unlock()
}

// finished unregisters it (exec, after the backend call, before the context
// is released) and reports whether the other leg ended it.
func (l *hedgeLeg) finished(err error, lat time.Duration, h *hedgeConfig) bool {
	l.r.mu.Lock()
	l.ictx = nil
	beaten := l.canceled
	l.r.mu.Unlock()
	if err == nil && l.pl != nil {
		l.pl.record(h, lat)
	}
	return beaten && err != nil
}

// cancel ends the leg's backend call if it is still running.
func (l *hedgeLeg) cancel() {
	l.r.mu.Lock()
	if c := l.ictx; c != nil {
		l.canceled = true
		c.endEarly(&errLostRaceVal)
	}
	l.r.mu.Unlock()
}

var errLostRaceVal = errLostRace

// endEarly ends the context now, whether or not its Done channel was asked
// for (a backend that only polls Err sees the error; one that waits on Done
// wakes up). The context is not pooled afterwards (release sees done set).
func (c *ioCtx) endEarly(err *error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	c.closeLocked(err)
}

// read is the read dispatch: one read on path, hedged when hedging is on.
func (d *Device) read(ctx context.Context, path *mpath.Path, p []byte, off int64) (int, error) {
	h := d.hedge.Load()
	if h == nil || d.satp.Load().noHedge {
		return d.execLeg(ctx, path, mpath.OpRead, p, off, int64(len(p)), nil)
	}
	r := h.getRun(d)
	r.ctx, r.path, r.off, r.n = ctx, path, off, len(p)
	pl := d.lat.get(path)
	r.legs[0].pl = pl
	r.due = time.Now().Add(pl.threshold(&h.cfg))
	r.state.Store(runArmed)
	h.watch.add(r)
	n, err := d.execLeg(ctx, path, mpath.OpRead, p, off, int64(len(p)), &r.legs[0])
	if h.watch.finish(r) {
		r.ctx, r.path = nil, nil
		h.pool.Put(r)
		return n, err
	}
	return d.settleHedge(r, p, n, err)
}

// fire runs in a goroutine of its own once the watchdog found the primary
// outliving its threshold: it sends the hedge. The run is then shared by the
// caller and this goroutine and is never pooled again.
func (r *hedgeRun) fire() {
	d := r.d
	defer close(r.done)
	alt := d.hedgeTarget(r.path, r.n)
	if alt == nil {
		return // no other usable path: the primary carries on alone
	}
	r.legs[0].pl.hedged.Add(1)
	r.h.issued.Add(1)
	r.hpath = alt
	r.legs[1].pl = d.lat.get(alt)
	r.buf = make([]byte, r.n)
	n, err := d.execLeg(r.ctx, alt, mpath.OpRead, r.buf, r.off, int64(r.n), &r.legs[1])
	r.hn, r.herr = n, err
	if err == nil {
		if r.winner.CompareAndSwap(winNone, winHedge) {
			r.legs[0].cancel()
		}
		return
	}
	if errors.Is(err, errBeaten) || r.ctx.Err() != nil {
		return
	}
	// The hedge failed on its own: judge its path as any read's.
	jctx, cancel := context.WithTimeout(context.Background(), d.cfg.ProbeTimeout)
	d.judge(jctx, alt, mpath.OpRead, err)
	cancel()
}

// settleHedge finishes a read whose hedge was sent: n and err are the
// primary's.
func (d *Device) settleHedge(r *hedgeRun, p []byte, n int, err error) (int, error) {
	if err == nil && r.winner.CompareAndSwap(winNone, winPrimary) {
		r.legs[1].cancel()
		return n, nil
	}
	// The hedge won (and ended the primary), or the primary failed on its
	// own: either way the hedge's answer decides.
	<-r.done
	if r.winner.Load() != winHedge {
		if errors.Is(err, errBeaten) { // cannot happen: only a winning hedge ends the primary
			err = fmt.Errorf("hedged read at %d: %w", r.off, r.herr)
		}
		return n, err
	}
	copy(p, r.buf[:r.hn])
	r.h.won.Add(1)
	r.legs[1].pl.won.Add(1)
	now := time.Now()
	if err != nil && !errors.Is(err, errBeaten) {
		// The primary failed on its own while its hedge succeeded: its
		// path is judged as it would have been.
		d.judge(r.ctx, r.path, mpath.OpRead, err)
	}
	d.lostRace(r.path, r.legs[0].pl, now)
	return r.hn, nil
}

// hedgeTarget picks the path for a hedge: the PSP's choice over the current
// view without the slow path.
func (d *Device) hedgeTarget(slow *mpath.Path, n int) *mpath.Path {
	nv := d.view.Load().without(func(p *mpath.Path) bool { return p == slow })
	if nv == nil {
		return nil
	}
	psp := d.psp.Load().psp
	if hs, ok := psp.(hedgeSelector); ok {
		return hs.selectHedge(nv)
	}
	p, _ := psp.Select(nv, mpath.OpRead, n)
	return p
}

// hedgeSelector is a PSP whose Select changes its own state (the current
// path of FIXED and MRU), which a hedge must not do: it picks the hedge's
// path without side effects.
type hedgeSelector interface {
	selectHedge(v *View) *mpath.Path
}

func (f *fixed) selectHedge(v *View) *mpath.Path {
	best := v.Best()
	pref := f.pref.Load()
	for _, p := range best {
		if p == pref {
			return p
		}
	}
	return best[0]
}

func (m *mru) selectHedge(v *View) *mpath.Path {
	best := v.Best()
	pick := best[0]
	for _, p := range best[1:] {
		if p.Rank.Load() > pick.Rank.Load() {
			pick = p
		}
	}
	return pick
}
