package host

import (
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/mpath"
)

// Device states (`mpathfs device set --state on|off DEVICE`, esxcli
// storage core device set --state): see nmp's DeviceOn, DeviceOff and
// DeviceDead.
const (
	DeviceStateOn  = "on"
	DeviceStateOff = "off"
)

// SetDeviceState detaches (off) or attaches (on) a device by hand. A
// detached device refuses every I/O at once (EIO; opening its file gets
// ENXIO), as Linux does for a removed disk; attaching it forgets every
// path's permanent device loss and probes every path. It returns the
// device's status.
func (h *Host) SetDeviceState(device, state, reason string) (mpath.DeviceStatus, error) {
	d, err := h.Device(device)
	if err != nil {
		return mpath.DeviceStatus{}, err
	}
	var on bool
	switch state {
	case DeviceStateOn:
		on = true
	case DeviceStateOff:
	default:
		return mpath.DeviceStatus{}, errorf(ErrInvalid, "device state %q: want on or off", state)
	}
	if err := d.SetDeviceState(on, reason); err != nil {
		return mpath.DeviceStatus{}, Kinded(ErrInvalid, err)
	}
	return d.Status(), nil
}

// DeviceStates lists every device's state, in the order they were made.
func (h *Host) DeviceStates() []DeviceState {
	out := []DeviceState{}
	for _, d := range h.Devices() {
		st := d.Status()
		usable := 0
		for _, p := range st.Paths {
			if p.Group >= 0 {
				usable++
			}
		}
		out = append(out, DeviceState{Name: st.Name, State: st.State, Reason: st.StateReason, Since: st.StateSince,
			Size: st.Size, WWID: st.WWID, SATP: st.SATP, PSP: st.PSP, Paths: len(st.Paths), Usable: usable})
	}
	return out
}

// DeviceState is one device as `mpathfs device list` shows it, in the
// spirit of esxcli storage core device list.
type DeviceState struct {
	Name   string     `json:"name"`
	State  string     `json:"state"`
	Reason string     `json:"state_reason,omitempty"`
	Since  *time.Time `json:"state_since,omitempty"`
	Size   int64      `json:"size"`
	WWID   string     `json:"wwid,omitempty"`
	SATP   string     `json:"satp"`
	PSP    string     `json:"psp"`
	Paths  int        `json:"paths"`
	Usable int        `json:"usable_paths"`
}

func (s DeviceState) String() string { return fmt.Sprintf("%s: %s", s.Name, s.State) }
