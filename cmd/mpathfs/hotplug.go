package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/block"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/hotplug"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// Hotplug of block-device paths: a removed device fails its path at once
// (before any I/O hits it) and the path is taken out; an added device whose
// WWID matches a device joins it as a new path, after the claim rules.

func init() {
	startHooks = append(startHooks, startHotplug)
}

// blockPath is a block-device path the watcher looks after.
type blockPath struct {
	dev          *nmp.Device
	name         string
	major, minor int
}

type hotplugger struct {
	rt     *control.Runtime
	stdout io.Writer
	mu     sync.Mutex
	paths  []blockPath
	next   map[*nmp.Device]int // next adapter number
	lun    map[*nmp.Device]int
}

func startHotplug(ctx context.Context, rt *control.Runtime, cfg *Config, stdout io.Writer) {
	h := &hotplugger{rt: rt, stdout: stdout, next: map[*nmp.Device]int{}, lun: map[*nmp.Device]int{}}
	any := false
	for di, d := range rt.Devices() {
		h.lun[d] = di
		for _, p := range d.Paths() {
			h.next[d] = max(h.next[d], p.Location.Adapter+1)
			if p.Transport != "block" {
				continue
			}
			if maj, min, ok := hotplug.DeviceOf(p.URI); ok {
				h.paths = append(h.paths, blockPath{d, p.Name, maj, min})
				any = true
			}
		}
	}
	if !any {
		return
	}
	w, err := hotplug.Watch(ctx)
	if err != nil {
		fmt.Fprintf(stdout, "mpathfs: hotplug: cannot watch uevents (%v); block paths will be failed by the checker only\n", err)
		return
	}
	fmt.Fprintln(stdout, "mpathfs: hotplug: watching block devices")
	go func() {
		defer w.Close()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events():
				if !ok {
					return
				}
				h.handle(ctx, ev)
			case <-t.C:
				h.reapDetached(ctx)
			}
		}
	}()
}

func (h *hotplugger) handle(ctx context.Context, ev hotplug.Event) {
	switch ev.Kind {
	case hotplug.Removed:
		h.mu.Lock()
		var hit []blockPath
		keep := h.paths[:0]
		for _, bp := range h.paths {
			if bp.major == ev.Major && bp.minor == ev.Minor {
				hit = append(hit, bp)
			} else {
				keep = append(keep, bp)
			}
		}
		h.paths = keep
		h.mu.Unlock()
		for _, bp := range hit {
			h.remove(bp, "hot removal: "+ev.String())
		}
	case hotplug.Added:
		if ev.WWID == "" {
			return
		}
		for _, d := range h.rt.Devices() {
			if d.Identity().WWID == ev.WWID {
				h.add(ctx, d, ev)
			}
		}
	}
}

// remove fails the path at once, then takes it out of the device.
func (h *hotplugger) remove(bp blockPath, reason string) {
	bp.dev.FailPath(bp.name, reason)
	if err := bp.dev.RemovePath(bp.name); err == nil {
		fmt.Fprintf(h.stdout, "mpathfs: hotplug: %s: path %s removed (%s)\n", bp.dev.Name(), bp.name, reason)
	}
}

// reapDetached takes out loop paths whose device was detached while we held
// it open: the kernel finishes the detach only when the path lets go.
func (h *hotplugger) reapDetached(ctx context.Context) {
	h.mu.Lock()
	paths := append([]blockPath(nil), h.paths...)
	h.mu.Unlock()
	for _, bp := range paths {
		p := bp.dev.FindPath(bp.name)
		if p == nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := bp.dev.Probe(pctx, bp.name)
		cancel()
		if errors.Is(err, block.ErrDetachPending) || errors.Is(err, block.ErrGone) {
			h.mu.Lock()
			keep := h.paths[:0]
			for _, q := range h.paths {
				if q != bp {
					keep = append(keep, q)
				}
			}
			h.paths = keep
			h.mu.Unlock()
			h.remove(bp, "hot removal: "+err.Error())
		}
	}
}

// add joins a new block device to a device whose WWID it reports.
func (h *hotplugger) add(ctx context.Context, d *nmp.Device, ev hotplug.Event) {
	uri := "block://" + ev.DevNode
	for _, p := range d.Paths() {
		if p.URI == uri {
			return // already a path
		}
	}
	octx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	b, err := backends.Open(octx, uri)
	if err != nil {
		fmt.Fprintf(h.stdout, "mpathfs: hotplug: %s: cannot open %s: %v\n", d.Name(), uri, err)
		return
	}
	h.mu.Lock()
	adapter := h.next[d]
	h.next[d]++
	lun := h.lun[d]
	h.mu.Unlock()
	fb := fault.Wrap(b, uint64(lun)<<32|uint64(adapter))
	p := &mpath.Path{URI: uri, Transport: "block", Location: mpath.Location{Adapter: adapter, LUN: lun}, Backend: fb}
	if inq, ok := backends.As[backends.Inquirer](b); ok {
		p.Inquiry, _ = inq.Inquiry(octx)
	}
	if ok, rule := claimedByNMP(p); !ok {
		fmt.Fprintf(h.stdout, "mpathfs: hotplug: %s: %s not claimed (%s)\n", d.Name(), uri, rule)
		fb.Close()
		return
	}
	// The same identity check as at mount: a WWID only synthetic (a loop
	// device) could name another file of the same size.
	err = d.VerifyPath(octx, p)
	if err == nil {
		err = d.AddPath(p)
	}
	if err != nil {
		fmt.Fprintf(h.stdout, "mpathfs: hotplug: %s: refusing %s: %v\n", d.Name(), uri, err)
		fb.Close()
		return
	}
	h.rt.AddFault(p.Name, fb)
	h.mu.Lock()
	h.paths = append(h.paths, blockPath{d, p.Name, ev.Major, ev.Minor})
	h.mu.Unlock()
	fmt.Fprintf(h.stdout, "mpathfs: hotplug: %s: path %s added (%s, state %s)\n", d.Name(), p.Name, uri, p.State())
}
