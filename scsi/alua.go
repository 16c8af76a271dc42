package scsi

// ALUA vocabulary (SPC-4 5.16): the asymmetric access states of target
// port groups, their descriptors, and the capabilities a path to an ALUA
// (or active/passive) LU offers: Report and Set Target Port Groups, and a
// vendor-specific trespass.

import (
	"context"
	"fmt"
)

// State is a target port group's asymmetric access state (SPC-4 values).
type State uint8

const (
	ActiveOptimized    State = 0x0
	ActiveNonOptimized State = 0x1
	Standby            State = 0x2
	Unavailable        State = 0x3
	Offline            State = 0xe
	Transitioning      State = 0xf
)

// Abbrev is the ESXi abbreviation: AO, ANO, S, U, O, T.
func (s State) Abbrev() string {
	switch s {
	case ActiveOptimized:
		return "AO"
	case ActiveNonOptimized:
		return "ANO"
	case Standby:
		return "S"
	case Unavailable:
		return "U"
	case Offline:
		return "O"
	case Transitioning:
		return "T"
	}
	return fmt.Sprintf("0x%x", uint8(s))
}

func (s State) String() string {
	switch s {
	case ActiveOptimized:
		return "active/optimized"
	case ActiveNonOptimized:
		return "active/non-optimized"
	case Standby:
		return "standby"
	case Unavailable:
		return "unavailable"
	case Offline:
		return "offline"
	case Transitioning:
		return "transitioning"
	}
	return fmt.Sprintf("state(0x%x)", uint8(s))
}

// ParseState accepts an abbreviation (AO, ANO, S, U, O, T) or a full name.
func ParseState(s string) (State, error) {
	for _, st := range []State{ActiveOptimized, ActiveNonOptimized, Standby, Unavailable, Offline, Transitioning} {
		if s == st.Abbrev() || s == st.String() {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown ALUA state %q (want AO, ANO, S, U, O or T)", s)
}

// TPG is one target port group descriptor as Report Target Port Groups
// returns it.
type TPG struct {
	ID    uint16 `json:"id"`
	State State  `json:"state"`
	Pref  bool   `json:"pref"`
	// Supported transitions (the T_SUP, O_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP bits).
	Supported []State `json:"supported,omitempty"`
	// Relative target port identifiers in the group.
	Ports []uint16 `json:"ports"`
}

// PortInfo tells which target port (and so which group) a path reaches.
type PortInfo struct {
	TPG          uint16 `json:"tpg"`
	RelativePort uint16 `json:"relative_port"`
	// TPGS from the standard INQUIRY: 1 implicit, 2 explicit, 3 both.
	TPGS int `json:"tpgs"`
}

// Reporter is the capability of a path to an ALUA LU: the target port it
// reaches and Report Target Port Groups.
type Reporter interface {
	PortInfo(ctx context.Context) (PortInfo, error)
	ReportTPGs(ctx context.Context) ([]TPG, error)
}

// Setter is the capability to ask the array for new group states (Set
// Target Port Groups, explicit ALUA). Only groups named are changed.
type Setter interface {
	SetTPGs(ctx context.Context, states map[uint16]State) error
}

// Trespasser is the capability of a path to an active/passive array to
// move the LU to the controller it reaches (a vendor-specific trespass).
type Trespasser interface {
	Trespass(ctx context.Context) error
}
