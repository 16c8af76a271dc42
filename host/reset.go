package host

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/iscsi"
	"github.com/mpathfs/mpathfs/mpath"
)

// Resets and task management an operator issues on a path (`mpathfs
// reset KIND PATH`). Each does what the real one does to the paths it
// reaches: the tasks in flight on them end with a retryable error (the NMP
// retries them), and each reached path answers its next data I/O with the
// unit attention the reset establishes, once:
//
//	lun             every path to the path's LU (its device)     06/29/03 BUS DEVICE RESET FUNCTION OCCURRED
//	target          every path through the path's target         06/29/03
//	                (vmhbaA:Cc:Tt), whatever its LU
//	bus             every path of the path's adapter (vmhbaA)    06/29/02 SCSI BUS RESET OCCURRED
//	abort-task-set  every path to the path's LU: tasks ended;    06/2F/00 COMMANDS CLEARED BY ANOTHER INITIATOR
//	                the unit attention on every path but the        (not on the issuing path)
//	                one it was issued on
//
// A path whose transport does task management (an iscsi:// path) gets
// the real function sent to its target: lun → LOGICAL UNIT RESET, once
// per LU (target name and LUN); target and bus → TARGET WARM RESET, once
// per target (iSCSI has no bus: a bus reset resets every device on it,
// and the target reset is the transport's nearest whole-target function,
// as Linux's iSCSI error handler sends it for a target or host reset);
// abort-task-set → ABORT TASK SET on each path (it only ever ends the
// tasks of the I_T nexus it is sent on). The target ends the commands and
// establishes its own unit attention (a reset's 06/29/xx on every nexus;
// none for ABORT TASK SET, which does not touch other nexuses), which
// reaches the path the normal way: no synthetic one is injected. Other
// paths get the effects injected at the fault layer: the tasks it holds
// or delays end, and a one-shot sense fault gives the unit attention.
// Tasks the fault layer holds on an iSCSI path never reached the target:
// they end too.
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
	// TMF is the task management function the path's target got
	// ("LOGICAL UNIT RESET", …), or "injected" when the effects were
	// injected at the fault layer. TMFSentOn names the path it went on
	// when that is another one (a LUN or target reset is sent once per
	// LU or target); TMFError says why it failed (the target rejected or
	// does not support it, or the session is down): then nothing was
	// done at the target for this path.
	TMF       string `json:"tmf,omitempty"`
	TMFSentOn string `json:"tmf_sent_on,omitempty"`
	TMFError  string `json:"tmf_error,omitempty"`
}

// TMFInjected is ResetPath.TMF of a path that got the effects injected.
const TMFInjected = "injected"

// tmfPath is a path backend that sends real task management functions to
// its target (iscsipath).
type tmfPath interface {
	TaskManagement(ctx context.Context, fn uint8) (int, error)
	TargetLUN() (target string, lun uint64)
}

func tmfOf(p *mpath.Path) tmfPath {
	t, _ := backends.As[tmfPath](p.Backend)
	return t
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
	fn := map[string]uint8{ResetLUN: iscsi.TMFLogicalUnitReset, ResetTarget: iscsi.TMFTargetWarmReset,
		ResetBus: iscsi.TMFTargetWarmReset, ResetAbortTaskSet: iscsi.TMFAbortTaskSet}[kind]
	rep, err := h.resetPaths(paths, sense, what, fn, p, func(ap adapterPath) bool {
		return kind == ResetAbortTaskSet && ap.p == p // the issuing nexus knows
	})
	if err != nil {
		return ResetReport{}, err
	}
	rep.Kind, rep.Path, rep.Scope = kind, p.Name, scope
	h.publishReset(rep, "reset", "", fmt.Sprintf("%s on %s (%s)", what, p.Name, scope))
	return rep, nil
}

// resetPaths does a reset on paths: fn (an iSCSI task management
// function) goes to the target of each path that does task management,
// sent on issuing when it is among them; the other paths get a one-shot
// unit attention with sense on their next data I/O (not the paths noUA
// picks); and the tasks the fault layer holds or delays on every path end.
func (h *Host) resetPaths(paths []adapterPath, sense, what string, fn uint8, issuing *mpath.Path, noUA func(adapterPath) bool) (ResetReport, error) {
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
	rps := h.sendTMFs(paths, fn, issuing)
	spec := fault.Spec{Error: "retryable", Sense: sense, Count: 1,
		Ops: []string{fault.OpRead, fault.OpWrite, fault.OpFlush, fault.OpDiscard}}
	for i, ap := range paths {
		rp := rps[i]
		if fbs[i] == nil {
			if rp.TMF == "" {
				rp.Skipped = "no fault injector"
			}
			rep.Aborted += rp.Aborted
			rep.Paths = append(rep.Paths, rp)
			continue
		}
		rp.Aborted += fbs[i].AbortTasks(&ioerr.Error{Class: ioerr.ClassRetryable, Path: ap.p.Name, Sense: &s,
			Err: errors.New("task aborted by " + what)})
		rep.Aborted += rp.Aborted
		if rp.TMF == "" {
			rp.TMF = TMFInjected
			if noUA == nil || !noUA(ap) {
				if _, err := fbs[i].Inject(spec); err != nil {
					return ResetReport{}, fmt.Errorf("%s: path %s: %v", what, ap.p.Name, err)
				}
				rp.UnitAttention = sense
			}
		}
		rep.Paths = append(rep.Paths, rp)
	}
	return rep, nil
}

// sendTMFs sends fn to the targets of the paths that do task management:
// ABORT TASK SET on each (it ends the tasks of its own nexus only), LUN
// RESET once per target and LU, TARGET WARM RESET once per target — on
// issuing when it is one of them, else on the first path. The result has
// one ResetPath per path, its TMF empty for the paths without task
// management.
func (h *Host) sendTMFs(paths []adapterPath, fn uint8, issuing *mpath.Path) []ResetPath {
	rps := make([]ResetPath, len(paths))
	tms := make([]tmfPath, len(paths))
	key := func(tm tmfPath, name string) string {
		target, lun := tm.TargetLUN()
		switch fn {
		case iscsi.TMFLogicalUnitReset:
			return fmt.Sprintf("%s\x00%d", target, lun)
		case iscsi.TMFTargetWarmReset:
			return target
		}
		return "path\x00" + name
	}
	sender := map[string]int{}
	for i, ap := range paths {
		rps[i] = ResetPath{Name: ap.p.Name, Device: ap.dev.Name()}
		if fn == 0 {
			continue
		}
		if tms[i] = tmfOf(ap.p); tms[i] != nil {
			k := key(tms[i], ap.p.Name)
			if _, taken := sender[k]; !taken || ap.p == issuing {
				sender[k] = i + 1
			}
		}
	}
	name := iscsi.TMFName(fn)
	type result struct {
		n   int
		err error
	}
	results := map[string]result{}
	for k, i := range sender {
		// bounded by the session's task management timeout
		n, err := tms[i-1].TaskManagement(context.Background(), fn)
		results[k] = result{n, err}
	}
	for i, tm := range tms {
		if tm == nil {
			continue
		}
		k := key(tm, paths[i].p.Name)
		rps[i].TMF = name
		if s := sender[k] - 1; s != i {
			rps[i].TMFSentOn = paths[s].p.Name
		} else {
			rps[i].Aborted = results[k].n
		}
		if err := results[k].err; err != nil {
			rps[i].TMFError = err.Error()
		}
	}
	return rps
}

// publishReset publishes one event per device a reset reached.
func (h *Host) publishReset(rep ResetReport, kind, adapter, what string) {
	now := time.Now()
	for _, dev := range rep.Devices {
		n := 0
		tmf := map[string]int{}
		for _, rp := range rep.Paths {
			if rp.Device == dev && rp.UnitAttention != "" {
				n++
			}
			if rp.Device == dev && rp.TMF != "" && rp.TMF != TMFInjected {
				if rp.TMFError != "" {
					tmf[rp.TMF+" failed"]++
				} else {
					tmf[rp.TMF+" sent to the target"]++
				}
			}
		}
		reason := fmt.Sprintf("%s: unit attention %s on %d path(s), %d task(s) aborted", what, rep.Sense, n, rep.Aborted)
		for _, k := range slices.Sorted(maps.Keys(tmf)) {
			reason += fmt.Sprintf("; %s for %d path(s)", k, tmf[k])
		}
		h.publish(mpath.Event{Time: now, Kind: kind, Device: dev, Path: rep.Path, Adapter: adapter, To: rep.Kind, Reason: reason})
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
