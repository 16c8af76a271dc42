package nmp

import (
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// A device's state, as esxcli storage core device list shows it ("Status"):
// on (serves I/O), off (detached by the administrator: `device set --state
// off`, esxcli's `device set --state=off`) or dead (detached because every
// path is in permanent device loss — ESXi's PDL follow-through). A
// detached device refuses every I/O at once with a permanent-loss error
// (EIO, what Linux answers on an open descriptor of a removed disk; a new
// open of its file gets ENXIO, fusedev): off, with an error that says so,
// including the I/Os waiting out All-Paths-Down when it is switched off;
// dead, with the every-path-in-PDL error. Only the administrator attaches
// it again: `device set --state on` forgets every path's
// permanent-device-loss mark and probes every path at once, as `path set
// --state on` does for one path; and a dead device is attached again as
// soon as one path leaves PDL (the administrator switched that path on).
const (
	DeviceOn   = "on"
	DeviceOff  = "off"
	DeviceDead = "dead"
)

// detachment is why and since when a device is detached.
type detachment struct {
	state  string // DeviceOff or DeviceDead
	reason string
	since  time.Time
	err    error // what its I/O fails with
}

// DeviceState returns the device's state (DeviceOn, DeviceOff or
// DeviceDead), why and since when (zero while on).
func (d *Device) DeviceState() (state, reason string, since time.Time) {
	if dt := d.detached.Load(); dt != nil {
		return dt.state, dt.reason, dt.since
	}
	return DeviceOn, "", time.Time{}
}

// Detached reports whether the device refuses I/O (off or dead).
func (d *Device) Detached() bool { return d.detached.Load() != nil }

// detachedErr is the error of an I/O on a device switched off, nil
// otherwise (one atomic load). A dead device's I/O fails where it always
// did: no path left, every path in PDL (waitForPath).
func (d *Device) detachedErr() error {
	if dt := d.detached.Load(); dt != nil && dt.state == DeviceOff {
		return dt.err
	}
	return nil
}

// SetDeviceState detaches (on false) or attaches (on true) the device by
// hand. Detaching an off device is an error; attaching an attached one
// too. Detaching wakes the I/Os waiting for a path, which then fail.
func (d *Device) SetDeviceState(on bool, reason string) error {
	now := time.Now()
	if !on {
		if reason == "" {
			reason = "detached by the administrator"
		}
		if !d.detach(DeviceOff, reason, now) {
			st, r, _ := d.DeviceState()
			return fmt.Errorf("device %s is %s already (%s): `mpathfs device set --state on %s` attaches it", d.name, st, r, d.name)
		}
		return nil
	}
	dt := d.detached.Load()
	if dt == nil {
		return fmt.Errorf("device %s is on already", d.name)
	}
	// Forget every path's PDL and probe it (the administrator's word that
	// the LU is back), then serve I/O again.
	var first error
	for _, p := range d.Paths() {
		if p.AdminOff() {
			continue // switched off on its own: stays off
		}
		if err := d.SetPathAdmin(p.Name, true); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("device %s: attaching: %w", d.name, first)
	}
	if !d.detached.CompareAndSwap(dt, nil) {
		if d.detached.Load() == nil {
			return nil // a dead device: a path leaving PDL attached it
		}
		return fmt.Errorf("device %s changed state while attaching: try again", d.name)
	}
	d.mu.Lock()
	d.applyLocked([]action{{kind: actView}, {kind: actPublish, ev: mpath.Event{Time: time.Now(), Kind: "device-attached",
		Device: d.name, From: dt.state, To: DeviceOn, Reason: "attached by the administrator: every path probed"}}}, time.Now())
	d.mu.Unlock()
	return nil
}

// detach puts the device in state (off or dead) unless it is detached
// already; it publishes device-detached and wakes the I/Os waiting for a
// path. It takes d.mu: not for callers holding it (pdlFollowThrough).
func (d *Device) detach(state, reason string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detachLocked(state, reason, now, true)
}

func (d *Device) detachLocked(state, reason string, now time.Time, newView bool) bool {
	dt := &detachment{state: state, reason: reason, since: now}
	dt.err = &ioerr.Error{Class: ioerr.ClassPermanentLoss, Op: "io",
		Err: fmt.Errorf("device %s is detached (%s: %s): `mpathfs device set --state on %s` attaches it", d.name, state, reason, d.name)}
	if !d.detached.CompareAndSwap(nil, dt) {
		return false
	}
	acts := []action{{kind: actPublish, ev: mpath.Event{Time: now, Kind: "device-detached", Device: d.name,
		From: DeviceOn, To: state, Reason: reason}}}
	if newView {
		acts = append(acts, action{kind: actView}) // wakes waitForPath
	}
	d.applyLocked(acts, now)
	return true
}

// pdlFollowThrough runs after each step of the owner (handle, d.mu
// held): it detaches the device (dead) once every path is in permanent
// device loss — ESXi's PDL follow-through; the waiting I/Os fail on their
// PDL anyway — and attaches a dead device again once one of its paths
// left PDL (only the administrator clears a PDL mark). A device switched
// off stays off.
func (d *Device) pdlFollowThrough(now time.Time) {
	paths := d.mu.dec.paths
	allPDL := len(paths) > 0
	for _, p := range paths {
		if !p.PDL() {
			allPDL = false
			break
		}
	}
	dt := d.detached.Load()
	if allPDL {
		if dt == nil {
			d.detachLocked(DeviceDead, fmt.Sprintf("permanent device loss on every path (%d)", len(paths)), now, false)
		}
		return
	}
	if dt == nil || dt.state != DeviceDead || !d.detached.CompareAndSwap(dt, nil) {
		return
	}
	d.applyLocked([]action{{kind: actPublish, ev: mpath.Event{Time: now, Kind: "device-attached", Device: d.name,
		From: DeviceDead, To: DeviceOn, Reason: "a path left permanent device loss (switched on by the administrator)"}}}, now)
}

// probedPDL reports the probes of a checker round that the SATP judged a
// permanent device loss (05/25/00 on a TEST UNIT READY, as ESXi and the
// tur checker read it) as failed I/O of class permanent loss, before the
// round's results: the decider marks those paths PDL (ioFailed) — not
// merely dead — so a LU gone from every path is detached even when no
// data I/O met the loss first.
func (d *Device) probedPDL(results []probeResult) {
	for _, r := range results {
		if r.err == nil || r.p.PDL() {
			continue
		}
		v := d.SATP().Classify(r.p, mpath.OpProbe, r.err)
		if v.Class != ioerr.ClassPermanentLoss {
			continue
		}
		if d.tell(event{kind: evIOFailed, path: r.p, op: mpath.OpProbe, err: r.err, verdict: v}).err != nil {
			return // closed
		}
	}
}
