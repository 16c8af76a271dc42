package host

import (
	"context"
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// `adapter rescan` (ESXi's `esxcli storage core adapter rescan`): the
// configured sources are read again — the config file when the mount has
// one (Options.Sources), else the devices the mount was built with — and
// what is new is claimed: a path not yet known joins its device (after
// the claim rules and the identity check, as `path add`), a device not
// yet known is made and served as a new device file (OnDevice). Paths
// that are masked or unclaimed are known: rescan leaves them to
// `claimrule run` and `claiming reclaim`. Rescanning one adapter looks
// only at the paths configured with a location on it.

// RescanResult says what a rescan found.
type RescanResult struct {
	Adapter    string         `json:"adapter,omitempty"`
	Source     string         `json:"source"`
	Scanned    int            `json:"scanned"`
	NewPaths   []ClaimOutcome `json:"new_paths"`
	NewDevices []string       `json:"new_devices"`
	Errors     []string       `json:"errors"`
}

// OnDevice sets what serves a device made after the mount came up (the
// FUSE server adds its file); it gets what Serve would return for it.
func (h *Host) OnDevice(fn func(IO) error) {
	h.mu.Lock()
	h.onDevice = fn
	h.mu.Unlock()
}

// Rescan reads the sources again and claims the new paths and devices.
// adapter ("" : all) limits it to the paths configured on that adapter.
func (h *Host) Rescan(ctx context.Context, adapter string) (RescanResult, error) {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	res := RescanResult{Adapter: adapter, NewPaths: []ClaimOutcome{}, NewDevices: []string{}, Errors: []string{}}
	var devices []DeviceConfig
	if h.sources != nil {
		res.Source = "config file"
		if h.configFile != "" {
			res.Source = "config file " + h.configFile
		}
		var err error
		if devices, err = h.sources(ctx); err != nil {
			return res, Kinded(ErrInvalid, fmt.Errorf("rescan: reading the sources: %w", err))
		}
	} else {
		res.Source = "the devices the mount was started with"
		h.mu.RLock()
		devices = append(devices, h.built...)
		h.mu.RUnlock()
	}
	for _, dc := range devices {
		if ctx.Err() != nil {
			break
		}
		m, err := h.member(dc.Name)
		if err != nil {
			h.rescanNewDevice(ctx, dc, adapter, &res)
			continue
		}
		for _, pc := range dc.Paths {
			var loc *mpath.Location
			if pc.Location != "" {
				l, err := mpath.ParseLocation(pc.Location)
				if err != nil {
					res.Errors = append(res.Errors, fmt.Sprintf("device %s path %s: %v", dc.Name, pc.URI, err))
					continue
				}
				loc = &l
			}
			if adapter != "" && (loc == nil || AdapterName(*loc) != adapter) {
				continue
			}
			res.Scanned++
			clean, _, err := mpath.SplitQuiesce(pc.URI)
			if err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("device %s path %s: %v", dc.Name, pc.URI, err))
				continue
			}
			if h.knownPath(m.dev, clean, loc) {
				continue
			}
			o := ClaimOutcome{Device: dc.Name, Path: pc.Name, URI: clean, From: newState, To: ClaimedState}
			p, err := h.join(ctx, m, joinRequest{uri: pc.URI, name: pc.Name, loc: loc})
			if err != nil {
				o.To, o.Error = newState, err.Error()
			} else {
				o.Path = p.Name
				h.publish(mpath.Event{Time: time.Now(), Kind: "path-add", Device: dc.Name, Path: p.Name, To: p.State().String(), Reason: "adapter rescan found " + clean})
			}
			res.NewPaths = append(res.NewPaths, o)
		}
	}
	return res, nil
}

// knownPath: the device has the path (same URI and, when configured, the
// same runtime name), or holds it masked or unclaimed.
func (h *Host) knownPath(d Device, uri string, loc *mpath.Location) bool {
	for _, p := range d.Paths() {
		if p.URI == uri && (loc == nil || p.Location == *loc) {
			return true
		}
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, op := range h.offline {
		if op.Device == d.Name() && op.URI == uri && (loc == nil || op.loc == *loc) {
			return true
		}
	}
	return false
}

// rescanNewDevice makes a device the sources name and the host lacks,
// and serves it.
func (h *Host) rescanNewDevice(ctx context.Context, dc DeviceConfig, adapter string, res *RescanResult) {
	if adapter != "" {
		on := false
		for _, pc := range dc.Paths {
			if l, err := mpath.ParseLocation(pc.Location); err == nil && pc.Location != "" && AdapterName(l) == adapter {
				on = true
			}
		}
		if !on {
			return
		}
	}
	res.Scanned += len(dc.Paths)
	if err := dc.Validate("device " + dc.Name); err != nil {
		res.Errors = append(res.Errors, err.Error())
		return
	}
	if err := h.AddDevice(ctx, dc); err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("new device %s: %v", dc.Name, err))
		return
	}
	h.mu.Lock()
	h.built = append(h.built, dc)
	serve := h.onDevice
	var io IO
	for _, m := range h.members {
		if m.dev.Name() == dc.Name {
			io = m.dev
			if m.oracle != nil {
				io = m.oracle
			}
		}
	}
	h.mu.Unlock()
	if serve != nil && io != nil {
		if err := serve(io); err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("new device %s: made, but its file could not be added: %v", dc.Name, err))
		}
	}
	res.NewDevices = append(res.NewDevices, dc.Name)
	d, err := h.Device(dc.Name)
	if err == nil {
		for _, p := range d.Paths() {
			res.NewPaths = append(res.NewPaths, ClaimOutcome{Device: dc.Name, Path: p.Name, URI: p.URI, From: newState, To: ClaimedState})
		}
	}
	h.publish(mpath.Event{Time: time.Now(), Kind: "device-added", Device: dc.Name, Reason: "adapter rescan"})
}
