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
	return d.RemovePath(path)
}

// joinRequest is a path to join: by the operator (strict: its identity
// must be shown, any inquiry error refuses it) or by hotplug (the kernel
// told us the device exists and which WWID it reports).
type joinRequest struct {
	uri, name string
	hot       bool
}

func (h *Host) join(ctx context.Context, m *member, r joinRequest) (*mpath.Path, error) {
	d, dc := m.dev, m.cfg
	if dc.Array != nil {
		return nil, errorf(ErrUnsupported, "device %s is served by a simulated array: its paths are its ports", d.Name())
	}
	clean, quiesce, err := mpath.SplitQuiesce(r.uri)
	if err != nil {
		return nil, Kinded(ErrInvalid, err)
	}
	u, err := backends.ParseURI(clean)
	if err != nil {
		return nil, Kinded(ErrInvalid, err)
	}
	for _, p := range d.Paths() {
		if p.URI == clean {
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
	p := &mpath.Path{Name: r.name, URI: clean, Location: mpath.Location{Adapter: adapter, LUN: lun}, Transport: transportOf(u.Scheme), Backend: fb, Quiesce: quiesce}
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
	if err := d.VerifyPath(octx, p); err != nil {
		return refuse(errorf(ErrRefused, "device %s: refusing %s: %w", d.Name(), clean, err))
	}
	if err := d.AddPath(p); err != nil {
		return refuse(err)
	}
	h.mu.Lock()
	h.faults[p.Name] = fb
	h.mu.Unlock()
	return p, nil
}
