package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// openTimeout bounds opening one path (an unreachable NBD server).
const openTimeout = 15 * time.Second

// built is what a config turned into: devices, their fault injectors, and
// the closers of whatever was opened.
type built struct {
	devices []*nmp.Device
	faults  []map[string]*fault.Backend
	extra   []func() error // closed after the devices
}

func (b *built) Close() {
	for _, d := range b.devices {
		d.Close()
	}
	for _, c := range b.extra {
		c()
	}
}

// build opens every path of every device and makes the devices. On any
// error everything opened so far is closed again: nothing half-applied.
func build(ctx context.Context, cfg *Config, events *mpath.Events) (_ *built, err error) {
	out := &built{}
	var opened []backends.Backend
	defer func() {
		if err != nil {
			out.Close()
			for _, b := range opened {
				b.Close()
			}
		}
	}()
	for di, dc := range cfg.Devices {
		if dc.Size != "" {
			size, _ := ParseSize(dc.Size)
			for _, pc := range dc.Paths {
				if err := ensureStore(pc.URI, size); err != nil {
					return nil, fmt.Errorf("device %s: creating store for %s: %v", dc.Name, pc.URI, err)
				}
			}
		}
		arr, err := newArrayFor(dc)
		if err != nil {
			return nil, fmt.Errorf("device %s: array: %v", dc.Name, err)
		}
		if arr != nil {
			out.extra = append(out.extra, arr.Close)
		}
		var paths []*mpath.Path
		injectors := map[string]*fault.Backend{}
		synthetic := ""
		for pi, pc := range dc.Paths {
			octx, cancel := context.WithTimeout(ctx, openTimeout)
			b, err := backends.Open(octx, pc.URI)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("device %s path %s: %v", dc.Name, pc.URI, err)
			}
			opened = append(opened, b)
			u, _ := backends.ParseURI(pc.URI)
			loc := mpath.Location{Adapter: pi + 1, LUN: di}
			if pc.Location != "" {
				loc, _ = mpath.ParseLocation(pc.Location)
			}
			if arr != nil {
				b, loc, err = arr.port(pc, b, loc)
				if err != nil {
					return nil, fmt.Errorf("device %s path %s: %v", dc.Name, pc.URI, err)
				}
			}
			fb := fault.Wrap(b, uint64(di)<<32|uint64(pi)+1)
			p := &mpath.Path{Name: pc.Name, URI: pc.URI, Location: loc, Transport: u.Scheme, Backend: fb}
			if strings.HasPrefix(u.Scheme, "nbd") {
				p.Transport = "nbd"
			}
			if inq, ok := backends.As[backends.Inquirer](b); ok && backends.Can(b, backends.CapInquiry) {
				ictx, cancel := context.WithTimeout(ctx, openTimeout)
				p.Inquiry, err = inq.Inquiry(ictx)
				cancel()
				if err != nil {
					return nil, fmt.Errorf("device %s path %s: inquiry: %v", dc.Name, pc.URI, err)
				}
			}
			// File and NBD paths carry no identity of their own (a file's is
			// synthetic, from its inode): they must agree among themselves,
			// then adopt the configured identity.
			if dc.WWID != "" && (p.Transport == "file" || p.Transport == "nbd") {
				if w := p.Inquiry.WWID; w != "" {
					if synthetic != "" && w != synthetic {
						return nil, fmt.Errorf("device %s: path %s is a different file than the device's other file paths: the paths lead to different stores", dc.Name, pc.URI)
					}
					synthetic = w
				}
				p.Inquiry.WWID = dc.WWID
			}
			p.Rank.Store(int32(pc.Rank))
			for _, f := range pc.Faults {
				spec, _ := fault.ParseArgs(strings.Fields(f))
				if _, err := fb.Inject(spec); err != nil {
					return nil, fmt.Errorf("device %s path %s: fault %q: %v", dc.Name, pc.URI, f, err)
				}
			}
			paths = append(paths, p)
		}
		d, err := nmp.NewDevice(dc.toDeviceConfig(), paths, events)
		if err != nil {
			return nil, err
		}
		opened = opened[:0] // the device owns its paths now
		for _, p := range paths {
			injectors[p.Name] = p.Backend.(*fault.Backend)
		}
		out.devices = append(out.devices, d)
		out.faults = append(out.faults, injectors)
	}
	return out, nil
}

// register hands the built devices to the control runtime.
func (b *built) register(rt *control.Runtime) {
	for i, d := range b.devices {
		rt.AddDevice(d, b.faults[i])
	}
}
