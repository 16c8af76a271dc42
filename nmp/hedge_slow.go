package nmp

import (
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// Slow paths: the gray failure hedging uncovers. A path whose reads keep
// losing to their hedges (hedge_slow_losses of them in a row, or within
// DefaultSlowWindow and at least as many as its reads that completed in
// that window: a healthy path on a busy machine loses a race now and then,
// a hung or crawling one loses nearly all) still answers, only too late, so neither the SATP nor
// the checker fails it. It is marked slow (event path-slow, status field
// slow, counter hedge_lost) and demoted into a "marginal" group after every
// other group of the view: the PSP routes there only while no other path is
// usable. It stays marginal for the device's hold-down period, doubling each
// time it is demoted again soon after its return (as flap damping does),
// then is back in its own group (event path-slow-end); a path still slow
// loses again and is demoted again.

// lostRace records that a read on path lost to its hedge.
func (d *Device) lostRace(path *mpath.Path, pl *pathLat, now time.Time) {
	pl.lost.Add(1)
	h := d.hedge.Load()
	if h == nil || h.cfg.slowLosses <= 0 {
		return
	}
	pl.mu.Lock()
	// The window: losses and the path's good reads since it began.
	if pl.winStart.IsZero() || now.Sub(pl.winStart) > h.cfg.slowWindow {
		pl.winStart, pl.winReads0, pl.winLosses = now, pl.count.Load(), 0
	}
	pl.winLosses++
	good := pl.count.Load() - pl.winReads0
	streak := pl.streak.Add(1)
	// Slow: hedge_slow_losses lost in a row (no good read in between: a
	// hung path), or that many in the window and at least as many as its
	// good reads (a crawling one). A healthy path under load loses a race
	// now and then among many good reads.
	lossy := pl.winLosses >= uint64(h.cfg.slowLosses) && pl.winLosses >= good
	if pl.slow.Load() || (streak < uint32(h.cfg.slowLosses) && !lossy) {
		pl.mu.Unlock()
		return
	}
	d.markMarginalLocked(path, pl, now, h.cfg.slowWindow, "path-slow",
		fmt.Sprintf("%d reads lost to their hedges within %v", h.cfg.slowLosses, h.cfg.slowWindow))
}

// markMarginalLocked demotes a path to the marginal group for the
// device's hold-down period, doubling when it is demoted again within two
// windows of its return; the hedge's slow reads and a run of retryable
// errors (marginal.go) both land here. pl.mu is held; it is released.
func (d *Device) markMarginalLocked(path *mpath.Path, pl *pathLat, now time.Time, window time.Duration, kind, why string) {
	select {
	case <-d.stopper.done():
		pl.mu.Unlock()
		return
	default:
	}
	// Demoted again within two windows of its return: hold it longer.
	if !pl.slowUntil.IsZero() && now.Sub(pl.slowUntil) > 2*window {
		pl.level = 0
	}
	hold := d.cfg.HoldDown << pl.level
	if hold <= 0 || hold > maxHoldDown {
		hold = maxHoldDown
	}
	pl.level++
	pl.slow.Store(true)
	pl.slowSince = now
	pl.slowUntil = now.Add(hold)
	pl.winStart = time.Time{}
	pl.streak.Store(0)
	pl.errs = pl.errs[:0]
	if pl.timer != nil {
		pl.timer.Stop()
	}
	pl.timer = time.AfterFunc(hold, func() { d.slowEnds(path, pl) })
	pl.mu.Unlock()
	d.events.Publish(mpath.Event{Time: now, Kind: kind, Device: d.name, Path: path.Name, To: "marginal",
		Reason: fmt.Sprintf("%s: demoted to the marginal group for %v", why, hold)})
	d.tell(event{kind: evRegroup}) // the owner rebuilds the view
}

// slowEnds takes a path out of the marginal group when its time is up.
func (d *Device) slowEnds(path *mpath.Path, pl *pathLat) {
	now := time.Now()
	pl.mu.Lock()
	if !pl.slow.Load() || now.Before(pl.slowUntil) {
		pl.mu.Unlock()
		return
	}
	pl.slow.Store(false)
	pl.timer = nil
	pl.mu.Unlock()
	if d.closing.Load() {
		return
	}
	d.events.Publish(mpath.Event{Time: now, Kind: "path-slow-end", Device: d.name, Path: path.Name, From: "marginal",
		Reason: "back in its group after its hold; demoted again if its reads keep losing"})
	d.tell(event{kind: evRegroup}) // the owner rebuilds the view
}

// isSlow reports whether the path is in the marginal group.
func (pl *pathLat) isSlow() bool { return pl.slow.Load() }

// demoteSlowLocked moves slow paths out of their groups into a marginal
// group after the others, when some other path is usable (the owner, as it
// publishes a view).
func (d *Device) demoteSlowLocked(v *View, _ time.Time) {
	all := d.lat.all()
	if len(all) == 0 || len(v.Usable) < 2 {
		return
	}
	var slow []*mpath.Path
	for _, p := range v.Usable {
		if pl := all[p]; pl != nil && pl.isSlow() {
			slow = append(slow, p)
		}
	}
	if len(slow) == 0 || len(slow) == len(v.Usable) {
		return
	}
	isSlow := func(p *mpath.Path) bool {
		for _, s := range slow {
			if s == p {
				return true
			}
		}
		return false
	}
	var groups [][]*mpath.Path
	var usable []*mpath.Path
	for _, g := range v.Groups {
		var ng []*mpath.Path
		for _, p := range g {
			if !isSlow(p) {
				ng = append(ng, p)
			}
		}
		if len(ng) > 0 {
			groups = append(groups, ng)
			usable = append(usable, ng...)
		}
	}
	v.Groups = append(groups, slow)
	v.Usable = append(usable, slow...)
}

// closeHedge stops the slow paths' timers (Close).
func (d *Device) closeHedge() {
	for _, pl := range d.lat.all() {
		pl.mu.Lock()
		if pl.timer != nil {
			pl.timer.Stop()
			pl.timer = nil
		}
		pl.mu.Unlock()
	}
}

// decorateHedge adds a path's hedging fields to its status.
func (d *Device) decorateHedge(p *mpath.Path, st *mpath.PathStatus) {
	pl := d.lat.peek(p)
	if pl == nil {
		return
	}
	h := d.hedge.Load()
	if h != nil {
		st.HedgeThresholdU = float64(pl.threshold(&h.cfg)) / 1e3
	}
	st.ReadP99U = float64(pl.p99.Load()) / 1e3
	st.Hedged = pl.hedged.Load()
	st.HedgeLost = pl.lost.Load()
	st.HedgeWon = pl.won.Load()
	st.Slow = pl.isSlow()
	st.Marginal = st.Slow
}

// hedgeStatus fills the device's hedging fields of status.
func (d *Device) hedgeStatus(st *mpath.DeviceStatus) {
	cfg := d.Config()
	st.Options.HedgeReads = cfg.HedgeReads
	st.Options.HedgeMultiplier = cfg.HedgeMultiplier
	st.Options.HedgeFloor = cfg.HedgeFloor.String()
	st.Options.HedgeCeiling = cfg.HedgeCeiling.String()
	if h := d.hedge.Load(); h != nil {
		st.HedgedReads = h.issued.Load()
		st.HedgeWins = h.won.Load()
	}
}
