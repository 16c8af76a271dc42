package host

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/mpathfs/mpathfs/hotplug"
	"github.com/mpathfs/mpathfs/mpath"
)

// Block-device globs (Options.Scan, `mount --scan`, `scan:` in a config):
// the block devices a mount may claim that no device names. `adapter
// rescan` expands them, and hotplug checks an added block device against
// them; a match no path leads to yet (compared by device number, so a
// by-id link and /dev/sdX are one device) is opened for its WWID and
// joins the device reporting it, or becomes a new device named like
// --group-by-wwid names them. Without globs no unnamed block device is
// ever claimed: a mount does not grab every disk of the machine.

// scanPattern is a glob without its block:// prefix.
func scanPattern(g string) string { return strings.TrimPrefix(g, "block://") }

// CheckScan checks block-device globs.
func CheckScan(globs []string) error {
	for _, g := range globs {
		p := scanPattern(g)
		if !filepath.IsAbs(p) {
			return fmt.Errorf("scan %q: want an absolute block-device glob such as /dev/disk/by-id/wwn-*", g)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return fmt.Errorf("scan %q: %v", g, err)
		}
	}
	return nil
}

// knownBlock: a device path (or an offline one) is this block device.
func (h *Host) knownBlock(maj, min int) bool {
	return h.anyPath(func(_, uri, transport string, _ mpath.Location) bool {
		a, b, ok := hotplug.DeviceOf(uri)
		return transport == "block" && ok && a == maj && b == min
	})
}

// rescanBlock claims the block devices the globs match that no path
// leads to yet.
func (h *Host) rescanBlock(ctx context.Context, res *RescanResult) {
	for _, g := range h.scan {
		names, _ := filepath.Glob(scanPattern(g))
		for _, n := range names {
			uri := "block://" + n
			maj, min, ok := hotplug.DeviceOf(uri)
			if !ok {
				continue // not a block device
			}
			res.Scanned++
			if h.knownBlock(maj, min) {
				continue
			}
			h.claimLUN(ctx, uri, res)
		}
	}
}

// scanMatches reports whether a device node matches a glob.
func (h *Host) scanMatches(devnode string) bool {
	for _, g := range h.scan {
		if ok, _ := filepath.Match(scanPattern(g), devnode); ok {
			return true
		}
		names, _ := filepath.Glob(scanPattern(g))
		for _, n := range names {
			if r, err := filepath.EvalSymlinks(n); err == nil && r == devnode {
				return true
			}
		}
	}
	return false
}

// claimHotplugged claims a hot-added block device the globs match and no
// device reports the WWID of; it returns what happened.
func (h *Host) claimHotplugged(ctx context.Context, devnode string) RescanResult {
	h.claimMu.Lock()
	defer h.claimMu.Unlock()
	res := RescanResult{Source: "hotplug", NewPaths: []ClaimOutcome{}, NewDevices: []string{}, Errors: []string{}}
	uri := "block://" + devnode
	if maj, min, ok := hotplug.DeviceOf(uri); !ok || h.knownBlock(maj, min) {
		return res
	}
	res.Scanned = 1
	h.claimLUN(ctx, uri, &res)
	return res
}
