package array

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/scsi"
)

// Core is the simulated array's state machine: the controllers' health,
// the LU's owner and every target port group's access state. It is pure:
// inputs are events (each with the time it happens) and Advance(now);
// outputs are the states it reports. No clock, goroutines or I/O: Array
// is the thin wrapper that feeds it time.Now().
//
// The model: a group's settled state follows from the owner and the
// controllers' health — a failed controller's group is offline (O); the
// owner's group is active/optimized (AO); the others are
// active/non-optimized (ANO, alua mode) or standby (S, ap mode). An
// explicit STPG or an administrator may override a group's state until
// ownership next changes. A change among AO, ANO, S and U passes through
// transitioning (T) for the configured period; changes to or from O are
// immediate (the controller is gone or has just booted). Every change of
// a group's reported state bumps its generation, which the ports turn
// into one unit attention each.
type Core struct {
	cfg   ArrayConfig
	up    map[string]bool
	owner string
	tpgs  []*tpgCore
	port  map[uint16]*tpgCore

	trespasses, transfers uint64
}

type tpgCore struct {
	id       uint16
	ctrl     string
	ports    []uint16
	state    scsi.State // reported now
	target   scsi.State // where a transition leads (== state when settled)
	until    time.Time  // end of a transition
	override *scsi.State
	gen      uint64 // bumped on every change of state
}

// NewCore builds the state machine for a config at time now.
func NewCore(cfg ArrayConfig, now time.Time) (*Core, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Core{cfg: cfg, up: map[string]bool{}, owner: cfg.Owner, port: map[uint16]*tpgCore{}}
	for _, cc := range cfg.Controllers {
		c.up[cc.Name] = true
		t := &tpgCore{id: cc.TPG, ctrl: cc.Name, ports: cc.Ports, gen: 1}
		t.state = c.settled(t)
		t.target = t.state
		c.tpgs = append(c.tpgs, t)
		for _, p := range cc.Ports {
			c.port[p] = t
		}
	}
	return c, nil
}

// Config is the config the core was built from, defaults filled in.
func (c *Core) Config() ArrayConfig { return c.cfg }

// settled is the state a group should settle in.
func (c *Core) settled(t *tpgCore) scsi.State {
	switch {
	case !c.up[t.ctrl]:
		return scsi.Offline
	case t.override != nil:
		return *t.override
	case t.ctrl == c.owner:
		return scsi.ActiveOptimized
	case c.cfg.Mode == ModeAP:
		return scsi.Standby
	}
	return scsi.ActiveNonOptimized
}

// Advance completes the transitions whose period ended by now. It reports
// whether any group's state changed.
func (c *Core) Advance(now time.Time) bool {
	changed := false
	for _, t := range c.tpgs {
		if t.state == scsi.Transitioning && !now.Before(t.until) {
			t.state = t.target
			t.gen++
			changed = true
		}
	}
	return changed
}

// settle moves every group toward its settled state.
func (c *Core) settle(now time.Time) {
	for _, t := range c.tpgs {
		want := c.settled(t)
		if want == t.target && (t.state == want || t.state == scsi.Transitioning) {
			continue
		}
		t.target = want
		switch {
		case want == scsi.Offline || t.state == scsi.Offline || c.cfg.Transition <= 0:
			if t.state != want {
				t.state = want
				t.gen++
			}
		default:
			if t.state != scsi.Transitioning {
				t.state = scsi.Transitioning
				t.gen++
			}
			t.until = now.Add(c.cfg.Transition)
		}
	}
}

func (c *Core) ctrl(name string) (ControllerConfig, error) {
	for _, cc := range c.cfg.Controllers {
		if cc.Name == name {
			return cc, nil
		}
	}
	return ControllerConfig{}, fmt.Errorf("array %s: no controller %q (have %s): %w", c.cfg.Name, name, c.cfg.controllerNames(), errNoController)
}

func (c *Core) clearOverrides() {
	for _, t := range c.tpgs {
		t.override = nil
	}
}

// firstUp returns the first controller in config order that is up.
func (c *Core) firstUp() string {
	for _, cc := range c.cfg.Controllers {
		if c.up[cc.Name] {
			return cc.Name
		}
	}
	return ""
}

// FailController takes a controller down: its ports vanish and its group
// goes offline. If it owned the LU and the array supports implicit
// transitions, ownership moves to the first surviving controller, whose
// group becomes AO after the transition period.
func (c *Core) FailController(name string, now time.Time) error {
	c.Advance(now)
	if _, err := c.ctrl(name); err != nil {
		return err
	}
	if !c.up[name] {
		return fmt.Errorf("array %s: controller %s is already failed", c.cfg.Name, name)
	}
	c.up[name] = false
	if c.owner == name && c.cfg.Implicit {
		if s := c.firstUp(); s != "" {
			c.owner = s
			c.transfers++
			c.clearOverrides()
		}
	}
	c.settle(now)
	return nil
}

// RestoreController brings a failed controller back. Its group reports its
// settled state at once (ANO or S); with Implicit and Failback the LU
// returns to the preferred controller. If no controller owned the LU
// while all were down, the restored one takes it.
func (c *Core) RestoreController(name string, now time.Time) error {
	c.Advance(now)
	if _, err := c.ctrl(name); err != nil {
		return err
	}
	if c.up[name] {
		return fmt.Errorf("array %s: controller %s is not failed", c.cfg.Name, name)
	}
	c.up[name] = true
	switch {
	case !c.up[c.owner] && c.cfg.Implicit:
		c.owner = name
		c.transfers++
		c.clearOverrides()
	case c.cfg.Implicit && c.cfg.Failback && name == c.cfg.Preferred && c.owner != name:
		c.owner = name
		c.transfers++
		c.clearOverrides()
	}
	c.settle(now)
	return nil
}

// TransferOwnership moves the LU to a controller on the array's own
// initiative (an implicit transition, or an administrator's trespass on
// an active/passive array).
func (c *Core) TransferOwnership(to string, now time.Time) error {
	c.Advance(now)
	if _, err := c.ctrl(to); err != nil {
		return err
	}
	if c.cfg.Mode == ModeALUA && !c.cfg.Implicit {
		return fmt.Errorf("array %s does not support implicit ALUA transitions (TPGS=%d): a host must send STPG (set a TPG state)", c.cfg.Name, c.cfg.TPGS())
	}
	if !c.up[to] {
		return fmt.Errorf("array %s: controller %s is failed: restore it first", c.cfg.Name, to)
	}
	if c.owner == to && !c.hasOverride() {
		return fmt.Errorf("array %s: controller %s already owns the LU", c.cfg.Name, to)
	}
	c.owner = to
	c.transfers++
	c.clearOverrides()
	c.settle(now)
	return nil
}

func (c *Core) hasOverride() bool {
	for _, t := range c.tpgs {
		if t.override != nil {
			return true
		}
	}
	return false
}

// ErrExplicitUnsupported and friends let the port map a refused command to
// the right sense.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// SetTPGs is an explicit Set Target Port Groups from a host. Only AO, ANO
// and S may be asked for. Asking a group for AO moves the LU to its
// controller (the other groups settle at ANO); asking for ANO or S
// overrides that group until ownership next changes. The array must
// support explicit transitions, and every named group's controller must
// be up.
func (c *Core) SetTPGs(states map[uint16]scsi.State, now time.Time) error {
	c.Advance(now)
	if c.cfg.Mode != ModeALUA || !c.cfg.Explicit {
		return refuse("array %s does not support explicit ALUA (TPGS=%d): STPG refused", c.cfg.Name, c.cfg.TPGS())
	}
	if len(states) == 0 {
		return refuse("STPG names no target port group")
	}
	newOwner := ""
	ids := make([]int, 0, len(states))
	for id := range states {
		ids = append(ids, int(id))
	}
	sort.Ints(ids)
	for _, i := range ids {
		id, st := uint16(i), states[uint16(i)]
		t := c.tpg(id)
		if t == nil {
			return refuse("array %s: no target port group %d", c.cfg.Name, id)
		}
		if !c.up[t.ctrl] {
			return refuse("array %s: target port group %d is offline (controller %s failed)", c.cfg.Name, id, t.ctrl)
		}
		switch st {
		case scsi.ActiveOptimized:
			if newOwner != "" {
				return refuse("array %s: STPG asks for two active/optimized groups; this array has one owner", c.cfg.Name)
			}
			newOwner = t.ctrl
		case scsi.ActiveNonOptimized, scsi.Standby:
		default:
			return refuse("array %s: STPG cannot set group %d to %s (only AO, ANO and S)", c.cfg.Name, id, st.Abbrev())
		}
	}
	if newOwner == "" {
		if st, named := states[c.tpgOf(c.owner).id]; named && st != scsi.ActiveOptimized {
			return refuse("array %s: STPG would leave no active/optimized group: name the group to make AO", c.cfg.Name)
		}
	}
	if newOwner != "" && newOwner != c.owner {
		c.owner = newOwner
		c.transfers++
		c.clearOverrides()
	}
	for _, i := range ids {
		id, st := uint16(i), states[uint16(i)]
		t := c.tpg(id)
		if st == scsi.ActiveOptimized {
			t.override = nil
			continue
		}
		s := st
		t.override = &s
	}
	c.settle(now)
	return nil
}

// ForceTPGState is the array administrator setting a group's state
// directly (any state but T), e.g. to put a group in standby or
// unavailable for a test. It lasts until ownership next changes.
func (c *Core) ForceTPGState(id uint16, st scsi.State, now time.Time) error {
	c.Advance(now)
	t := c.tpg(id)
	if t == nil {
		return fmt.Errorf("array %s: no target port group %d (have %s)", c.cfg.Name, id, c.tpgList())
	}
	if st == scsi.Transitioning {
		return fmt.Errorf("array %s: transitioning is not a state to set; it happens between states", c.cfg.Name)
	}
	if st == scsi.Offline {
		return fmt.Errorf("array %s: to take group %d offline, fail controller %s", c.cfg.Name, id, t.ctrl)
	}
	if !c.up[t.ctrl] {
		return fmt.Errorf("array %s: group %d is offline (controller %s failed): restore it first", c.cfg.Name, id, t.ctrl)
	}
	if st == scsi.ActiveOptimized && t.ctrl != c.owner {
		c.owner = t.ctrl
		c.transfers++
		c.clearOverrides()
	}
	s := st
	t.override = &s
	if st == scsi.ActiveOptimized {
		t.override = nil
	}
	c.settle(now)
	return nil
}

// Trespass moves an active/passive array's LU to the controller of the
// port the command came through.
func (c *Core) Trespass(port uint16, now time.Time) error {
	c.Advance(now)
	t := c.port[port]
	if t == nil {
		return refuse("array %s: no port %d", c.cfg.Name, port)
	}
	if c.cfg.Mode != ModeAP {
		return refuse("array %s is an ALUA array: trespass refused; use STPG", c.cfg.Name)
	}
	if !c.up[t.ctrl] {
		return fmt.Errorf("array %s: controller %s is failed", c.cfg.Name, t.ctrl)
	}
	c.trespasses++
	if c.owner == t.ctrl {
		return nil
	}
	c.owner = t.ctrl
	c.clearOverrides()
	c.settle(now)
	return nil
}

func (c *Core) tpg(id uint16) *tpgCore {
	for _, t := range c.tpgs {
		if t.id == id {
			return t
		}
	}
	return nil
}

func (c *Core) tpgOf(ctrl string) *tpgCore {
	for _, t := range c.tpgs {
		if t.ctrl == ctrl {
			return t
		}
	}
	return nil
}

func (c *Core) tpgList() string {
	var s []string
	for _, t := range c.tpgs {
		s = append(s, fmt.Sprint(t.id))
	}
	return strings.Join(s, ", ")
}

// PortAccess is what a port reports about itself right now.
type PortAccess struct {
	Port       uint16
	TPG        uint16
	Controller string
	Up         bool
	State      scsi.State
	// Gen counts the group's state changes; a port reports a unit
	// attention once per change.
	Gen uint64
}

// Port returns a port's access state.
func (c *Core) Port(port uint16) (PortAccess, bool) {
	t := c.port[port]
	if t == nil {
		return PortAccess{}, false
	}
	return PortAccess{Port: port, TPG: t.id, Controller: t.ctrl, Up: c.up[t.ctrl], State: t.state, Gen: t.gen}, true
}

// Report is Report Target Port Groups: every group's descriptor.
func (c *Core) Report() []scsi.TPG {
	out := make([]scsi.TPG, 0, len(c.tpgs))
	for _, t := range c.tpgs {
		out = append(out, scsi.TPG{
			ID:        t.id,
			State:     t.state,
			Pref:      t.ctrl == c.cfg.Preferred,
			Supported: c.supported(),
			Ports:     append([]uint16(nil), t.ports...),
		})
	}
	return out
}

func (c *Core) supported() []scsi.State {
	if c.cfg.Mode == ModeAP {
		return []scsi.State{scsi.ActiveOptimized, scsi.Standby, scsi.Offline}
	}
	s := []scsi.State{scsi.ActiveOptimized, scsi.ActiveNonOptimized, scsi.Standby, scsi.Unavailable, scsi.Offline}
	if c.cfg.Transition > 0 {
		s = append(s, scsi.Transitioning)
	}
	return s
}

// Status is a snapshot of the array, as `mpathfs array status --json`
// prints it.
type Status struct {
	Name        string             `json:"name"`
	Mode        Mode               `json:"mode"`
	Vendor      string             `json:"vendor"`
	Model       string             `json:"model"`
	WWID        string             `json:"wwid"`
	TPGS        int                `json:"tpgs_field"`
	Implicit    bool               `json:"implicit"`
	Explicit    bool               `json:"explicit"`
	Transition  string             `json:"transition"`
	ANOLatency  string             `json:"ano_latency"`
	ANOBW       int64              `json:"ano_bandwidth,omitempty"`
	Owner       string             `json:"owner"`
	Controllers []ControllerStatus `json:"controllers"`
	TPGs        []TPGStatus        `json:"tpgs"`
	Transfers   uint64             `json:"transfers"`
	Trespasses  uint64             `json:"trespasses"`
}

// ControllerStatus is one controller in a Status.
type ControllerStatus struct {
	Name  string   `json:"name"`
	Up    bool     `json:"up"`
	Owner bool     `json:"owner"`
	TPG   uint16   `json:"tpg"`
	Ports []uint16 `json:"ports"`
}

// TPGStatus is one target port group in a Status.
type TPGStatus struct {
	ID         uint16     `json:"id"`
	Controller string     `json:"controller"`
	State      string     `json:"state"` // AO, ANO, S, U, O, T
	Target     string     `json:"target,omitempty"`
	Until      *time.Time `json:"until,omitempty"`
	Pref       bool       `json:"pref"`
	Ports      []uint16   `json:"ports"`
	Changes    uint64     `json:"changes"`
}

// Snapshot returns the array's status.
func (c *Core) Snapshot() Status {
	s := Status{
		Name: c.cfg.Name, Mode: c.cfg.Mode, Vendor: c.cfg.Vendor, Model: c.cfg.Model, WWID: c.cfg.WWID,
		TPGS: c.cfg.TPGS(), Implicit: c.cfg.Implicit, Explicit: c.cfg.Explicit,
		Transition: c.cfg.Transition.String(), ANOLatency: c.cfg.ANOLatency.String(), ANOBW: c.cfg.ANOBandwidth,
		Owner: c.owner, Transfers: c.transfers, Trespasses: c.trespasses,
	}
	for _, cc := range c.cfg.Controllers {
		s.Controllers = append(s.Controllers, ControllerStatus{Name: cc.Name, Up: c.up[cc.Name], Owner: cc.Name == c.owner, TPG: cc.TPG, Ports: append([]uint16(nil), cc.Ports...)})
	}
	for _, t := range c.tpgs {
		ts := TPGStatus{ID: t.id, Controller: t.ctrl, State: t.state.Abbrev(), Pref: t.ctrl == c.cfg.Preferred, Ports: append([]uint16(nil), t.ports...), Changes: t.gen - 1}
		if t.state == scsi.Transitioning {
			u := t.until
			ts.Target, ts.Until = t.target.Abbrev(), &u
		}
		s.TPGs = append(s.TPGs, ts)
	}
	return s
}

// String prints the states compactly: "owner=A 1:AO 2:T->AO".
func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "owner=%s", s.Owner)
	for _, c := range s.Controllers {
		if !c.Up {
			fmt.Fprintf(&b, " %s:down", c.Name)
		}
	}
	for _, t := range s.TPGs {
		fmt.Fprintf(&b, " tpg%d:%s", t.ID, t.State)
		if t.Target != "" {
			fmt.Fprintf(&b, "->%s", t.Target)
		}
	}
	return b.String()
}
