package control

import (
	"context"
	"net/http"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
)

// Routes of resets and device states (registered in routes, control.go).
const (
	RouteReset       = "POST /v1/reset"  // ResetRequest → host.ResetReport
	RouteDevices     = "GET /v1/devices" // → DevicesReply
	RouteDeviceState = "POST /v1/device" // DeviceStateRequest → mpath.DeviceStatus
)

type (
	// ResetRequest injects a reset or ABORT TASK SET on a path: kind is
	// lun, target, bus or abort-task-set.
	ResetRequest struct {
		Path string `json:"path"`
		Kind string `json:"kind"`
	}
	// DevicesReply lists the devices with their states.
	DevicesReply struct {
		Devices []host.DeviceState `json:"devices"`
	}
	// DeviceStateRequest detaches (off) or attaches (on) a device.
	DeviceStateRequest struct {
		Device string `json:"device"`
		State  string `json:"state"`
		Reason string `json:"reason,omitempty"`
	}
)

// Reset injects a reset on a path.
func (c *Client) Reset(ctx context.Context, r ResetRequest) (host.ResetReport, error) {
	var rep host.ResetReport
	err := c.call(ctx, RouteReset, r, &rep)
	return rep, err
}

// Devices lists the devices with their states.
func (c *Client) Devices(ctx context.Context) (DevicesReply, error) {
	var rep DevicesReply
	err := c.call(ctx, RouteDevices, nil, &rep)
	return rep, err
}

// DeviceState detaches or attaches a device.
func (c *Client) DeviceState(ctx context.Context, r DeviceStateRequest) (mpath.DeviceStatus, error) {
	var st mpath.DeviceStatus
	err := c.call(ctx, RouteDeviceState, r, &st)
	return st, err
}

func stateRoutes(m *http.ServeMux, rt *Runtime) {
	post(m, RouteReset, func(_ context.Context, r ResetRequest) (host.ResetReport, error) {
		return rt.Host.Reset(r.Kind, r.Path)
	})
	get(m, RouteDevices, func(*http.Request) (DevicesReply, error) {
		return DevicesReply{Devices: rt.Host.DeviceStates()}, nil
	})
	post(m, RouteDeviceState, func(_ context.Context, r DeviceStateRequest) (mpath.DeviceStatus, error) {
		return rt.Host.SetDeviceState(r.Device, r.State, r.Reason)
	})
}
