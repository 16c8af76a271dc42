package nmp

import (
	"context"
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// Status snapshots the device's topology and counters.
func (d *Device) Status() mpath.DeviceStatus {
	v := d.view.Load()
	psp := d.psp.Load().psp
	ident := d.Identity()
	st := mpath.DeviceStatus{
		Name:                 d.name,
		Size:                 d.size,
		WWID:                 ident.WWID,
		Vendor:               ident.Vendor,
		Model:                ident.Model,
		MPP:                  "NMP",
		SATP:                 d.SATP().Name(),
		SATPConfig:           d.SATP().Config(),
		PSP:                  psp.Name(),
		PSPConfig:            psp.Config(),
		Failovers:            d.failovers.Load(),
		APDEntries:           d.apdEntries.Load(),
		QueueDepth:           d.queueDepth.Load(),
		ReservationConflicts: d.pr.conflicts.Load(),
		Options: mpath.DeviceOpts{
			IOTimeout:     d.cfg.IOTimeout.String(),
			APDTimeout:    d.cfg.APDTimeout.String(),
			CheckInterval: d.cfg.CheckInterval.String(),
			FlapThreshold: d.cfg.FlapThreshold,
			FlapWindow:    d.cfg.FlapWindow.String(),
			HoldDown:      d.cfg.HoldDown.String(),
		},
	}
	var pref *mpath.Path
	if pp, ok := psp.(PreferredPather); ok {
		pref, _ = pp.Preferred()
	}
	now := time.Now()
	d.mu.Lock()
	dec := d.mu.dec
	if !dec.apdSince.IsZero() {
		t := dec.apdSince
		st.APD, st.APDSince = true, &t
	}
	paths := append([]*mpath.Path(nil), dec.paths...)
	held := map[*mpath.Path]bool{}
	fbHeld := map[*mpath.Path]bool{}
	for _, p := range paths {
		if dec.held(p, now) {
			held[p] = true
		}
		if dec.isHeld(p) {
			fbHeld[p] = true
		}
	}
	dec.policyStatus(&st.Options) // policy.go
	d.mu.Unlock()
	for _, p := range paths {
		ps := p.Status()
		ps.Preferred = p == pref
		ps.HeldDown = held[p]
		ps.FailbackHeld = fbHeld[p]
		if g, ok := v.GroupOf[p]; ok {
			ps.Group = g
		} else {
			ps.Group = -1
		}
		d.decorateHedge(p, &ps) // hedge_slow.go
		if dec, ok := d.SATP().(PathDecorator); ok {
			dec.DecoratePath(p, &ps)
		}
		st.Paths = append(st.Paths, ps)
	}
	if k, _ := d.PRKey(); k != 0 {
		st.PRKey = fmt.Sprintf("0x%x", k)
	}
	d.stateFields(&st, v, psp, paths, held) // status_fields.go
	st.Ambiguous = d.Ambiguous()
	d.hedgeStatus(&st) // hedge_slow.go
	return st
}

// PreferredPather is a PSP that has a preferred path (VMW_PSP_FIXED):
// Status marks it.
type PreferredPather interface {
	// Preferred returns the preferred path and whether the user chose it.
	Preferred() (p *mpath.Path, user bool)
}

// PathDecorator is an SATP that adds its own fields to a path's status
// (ALUA: the target port group and its access state).
type PathDecorator interface {
	DecoratePath(p *mpath.Path, st *mpath.PathStatus)
}

// FindPath returns the device's path with a name or URI.
func (d *Device) FindPath(name string) *mpath.Path {
	d.mu.Lock()
	defer d.mu.Unlock()
	return findPath(d.mu.dec.paths, name)
}

// SetPathAdmin switches a path off (disabled: no I/O, no probes) or on
// (probed at once, then active or dead). Switching a path on also forgets
// its flap history and a permanent device loss.
func (d *Device) SetPathAdmin(name string, on bool) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	var err error
	if on {
		err = d.probe(d.stopper.ctx, p)
	}
	return d.tell(event{kind: evAdmin, path: p, on: on, err: err}).err
}

// FailPath marks a path dead at once (a hot-removed device), before any
// I/O hits it.
func (d *Device) FailPath(name, reason string) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	return d.tell(event{kind: evFail, path: p, reason: reason}).err
}

// SetPolicy changes the device's PSP and its options live: I/O in flight
// finishes on the old PSP, the next I/O uses the new one.
func (d *Device) SetPolicy(name string, opts map[string]string) error {
	if name == "" {
		name = d.psp.Load().psp.Name()
	}
	psp, err := NewPSP(name, opts, d.Paths())
	if err != nil {
		return fmt.Errorf("device %s: %w", d.name, err)
	}
	return d.tell(event{kind: evPolicy, psp: psp, opts: opts}).err
}

// SetPathRank sets a path's MRU rank (higher is preferred).
func (d *Device) SetPathRank(name string, rank int) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	p.Rank.Store(int32(rank))
	return nil
}

// AddPath adds a path to the device live, after checking it leads to the
// same store. It joins as unknown, carrying no I/O, and is probed at once;
// AddPath returns once the probe's verdict (active, standby or dead, within
// the probe timeout) was applied.
func (d *Device) AddPath(p *mpath.Path) error {
	d.mu.Lock()
	seen := map[string]bool{}
	for _, q := range d.mu.dec.paths {
		seen[q.Name] = true
	}
	err := d.admit(p, seen)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := d.tell(event{kind: evAdd, path: p}).err; err != nil {
		return err
	}
	if d.probeNow([]*mpath.Path{p}) {
		// As after CheckNow: a path its probe left unknown (busy) is
		// probed again soon.
		d.tell(event{kind: evChecked})
	}
	return nil
}

// RemovePath takes a path out of the device and closes its backend, once
// the I/O in flight on it finished (or failed over), up to the I/O timeout.
func (d *Device) RemovePath(name string) error {
	res := d.tell(event{kind: evRemove, name: name})
	if res.err != nil {
		return res.err
	}
	p := res.path
	d.drain(p, d.cfg.IOTimeout+probeGrace)
	d.pathRemoved(p) // flushed on its way out, or an orphan for the next Flush
	return p.Backend.Close()
}

// Probe runs a health check on a named path now and returns its result.
func (d *Device) Probe(ctx context.Context, name string) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	return d.probe(ctx, p)
}

// drain waits until no I/O is in flight on p (a path that left the view:
// no new I/O starts on it), up to bound. The last I/O to finish on a path
// being drained wakes the waiter (exec); nothing polls.
func (d *Device) drain(p *mpath.Path, bound time.Duration) {
	ch := make(chan struct{})
	d.drains.mu.Lock()
	if d.drains.m == nil {
		d.drains.m = map[*mpath.Path]chan struct{}{}
	}
	d.drains.m[p] = ch
	d.drains.n.Add(1)
	d.drains.mu.Unlock()
	defer func() {
		d.drains.mu.Lock()
		if d.drains.m[p] == ch {
			delete(d.drains.m, p)
		}
		d.drains.n.Add(-1)
		d.drains.mu.Unlock()
	}()
	if p.Inflight.Load() == 0 { // registered first: a later last I/O wakes us
		return
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-d.stopper.done():
	}
}

// drained wakes the drain of p, if one waits: exec calls it when the last
// I/O in flight on a path finished while some path is being drained.
func (d *Device) drained(p *mpath.Path) {
	d.drains.mu.Lock()
	if ch := d.drains.m[p]; ch != nil {
		delete(d.drains.m, p)
		close(ch)
	}
	d.drains.mu.Unlock()
}
