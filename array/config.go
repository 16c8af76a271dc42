package array

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Mode is how the simulated array presents the LU on its controllers.
type Mode string

const (
	// ModeALUA is an asymmetric active/active array (SPC-4 ALUA): the
	// owning controller's group is active/optimized, the others are
	// active/non-optimized and carry I/O over the interconnect.
	ModeALUA Mode = "alua"
	// ModeAP is an active/passive array: only the owning controller serves
	// I/O; the passive controller's ports answer every command with
	// not-ready sense 02/04/03 (SensePassive) until the LU is trespassed to
	// it. The array reports TPGS=0 and no RTPG.
	ModeAP Mode = "ap"
)

// ControllerConfig is one storage controller (storage processor) and its
// target ports, which form one target port group.
type ControllerConfig struct {
	Name string `yaml:"name" json:"name"`
	// TPG is the target port group id of the controller's ports.
	TPG uint16 `yaml:"tpg" json:"tpg"`
	// Ports are the relative target port identifiers.
	Ports []uint16 `yaml:"ports" json:"ports"`
}

// ArrayConfig describes a simulated array with one LU.
type ArrayConfig struct {
	Name        string             `yaml:"name" json:"name"`
	Mode        Mode               `yaml:"mode" json:"mode"`
	Controllers []ControllerConfig `yaml:"controllers" json:"controllers"`
	// Owner is the controller that owns the LU at start (default: the first).
	Owner string `yaml:"owner" json:"owner,omitempty"`
	// Preferred is the controller whose group carries the PREF bit
	// (default: Owner).
	Preferred string `yaml:"preferred" json:"preferred,omitempty"`
	// Implicit: the array changes states on its own (TPGS bit 1): it moves
	// ownership off a failed controller. In ap mode: auto-trespass.
	Implicit bool `yaml:"implicit" json:"implicit"`
	// Explicit: hosts may Set Target Port Groups (TPGS bit 2). alua mode only.
	Explicit bool `yaml:"explicit" json:"explicit"`
	// TrespassOnIO (ap mode only): a data command (read, write, …) through
	// a passive controller's port moves the LU to that controller
	// (auto-trespass) and executes; every other command (TEST UNIT READY,
	// READ CAPACITY …) runs through a passive port as through an active one. Hosts then see every port as usable, and two hosts that
	// prefer different controllers move the LU back and forth on every
	// I/O: path thrashing. Every trespass is a change of the groups'
	// states: the other I_T nexuses get unit attention 2A/06.
	TrespassOnIO bool `yaml:"trespass_on_io" json:"trespass_on_io,omitempty"`
	// Failback: with Implicit, ownership returns to the preferred
	// controller when it is restored.
	Failback bool `yaml:"failback" json:"failback,omitempty"`
	// Transition is how long groups report transitioning (T) while their
	// state changes between active, non-optimized and standby.
	Transition time.Duration `yaml:"transition" json:"transition"`
	// ANOLatency is added to every I/O through a non-owning controller's
	// port (the interconnect hop); ANOBandwidth (bytes/s, 0: unlimited)
	// is the interconnect's bandwidth, shared by all such I/O.
	ANOLatency   time.Duration `yaml:"ano_latency" json:"ano_latency"`
	ANOBandwidth int64         `yaml:"ano_bandwidth" json:"ano_bandwidth,omitempty"`

	Vendor string `yaml:"vendor" json:"vendor,omitempty"`
	Model  string `yaml:"model" json:"model,omitempty"`
	Serial string `yaml:"serial" json:"serial,omitempty"`
	WWID   string `yaml:"wwid" json:"wwid,omitempty"`
}

// DefaultLabArray is the default lab's array: ALUA with implicit and
// explicit transitions, controllers A (TPG 1, ports 1 and 2, owner) and B
// (TPG 2, ports 3 and 4), a 500 ms transition, and a 2 ms, 200 MB/s
// interconnect penalty on B's ports.
func DefaultLabArray() ArrayConfig {
	return ArrayConfig{
		Name: "lab",
		Mode: ModeALUA,
		Controllers: []ControllerConfig{
			{Name: "A", TPG: 1, Ports: []uint16{1, 2}},
			{Name: "B", TPG: 2, Ports: []uint16{3, 4}},
		},
		Owner:        "A",
		Implicit:     true,
		Explicit:     true,
		Transition:   500 * time.Millisecond,
		ANOLatency:   2 * time.Millisecond,
		ANOBandwidth: 200 << 20,
	}
}

// TPGS is the INQUIRY TPGS field the array reports: 0 in ap mode, else
// 1 (implicit), 2 (explicit) or 3 (both).
func (c ArrayConfig) TPGS() int {
	if c.Mode == ModeAP {
		return 0
	}
	t := 0
	if c.Implicit {
		t |= 1
	}
	if c.Explicit {
		t |= 2
	}
	return t
}

// withDefaults validates the config and fills in defaults.
func (c ArrayConfig) withDefaults() (ArrayConfig, error) {
	if c.Mode == "" {
		c.Mode = ModeALUA
	}
	if c.Mode != ModeALUA && c.Mode != ModeAP {
		return c, fmt.Errorf("array %s: mode %q: want alua or ap", c.Name, c.Mode)
	}
	if len(c.Controllers) < 1 {
		return c, fmt.Errorf("array %s: no controllers: give at least one (usually A and B) with a tpg and ports", c.Name)
	}
	if c.Mode == ModeALUA && !c.Implicit && !c.Explicit {
		return c, fmt.Errorf("array %s: an ALUA array supports implicit or explicit transitions or both: set implicit: true or explicit: true", c.Name)
	}
	if c.Mode == ModeAP && c.Explicit {
		return c, fmt.Errorf("array %s: explicit (STPG) needs mode alua; an active/passive array is activated by trespass", c.Name)
	}
	if c.TrespassOnIO && c.Mode != ModeAP {
		return c, fmt.Errorf("array %s: trespass_on_io needs mode ap (an active/passive array); an ALUA array changes states by STPG or implicitly", c.Name)
	}
	if c.Transition < 0 || c.ANOLatency < 0 || c.ANOBandwidth < 0 {
		return c, fmt.Errorf("array %s: transition, ano_latency and ano_bandwidth must not be negative", c.Name)
	}
	names, tpgs, ports := map[string]bool{}, map[uint16]string{}, map[uint16]string{}
	ctrls := make([]ControllerConfig, len(c.Controllers))
	for i, cc := range c.Controllers {
		if cc.Name == "" {
			return c, fmt.Errorf("array %s: controller %d has no name", c.Name, i+1)
		}
		if names[cc.Name] {
			return c, fmt.Errorf("array %s: two controllers named %s", c.Name, cc.Name)
		}
		names[cc.Name] = true
		if cc.TPG == 0 {
			cc.TPG = uint16(i + 1)
		}
		if o, dup := tpgs[cc.TPG]; dup {
			return c, fmt.Errorf("array %s: controllers %s and %s both have TPG %d: give each its own group", c.Name, o, cc.Name, cc.TPG)
		}
		tpgs[cc.TPG] = cc.Name
		if len(cc.Ports) == 0 {
			return c, fmt.Errorf("array %s: controller %s has no ports", c.Name, cc.Name)
		}
		for _, p := range cc.Ports {
			if p == 0 {
				return c, fmt.Errorf("array %s: controller %s: relative port 0 is reserved; number ports from 1", c.Name, cc.Name)
			}
			if o, dup := ports[p]; dup {
				return c, fmt.Errorf("array %s: port %d belongs to both %s and %s", c.Name, p, o, cc.Name)
			}
			ports[p] = cc.Name
		}
		cc.Ports = append([]uint16(nil), cc.Ports...)
		ctrls[i] = cc
	}
	c.Controllers = ctrls
	if c.Owner == "" {
		c.Owner = c.Controllers[0].Name
	}
	if !names[c.Owner] {
		return c, fmt.Errorf("array %s: owner %q is not a controller (have %s)", c.Name, c.Owner, c.controllerNames())
	}
	if c.Preferred == "" {
		c.Preferred = c.Owner
	}
	if !names[c.Preferred] {
		return c, fmt.Errorf("array %s: preferred %q is not a controller (have %s)", c.Name, c.Preferred, c.controllerNames())
	}
	if c.Vendor == "" {
		c.Vendor = "MPATHFS"
	}
	if c.Model == "" {
		c.Model = "ALUA ARRAY"
		if c.Mode == ModeAP {
			c.Model = "AP ARRAY"
		}
	}
	h := sha256.Sum256([]byte("mpathfs-array:" + c.Name))
	if c.Serial == "" {
		c.Serial = "ARR" + hex.EncodeToString(h[:6])
	}
	if c.WWID == "" {
		c.WWID = "naa.6" + hex.EncodeToString(h[8:24])[:31]
	}
	return c, nil
}

func (c ArrayConfig) controllerNames() string {
	s := ""
	for i, cc := range c.Controllers {
		if i > 0 {
			s += ", "
		}
		s += cc.Name
	}
	return s
}

// Validate checks a config without building an array.
func (c ArrayConfig) Validate() error {
	_, err := c.withDefaults()
	return err
}

var errNoController = errors.New("no such controller")
