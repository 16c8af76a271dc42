package host

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends/block"
	"github.com/mpathfs/mpathfs/hotplug"
)

// Hotplug of block-device paths: a removed device fails its path at once
// (before any I/O hits it) and the path is taken out; an added device whose
// WWID matches a device joins it as a new path, after the claim rules and
// the identity check.

// blockPath is a block-device path the watcher looks after.
type blockPath struct {
	dev          string
	name         string
	major, minor int
}

type hotplugger struct {
	h     *Host
	log   io.Writer
	mu    sync.Mutex
	paths []blockPath
	// rechecking holds the paths whose uevent-triggered probe is running:
	// a burst of uevents makes one probe per path, not one each.
	rechecking map[blockPath]bool
}

// WatchHotplug follows the kernel's block-device uevents for the devices'
// block paths until ctx ends or the host closes, and reports on log what
// it did. It does nothing when no device has a block path; when uevents
// cannot be watched it says so and returns (the checker still fails the
// paths).
func (h *Host) WatchHotplug(ctx context.Context, log io.Writer) {
	hp := &hotplugger{h: h, log: log}
	for _, d := range h.Devices() {
		for _, p := range d.Paths() {
			if p.Transport != "block" {
				continue
			}
			if maj, min, ok := hotplug.DeviceOf(p.URI); ok {
				hp.paths = append(hp.paths, blockPath{d.Name(), p.Name, maj, min})
			}
		}
	}
	if len(hp.paths) == 0 && len(h.scan) == 0 {
		return
	}
	w, err := hotplug.Watch(ctx)
	if err != nil {
		logf(log, "mpathfs: hotplug: cannot watch uevents (%v); block paths will be failed by the checker only\n", err)
		return
	}
	logf(log, "mpathfs: hotplug: watching block devices\n")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	h.mu.Lock()
	h.stops = append(h.stops, func() { cancel(); <-done })
	h.mu.Unlock()
	go func() {
		defer close(done)
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
				hp.handle(ctx, ev)
			case <-t.C:
				hp.reapDetached(ctx)
			}
		}
	}()
}

func (hp *hotplugger) handle(ctx context.Context, ev hotplug.Event) {
	switch ev.Kind {
	case hotplug.Removed:
		hp.mu.Lock()
		var hit []blockPath
		keep := hp.paths[:0]
		for _, bp := range hp.paths {
			if bp.major == ev.Major && bp.minor == ev.Minor {
				hit = append(hit, bp)
			} else {
				keep = append(keep, bp)
			}
		}
		hp.paths = keep
		hp.mu.Unlock()
		for _, bp := range hit {
			hp.remove(bp, "hot removal: "+ev.String())
		}
	case hotplug.Added:
		if ev.WWID == "" {
			return
		}
		known := false
		for _, d := range hp.h.Devices() {
			if d.Identity().WWID == ev.WWID {
				known = true
				hp.add(ctx, d.Name(), ev)
			}
		}
		if !known && hp.h.scanMatches(ev.DevNode) {
			hp.claimNew(ctx, ev)
		}
	case hotplug.Changed:
		hp.mu.Lock()
		for _, bp := range hp.paths {
			if bp.major == ev.Major && bp.minor == ev.Minor && !hp.rechecking[bp] {
				if hp.rechecking == nil {
					hp.rechecking = map[blockPath]bool{}
				}
				hp.rechecking[bp] = true
				go hp.recheck(bp, ev)
			}
		}
		hp.mu.Unlock()
	}
}

// recheck probes a path whose block device reported a change, if the path
// is out of service: a device coming back (a SCSI device set running
// again, a new device-mapper table, a rescan) often says so with a uevent
// before the next checker round would notice. Off the watcher's goroutine:
// a probe may take up to the probe timeout.
func (hp *hotplugger) recheck(bp blockPath, ev hotplug.Event) {
	defer func() {
		hp.mu.Lock()
		delete(hp.rechecking, bp)
		hp.mu.Unlock()
	}()
	d, err := hp.h.Device(bp.dev)
	if err != nil {
		return
	}
	probed, err := d.Recheck(bp.name, "uevent: "+ev.Reason)
	if probed && err == nil {
		logf(hp.log, "mpathfs: hotplug: %s: path %s probed at once on %s\n", bp.dev, bp.name, ev)
	}
}

// remove fails the path at once, then takes it out of the device.
func (hp *hotplugger) remove(bp blockPath, reason string) {
	if err := hp.h.RemovePath(bp.dev, bp.name, reason); err == nil {
		logf(hp.log, "mpathfs: hotplug: %s: path %s removed (%s)\n", bp.dev, bp.name, reason)
	}
}

// reapDetached takes out loop paths whose device was detached while we held
// it open: the kernel finishes the detach only when the path lets go.
func (hp *hotplugger) reapDetached(ctx context.Context) {
	hp.mu.Lock()
	paths := append([]blockPath(nil), hp.paths...)
	hp.mu.Unlock()
	for _, bp := range paths {
		d, err := hp.h.Device(bp.dev)
		if err != nil || d.FindPath(bp.name) == nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err = d.Probe(pctx, bp.name)
		cancel()
		if errors.Is(err, block.ErrDetachPending) || errors.Is(err, block.ErrGone) {
			hp.mu.Lock()
			keep := hp.paths[:0]
			for _, q := range hp.paths {
				if q != bp {
					keep = append(keep, q)
				}
			}
			hp.paths = keep
			hp.mu.Unlock()
			hp.remove(bp, "hot removal: "+err.Error())
		}
	}
}

// add joins a new block device to a device whose WWID it reports.
func (hp *hotplugger) add(ctx context.Context, device string, ev hotplug.Event) {
	m, err := hp.h.member(device)
	if err != nil {
		return
	}
	uri := "block://" + ev.DevNode
	p, err := hp.h.join(ctx, m, joinRequest{uri: uri, hot: true})
	switch {
	case errors.Is(err, ErrExists):
		return // already a path
	case err != nil:
		logf(hp.log, "mpathfs: hotplug: %s: refusing %s: %v\n", device, uri, err)
		return
	}
	hp.mu.Lock()
	hp.paths = append(hp.paths, blockPath{device, p.Name, ev.Major, ev.Minor})
	hp.mu.Unlock()
	logf(hp.log, "mpathfs: hotplug: %s: path %s added (%s, state %s)\n", device, p.Name, uri, p.State())
}

// claimNew claims a hot-added block device with a WWID no device reports
// that a scan glob matches: it becomes a new device (scan.go).
func (hp *hotplugger) claimNew(ctx context.Context, ev hotplug.Event) {
	res := hp.h.claimHotplugged(ctx, ev.DevNode)
	for _, e := range res.Errors {
		logf(hp.log, "mpathfs: hotplug: %s\n", e)
	}
	for _, o := range res.NewPaths {
		if o.Error != "" {
			continue
		}
		hp.mu.Lock()
		hp.paths = append(hp.paths, blockPath{o.Device, o.Path, ev.Major, ev.Minor})
		hp.mu.Unlock()
	}
	for _, d := range res.NewDevices {
		logf(hp.log, "mpathfs: hotplug: new device %s (%s)\n", d, ev.DevNode)
	}
}
