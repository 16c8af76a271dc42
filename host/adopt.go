package host

import (
	"context"
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/mpath"
)

// Paths that join a running device and leave it: `mpathfs path add`
// (AddPath) and hotplug (hotplug.go) run the same steps as a device that
// is made — open, wrap, identity, claim rules, the identity check against
// a path in service — and the device admits the path live.

// AddPath joins a path to a running device, after the same checks as when
// the device was made: the claim rules, size and identity (label, native
// identity, sample blocks against a usable path of the device). name is
// the path's name ("": its runtime name). It returns the path's status.
func (h *Host) AddPath(ctx context.Context, device, uri, name string) (mpath.PathStatus, error) {
	m, err := h.member(device)
	if err != nil {
		return mpath.PathStatus{}, err
	}
	p, err := h.join(ctx, m, joinRequest{uri: uri, name: name})
	if err != nil {
		return mpath.PathStatus{}, err
	}
	h.publish(mpath.Event{Time: time.Now(), Kind: "path-add", Device: m.dev.Name(), Path: p.Name, To: p.State().String(), Reason: "path add " + p.URI})
	return p.Status(), nil
}

// RemovePath fails a path at once (before more I/O is sent on it), then
// takes it out of its device.
func (h *Host) RemovePath(device, path, reason string) error {
	d, err := h.Device(device)
	if err != nil {
		return err
	}
	if d.FindPath(path) == nil {
		return errorf(ErrNotFound, "device %s has no path %q", device, path)
	}
	d.FailPath(path, reason)
	h.forgetFault(d.FindPath(path))
	return d.RemovePath(path)
}

// forgetFault drops the fault injector of a path that leaves.
func (h *Host) forgetFault(p *mpath.Path) {
	if p == nil {
		return
	}
	h.mu.Lock()
	delete(h.faults, p.Name)
	h.mu.Unlock()
}

// PathRemoval says how `mpathfs path remove` went.
type PathRemoval struct {
	Device string `json:"device"`
	Path   string `json:"path"`
	URI    string `json:"uri"`
	// Dirty: writes were acknowledged on the path since its last flush.
	// Flushed: they were flushed on the path before it left; else
	// FlushError says why not, and the device's next fsync reports them
	// (or covers them through a path sharing the path's cache).
	Dirty      bool   `json:"dirty"`
	Flushed    bool   `json:"flushed"`
	FlushError string `json:"flush_error,omitempty"`
	// Forced: the path was the device's last usable path.
	Forced bool `json:"forced,omitempty"`
	// Left is how many paths the device has now, Usable how many of them
	// could carry I/O.
	Left   int `json:"left"`
	Usable int `json:"usable"`
}

// RemovePathLive takes a path (by name or URI) out of its running device:
// `mpathfs path remove`. The device's last usable path is refused unless
// force (its I/O would have nowhere to go). A path with unflushed writes
// is flushed on itself first while it still works; a path that cannot be
// flushed still leaves, and the removal says so (the device's next fsync
// reports the writes, nmp/flush.go). Then the path is failed, so no more
// I/O is sent on it, and taken out.
func (h *Host) RemovePathLive(ctx context.Context, path string, force bool) (PathRemoval, error) {
	d, p, err := h.FindPath(path)
	if err != nil {
		return PathRemoval{}, err
	}
	r := PathRemoval{Device: d.Name(), Path: p.Name, URI: p.URI}
	paths := d.Paths()
	usable := d.UsablePaths()
	pathUsable := p.State() == mpath.StateActive && !p.AdminOff()
	if len(paths) == 1 || (pathUsable && usable <= 1) {
		if !force {
			what := "last path"
			if len(paths) > 1 {
				what = "last usable path"
			}
			return PathRemoval{}, errorf(ErrRefused, "path %s is the %s of device %s: its I/O would have nowhere to go; bring another path up first, or give --force to remove it anyway", p.Name, what, d.Name())
		}
		r.Forced = true
	}
	if p.Dirty() {
		r.Dirty = true
		if pathUsable {
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := p.Backend.Flush(fctx)
			cancel()
			if err == nil {
				r.Flushed = true
			} else {
				r.FlushError = err.Error()
			}
		} else {
			r.FlushError = "the path is " + p.State().String()
			if p.AdminOff() {
				r.FlushError = "the path is switched off"
			}
		}
	}
	if err := h.RemovePath(d.Name(), p.Name, "path remove"); err != nil {
		return PathRemoval{}, err
	}
	r.Left, r.Usable = len(d.Paths()), d.UsablePaths()
	return r, nil
}

// joinRequest is a path to join: by the operator (strict: its identity
// must be shown, any inquiry error refuses it) or by hotplug (the kernel
// told us the device exists and which WWID it reports).
type joinRequest struct {
	uri, name string
	hot       bool
	// loc is the path's runtime name when it has one already (a path
	// that returns from being masked or unclaimed, a configured
	// location); nil: the device's next adapter.
	loc *mpath.Location
}

func (h *Host) join(ctx context.Context, m *member, r joinRequest) (*mpath.Path, error) {
	d, dc := m.dev, m.cfg
	if dc.Array != nil {
		return nil, errorf(ErrUnsupported, "device %s is served by a simulated array: its paths are its ports", d.Name())
	}
	clean, quiesce, err := mpath.SplitQuiesce(WithInitiator(r.uri, h.name))
	if err != nil {
		return nil, Kinded(ErrInvalid, err)
	}
	u, err := backends.ParseURI(clean)
	if err != nil {
		return nil, Kinded(ErrInvalid, err)
	}
	for _, p := range d.Paths() {
		if p.URI == clean && (r.loc == nil || p.Location == *r.loc) {
			return nil, errorf(ErrExists, "device %s already has path %s (%s)", d.Name(), p.Name, clean)
		}
	}
	octx, cancel := context.WithTimeout(ctx, h.openTimeout)
	defer cancel()
	b, err := backends.Open(octx, clean)
	if err != nil {
		return nil, fmt.Errorf("path %s: %v", clean, err)
	}
	h.mu.Lock()
	for _, p := range d.Paths() {
		m.next = max(m.next, p.Location.Adapter+1)
	}
	adapter := max(m.next, 1)
	m.next = adapter + 1
	lun := m.lun
	h.mu.Unlock()
	fb := fault.Wrap(b, uint64(lun)<<32|uint64(adapter))
	loc := mpath.Location{Adapter: adapter, LUN: lun}
	if r.loc != nil {
		loc = *r.loc
	}
	p := &mpath.Path{Name: r.name, URI: clean, Location: loc, Transport: transportOf(u.Scheme), Backend: fb, Quiesce: quiesce}
	refuse := func(err error) (*mpath.Path, error) {
		fb.Close()
		return nil, err
	}
	if inq, ok := backends.As[backends.Inquirer](b); ok && (r.hot || backends.Can(b, backends.CapInquiry)) {
		if p.Inquiry, err = inq.Inquiry(octx); err != nil && !r.hot {
			return refuse(fmt.Errorf("path %s: inquiry: %v", clean, err))
		}
	}
	if !r.hot && assertable(p) {
		if dc.Vendor != "" {
			p.Inquiry.Vendor = dc.Vendor
		}
		if dc.Model != "" {
			p.Inquiry.Model = dc.Model
		}
		// Only an asserted wwid is adopted: a device formed by
		// GroupByWWID took its WWID from its paths.
		if dc.WWID != "" && !dc.WWIDReported {
			p.Inquiry.WWID = dc.WWID
			if _, err := checkLabel(octx, dc, clean, b); err != nil {
				return refuse(Kinded(ErrRefused, err))
			}
		}
		// An identity that is not the path's own is proven against a
		// path in service, or not at all.
		if d.UsablePaths() == 0 {
			return refuse(errorf(ErrRefused, "device %s has no usable path to check the identity of %s against: add it when a path is up", d.Name(), clean))
		}
	}
	if rule, ok := h.claims.Match(mpath.AttrsOf(p)); !ok || rule.Plugin != d.Status().MPP {
		why := "no claim rule matched"
		if ok {
			why = fmt.Sprintf("claim rule %d: %s", rule.ID, rule.Plugin)
		}
		return refuse(errorf(ErrRefused, "path %s is not claimed by %s (%s)", clean, d.Status().MPP, why))
	}
	// A path to a store the device does not hold yet locks it first.
	var taken *storeLock
	if m.share != nil && !(m.share.ats != nil && u.Scheme == "iscsi") {
		if taken, err = h.lockStore(m.share, d.Name(), clean); err != nil {
			return refuse(Kinded(ErrRefused, err))
		}
	}
	if err := d.VerifyPath(octx, p); err != nil {
		m.share.drop(taken)
		return refuse(errorf(ErrRefused, "device %s: refusing %s: %w", d.Name(), clean, err))
	}
	if err := d.AddPath(p); err != nil {
		m.share.drop(taken)
		return refuse(err)
	}
	h.mu.Lock()
	h.faults[p.Name] = fb
	h.mu.Unlock()
	return p, nil
}
