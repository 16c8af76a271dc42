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

// apdCheckInterval is how often the checker probes while no path is usable:
// every queued I/O waits for the first path to come back.
const apdCheckInterval = 250 * time.Millisecond

// probeGrace is how long past its deadline a probe is given to return the
// context's error itself before the checker declares it stuck.
const probeGrace = 50 * time.Millisecond

// probe runs one health check on a path, in its own goroutine and under its
// own deadline (the probe timeout, within ctx): a probe that does not honour
// its context — a system call that cannot be interrupted — fails its own
// path at the deadline and keeps running in the background; the path is
// not probed again until it returned. A ctx that ends first ends the wait
// with its error.
func (d *Device) probe(ctx context.Context, p *mpath.Path) (perr error) {
	// pr.go, after the identity check; with the caller's ctx (the probe's
	// own deadline below ends before the deferred calls run).
	defer func(ctx context.Context) { perr = d.prAfterProbe(ctx, p, perr) }(ctx)
	defer func() { perr = d.identityAfterProbe(p, perr) }() // identity.go
	d.stuck.Lock()
	since, stuck := d.stuck.m[p]
	d.stuck.Unlock()
	if stuck {
		return &ioerr.Error{Class: ioerr.ClassPathFailure, Op: "probe", Path: p.Name,
			Err: fmt.Errorf("the probe started %s ago has not returned: %w", time.Since(since).Round(time.Millisecond), context.DeadlineExceeded)}
	}
	start := time.Now()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ProbeTimeout)
	defer cancel()
	var mu sync.Mutex // guards finished and abandoned
	finished, abandoned := false, false
	done := make(chan error, 1)
	started := d.stopper.goCall(func() {
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
	})
	if !started {
		return ioerr.ErrClosed
	}
	var err error
	select {
	case err = <-done:
		return err
	case <-d.stopper.done(): // the checker must not wait past a device close
		err = ioerr.ErrClosed
	case <-ctx.Done():
		grace := time.NewTimer(probeGrace)
		select {
		case err = <-done:
			grace.Stop()
			return err
		case <-grace.C:
		}
		if perr := parent.Err(); perr != nil {
			err = perr // the caller gave up, not the probe's deadline
			break
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

// CheckNow runs one round of the path checker and returns once the owner
// applied its results.
func (d *Device) CheckNow() { d.checkRound(time.Time{}, false) }

// checkRound probes the paths in parallel, each under its own deadline: a
// hung path's probe fails that path at the probe timeout and delays the
// verdict on the others by no more; its stuck probe gets no successor until
// it returned. The results go to the owner as one event, in claim order,
// once every probe answered; then an Updater SATP re-inquires the paths,
// and the round's end is an event too (sched: a round the owner started,
// at start, whose end schedules the next).
func (d *Device) checkRound(start time.Time, sched bool) {
	if !d.probeNow(d.Paths()) {
		return // closed
	}
	d.reinquire()
	d.tell(event{kind: evChecked, start: start, sched: sched})
}

// probeNow probes paths (those switched off or in PDL excepted) in
// parallel, each under its own deadline, and has the owner apply the
// results as one event; false: the device closed.
func (d *Device) probeNow(paths []*mpath.Path) bool { return d.probeNowWhy(paths, "") }

// probeNowWhy is probeNow with why, when not "", added to the reason of
// each path-state change the probes cause.
func (d *Device) probeNowWhy(paths []*mpath.Path, why string) bool {
	results := make([]probeResult, 0, len(paths))
	for _, p := range paths {
		if p.AdminOff() || p.PDL() {
			continue
		}
		results = append(results, probeResult{p: p})
	}
	var wg sync.WaitGroup
	for i := range results {
		r := &results[i]
		wg.Add(1)
		if !d.stopper.goWork(func() {
			defer wg.Done()
			r.err = d.probe(d.stopper.ctx, r.p) // returns by its deadline
		}) {
			r.err = ioerr.ErrClosed
			wg.Done()
		}
	}
	wg.Wait()
	d.probedPDL(results) // state.go: a probe answered with PDL marks its path
	return d.tell(event{kind: evProbed, probes: results, reason: why}).err == nil
}

// Recheck probes one path now, outside the checker's schedule, when it is
// out of service (dead, or waiting for its first probe), and applies the
// result as a checker round does (flap damping included), with why added
// to the reason of the path-state change. An Updater SATP then re-inquires
// the path states, as after a round. Hotplug calls it when the kernel
// reports a change on the path's block device (a uevent), so a returning
// path is back at once instead of at the next checker round. A path in
// service is left to the checker and its I/O: probed reports whether a
// probe ran.
func (d *Device) Recheck(name, why string) (probed bool, err error) {
	p := d.FindPath(name)
	if p == nil {
		return false, fmt.Errorf("device %s has no path %q", d.name, name)
	}
	if st := p.State(); st != mpath.StateDead && st != mpath.StateUnknown {
		return false, nil
	}
	if !d.probeNowWhy([]*mpath.Path{p}, why) {
		return true, ioerr.ErrClosed
	}
	d.reinquire()
	return true, nil
}

// reinquire is update under the probe timeout, on the device's own
// context: after a checker round, a recheck, or a path failure's burst.
func (d *Device) reinquire() {
	if _, ok := d.SATP().(Updater); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(d.stopper.ctx, d.cfg.ProbeTimeout)
	d.update(ctx)
	cancel()
}

// update asks an Updater SATP to re-inquire path states (I/O, in the
// caller) and reports the changes it asks for to the owner.
func (d *Device) update(ctx context.Context) { d.updateWith(ctx, d.tell) }

// updateSoon re-inquires the path states in the background, for an I/O
// that failed on a path while another path is usable: its retry need not
// wait for the answer (the failed path is out of the view already). All the
// I/Os that failed together — every one in flight on a path that died —
// share one re-inquiry: a request made while one runs makes it run once
// more after it, not once per I/O.
func (d *Device) updateSoon() {
	if _, ok := d.SATP().(Updater); !ok {
		return
	}
	if d.reinquireReqs.Add(1) != 1 {
		return // the running re-inquiry will run again
	}
	if !d.stopper.goWork(func() {
		for {
			n := d.reinquireReqs.Load()
			d.reinquire()
			if d.reinquireReqs.Add(-n) == 0 {
				return
			}
		}
	}) {
		d.reinquireReqs.Store(0)
	}
}

// updateWith is update reporting through send: tell, or report for an I/O
// whose retry waits for the new states (a unit attention, or a path
// failure that left no usable path).
func (d *Device) updateWith(ctx context.Context, send func(event) result) {
	u, ok := d.SATP().(Updater)
	if !ok {
		return
	}
	changes, err := u.Update(ctx, d.Paths())
	if err != nil && len(changes) == 0 {
		return
	}
	if len(changes) > 0 {
		send(event{kind: evChanges, changes: changes})
	}
}
