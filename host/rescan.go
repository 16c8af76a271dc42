package host

import (
	"context"
	"fmt"
	"net/url"
	"path"
	"strconv"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// `adapter rescan` (ESXi's `esxcli storage core adapter rescan`): the
// configured sources are read again — the config file when the mount has
// one (Options.Sources), else the devices the mount was built with — and
// what is new is claimed: a path not yet known joins its device (after
// the claim rules and the identity check, as `path add`), a device not
// yet known is made and served as a new device file (OnDevice). Paths
// that are masked or unclaimed are known: rescan leaves them to
// `claimrule run` and `claiming reclaim`. Every iSCSI session is asked
// REPORT LUNS; a LUN no path leads to joins the device with its WWID or
// becomes a device (rescanISCSI). Rescanning one adapter looks only at the
// paths configured with a location on it and the sessions through it.

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
			clean, _, err := mpath.SplitQuiesce(WithInitiator(pc.URI, h.name))
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
	h.rescanISCSI(ctx, adapter, &res)
	if adapter == "" {
		h.rescanBlock(ctx, &res)
	}
	return res, nil
}

// knownPath: the device has the path (same URI and, when configured, the
// same runtime name), or holds it masked or unclaimed.
func (h *Host) knownPath(d Device, uri string, loc *mpath.Location) bool {
	return h.anyPath(func(device, u, _ string, l mpath.Location) bool {
		return device == d.Name() && u == uri && (loc == nil || l == *loc)
	})
}

// anyPath reports whether match holds for a path of one of the host's
// devices or for a path held offline (masked or unclaimed).
func (h *Host) anyPath(match func(device, uri, transport string, loc mpath.Location) bool) bool {
	for _, d := range h.Devices() {
		for _, p := range d.Paths() {
			if match(d.Name(), p.URI, p.Transport, p.Location) {
				return true
			}
		}
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, op := range h.offline {
		if match(op.Device, op.URI, op.Transport, op.loc) {
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
	h.makeAndServe(ctx, dc, res)
}

// makeAndServe makes a device rescan found, serves its file and reports it.
func (h *Host) makeAndServe(ctx context.Context, dc DeviceConfig, res *RescanResult) {
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
			io = m.served()
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

// lunReporter is an iSCSI path: its session answers REPORT LUNS.
type lunReporter interface {
	ReportLUNs(ctx context.Context) ([]uint64, error)
}

// rescanISCSI asks every iSCSI session (one per portal, target and
// initiator) for its LUNs and claims each LUN no path leads to yet: a LUN
// whose WWID a device reports joins it, another becomes a new device
// (named as --group-by-wwid names them: mpatha, mpathb, …).
func (h *Host) rescanISCSI(ctx context.Context, adapter string, res *RescanResult) {
	seen := map[string]bool{}
	for _, d := range h.Devices() {
		for _, p := range d.Paths() {
			if p.Transport != "iscsi" || (adapter != "" && AdapterName(p.Location) != adapter) {
				continue
			}
			rep, ok := backends.As[lunReporter](p.Backend)
			if !ok {
				continue
			}
			u, err := url.Parse(p.URI)
			if err != nil {
				continue
			}
			dir, _ := path.Split(u.Path)
			key := u.Host + dir + "?" + u.RawQuery
			if seen[key] {
				continue
			}
			seen[key] = true
			rctx, cancel := context.WithTimeout(ctx, h.openTimeout)
			luns, err := rep.ReportLUNs(rctx)
			cancel()
			if err != nil {
				res.Errors = append(res.Errors, fmt.Sprintf("path %s: %v", p.Name, err))
				continue
			}
			for _, lun := range luns {
				nu := *u
				nu.Path = dir + strconv.FormatUint(lun, 10)
				uri := nu.String()
				res.Scanned++
				if h.knownURI(uri) {
					continue
				}
				h.claimLUN(ctx, uri, res)
			}
		}
	}
}

// knownURI: a path of a device, or an offline one, has this URI.
func (h *Host) knownURI(uri string) bool {
	return h.anyPath(func(_, u, _ string, _ mpath.Location) bool { return u == uri })
}

// claimLUN reads a new LUN's WWID and joins it to the device reporting
// that WWID, or makes a device of it.
func (h *Host) claimLUN(ctx context.Context, uri string, res *RescanResult) {
	octx, cancel := context.WithTimeout(ctx, h.openTimeout)
	defer cancel()
	b, err := backends.Open(octx, uri)
	if err != nil {
		res.Errors = append(res.Errors, fmt.Sprintf("LUN %s: not claimed: %v", uri, err))
		return
	}
	var inq backends.Inquiry
	if q, ok := backends.As[backends.Inquirer](b); ok {
		inq, err = q.Inquiry(octx)
	}
	b.Close()
	if err != nil || inq.WWID == "" {
		res.Errors = append(res.Errors, fmt.Sprintf("LUN %s: not claimed: it reports no WWID (%v)", uri, err))
		return
	}
	for _, d := range h.Devices() {
		if d.Identity().WWID != inq.WWID {
			continue
		}
		m, err := h.member(d.Name())
		if err != nil {
			return
		}
		o := ClaimOutcome{Device: d.Name(), URI: uri, From: newState, To: ClaimedState}
		p, err := h.join(ctx, m, joinRequest{uri: uri, hot: true})
		if err != nil {
			o.To, o.Error = newState, err.Error()
		} else {
			o.Path = p.Name
			h.publish(mpath.Event{Time: time.Now(), Kind: "path-add", Device: d.Name(), Path: p.Name, To: p.State().String(), Reason: "adapter rescan: REPORT LUNS found " + uri})
		}
		res.NewPaths = append(res.NewPaths, o)
		return
	}
	name := ""
	for i := 0; name == ""; i++ {
		if _, err := h.member(FriendlyName(i)); err != nil {
			name = FriendlyName(i)
		}
	}
	h.makeAndServe(ctx, DeviceConfig{Name: name, WWID: inq.WWID, WWIDReported: true, Paths: []PathConfig{{URI: uri}}}, res)
}
