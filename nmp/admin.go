package nmp

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// Status snapshots the device's topology and counters.
func (d *Device) Status() mpath.DeviceStatus {
	v := d.view.Load()
	psp := d.psp.Load().psp
	ident := d.Identity()
	st := mpath.DeviceStatus{
		Name:       d.name,
		Size:       d.size,
		WWID:       ident.WWID,
		Vendor:     ident.Vendor,
		Model:      ident.Model,
		MPP:        "NMP",
		SATP:       d.satp.Name(),
		SATPConfig: d.satp.Config(),
		PSP:        psp.Name(),
		PSPConfig:  psp.Config(),
		Failovers:  d.failovers.Load(),
		APDEntries: d.apdEntries.Load(),
		QueueDepth: d.queueDepth.Load(),
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
	if f, ok := psp.(*fixed); ok {
		pref, _ = f.Preferred()
	}
	now := time.Now()
	d.mu.Lock()
	if !d.mu.apdSince.IsZero() {
		t := d.mu.apdSince
		st.APD, st.APDSince = true, &t
	}
	paths := append([]*mpath.Path(nil), d.mu.paths...)
	held := map[*mpath.Path]bool{}
	for _, p := range paths {
		if f := d.mu.flap[p]; f != nil && now.Before(f.holdUntil) {
			held[p] = true
		}
	}
	d.mu.Unlock()
	for _, p := range paths {
		ps := p.Status()
		ps.Preferred = p == pref
		ps.HeldDown = held[p]
		if g, ok := v.GroupOf[p]; ok {
			ps.Group = g
		} else {
			ps.Group = -1
		}
		d.decorateHedge(p, &ps) // hedge_slow.go
		if dec, ok := d.satp.(PathDecorator); ok {
			dec.DecoratePath(p, &ps)
		}
		st.Paths = append(st.Paths, ps)
	}
	st.Ambiguous = d.Ambiguous()
	d.hedgeStatus(&st) // hedge_slow.go
	return st
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
	return findPath(d.mu.paths, name)
}

// SetPathAdmin switches a path off (disabled: no I/O, no probes) or on
// (probed at once, then active or dead). Switching a path on also forgets
// its flap history and a permanent device loss.
func (d *Device) SetPathAdmin(name string, on bool) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	now := time.Now()
	if !on {
		d.mu.Lock()
		p.SetAdminOff(true)
		d.setStateLocked(p, mpath.StateDisabled, "administratively off", now)
		d.rebuildLocked(now)
		d.mu.Unlock()
		return nil
	}
	err := d.probe(p)
	want, reason := d.satp.Checked(p, err)
	d.mu.Lock()
	defer d.mu.Unlock()
	p.SetAdminOff(false)
	p.SetPDL(false)
	delete(d.mu.flap, p)
	if want == mpath.StateActive {
		reason = "administratively on; probe passed"
	} else {
		reason = "administratively on; " + reason
	}
	d.setStateLocked(p, want, reason, now)
	d.rebuildLocked(now)
	return nil
}

// FailPath marks a path dead at once (a hot-removed device), before any
// I/O hits it.
func (d *Device) FailPath(name, reason string) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.State() != mpath.StateDead {
		d.setStateLocked(p, mpath.StateDead, reason, now)
		d.rebuildLocked(now)
	}
	return nil
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
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	old := d.psp.Load().psp
	psp.ViewChanged(d.view.Load())
	d.psp.Store(&pspBox{psp})
	d.cfg.PSP, d.cfg.PSPOptions = name, maps.Clone(opts)
	d.events.Publish(mpath.Event{Time: now, Kind: "policy", Device: d.name, From: old.Name() + " " + old.Config(), To: psp.Name() + " " + psp.Config(), Reason: "policy set"})
	return nil
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
// same store. It is probed at once and joins as active or dead.
func (d *Device) AddPath(p *mpath.Path) error {
	d.mu.Lock()
	seen := map[string]bool{}
	for _, q := range d.mu.paths {
		seen[q.Name] = true
	}
	err := d.admit(p, seen)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	perr := d.probe(p)
	want, reason := d.satp.Checked(p, perr)
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if findPath(d.mu.paths, p.Name) != nil {
		return fmt.Errorf("device %s already has a path %s", d.name, p.Name)
	}
	d.mu.paths = append(d.mu.paths, p)
	p.SetState(want, "added: "+reason, now)
	d.events.Publish(mpath.Event{Time: now, Kind: "path-added", Device: d.name, Path: p.Name, To: want.String(), Reason: p.URI})
	d.updateCapsLocked()
	d.rebuildLocked(now)
	return nil
}

// RemovePath takes a path out of the device and closes its backend.
func (d *Device) RemovePath(name string) error {
	now := time.Now()
	d.mu.Lock()
	idx := -1
	for i, p := range d.mu.paths {
		if p.Name == name || p.URI == name {
			idx = i
		}
	}
	if idx < 0 {
		d.mu.Unlock()
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	p := d.mu.paths[idx]
	d.pathLeaving(p)
	d.mu.paths = append(append([]*mpath.Path(nil), d.mu.paths[:idx]...), d.mu.paths[idx+1:]...)
	delete(d.mu.flap, p)
	d.events.Publish(mpath.Event{Time: now, Kind: "path-removed", Device: d.name, Path: p.Name, Reason: p.URI})
	d.updateCapsLocked()
	d.rebuildLocked(now)
	d.mu.Unlock()
	// I/O still in flight on the path finishes (or fails over) first.
	for i := 0; i < 100 && p.Inflight.Load() > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	d.pathRemoved(p) // flushed on its way out, or an orphan for the next Flush
	return p.Backend.Close()
}

// Probe runs a health check on a named path now and returns its result.
func (d *Device) Probe(ctx context.Context, name string) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	return d.probe(p)
}
