// Package hotplug watches the kernel's block-device uevents and reports
// block devices that appear (Added) and disappear (Removed), so the routing
// engine can fail the paths on a removed device at once, instead of waiting
// for I/O or the path checker, and offer added devices to the claim rules.
//
// It lives outside the layers of the design: it is neither a backend (it
// carries no I/O), nor routing (it decides nothing about paths), but a
// source of facts about the host that the wiring in cmd/mpathfs connects
// to the routing engine.
//
// Kernel events, not udev events, are read: no udevd needs to run. Loop
// devices are pre-created, so attaching and detaching one (losetup) shows
// up as a "change" uevent, not "add"/"remove": the watcher compares what
// sysfs says about the device before and after each event (Map does this,
// purely) and reports a device whose size drops to 0 or whose loop backing
// file goes away as Removed, and a device that gains a size as Added.
//
// A loop device held open (by a path) is not detached by losetup -d: the
// kernel only sets autoclear and detaches on the last close, so no event
// arrives until the path is closed. The block backend's Probe reports that
// state (block.ErrDetachPending); the consumer should close such a path.
package hotplug

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Kind is what happened to a block device.
type Kind int

const (
	// Added: a block device became usable (appeared with a size, media
	// inserted, a loop device attached).
	Added Kind = iota + 1
	// Removed: a block device is gone or empty (removed, media ejected, a
	// loop device detached). Paths on it cannot carry I/O any more.
	Removed
	// Changed: the kernel reported a change on a block device that was
	// usable and still is (a "change" uevent: a new table, a rescan, a
	// unit attention the SCSI layer passes on). A path on it that failed
	// may work again: worth a probe now.
	Changed
)

func (k Kind) String() string {
	switch k {
	case Added:
		return "added"
	case Removed:
		return "removed"
	case Changed:
		return "changed"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Event reports one block device change.
type Event struct {
	Kind    Kind
	DevNode string // /dev/loop3
	Name    string // loop3
	Major   int
	Minor   int
	// WWID is the device's identity (as block.Identify reads it), for
	// Added events; "" if it has none.
	WWID string
	// Reason tells what the watcher saw ("change: size 0").
	Reason string
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s (%d:%d)", e.Kind, e.DevNode, e.Major, e.Minor)
	if e.WWID != "" {
		s += " wwid " + e.WWID
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// DeviceState is what sysfs says about a block device at one moment. The
// zero value is "unknown / not present".
type DeviceState struct {
	Present bool  // /sys/class/block/NAME exists
	Size    int64 // in 512-byte sectors (/sys/class/block/NAME/size)
	// Loop is true for a loop device (a loopN disk); Backing is then the
	// backing file's identity ("dev:ino", or its name), "" when detached.
	Loop    bool
	Backing string
}

// Usable reports whether a path could be opened on the device: present,
// non-empty and, for a loop device, attached.
func (s DeviceState) Usable() bool {
	return s.Present && s.Size > 0 && (!s.Loop || s.Backing != "")
}

func (s DeviceState) whyNotUsable() string {
	switch {
	case !s.Present:
		return "device gone from sysfs"
	case s.Size == 0:
		return "size 0"
	default:
		return "loop device detached"
	}
}

// Map turns one uevent into the events it means. action is the uevent
// action (add, remove, change, …), env its variables (SUBSYSTEM, DEVNAME,
// DEVPATH, MAJOR, MINOR); prev is what was known of the device before the
// event (the zero DeviceState if nothing) and cur what sysfs says now. Only
// the block subsystem counts. WWID is left empty: reading it is I/O, the
// watcher fills it in.
//
//   - remove: Removed, unless the device was known and already unusable;
//   - any other action: Removed when the device goes from usable to
//     unusable, Added when it goes from unusable to usable, Removed
//     then Added when a loop device now has a different backing file
//     (a detach and re-attach whose events were merged), and Changed
//     when it was usable and still is.
func Map(action string, env map[string]string, prev, cur DeviceState) []Event {
	if env["SUBSYSTEM"] != "block" {
		return nil
	}
	base := Event{Name: env["DEVNAME"]}
	if base.Name == "" {
		base.Name = path.Base(env["DEVPATH"])
	}
	if base.Name == "" || base.Name == "." || base.Name == "/" {
		return nil
	}
	base.DevNode = "/dev/" + base.Name
	base.Major, _ = strconv.Atoi(env["MAJOR"])
	base.Minor, _ = strconv.Atoi(env["MINOR"])
	ev := func(k Kind, reason string) Event {
		e := base
		e.Kind, e.Reason = k, action+": "+reason
		return e
	}
	if action == "remove" {
		if prev.Present && !prev.Usable() {
			return nil
		}
		return []Event{ev(Removed, "device removed")}
	}
	switch was, is := prev.Usable(), cur.Usable(); {
	case was && !is:
		return []Event{ev(Removed, cur.whyNotUsable())}
	case !was && is:
		reason := fmt.Sprintf("size %d sectors", cur.Size)
		if cur.Loop {
			reason = "loop device attached, " + reason
		}
		return []Event{ev(Added, reason)}
	case was && is && cur.Loop && prev.Backing != cur.Backing:
		return []Event{
			ev(Removed, "loop device re-attached to another file"),
			ev(Added, "loop device re-attached to another file"),
		}
	case was && is:
		return []Event{ev(Changed, "device changed")}
	}
	return nil
}

// isLoopDisk tells a loop disk (loop3) from anything else (loop3p1, sda).
func isLoopDisk(name string) bool {
	n, ok := strings.CutPrefix(name, "loop")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.Atoi(n)
	return err == nil
}
