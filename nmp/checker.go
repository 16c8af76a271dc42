package nmp

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// checker probes paths at the check interval: it reinstates dead and
// standby paths that pass (unless damping holds them down) and fails
// active paths that do not, before I/O hits them. Rounds start on a fixed
// schedule: a round slowed by a hung probe does not push the next one back.
func (d *Device) checker() {
	defer d.wg.Done()
	t := time.NewTimer(d.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
			start := time.Now()
			d.CheckNow()
			t.Reset(max(0, d.nextCheck()-time.Since(start)))
		}
	}
}

// apdCheckInterval is how often the checker probes while no path is usable:
// every queued I/O waits for the first path to come back.
const apdCheckInterval = 250 * time.Millisecond

func (d *Device) nextCheck() time.Duration {
	if len(d.view.Load().Usable) == 0 {
		return min(d.cfg.CheckInterval, apdCheckInterval)
	}
	return d.cfg.CheckInterval
}

// probeGrace is how long past its deadline a probe is given to return the
// context's error itself before the checker declares it stuck.
const probeGrace = 50 * time.Millisecond

// probe runs one health check on a path, in its own goroutine and under its
// own deadline (the probe timeout): a probe that does not honour its context
// — a system call that cannot be interrupted — fails its own path at the
// deadline and keeps running in the background; the path is not probed
// again until it returned.
func (d *Device) probe(p *mpath.Path) (perr error) {
	defer func() { perr = d.identityAfterProbe(p, perr) }() // identity.go
	d.stuck.Lock()
	since, stuck := d.stuck.m[p]
	d.stuck.Unlock()
	if stuck {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: p.Name,
			Err: fmt.Errorf("the probe started %s ago has not returned: %w", time.Since(since).Round(time.Millisecond), context.DeadlineExceeded)}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ProbeTimeout)
	defer cancel()
	var mu sync.Mutex // guards finished and abandoned
	finished, abandoned := false, false
	done := make(chan error, 1)
	go func() {
		var err error
		if pr, ok := backends.As[backends.Prober](p.Backend); ok && backends.Can(p.Backend, backends.CapProbe) {
			err = pr.Probe(ctx)
		} else {
			var buf [512]byte
			_, err = p.Backend.ReadAt(ctx, buf[:], 0)
		}
		mu.Lock()
		finished = true
		if abandoned {
			d.stuck.Lock()
			delete(d.stuck.m, p)
			d.stuck.Unlock()
		}
		mu.Unlock()
		done <- err
	}()
	var err error
	select {
	case err = <-done:
		return err
	case <-d.stop: // the checker must not wait past a device close
		err = ioerr.ErrClosed
	case <-ctx.Done():
		grace := time.NewTimer(probeGrace)
		select {
		case err = <-done:
			grace.Stop()
			return err
		case <-grace.C:
		}
		err = &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: p.Name,
			Err: fmt.Errorf("probe still running after its %v deadline: %w", d.cfg.ProbeTimeout, context.DeadlineExceeded)}
	}
	mu.Lock()
	if !finished {
		abandoned = true
		d.stuck.Lock()
		if d.stuck.m == nil {
			d.stuck.m = map[*mpath.Path]time.Time{}
		}
		d.stuck.m[p] = start
		d.stuck.Unlock()
	}
	mu.Unlock()
	return err
}

// CheckNow runs one round of the path checker. Paths are probed in
// parallel, each under its own deadline: a hung path's probe fails that
// path at the probe timeout and delays the verdict on the others by no
// more; its stuck probe gets no successor until it returned. Verdicts are
// applied in claim order, once every probe answered.
func (d *Device) CheckNow() {
	paths := d.Paths()
	type result struct {
		p   *mpath.Path
		err error
	}
	results := make([]result, 0, len(paths))
	for _, p := range paths {
		if p.AdminOff() || p.PDL() {
			continue
		}
		results = append(results, result{p: p})
	}
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func(r *result) {
			defer wg.Done()
			r.err = d.probe(r.p) // returns by its deadline
		}(&results[i])
	}
	wg.Wait()
	now := time.Now()
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return
	}
	changed := false
	for _, r := range results {
		p := r.p
		if p.AdminOff() {
			continue
		}
		want, reason := d.satp.Checked(p, r.err)
		cur := p.State()
		if want == cur {
			continue
		}
		switch want {
		case mpath.StateActive:
			if d.heldDownLocked(p, now) {
				if f := d.mu.flap[p]; f != nil && !f.heldNoted {
					f.heldNoted = true
					d.events.Publish(mpath.Event{Time: now, Kind: "path-held-down", Device: d.name, Path: p.Name,
						Reason: fmt.Sprintf("probe passes but the path flapped: held out until %s", f.holdUntil.Format(time.RFC3339Nano))})
				}
				continue
			}
			d.setStateLocked(p, want, reason, now)
			changed = true
		case mpath.StateDead:
			d.setStateLocked(p, want, reason, now)
			if cur == mpath.StateActive {
				d.noteFailureLocked(p, now)
			}
			changed = true
		default:
			d.setStateLocked(p, want, reason, now)
			changed = true
		}
	}
	if changed {
		d.rebuildLocked(now)
	}
	d.mu.Unlock()
	if _, ok := d.satp.(Updater); ok {
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.ProbeTimeout)
		d.update(ctx)
		cancel()
	}
	// An activation that failed (a trespass refused by the guard, an STPG
	// that timed out) is tried again while no path is usable.
	d.mu.Lock()
	if !d.mu.closed && len(d.view.Load().Usable) == 0 {
		for _, p := range d.mu.paths {
			if p.State() == mpath.StateStandby && !p.AdminOff() {
				d.kickActivateLocked()
				break
			}
		}
	}
	d.mu.Unlock()
}

// update asks an Updater SATP to re-inquire path states and applies them.
func (d *Device) update(ctx context.Context) {
	u, ok := d.satp.(Updater)
	if !ok {
		return
	}
	changes, err := u.Update(ctx, d.Paths())
	if err != nil && len(changes) == 0 {
		return
	}
	d.applyChanges(changes)
}

// applyChanges applies SATP-requested state changes. Paths switched off by
// the administrator, in PDL, or held down by damping are left alone.
func (d *Device) applyChanges(changes []Change) {
	if len(changes) == 0 {
		return
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return
	}
	changed := false
	for _, c := range changes {
		p := c.Path
		if p.AdminOff() || p.PDL() {
			continue
		}
		if c.State == p.State() {
			// The SATP regroups a path (ALUA AO <-> ANO) without a state
			// change: the view must be rebuilt all the same.
			changed = true
			continue
		}
		if c.State == mpath.StateActive && (p.State() == mpath.StateDead || d.heldDownLocked(p, now)) {
			continue // only the checker revives dead paths
		}
		d.setStateLocked(p, c.State, c.Reason, now)
		changed = true
	}
	if changed {
		d.rebuildLocked(now)
	}
}

// kickActivateLocked starts an SATP activation (trespass, STPG) in the
// background when no path is usable but some are standby.
func (d *Device) kickActivateLocked() {
	a, ok := d.satp.(Activator)
	if !ok || d.mu.activating || d.mu.closed {
		return
	}
	d.mu.activating = true
	paths := append([]*mpath.Path(nil), d.mu.paths...)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.IOTimeout)
		go func() {
			select {
			case <-d.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		changes, err := a.Activate(ctx, paths)
		cancel()
		d.mu.Lock()
		d.mu.activating = false
		if err != nil {
			d.events.Publish(mpath.Event{Time: time.Now(), Kind: "activate-failed", Device: d.name, Reason: err.Error()})
		}
		d.mu.Unlock()
		d.applyChanges(changes)
	}()
}
