package host

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// Resets and task management, as events an operator injects on a path
// (`mpathfs reset KIND PATH`). Each does what the real one does to the
// paths it reaches: the tasks in flight on them that the fault layer holds
// or delays end at once with a retryable error carrying the reset's sense
// (the NMP retries them), and each reached path answers its next data I/O
// with the unit attention the reset establishes, once:
//
//	lun             every path to the path's LU (its device)     06/29/03 BUS DEVICE RESET FUNCTION OCCURRED
//	target          every path through the path's target         06/29/03
//	                (vmhbaA:Cc:Tt), whatever its LU
//	bus             every path of the path's adapter (vmhbaA)    06/29/02 SCSI BUS RESET OCCURRED
//	abort-task-set  every path to the path's LU: tasks ended;    06/2F/00 COMMANDS CLEARED BY ANOTHER INITIATOR
//	                the unit attention on every path but the        (not on the issuing path)
//	                one it was issued on
//
// `adapter reset` is the adapter-wide form with 06/29/00 (power on,
// reset): the same code with its own sense.

// Reset kinds.
const (
	ResetLUN          = "lun"
	ResetTarget       = "target"
	ResetBus          = "bus"
	ResetAbortTaskSet = "abort-task-set"
)

// ResetKinds lists the kinds Reset takes.
var ResetKinds = []string{ResetLUN, ResetTarget, ResetBus, ResetAbortTaskSet}

// Unit attention senses of the resets.
const (
	SenseBusDeviceReset  = "06/29/03"
	SenseBusReset        = "06/29/02"
	SenseCommandsCleared = "06/2f/00"
)

// ResetReport says what a reset reached.
type ResetReport struct {
	Kind string `json:"kind"`
	// Path is the path it was issued on; Scope the LU (device), target
	// (vmhbaA:Cc:Tt) or adapter it reached.
	Path  string `json:"path"`
	Scope string `json:"scope"`
	// Sense is the unit attention the reached paths get.
	Sense string `json:"sense"`
	// Paths are the paths reached, Aborted the tasks ended on all of them.
	Paths   []ResetPath `json:"paths"`
	Aborted int         `json:"aborted"`
	Devices []string    `json:"devices"`
}

// ResetPath is one path a reset reached.
type ResetPath struct {
	Name   string `json:"name"`
	Device string `json:"device"`
	// UnitAttention is the sense its next data I/O gets ("" when none:
	// the issuing path of an abort-task-set).
	UnitAttention string `json:"unit_attention,omitempty"`
	Aborted       int    `json:"aborted"`
	// Skipped says why nothing was done on it (no fault injector).
	Skipped string `json:"skipped,omitempty"`
}

// Reset injects a reset or ABORT TASK SET of a kind on a path (ResetKinds).
func (h *Host) Reset(kind, path string) (ResetReport, error) {
	if !slices.Contains(ResetKinds, kind) {
		return ResetReport{}, errorf(ErrInvalid, "reset kind %q: want %s", kind, strings.Join(ResetKinds, ", "))
	}
	dev, p, err := h.FindPath(path)
	if err != nil {
		return ResetReport{}, err
	}
	loc := p.Location
	var paths []adapterPath
	var scope, sense string
	switch kind {
	case ResetLUN, ResetAbortTaskSet:
		scope, sense = "LU "+dev.Name(), SenseBusDeviceReset
		if kind == ResetAbortTaskSet {
			sense = SenseCommandsCleared
		}
		for _, q := range dev.Paths() {
			paths = append(paths, adapterPath{dev: dev, p: q})
		}
	case ResetTarget:
		scope, sense = fmt.Sprintf("target %s:C%d:T%d", AdapterName(loc), loc.Channel, loc.Target), SenseBusDeviceReset
		for _, ap := range h.adapterPaths()[AdapterName(loc)] {
			if l := ap.p.Location; l.Channel == loc.Channel && l.Target == loc.Target {
				paths = append(paths, ap)
			}
		}
	case ResetBus:
		scope, sense = "adapter "+AdapterName(loc), SenseBusReset
		paths = h.adapterPaths()[AdapterName(loc)]
	}
	what := map[string]string{ResetLUN: "LUN reset", ResetTarget: "target reset", ResetBus: "bus reset", ResetAbortTaskSet: "ABORT TASK SET"}[kind]
	rep, err := h.resetPaths(paths, sense, what, func(ap adapterPath) bool {
		return kind == ResetAbortTaskSet && ap.p == p // the issuing nexus knows
	})
	if err != nil {
		return ResetReport{}, err
	}
	rep.Kind, rep.Path, rep.Scope = kind, p.Name, scope
	h.publishReset(rep, "reset", "", fmt.Sprintf("%s on %s (%s)", what, p.Name, scope))
	return rep, nil
}

// resetPaths ends the tasks the fault layer holds or delays on each path
// and gives each a one-shot unit attention with sense on its next data
// I/O (not the paths noUA picks).
func (h *Host) resetPaths(paths []adapterPath, sense, what string, noUA func(adapterPath) bool) (ResetReport, error) {
	s, err := parseSense(sense)
	if err != nil {
		return ResetReport{}, err
	}
	rep := ResetReport{Sense: sense, Paths: []ResetPath{}, Devices: devicesOf(paths)}
	if rep.Devices == nil {
		rep.Devices = []string{}
	}
	h.mu.RLock()
	fbs := make([]*fault.Backend, len(paths))
	for i, ap := range paths {
		fbs[i] = h.faults[ap.p.Name] // nil: a path adopted without one
	}
	h.mu.RUnlock()
	spec := fault.Spec{Error: "retryable", Sense: sense, Count: 1,
		Ops: []string{fault.OpRead, fault.OpWrite, fault.OpFlush, fault.OpDiscard}}
	for i, ap := range paths {
		rp := ResetPath{Name: ap.p.Name, Device: ap.dev.Name()}
		if fbs[i] == nil {
			rp.Skipped = "no fault injector"
			rep.Paths = append(rep.Paths, rp)
			continue
		}
		rp.Aborted = fbs[i].AbortTasks(&ioerr.Error{Class: ioerr.ClassRetryable, Path: ap.p.Name, Sense: &s,
			Err: errors.New("task aborted by " + what)})
		rep.Aborted += rp.Aborted
		if noUA == nil || !noUA(ap) {
			if _, err := fbs[i].Inject(spec); err != nil {
				return ResetReport{}, fmt.Errorf("%s: path %s: %v", what, ap.p.Name, err)
			}
			rp.UnitAttention = sense
		}
		rep.Paths = append(rep.Paths, rp)
	}
	return rep, nil
}

// publishReset publishes one event per device a reset reached.
func (h *Host) publishReset(rep ResetReport, kind, adapter, what string) {
	now := time.Now()
	for _, dev := range rep.Devices {
		n := 0
		for _, rp := range rep.Paths {
			if rp.Device == dev && rp.UnitAttention != "" {
				n++
			}
		}
		h.publish(mpath.Event{Time: now, Kind: kind, Device: dev, Path: rep.Path, Adapter: adapter, To: rep.Kind,
			Reason: fmt.Sprintf("%s: unit attention %s on %d path(s), %d task(s) aborted", what, rep.Sense, n, rep.Aborted)})
	}
}

// parseSense reads KK/AA/QQ (hex).
func parseSense(s string) (ioerr.Sense, error) {
	var k, a, q uint8
	if _, err := fmt.Sscanf(s, "%02x/%02x/%02x", &k, &a, &q); err != nil {
		return ioerr.Sense{}, fmt.Errorf("sense %q: want KK/AA/QQ in hex: %v", s, err)
	}
	return ioerr.Sense{Key: k, ASC: a, ASCQ: q}, nil
}
