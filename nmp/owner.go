package nmp

import (
	"context"
	"maps"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// The owner: one goroutine per device takes the events (inbox), stamps
// them with its clock, has the decider (decide.go) decide, and applies the
// actions — the only writer of path states, the routing view and the
// decider's bookkeeping. Everything else reports: an I/O that failed, a
// checker round, an SATP update or activation, an administrator's command.
//
// A report is synchronous: the reporter waits for the owner to have
// applied it; the owner does no I/O, so the wait is one goroutine hand-off
// and the step (a few microseconds). A failed I/O, whose retry must find
// the next path at once (the new view no longer holds the failed path),
// does not even wait for the hand-off: it steps the decider itself, under
// the lock that serialises the owner's steps (report). A healthy I/O
// reports nothing and never meets the owner.

// ownerQueue bounds the owner's inbox. Failing I/Os report only while
// their path is still in service, so the queue holds at most about one
// report per in-flight I/O of a path that just failed.
const ownerQueue = 64

// request is an event on its way to the owner; done gets the reply.
type request struct {
	ev   event
	done chan result
}

// tell hands an event to the owner and waits until it was applied. It
// returns ioerr.ErrClosed once the device stopped.
func (d *Device) tell(ev event) result {
	done := make(chan result, 1)
	select {
	case d.inbox <- request{ev: ev, done: done}:
	case <-d.stopper.done():
		return result{err: ioerr.ErrClosed}
	}
	select {
	case r := <-done:
		return r
	case <-d.stopper.done():
		return result{err: ioerr.ErrClosed}
	}
}

// report is tell for a failed I/O, whose retry waits for the decision: the
// reporting goroutine steps the decider and applies the actions itself,
// under the device lock that serialises it with the owner — the same
// decider, the same actions, one applier at a time — instead of waking the
// owner and waiting for it to be scheduled. Measured: the hand-off to the
// owner goroutine added 30 to 80 µs to every I/O that fails over on a
// loaded machine (BenchmarkFailoverWrite); this adds nothing.
func (d *Device) report(ev event) result {
	select {
	case <-d.stopper.done():
		return result{err: ioerr.ErrClosed}
	default:
	}
	return d.handle(ev)
}

// own is the owner goroutine.
func (d *Device) own() {
	defer d.timer.Stop()
	for {
		select {
		case r := <-d.inbox:
			r.done <- d.handle(r.ev)
		case <-d.timer.C:
			d.handle(event{kind: evTick})
		case <-d.stopper.done():
			return
		}
	}
}

// handle decides one event and applies the actions, under mu so that
// readers (Status, Paths) see a whole step.
func (d *Device) handle(ev event) result {
	ev.now = time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	acts, res := d.mu.dec.step(ev)
	d.applyLocked(acts, ev.now)
	d.pdlFollowThrough(ev.now) // state.go: every path in PDL detaches the device
	return res
}

// applyLocked carries out the decider's actions, in order.
func (d *Device) applyLocked(acts []action, now time.Time) {
	for _, a := range acts {
		switch a.kind {
		case actSetState:
			if old := a.path.SetState(a.to, a.reason, now); old == mpath.StateActive && a.to != old {
				d.failovers.Add(1)
			}
		case actSetPDL:
			a.path.SetPDL(a.on)
		case actSetAdmin:
			a.path.SetAdminOff(a.on)
		case actPublish:
			if a.ev.Kind == "apd-enter" {
				d.apdEntries.Add(1)
			}
			d.events.Publish(a.ev)
		case actView:
			v, more := d.mu.dec.view(now)
			d.demoteSlowLocked(v, now) // hedge_slow.go
			d.psp.Load().psp.ViewChanged(v)
			if old := d.view.Swap(v); old != nil {
				close(old.changed)
			}
			d.applyLocked(more, now)
		case actActivate:
			d.startActivation(a.paths)
		case actCheck:
			d.startCheck(now)
		case actSchedule:
			d.timer.Reset(a.after)
		case actCaps:
			d.updateCapsLocked()
		case actLeaving:
			d.pathLeaving(a.path)
		case actPolicy:
			old := d.psp.Load().psp
			a.psp.ViewChanged(d.view.Load())
			d.psp.Store(&pspBox{a.psp})
			d.cfg.PSP, d.cfg.PSPOptions = a.psp.Name(), maps.Clone(a.opts)
			d.events.Publish(mpath.Event{Time: now, Kind: "policy", Device: d.name, From: old.Name() + " " + old.Config(),
				To: a.psp.Name() + " " + a.psp.Config(), Reason: "policy set"})
		}
	}
}

// startCheck starts a scheduled checker round; its end (evChecked)
// schedules the next.
func (d *Device) startCheck(now time.Time) {
	d.stopper.goWork(func() { d.checkRound(now, true) })
}

// startActivation runs the SATP's activation (trespass, STPG) under the I/O
// timeout; its outcome is an event.
func (d *Device) startActivation(paths []*mpath.Path) {
	a, ok := d.SATP().(Activator)
	if !ok {
		return
	}
	d.stopper.goWork(func() {
		ctx, cancel := context.WithTimeout(d.stopper.ctx, d.cfg.IOTimeout)
		changes, err := a.Activate(ctx, paths)
		cancel()
		d.tell(event{kind: evActivated, changes: changes, err: err})
	})
}
