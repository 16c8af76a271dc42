package nmp

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// Failback and queueing policy: dm-multipath's failback and no_path_retry
// on the NMP's decider, and the administrator's path switch (dm's
// switchgroup, ESXi's "fail back by hand" for MRU and FIXED).
//
// Failback decides when a path that returned to service (the checker
// reinstated it, the administrator switched it on) is used again by the
// PSPs that would prefer it: a returning path is "held" until failback
// allows it. A held path is usable — it carries I/O when no unheld path
// is — but it does not draw I/O away from the path in use:
//
//   - a group whose every usable path is held is placed after the groups
//     with an unheld path (dm: the path group is not switched to);
//   - VMW_PSP_FIXED does not return to a held preferred path;
//   - VMW_PSP_MRU never fails back in any mode (ESXi); within a group, the
//     round-robin PSPs use a held path at once (dm: failback is about path
//     groups, a reinstated path of the group in use is used at once).
//
// The modes, as dm-multipath's multipath.conf(5) defines them:
//
//	immediate   nothing is held (the default, and ESXi's FIXED behaviour)
//	manual      held until `path switch` names it or its group
//	followover  held unless it is the first path of its group to return
//	            (a whole group coming back is failed back to; a path that
//	            returns beside a group still in use is not)
//	N           held until it has been in service N seconds (checked at
//	            each checker round, as dm checks at each checker tick)
//
// When no unheld path is usable, the held ones carry I/O and are no longer
// held: they are the paths in use.
//
// no_path_retry decides how long an I/O waits when no path is usable:
//
//	(unset)  up to apd_timeout (ESXi's All-Paths-Down timeout, 140 s)
//	queue    without limit, until a path returns (dm's queue_if_no_path)
//	fail     not at all: the I/O fails at once
//	N        up to N checker intervals (N × check_interval)
//
// `queue off DEVICE` (dm's disablequeueing) fails every waiting I/O and
// every later one while no path is usable, whatever no_path_retry says;
// `queue on DEVICE` (restorequeueing) restores the configured policy.

// FailbackMode is one of dm-multipath's failback modes.
type FailbackMode uint8

const (
	FailbackImmediate FailbackMode = iota
	FailbackManual
	FailbackFollowover
	// FailbackDeferred: after Failback.After in service.
	FailbackDeferred
)

// Failback is a device's failback policy.
type Failback struct {
	Mode  FailbackMode
	After time.Duration // FailbackDeferred
}

func (f Failback) String() string {
	switch f.Mode {
	case FailbackManual:
		return "manual"
	case FailbackFollowover:
		return "followover"
	case FailbackDeferred:
		return strconv.FormatInt(int64(f.After/time.Second), 10)
	}
	return "immediate"
}

// ParseFailback parses immediate, manual, followover or a number of
// seconds (dm-multipath's syntax); "" is immediate.
func ParseFailback(s string) (Failback, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case "", "immediate":
		return Failback{}, nil
	case "manual":
		return Failback{Mode: FailbackManual}, nil
	case "followover":
		return Failback{Mode: FailbackFollowover}, nil
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return Failback{}, fmt.Errorf("failback %q: want immediate, manual, followover or a number of seconds ≥ 1", s)
		}
		return Failback{Mode: FailbackDeferred, After: time.Duration(n) * time.Second}, nil
	}
}

// NoPathRetryMode is one of dm-multipath's no_path_retry settings.
type NoPathRetryMode uint8

const (
	// RetryAPD: wait up to the APD timeout (unset).
	RetryAPD NoPathRetryMode = iota
	RetryQueue
	RetryFail
	// RetryChecks: wait up to NoPathRetry.Checks checker intervals.
	RetryChecks
)

// NoPathRetry is how long I/O waits while no path is usable.
type NoPathRetry struct {
	Mode   NoPathRetryMode
	Checks int
}

func (n NoPathRetry) String() string {
	switch n.Mode {
	case RetryQueue:
		return "queue"
	case RetryFail:
		return "fail"
	case RetryChecks:
		return strconv.Itoa(n.Checks)
	}
	return ""
}

// ParseNoPathRetry parses queue, fail or a number of checker intervals;
// "" leaves the wait to the APD timeout.
func ParseNoPathRetry(s string) (NoPathRetry, error) {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case "":
		return NoPathRetry{}, nil
	case "queue":
		return NoPathRetry{Mode: RetryQueue}, nil
	case "fail":
		return NoPathRetry{Mode: RetryFail}, nil
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return NoPathRetry{}, fmt.Errorf("no_path_retry %q: want queue, fail or a number of checker intervals ≥ 1 (0 is fail: write fail)", s)
		}
		return NoPathRetry{Mode: RetryChecks, Checks: n}, nil
	}
}

// CheckAPDTimeout rejects an APD timeout that is zero or negative: it is
// how long I/O waits for a path to return, and "not at all" is spelled
// no_path_retry fail. The flag, the config file and `policy set` all ask
// it (an engine config's zero still means the default: not given).
func CheckAPDTimeout(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("apd_timeout %v: want a positive duration such as 140s (leave it out for the default %v; to fail I/O at once when no path is left, use no_path_retry fail)", d, DefaultAPDTimeout)
	}
	return nil
}

// policyState is the decider's failback and queueing bookkeeping.
type policyState struct {
	failback Failback
	npr      NoPathRetry
	queueOff bool // `queue off`: fail while no path is usable
	// apd is the APD timeout `policy set` gave (0: the config's); the
	// config is read without the lock elsewhere, so it is not changed.
	apd time.Duration
	// held are the paths that returned and wait for failback, with the
	// time they returned.
	held map[*mpath.Path]time.Time
}

// parsePolicy reads the device config's failback and no_path_retry.
func parsePolicy(cfg *mpath.DeviceConfig) (policyState, error) {
	fb, err := ParseFailback(cfg.Failback)
	if err != nil {
		return policyState{}, err
	}
	npr, err := ParseNoPathRetry(cfg.NoPathRetry)
	if err != nil {
		return policyState{}, err
	}
	return policyState{failback: fb, npr: npr}, nil
}

// noteReturn holds a path that came back into service, as failback says.
func (s *decider) noteReturn(p *mpath.Path, now time.Time) {
	switch s.pol.failback.Mode {
	case FailbackImmediate:
		return
	case FailbackFollowover:
		if s.firstOfGroup(p) {
			return
		}
	}
	if s.pol.held == nil {
		s.pol.held = map[*mpath.Path]time.Time{}
	}
	s.pol.held[p] = now
}

// firstOfGroup reports whether no other path of p's group is in service.
func (s *decider) firstOfGroup(p *mpath.Path) bool {
	g, _ := s.satp.Group(p)
	for _, q := range s.paths {
		if q == p || q.AdminOff() || q.State() != mpath.StateActive {
			continue
		}
		if qg, ok := s.satp.Group(q); ok && qg == g {
			return false
		}
	}
	return true
}

// failbackDue releases the held paths whose deferred failback is due; it
// reports whether any was.
func (s *decider) failbackDue(now time.Time) bool {
	if s.pol.failback.Mode != FailbackDeferred {
		return false
	}
	due := false
	for p, t := range s.pol.held {
		if now.Sub(t) >= s.pol.failback.After {
			delete(s.pol.held, p)
			due = true
		}
	}
	return due
}

// applyFailback orders the view's groups and marks its held paths (view):
// a group of held paths only goes after the groups with an unheld one.
// With no unheld path usable, the held ones are the paths in use.
func (s *decider) applyFailback(nv *View) {
	if len(s.pol.held) == 0 {
		return
	}
	for p := range s.pol.held {
		if p.State() != mpath.StateActive || p.AdminOff() || !s.has(p) {
			delete(s.pol.held, p)
		}
	}
	held := map[*mpath.Path]bool{}
	unheld := false
	for _, p := range nv.Usable {
		if _, ok := s.pol.held[p]; ok {
			held[p] = true
		} else {
			unheld = true
		}
	}
	if !unheld {
		clear(s.pol.held)
		return
	}
	if len(held) == 0 {
		return
	}
	var front, back [][]*mpath.Path
	for _, g := range nv.Groups {
		all := true
		for _, p := range g {
			all = all && held[p]
		}
		if all {
			back = append(back, g)
		} else {
			front = append(front, g)
		}
	}
	nv.Groups = append(front, back...)
	nv.Usable = nv.Usable[:0:0]
	for _, g := range nv.Groups {
		nv.Usable = append(nv.Usable, g...)
	}
	nv.Held = held
}

// switchTo is the administrator's path switch: p and its group are no
// longer held. The PSP's part (MRU's and FIXED's current path) follows in
// Device.SwitchPath.
func (s *decider) switchTo(ev event) {
	p := ev.path
	if err := s.switchable(p); err != nil {
		s.res.err = err
		return
	}
	g, _ := s.satp.Group(p)
	for q := range s.pol.held {
		if qg, ok := s.satp.Group(q); q == p || (ok && qg == g) {
			delete(s.pol.held, q)
		}
	}
	s.publish(mpath.Event{Time: ev.now, Kind: "path-switch", Path: p.Name, Reason: "administrator: path switch"})
	s.rebuild()
}

// switchable says why a path cannot be switched to, if it cannot.
func (s *decider) switchable(p *mpath.Path) error {
	switch {
	case !s.has(p):
		return fmt.Errorf("device %s has no path %q", s.name, p.Name)
	case p.AdminOff():
		return fmt.Errorf("path %s is switched off: `mpathfs path set --state on %s` first", p.Name, p.Name)
	case p.PDL():
		return fmt.Errorf("path %s reports permanent device loss: it cannot carry I/O", p.Name)
	case p.State() != mpath.StateActive:
		return fmt.Errorf("path %s is %s, not active: only a usable path can be switched to", p.Name, p.State())
	}
	if _, ok := s.satp.Group(p); !ok {
		return fmt.Errorf("path %s is active but its SATP (%s) does not let it carry I/O now (e.g. an ALUA standby or unavailable port)", p.Name, s.satp.Name())
	}
	return nil
}

// setQueue is `queue on|off`: the waiting I/Os see a new view and ask
// again how long they may wait.
func (s *decider) setQueue(ev event) {
	if s.pol.queueOff == !ev.on {
		return
	}
	s.pol.queueOff = !ev.on
	st, why := "on", "restorequeueing: no_path_retry "+s.noPathRetryString()
	if !ev.on {
		st, why = "off", "disablequeueing: I/O fails at once while no path is usable"
	}
	s.publish(mpath.Event{Time: ev.now, Kind: "queueing", To: st, Reason: why})
	s.rebuild()
}

// setPolicyKnobs is `policy set --failback/--no-path-retry/--apd-timeout`.
func (s *decider) setPolicyKnobs(ev event) {
	k := ev.knobs
	if k.failback != nil {
		s.pol.failback = *k.failback
		s.cfg.Failback = k.failback.String()
		if k.failback.Mode == FailbackImmediate {
			clear(s.pol.held)
		}
	}
	if k.npr != nil {
		s.pol.npr = *k.npr
		s.cfg.NoPathRetry = k.npr.String()
	}
	if k.apd > 0 {
		s.pol.apd = k.apd
	}
	s.publish(mpath.Event{Time: ev.now, Kind: "policy", To: fmt.Sprintf("failback=%s no_path_retry=%s apd_timeout=%v",
		s.pol.failback, s.noPathRetryString(), s.apdTimeout()), Reason: "policy set"})
	s.rebuild()
}

func (s *decider) noPathRetryString() string {
	if v := s.pol.npr.String(); v != "" {
		return v
	}
	return "unset (apd_timeout " + s.apdTimeout().String() + ")"
}

// apdTimeout is the device's APD timeout: `policy set`'s, else the config's.
func (s *decider) apdTimeout() time.Duration {
	if s.pol.apd > 0 {
		return s.pol.apd
	}
	return s.cfg.APDTimeout
}

// policyKnobs are the failback and queueing settings `policy set` changes
// (nil: keep).
type policyKnobs struct {
	failback *Failback
	npr      *NoPathRetry
	apd      time.Duration
}

// waitLimit says how long an I/O may wait while no path is usable, and
// why: forever (queue), 0 (fail, queueing off), N checker intervals or
// the APD timeout.
func (s *decider) waitLimit() (limit time.Duration, forever bool, why string) {
	if s.pol.queueOff {
		return 0, false, "queueing is off (`mpathfs queue on " + s.name + "` restores it)"
	}
	switch s.pol.npr.Mode {
	case RetryQueue:
		return 0, true, "no_path_retry queue"
	case RetryFail:
		return 0, false, "no_path_retry fail"
	case RetryChecks:
		return time.Duration(s.pol.npr.Checks) * s.cfg.CheckInterval, false,
			fmt.Sprintf("no_path_retry %d × check_interval %v", s.pol.npr.Checks, s.cfg.CheckInterval)
	}
	return s.apdTimeout(), false, whyAPD
}

// whyAPD: the wait is the APD timeout's (no_path_retry unset).
const whyAPD = "apd_timeout"

// Switcher is a PSP that can be told which path to use (MRU, FIXED): the
// administrator's path switch.
type Switcher interface {
	// Switch makes p the path in use, or says why it cannot be.
	Switch(v *View, p *mpath.Path) error
}

// SwitchPath is the administrator's path switch: PATH becomes the path in
// use (MRU, FIXED) and it and its group are no longer held for failback
// (every PSP). An unusable path is an error naming why.
func (d *Device) SwitchPath(name string) error {
	p := d.FindPath(name)
	if p == nil {
		return fmt.Errorf("device %s has no path %q", d.name, name)
	}
	if r := d.tell(event{kind: evSwitch, path: p}); r.err != nil {
		return r.err
	}
	sw, ok := d.psp.Load().psp.(Switcher)
	if !ok {
		return nil
	}
	return sw.Switch(d.View(), p)
}

// SetQueueing is `queue on|off DEVICE`.
func (d *Device) SetQueueing(on bool) error {
	return d.tell(event{kind: evQueue, on: on}).err
}

// PolicyChange is what `policy set` may change beside the PSP; "" or 0
// keeps a setting.
type PolicyChange struct {
	Failback    string
	NoPathRetry string
	APDTimeout  time.Duration
	// APDTimeoutSet: APDTimeout was given (so 0 is an error, not "keep").
	APDTimeoutSet bool
}

// SetFailbackPolicy changes failback, no_path_retry and the APD timeout
// live, checked as the config file and the mount flags are.
func (d *Device) SetFailbackPolicy(c PolicyChange) error {
	var k policyKnobs
	if c.Failback != "" {
		fb, err := ParseFailback(c.Failback)
		if err != nil {
			return fmt.Errorf("device %s: %w", d.name, err)
		}
		k.failback = &fb
	}
	if c.NoPathRetry != "" {
		n, err := ParseNoPathRetry(c.NoPathRetry)
		if err != nil {
			return fmt.Errorf("device %s: %w", d.name, err)
		}
		k.npr = &n
	}
	if c.APDTimeoutSet {
		if err := CheckAPDTimeout(c.APDTimeout); err != nil {
			return fmt.Errorf("device %s: %w", d.name, err)
		}
		k.apd = c.APDTimeout
	}
	if k.failback == nil && k.npr == nil && k.apd == 0 {
		return nil
	}
	return d.tell(event{kind: evKnobs, knobs: k}).err
}

// policyStatus fills the failback and queueing fields of a status (under mu).
func (s *decider) policyStatus(o *mpath.DeviceOpts) {
	o.Failback = s.pol.failback.String()
	o.NoPathRetry = s.pol.npr.String()
	o.Queueing = "on"
	if s.pol.queueOff {
		o.Queueing = "off"
	}
	o.APDTimeout = s.apdTimeout().String()
}

// isHeld reports whether p waits for failback (Status).
func (s *decider) isHeld(p *mpath.Path) bool {
	_, ok := s.pol.held[p]
	return ok
}
