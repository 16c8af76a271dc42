package nmp

import (
	"fmt"

	"github.com/mpathfs/mpathfs/mpath"
)

// The fields of Status that admins of the two stacks know: multipath -ll's
// hwhandler, path groups (selector, prio, status) and per-path dm, checker
// and device states; esxcli storage nmp device list's Working Paths and
// RR's NumIOsPending; esxcli storage nmp path list's Group State, Storage
// Array Type Path Config and Path Selection Policy Path Config.

// HWHandlerer is an SATP that names its dm hardware handler ("1 alua").
type HWHandlerer interface {
	HWHandler() string
}

// CurrentPather is a PSP that sends every I/O to one path at a time
// (FIXED, MRU): Current returns it (nil before the first I/O).
type CurrentPather interface {
	Current() *mpath.Path
}

// Current is FIXED's current path.
func (f *fixed) Current() *mpath.Path { return f.current.Load() }

// Current is MRU's current path.
func (m *mru) Current() *mpath.Path { return m.current.Load() }

// stateFields fills in the fields above; st.Paths is filled already, in
// the order of paths.
func (d *Device) stateFields(st *mpath.DeviceStatus, v *View, psp PSP, paths []*mpath.Path, held map[*mpath.Path]bool) {
	state, reason, since := d.DeviceState()
	st.State, st.StateReason = state, reason
	if !since.IsZero() {
		t := since
		st.StateSince = &t
	}
	st.HWHandler = "0"
	if h, ok := d.SATP().(HWHandlerer); ok {
		st.HWHandler = h.HWHandler()
	}
	// Working paths: the current path of a one-path PSP, else the paths a
	// load-balancing PSP rotates over (the best group).
	working := map[*mpath.Path]bool{}
	if cp, ok := psp.(CurrentPather); ok {
		if c := cp.Current(); c != nil && v.GroupOf != nil {
			if _, usable := v.GroupOf[c]; usable {
				working[c] = true
			}
		}
		if len(working) == 0 && len(v.Best()) > 0 {
			working[v.Best()[0]] = true // what the next I/O picks
		}
	} else {
		for _, p := range v.Best() {
			working[p] = true
		}
	}
	st.WorkingPaths = []string{}
	for i, p := range paths {
		ps := &st.Paths[i]
		pathFields(ps, p, held[p], d.SATP().Name(), psp, working[p])
		if working[p] {
			st.WorkingPaths = append(st.WorkingPaths, p.Name)
		}
		st.IOsPending += p.Inflight.Load()
		st.BytesPending += p.InflightBytes.Load()
	}
	// Groups: the usable ones in the view's order (the first is active),
	// then the paths no group can use now.
	policy := psp.Name() + " " + psp.Config()
	st.Groups = []mpath.PathGroup{}
	seen := map[*mpath.Path]bool{}
	for gi, g := range v.Groups {
		pg := mpath.PathGroup{Group: v.GroupOf[g[0]], Policy: policy, Prio: 1, Status: "enabled", Paths: []string{}}
		if gi == 0 {
			pg.Status = "active"
		}
		for _, p := range g {
			pg.Paths = append(pg.Paths, p.Name)
			seen[p] = true
		}
		for i, p := range paths {
			if p == g[0] {
				pg.Prio = groupPrio(st.Paths[i].ALUAState)
			}
		}
		st.Groups = append(st.Groups, pg)
	}
	rest := mpath.PathGroup{Group: -1, Policy: policy, Status: "disabled", Paths: []string{}}
	for _, p := range paths {
		if !seen[p] {
			rest.Paths = append(rest.Paths, p.Name)
		}
	}
	if len(rest.Paths) > 0 {
		st.Groups = append(st.Groups, rest)
	}
}

// groupPrio is dm's prio of a group by its ALUA state (prio alua), 1
// without ALUA (prio const).
func groupPrio(alua string) int {
	switch alua {
	case "":
		return 1
	case "AO":
		return 50
	case "ANO":
		return 10
	case "S":
		return 1
	}
	return 0
}

// pathFields fills in a path's multipath -ll and esxcli fields.
func pathFields(ps *mpath.PathStatus, p *mpath.Path, heldDown bool, satp string, psp PSP, current bool) {
	state := p.State()
	ps.Current = current
	ps.DMState, ps.Checker, ps.DevState = "active", "ready", "running"
	switch {
	case p.PDL():
		ps.DMState, ps.Checker, ps.DevState = "failed", "faulty", "offline"
	case p.AdminOff():
		ps.DMState, ps.Checker = "failed", "undef" // not probed while off
	case heldDown:
		ps.DMState, ps.Checker = "failed", "delayed"
	case state == mpath.StateDead:
		ps.DMState, ps.Checker, ps.DevState = "failed", "faulty", "transport-offline"
	case state == mpath.StateStandby:
		ps.Checker = "ghost"
	case state == mpath.StateUnknown: // not probed yet: carries no I/O
		ps.DMState, ps.Checker = "undef", "undef"
	}
	switch {
	case state == mpath.StateDead || p.PDL():
		ps.GroupState = "dead"
	case p.AdminOff():
		ps.GroupState = "disabled"
	default:
		ps.GroupState = map[string]string{"AO": "active", "ANO": "active unoptimized", "S": "standby", "U": "unavailable",
			"O": "unavailable", "T": "transitioning", "LBD": "lba dependent"}[ps.ALUAState]
		if ps.GroupState == "" {
			ps.GroupState = map[mpath.PathState]string{mpath.StateActive: "active", mpath.StateStandby: "standby"}[state]
		}
		if ps.GroupState == "" {
			ps.GroupState = state.String()
		}
	}
	if ps.TPG != nil {
		health := "UP"
		if state == mpath.StateDead {
			health = "DOWN"
		}
		ps.SATPPathConfig = fmt.Sprintf("{TPG_id=%d,TPG_state=%s,RTP_health=%s}", *ps.TPG, ps.ALUAState, health)
	} else {
		ps.SATPPathConfig = "SATP " + satp + " does not support path configuration."
	}
	cur := "no"
	if current {
		cur = "yes"
	}
	switch psp.(type) {
	case *fixed:
		pref := "no"
		if ps.Preferred {
			pref = "yes"
		}
		ps.PSPPathConfig = fmt.Sprintf("{current: %s; preferred: %s}", cur, pref)
	case *mru:
		c := "non-current path"
		if current {
			c = "current path"
		}
		ps.PSPPathConfig = fmt.Sprintf("{%s; rank: %d}", c, ps.Rank)
	default:
		ps.PSPPathConfig = "PSP " + psp.Name() + " does not support path configuration."
	}
}
