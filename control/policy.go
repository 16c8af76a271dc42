package control

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// The failback and queueing routes: the administrator's path switch
// (dm's switchgroup, ESXi's "fail back by hand") and queue on|off (dm's
// restorequeueing and disablequeueing). `policy set`'s --failback,
// --no-path-retry and --apd-timeout ride on RoutePolicy (PolicyRequest).
const (
	RoutePathSwitch = "POST /v1/path/switch" // PathSwitchRequest → mpath.DeviceStatus
	RouteQueue      = "POST /v1/queue"       // QueueRequest → mpath.DeviceStatus
)

type (
	// PathSwitchRequest makes a path the one in use.
	PathSwitchRequest struct {
		Path string `json:"path"`
	}
	// QueueRequest switches a device's queueing on or off.
	QueueRequest struct {
		Device string `json:"device"`
		State  string `json:"state"` // on|off
	}
)

// policyAdmin is what the failback and queueing routes ask of a device
// (the NMP's).
type policyAdmin interface {
	SwitchPath(name string) error
	SetQueueing(on bool) error
	SetFailbackPolicy(c nmp.PolicyChange) error
}

func asPolicyAdmin(d host.Device) (policyAdmin, error) {
	pa, ok := d.(policyAdmin)
	if !ok {
		return nil, fmt.Errorf("%w: device %s has no failback or queueing policy (its multipathing plugin is not the NMP)", ErrInvalid, d.Name())
	}
	return pa, nil
}

// policyRoutes registers the failback and queueing routes.
func policyRoutes(m *http.ServeMux, rt *Runtime) {
	post(m, RoutePathSwitch, func(_ context.Context, r PathSwitchRequest) (mpath.DeviceStatus, error) {
		if r.Path == "" {
			return mpath.DeviceStatus{}, fmt.Errorf("%w: give the path to switch to (a name from `mpathfs path list`)", ErrInvalid)
		}
		d, p, err := rt.FindPath(r.Path)
		if err != nil {
			return mpath.DeviceStatus{}, err
		}
		pa, err := asPolicyAdmin(d)
		if err != nil {
			return mpath.DeviceStatus{}, err
		}
		if err := pa.SwitchPath(p.Name); err != nil {
			return mpath.DeviceStatus{}, host.Kinded(ErrInvalid, err)
		}
		return d.Status(), nil
	})
	post(m, RouteQueue, func(_ context.Context, r QueueRequest) (mpath.DeviceStatus, error) {
		d, err := rt.Device(r.Device)
		if err != nil {
			return mpath.DeviceStatus{}, err
		}
		var on bool
		switch r.State {
		case "on":
			on = true
		case "off":
		default:
			return mpath.DeviceStatus{}, fmt.Errorf("%w: queue state %q: want on or off", ErrInvalid, r.State)
		}
		pa, err := asPolicyAdmin(d)
		if err != nil {
			return mpath.DeviceStatus{}, err
		}
		if err := pa.SetQueueing(on); err != nil {
			return mpath.DeviceStatus{}, err
		}
		return d.Status(), nil
	})
}

// setPolicyKnobs applies a PolicyRequest's failback, no_path_retry and APD
// timeout (the PSP is SetPolicy's).
func setPolicyKnobs(d host.Device, r PolicyRequest) error {
	if r.Failback == "" && r.NoPathRetry == "" && r.APDTimeout == "" {
		return nil
	}
	pa, err := asPolicyAdmin(d)
	if err != nil {
		return err
	}
	c := nmp.PolicyChange{Failback: r.Failback, NoPathRetry: r.NoPathRetry}
	if r.APDTimeout != "" {
		v, err := time.ParseDuration(r.APDTimeout)
		if err != nil {
			return fmt.Errorf("%w: apd_timeout %q is not a duration (e.g. 30s, 2m)", ErrInvalid, r.APDTimeout)
		}
		c.APDTimeout, c.APDTimeoutSet = v, true
	}
	if err := pa.SetFailbackPolicy(c); err != nil {
		return host.Kinded(ErrInvalid, err)
	}
	return nil
}

// PathSwitch makes a path the one its device uses.
func (c *Client) PathSwitch(ctx context.Context, path string) (mpath.DeviceStatus, error) {
	var st mpath.DeviceStatus
	err := c.call(ctx, RoutePathSwitch, PathSwitchRequest{Path: path}, &st)
	return st, err
}

// Queue switches a device's queueing on or off.
func (c *Client) Queue(ctx context.Context, device string, on bool) (mpath.DeviceStatus, error) {
	state := "off"
	if on {
		state = "on"
	}
	var st mpath.DeviceStatus
	err := c.call(ctx, RouteQueue, QueueRequest{Device: device, State: state}, &st)
	return st, err
}
