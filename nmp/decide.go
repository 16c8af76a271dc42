package nmp

import (
	"fmt"
	"sort"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
)

// One place decides path states. Every input that may change a path's
// state is an event: an I/O that failed on a path, a round of probe
// results, SATP changes (an RTPG after a unit attention, the checker's
// update, an activation's outcome), an administrator's command, a timer
// tick. The decider turns an event into actions — set a state, mark PDL,
// publish an event, rebuild the routing view, start an activation or a
// checker round, schedule the next tick — and keeps the bookkeeping those
// decisions need (flap damping, APD, whether an activation or a round is
// running). It is pure: no clock (events carry their time), no I/O, no
// goroutines, no locks; it reads the paths' states and asks the SATP's pure
// methods (Checked, Group). It is stepped one event at a time under the
// device's lock, and the actions applied under it, by the device's owner
// goroutine (owner.go) — or, for a failed I/O whose retry waits for the
// decision, by the reporting goroutine itself (report) — raft's Step and
// Ready, pebble's failover monitor.

// evKind is what happened.
type evKind uint8

const (
	// evIOFailed: an I/O failed on path; verdict is the SATP's judgement.
	evIOFailed evKind = iota + 1
	// evProbed: a checker round's probe results, in claim order.
	evProbed
	// evChecked: a checker round is over (probes applied, SATP updated).
	// scheduled: it was a round the decider started (not CheckNow).
	evChecked
	// evChanges: state changes an SATP asked for (Update).
	evChanges
	// evActivated: an activation the decider started returned.
	evActivated
	// evAdmin: the administrator switched path on (with the probe's
	// result, err) or off.
	evAdmin
	// evFail: path is marked dead at once (hot removal).
	evFail
	// evAdd: path joins the device (probed: err).
	evAdd
	// evRemove: the path named name leaves the device.
	evRemove
	// evPolicy: the PSP is replaced by psp.
	evPolicy
	// evTick: the check timer fired.
	evTick
	// evClose: the device closes; nothing is decided any more.
	evClose
	// evRegroup: something the view's grouping reads besides path states
	// changed (hedging marked a path slow, or its mark ended).
	evRegroup
	// evSwitch: the administrator's path switch to path (policy.go).
	evSwitch
	// evQueue: queueing switched on or off (policy.go).
	evQueue
	// evKnobs: failback, no_path_retry or the APD timeout changed (policy.go).
	evKnobs
)

var evNames = [...]string{evIOFailed: "io-failed", evProbed: "probed", evChecked: "checked", evChanges: "changes",
	evActivated: "activated", evAdmin: "admin", evFail: "fail", evAdd: "add", evRemove: "remove",
	evPolicy: "policy", evTick: "tick", evClose: "close", evRegroup: "regroup", evSwitch: "switch", evQueue: "queue",
	evKnobs: "knobs"}

func (k evKind) String() string {
	if int(k) < len(evNames) && evNames[k] != "" {
		return evNames[k]
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// event is one input of the decider.
type event struct {
	kind    evKind
	now     time.Time
	path    *mpath.Path
	name    string // evRemove: a path name or URI; evPolicy: the PSP's name
	op      mpath.OpKind
	err     error // evIOFailed: the I/O's error; evAdmin, evAdd: the probe's; evActivated: the activation's
	verdict Verdict
	on      bool // evAdmin
	probes  []probeResult
	changes []Change
	reason  string    // evFail; evProbed: why the probes ran, when not a checker round
	start   time.Time // evChecked: when the round started
	psp     PSP       // evPolicy
	opts    map[string]string
	sched   bool        // evChecked: the round was scheduled by the decider
	knobs   policyKnobs // evKnobs
}

// probeResult is one path's probe in a checker round.
type probeResult struct {
	p   *mpath.Path
	err error
}

// actKind is what to do.
type actKind uint8

const (
	// actSetState: path goes from state from to state to, for reason.
	actSetState actKind = iota + 1
	// actSetPDL: path's permanent-device-loss mark becomes on.
	actSetPDL
	// actSetAdmin: path's administrative off switch becomes on (off).
	actSetAdmin
	// actPublish: publish ev.
	actPublish
	// actView: publish view as the routing view.
	actView
	// actActivate: start the SATP's activation over paths.
	actActivate
	// actCheck: start a checker round.
	actCheck
	// actSchedule: the next check tick is after from now.
	actSchedule
	// actCaps: recompute discard and write-zeroes support (paths changed).
	actCaps
	// actLeaving: path leaves the device (flush bookkeeping).
	actLeaving
	// actPolicy: psp serves from now on.
	actPolicy
)

var actNames = [...]string{actSetState: "set-state", actSetPDL: "set-pdl", actSetAdmin: "set-admin-off", actPublish: "publish",
	actView: "view", actActivate: "activate", actCheck: "check", actSchedule: "schedule", actCaps: "caps",
	actLeaving: "leaving", actPolicy: "policy"}

func (k actKind) String() string {
	if int(k) < len(actNames) && actNames[k] != "" {
		return actNames[k]
	}
	return fmt.Sprintf("action(%d)", uint8(k))
}

// action is one output of the decider.
type action struct {
	kind     actKind
	path     *mpath.Path
	from, to mpath.PathState
	reason   string
	on       bool
	ev       mpath.Event
	view     *View
	paths    []*mpath.Path
	after    time.Duration
	psp      PSP
	opts     map[string]string
}

// String describes an action for tests and traces.
func (a action) String() string {
	name := ""
	if a.path != nil {
		name = " " + a.path.Name
	}
	switch a.kind {
	case actSetState:
		return fmt.Sprintf("set-state%s %s -> %s (%s)", name, a.from, a.to, a.reason)
	case actSetPDL, actSetAdmin:
		return fmt.Sprintf("%s%s %v", a.kind, name, a.on)
	case actPublish:
		s := "publish " + a.ev.Kind
		if a.ev.Path != "" {
			s += " " + a.ev.Path
		}
		if a.ev.Reason != "" {
			s += " (" + a.ev.Reason + ")"
		}
		return s
	case actView:
		var u []string
		for _, p := range a.view.Usable {
			u = append(u, p.Name)
		}
		if len(a.view.Held) > 0 {
			var h []string
			for _, p := range a.view.Usable {
				if a.view.Held[p] {
					h = append(h, p.Name)
				}
			}
			return fmt.Sprintf("view gen=%d usable=%v held=%v", a.view.Gen, u, h)
		}
		return fmt.Sprintf("view gen=%d usable=%v", a.view.Gen, u)
	case actSchedule:
		return fmt.Sprintf("schedule %v", a.after)
	case actPolicy:
		return "policy " + a.psp.Name()
	}
	return a.kind.String() + name
}

// result is what a synchronous request gets back with its reply.
type result struct {
	err  error
	path *mpath.Path // evRemove: the path that left
}

// decider is a device's decision state. It is stepped and read under the
// device's mu only (so that readers such as Status see it whole).
type decider struct {
	name string
	cfg  *mpath.DeviceConfig
	satp SATP

	paths      []*mpath.Path // claim order
	gen        uint64
	flap       map[*mpath.Path]*flapState
	apdSince   time.Time
	usable     int  // usable paths in the last view
	activating bool // an activation runs
	checking   bool // a scheduled checker round runs
	closed     bool
	pol        policyState // failback and queueing (policy.go)

	out []action
	res result
}

type flapState struct {
	failures  []time.Time
	holdUntil time.Time
	level     int // escalation of the hold-down period
	heldNoted bool
}

func newDecider(name string, cfg *mpath.DeviceConfig, satp SATP, paths []*mpath.Path) *decider {
	pol, _ := parsePolicy(cfg) // NewDevice checked it
	return &decider{name: name, cfg: cfg, satp: satp, paths: paths, flap: map[*mpath.Path]*flapState{}, pol: pol}
}

func (s *decider) emit(a action) { s.out = append(s.out, a) }

func (s *decider) publish(ev mpath.Event) {
	ev.Device = s.name
	s.emit(action{kind: actPublish, ev: ev})
}

func (s *decider) setState(p *mpath.Path, to mpath.PathState, reason string, now time.Time) {
	from := p.State()
	s.emit(action{kind: actSetState, path: p, from: from, to: to, reason: reason})
	if from != to {
		s.publish(mpath.Event{Time: now, Kind: "path-state", Path: p.Name, From: from.String(), To: to.String(), Reason: reason})
	}
	if to == mpath.StateActive && from != mpath.StateActive {
		s.noteReturn(p, now) // policy.go: failback
	}
}

// rebuild asks for a new routing view; it is computed when the owner gets
// to it, after the state changes before it were applied (view).
func (s *decider) rebuild() { s.emit(action{kind: actView}) }

// step decides what an event means. It returns the actions to apply, in
// order, and the reply of a synchronous request. An actView action has no
// view yet: the owner applies the actions before it, then asks view for it.
func (s *decider) step(ev event) ([]action, result) {
	s.out, s.res = nil, result{}
	if s.closed && ev.kind != evClose {
		s.res.err = ioerr.ErrClosed
		return nil, s.res
	}
	switch ev.kind {
	case evIOFailed:
		s.ioFailed(ev)
	case evProbed:
		s.probed(ev)
	case evChecked:
		s.checked(ev)
	case evChanges:
		s.applyChanges(ev.changes, ev.now)
	case evActivated:
		s.activating = false
		if ev.err != nil {
			s.publish(mpath.Event{Time: ev.now, Kind: "activate-failed", Reason: ev.err.Error()})
		}
		s.applyChanges(ev.changes, ev.now)
	case evAdmin:
		s.admin(ev)
	case evFail:
		if ev.path.State() != mpath.StateDead {
			s.setState(ev.path, mpath.StateDead, ev.reason, ev.now)
			s.rebuild()
		}
	case evAdd:
		s.add(ev)
	case evRemove:
		s.remove(ev)
	case evPolicy:
		s.emit(action{kind: actPolicy, psp: ev.psp, opts: ev.opts})
	case evTick:
		if !s.checking {
			s.checking = true
			s.emit(action{kind: actCheck})
		}
	case evClose:
		s.closed = true
	case evRegroup:
		s.rebuild()
	case evSwitch:
		s.switchTo(ev)
	case evQueue:
		s.setQueue(ev)
	case evKnobs:
		s.setPolicyKnobs(ev)
	}
	return s.out, s.res
}

// ioFailed applies an I/O's verdict: PDL, and the state change the SATP
// asked for, to a path still in service.
func (s *decider) ioFailed(ev event) {
	p, v := ev.path, ev.verdict
	changed := false
	if v.Class == ioerr.ClassPermanentLoss && !p.PDL() {
		s.emit(action{kind: actSetPDL, path: p, on: true})
		changed = true
	}
	// A path still unknown meets a failure only through its first probe
	// (it carries no I/O): that judges it too.
	if cur := p.State(); v.State != mpath.StateUnknown && (cur == mpath.StateActive || cur == mpath.StateUnknown) && !p.AdminOff() {
		s.setState(p, v.State, fmt.Sprintf("%s on %s: %v", v.Class, ev.op, ev.err), ev.now)
		if v.State == mpath.StateDead && cur == mpath.StateActive {
			s.noteFailure(p, ev.now)
		}
		changed = true
	}
	if changed {
		s.rebuild()
	}
}

// probed applies a checker round's probe results: paths that pass return
// (unless damping holds them down), paths that fail die.
func (s *decider) probed(ev event) {
	now := ev.now
	changed := false
	for _, r := range ev.probes {
		p := r.p
		if p.AdminOff() || p.PDL() || !s.has(p) {
			continue // only the administrator brings a PDL path back
		}
		want, reason := s.satp.Checked(p, r.err)
		cur := p.State()
		if want == cur {
			continue
		}
		if ev.reason != "" {
			reason += " (" + ev.reason + ")"
		}
		switch want {
		case mpath.StateActive:
			if s.heldDown(p, now) {
				if f := s.flap[p]; f != nil && !f.heldNoted {
					f.heldNoted = true
					s.publish(mpath.Event{Time: now, Kind: "path-held-down", Path: p.Name,
						Reason: fmt.Sprintf("probe passes but the path flapped: held out until %s", f.holdUntil.Format(time.RFC3339Nano))})
				}
				continue
			}
			s.setState(p, want, reason, now)
		case mpath.StateDead:
			s.setState(p, want, reason, now)
			if cur == mpath.StateActive {
				s.noteFailure(p, now)
			}
		default:
			s.setState(p, want, reason, now)
		}
		changed = true
	}
	if changed {
		s.rebuild()
	}
}

// checked ends a checker round: an activation that failed (a trespass
// refused by the guard, an STPG that timed out) is tried again while no
// path is usable; a scheduled round schedules the next, on a fixed
// schedule from its start (a round slowed by a hung probe does not push
// the next one back), sooner while no path is usable.
func (s *decider) checked(ev event) {
	if s.failbackDue(ev.now) { // policy.go: deferred failback
		s.rebuild()
	}
	noUsable := s.usable == 0
	if noUsable {
		for _, p := range s.paths {
			if p.State() == mpath.StateStandby && !p.AdminOff() {
				s.activate()
				break
			}
		}
	}
	// A path the probes left unknown (busy) is probed again soon, not a
	// whole check interval later.
	pending := s.pending()
	if !ev.sched {
		if pending && !s.checking {
			s.emit(action{kind: actSchedule, after: min(s.cfg.CheckInterval, apdCheckInterval)})
		}
		return
	}
	s.checking = false
	next := s.cfg.CheckInterval
	if noUsable || pending {
		next = min(next, apdCheckInterval)
	}
	s.emit(action{kind: actSchedule, after: max(0, next-ev.now.Sub(ev.start))})
}

// applyChanges applies SATP-requested state changes. Paths switched off by
// the administrator, in PDL, or held down by damping are left alone; only
// the checker revives dead paths.
func (s *decider) applyChanges(changes []Change, now time.Time) {
	changed := false
	for _, c := range changes {
		p := c.Path
		if p.AdminOff() || p.PDL() || !s.has(p) {
			continue
		}
		if p.State() == mpath.StateUnknown {
			continue // only its first probe judges a new path
		}
		if c.State == p.State() {
			// The SATP regroups a path (ALUA AO <-> ANO) without a state
			// change: the view must be rebuilt all the same.
			changed = true
			continue
		}
		if c.State == mpath.StateActive && (p.State() == mpath.StateDead || s.heldDown(p, now)) {
			continue
		}
		s.setState(p, c.State, c.Reason, now)
		changed = true
	}
	if changed {
		s.rebuild()
	}
}

// admin applies the administrator's switch. Switching a path on forgets its
// flap history and a permanent device loss; its state is what its probe
// (run by the caller) says.
func (s *decider) admin(ev event) {
	p := ev.path
	if !s.has(p) {
		s.res.err = fmt.Errorf("device %s has no path %q", s.name, p.Name)
		return
	}
	if !ev.on {
		s.emit(action{kind: actSetAdmin, path: p, on: true})
		s.setState(p, mpath.StateDisabled, "administratively off", ev.now)
		s.rebuild()
		return
	}
	want, reason := s.satp.Checked(p, ev.err)
	s.emit(action{kind: actSetAdmin, path: p, on: false})
	s.emit(action{kind: actSetPDL, path: p, on: false})
	delete(s.flap, p)
	if want == mpath.StateActive {
		reason = "administratively on; probe passed"
	} else {
		reason = "administratively on; " + reason
	}
	s.setState(p, want, reason, ev.now)
	s.rebuild()
}

// add takes a new path into the device as unknown: it carries no I/O until
// its first probe (the caller's, an evProbed) judged it.
func (s *decider) add(ev event) {
	p := ev.path
	if findPath(s.paths, p.Name) != nil {
		s.res.err = fmt.Errorf("device %s already has a path %s", s.name, p.Name)
		return
	}
	s.paths = append(s.paths, p)
	// A path joining is not a transition: no path-state event (its first
	// probe's verdict is one, from unknown).
	s.emit(action{kind: actSetState, path: p, from: p.State(), to: mpath.StateUnknown, reason: ReasonUnprobed})
	s.publish(mpath.Event{Time: ev.now, Kind: "path-added", Path: p.Name, To: mpath.StateUnknown.String(), Reason: p.URI})
	s.emit(action{kind: actCaps})
	s.rebuild()
}

// remove takes a path out of the device.
func (s *decider) remove(ev event) {
	idx := -1
	for i, p := range s.paths {
		if p.Name == ev.name || p.URI == ev.name {
			idx = i
		}
	}
	if idx < 0 {
		s.res.err = fmt.Errorf("device %s has no path %q", s.name, ev.name)
		return
	}
	p := s.paths[idx]
	s.emit(action{kind: actLeaving, path: p})
	s.paths = append(append([]*mpath.Path(nil), s.paths[:idx]...), s.paths[idx+1:]...)
	delete(s.flap, p)
	s.publish(mpath.Event{Time: ev.now, Kind: "path-removed", Path: p.Name, Reason: p.URI})
	s.emit(action{kind: actCaps})
	s.rebuild()
	s.res.path = p
}

// activate starts an SATP activation unless one runs.
func (s *decider) activate() {
	if _, ok := s.satp.(Activator); !ok || s.activating || s.closed {
		return
	}
	s.activating = true
	s.emit(action{kind: actActivate, paths: append([]*mpath.Path(nil), s.paths...)})
}

// view computes the routing view from the paths' states as they are now
// (the owner applied the actions before the actView), and decides what the
// view's change means: All-Paths-Down begins or ends; with no usable path
// but some standby, an activation starts.
func (s *decider) view(now time.Time) (*View, []action) {
	s.out = nil
	s.gen++
	nv := &View{Gen: s.gen, All: append([]*mpath.Path(nil), s.paths...), GroupOf: map[*mpath.Path]int{}, changed: make(chan struct{})}
	type gp struct {
		g int
		p *mpath.Path
	}
	var usable []gp
	standby := false
	for _, p := range s.paths {
		if p.AdminOff() {
			continue
		}
		st := p.State()
		if st == mpath.StateStandby {
			standby = true
		}
		if st != mpath.StateActive {
			continue
		}
		g, ok := s.satp.Group(p)
		if !ok {
			continue
		}
		usable = append(usable, gp{g, p})
		nv.GroupOf[p] = g
	}
	sort.SliceStable(usable, func(i, j int) bool { return usable[i].g < usable[j].g })
	for i, u := range usable {
		if i == 0 || u.g != usable[i-1].g {
			nv.Groups = append(nv.Groups, nil)
		}
		nv.Groups[len(nv.Groups)-1] = append(nv.Groups[len(nv.Groups)-1], u.p)
		nv.Usable = append(nv.Usable, u.p)
	}
	s.applyFailback(nv) // policy.go
	s.usable = len(nv.Usable)
	// Paths not probed yet (claimed, added) are not down: no APD while one
	// waits for its first probe, which is bounded by the probe timeout.
	if len(nv.Usable) == 0 && !s.closed && !s.pending() {
		if s.apdSince.IsZero() {
			s.apdSince = now
			s.publish(mpath.Event{Time: now, Kind: "apd-enter", Reason: "no usable path"})
		}
		if standby {
			s.activate()
		}
	} else if len(nv.Usable) > 0 && !s.apdSince.IsZero() {
		s.publish(mpath.Event{Time: now, Kind: "apd-exit",
			Reason: fmt.Sprintf("a path returned after %v", now.Sub(s.apdSince).Round(time.Millisecond))})
		s.apdSince = time.Time{}
	}
	return nv, s.out
}

// ReasonUnprobed is the reason of a path's unknown state: it joined (at
// claim, live, by a rescan, back from offline) and waits for its first
// probe.
const ReasonUnprobed = "waiting for its first probe"

// pending reports whether a path in service waits for its first probe
// (unknown, not switched off, not in PDL).
func (s *decider) pending() bool {
	for _, p := range s.paths {
		if p.State() == mpath.StateUnknown && !p.AdminOff() && !p.PDL() {
			return true
		}
	}
	return false
}

func (s *decider) has(p *mpath.Path) bool {
	for _, q := range s.paths {
		if q == p {
			return true
		}
	}
	return false
}

// noteFailure records a path failure for flap damping: N failures in the
// window hold the path out for the hold-down period, which doubles each
// time the path keeps flapping (a gray failure that passes probes but fails
// I/O cannot bounce back into service forever).
func (s *decider) noteFailure(p *mpath.Path, now time.Time) {
	f := s.flap[p]
	if f == nil {
		f = &flapState{}
		s.flap[p] = f
	}
	cut := now.Add(-s.cfg.FlapWindow)
	keep := f.failures[:0]
	for _, t := range f.failures {
		if t.After(cut) {
			keep = append(keep, t)
		}
	}
	f.failures = append(keep, now)
	if len(f.failures) >= s.cfg.FlapThreshold {
		hold := s.cfg.HoldDown << f.level
		if hold > maxHoldDown || hold <= 0 {
			hold = maxHoldDown
		}
		f.holdUntil = now.Add(hold)
		f.level++
		f.failures = f.failures[:0]
		f.heldNoted = false
		s.publish(mpath.Event{Time: now, Kind: "path-held-down", Path: p.Name,
			Reason: fmt.Sprintf("%d failures within %v: held out of service for %v", s.cfg.FlapThreshold, s.cfg.FlapWindow, hold)})
	}
}

// heldDown reports whether damping keeps the path out of service.
func (s *decider) heldDown(p *mpath.Path, now time.Time) bool {
	f := s.flap[p]
	if f == nil {
		return false
	}
	if now.Before(f.holdUntil) {
		return true
	}
	// A path that stayed healthy for a whole window after its last hold
	// is forgiven its escalation.
	if f.level > 0 && len(f.failures) == 0 && now.Sub(f.holdUntil) > 2*s.cfg.FlapWindow {
		f.level = 0
	}
	return false
}

// held reports whether damping holds p out at now (for Status).
func (s *decider) held(p *mpath.Path, now time.Time) bool {
	f := s.flap[p]
	return f != nil && now.Before(f.holdUntil)
}
