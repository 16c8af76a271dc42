package host

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	// The SATP rules give a simulated array's paths to VMW_SATP_ALUA or
	// VMW_SATP_DEFAULT_AP: a host that makes arrays registers them.
	_ "github.com/mpathfs/mpathfs/alua"
	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/scsi"
)

// labArray is a simulated array in front of a device's store.
type labArray struct {
	arr  *array.Array
	cfg  array.ArrayConfig
	ctrl map[uint16]int // port -> controller index
}

// decodeArray reads a device's `array:` section strictly.
func decodeArray(dc DeviceConfig) (*array.ArrayConfig, error) {
	if dc.Array == nil {
		return nil, nil
	}
	b, err := yaml.Marshal(dc.Array)
	if err != nil {
		return nil, err
	}
	var ac array.ArrayConfig
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&ac); err != nil {
		return nil, err
	}
	if ac.Name == "" {
		ac.Name = dc.Name
	}
	if ac.Vendor == "" {
		ac.Vendor = "MPATHFS"
	}
	if ac.Model == "" {
		if ac.Mode == array.ModeAP {
			ac.Model = "AP-ARRAY"
		} else {
			ac.Model = "ALUA-ARRAY"
		}
	}
	if ac.WWID == "" {
		ac.WWID = dc.WWID
	}
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	return &ac, nil
}

func newArrayFor(dc DeviceConfig) (*labArray, error) {
	ac, err := decodeArray(dc)
	if err != nil || ac == nil {
		return nil, err
	}
	arr, err := array.New(*ac)
	if err != nil {
		return nil, err
	}
	la := &labArray{arr: arr, cfg: arr.Config(), ctrl: map[uint16]int{}}
	for i, c := range la.cfg.Controllers {
		for _, p := range c.Ports {
			la.ctrl[p] = i
		}
	}
	return la, nil
}

// port puts the path behind the array's target port it names.
func (a *labArray) port(pc PathConfig, b backends.Backend, loc mpath.Location) (backends.Backend, mpath.Location, error) {
	if pc.Port == 0 {
		return nil, loc, fmt.Errorf("the device has an array: give the path a port: (one of %v)", a.arr.Ports())
	}
	p, err := a.arr.NewPort(uint16(pc.Port), b)
	if err != nil {
		return nil, loc, err
	}
	if pc.Location == "" {
		loc.Target = a.ctrl[uint16(pc.Port)]
	}
	return p, loc, nil
}

func (a *labArray) Close() error { return a.arr.Close() }

// ParseALUAState accepts AO/ANO/S/U/O/T, the full names, and the
// hyphenated forms (active-optimized).
func ParseALUAState(s string) (scsi.State, error) {
	if st, err := scsi.ParseState(s); err == nil {
		return st, nil
	}
	return scsi.ParseState(strings.ReplaceAll(strings.ToLower(s), "-", "/"))
}

// ArrayCommand is a command to a simulated array: fail or restore a
// controller, move ownership of the LU to a controller, or set a target
// port group's access state.
type ArrayCommand struct {
	Array string
	// Action is controller-fail (fail), controller-restore (restore),
	// transfer-ownership (transfer) or tpg-state (set-tpg).
	Action     string
	Controller string
	TPG        *int
	// State is an ALUA access state for tpg-state (ParseALUAState).
	State string
}

// Arrays returns the status of every simulated array, by name.
func (h *Host) Arrays() map[string]array.Status {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := map[string]array.Status{}
	for name, a := range h.arrays {
		out[name] = a.arr.Status()
	}
	return out
}

// Array runs a command on a simulated array and returns its status after.
// An unknown array is ErrNotFound; a bad command ErrInvalid.
func (h *Host) Array(c ArrayCommand) (array.Status, error) {
	h.mu.RLock()
	a, ok := h.arrays[c.Array]
	names := make([]string, 0, len(h.arrays))
	for n := range h.arrays {
		names = append(names, n)
	}
	h.mu.RUnlock()
	if !ok {
		sort.Strings(names)
		return array.Status{}, errorf(ErrNotFound, "no array %q (arrays: %v)", c.Array, names)
	}
	var err error
	switch c.Action {
	case "controller-fail", "fail":
		err = a.arr.FailController(c.Controller)
	case "controller-restore", "restore":
		err = a.arr.RestoreController(c.Controller)
	case "transfer-ownership", "transfer":
		err = a.arr.TransferOwnership(c.Controller)
	case "tpg-state", "set-tpg":
		if c.TPG == nil {
			err = errorf(ErrInvalid, "tpg-state needs a tpg")
			break
		}
		var st scsi.State
		if st, err = ParseALUAState(c.State); err == nil {
			err = a.arr.ForceTPGState(uint16(*c.TPG), st)
		}
	default:
		err = errorf(ErrInvalid, "unknown array action %q (want controller-fail, controller-restore, transfer-ownership or tpg-state)", c.Action)
	}
	if err != nil {
		return array.Status{}, err
	}
	st := a.arr.Status()
	h.publish(mpath.Event{Time: time.Now(), Kind: "array", Device: c.Array, To: c.Action + " " + c.Controller, Reason: st.String()})
	return st, nil
}
