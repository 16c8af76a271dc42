package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/control"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// Target is what a scenario drives: the operations of the control API.
// ClientTarget is a running mount over its control socket; RuntimeTarget is
// an in-process runtime.
type Target interface {
	// Status snapshots every device.
	Status(ctx context.Context) (control.Status, error)
	// Paths lists a device's paths by name.
	Paths(ctx context.Context, device string) ([]string, error)
	// InjectFault injects a fault on a path and returns its ID.
	InjectFault(ctx context.Context, path string, spec fault.Spec) (int, error)
	// ClearFault clears a fault of a path (id 0: all of them).
	ClearFault(ctx context.Context, path string, id int) error
	// SetPathAdmin switches a path on or off.
	SetPathAdmin(ctx context.Context, path string, on bool) error
	// SetPolicy changes a device's PSP.
	SetPolicy(ctx context.Context, device, psp string, opts map[string]string) error
	// Array sends a command to a simulated array (POST /v1/array).
	Array(ctx context.Context, req ArrayRequest) error
	// Reset issues a reset (lun, target, bus, abort-task-set) on a path.
	Reset(ctx context.Context, kind, path string) error
	// SetDeviceState switches a device on or off (detach, attach).
	SetDeviceState(ctx context.Context, device, state string) error
	// Events follows the event stream until ctx ends.
	Events(ctx context.Context) (<-chan mpath.Event, error)
	// Trace follows a device's per-I/O trace until ctx ends.
	Trace(ctx context.Context, device string) (<-chan nmp.TraceRecord, error)
}

// ErrNoArray is returned for an array statement when the mount has no
// array endpoint (no simulated ALUA array, or a build without one).
var ErrNoArray = errors.New("the mount has no array endpoint POST /v1/array (no simulated ALUA array is configured, or this mpathfs has no array support)")

// pathsOf lists a device's path names from a status snapshot.
func pathsOf(st control.Status, device string) ([]string, error) {
	var names []string
	for _, d := range st.Devices {
		names = append(names, d.Name)
		if d.Name == device {
			out := make([]string, 0, len(d.Paths))
			for _, p := range d.Paths {
				out = append(out, p.Name)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("no device %q (devices: %s)", device, strings.Join(names, ", "))
}

// ClientTarget drives a running mount through its control socket.
type ClientTarget struct {
	C *control.Client
}

var _ Target = ClientTarget{}

func (t ClientTarget) Status(ctx context.Context) (control.Status, error) { return t.C.Status(ctx) }

func (t ClientTarget) Paths(ctx context.Context, device string) ([]string, error) {
	st, err := t.C.Status(ctx)
	if err != nil {
		return nil, err
	}
	return pathsOf(st, device)
}

func (t ClientTarget) InjectFault(ctx context.Context, path string, spec fault.Spec) (int, error) {
	r, err := t.C.InjectFault(ctx, control.FaultInjectRequest{Path: path, Spec: spec})
	return r.ID, err
}

func (t ClientTarget) ClearFault(ctx context.Context, path string, id int) error {
	_, err := t.C.ClearFault(ctx, control.FaultClearRequest{Path: path, ID: id})
	return err
}

func (t ClientTarget) SetPathAdmin(ctx context.Context, path string, on bool) error {
	state := "off"
	if on {
		state = "on"
	}
	_, err := t.C.PathAdmin(ctx, control.PathAdminRequest{Path: path, State: state})
	return err
}

func (t ClientTarget) SetPolicy(ctx context.Context, device, psp string, opts map[string]string) error {
	_, err := t.C.Policy(ctx, control.PolicyRequest{Device: device, PSP: psp, Options: opts})
	return err
}

func (t ClientTarget) Array(ctx context.Context, req ArrayRequest) error {
	_, err := t.C.Array(ctx, req)
	if errors.Is(err, control.ErrUnknownEndpoint) {
		return ErrNoArray
	}
	return err
}

func (t ClientTarget) Events(ctx context.Context) (<-chan mpath.Event, error) {
	return stream[mpath.Event](ctx, func(ctx context.Context, fn func([]byte) bool) error {
		return t.C.Events(ctx, 0, true, fn)
	})
}

func (t ClientTarget) Trace(ctx context.Context, device string) (<-chan nmp.TraceRecord, error) {
	return stream[nmp.TraceRecord](ctx, func(ctx context.Context, fn func([]byte) bool) error {
		return t.C.Trace(ctx, device, fn)
	})
}

// stream follows a JSON-lines stream of the client. The first error (a
// missing device) is returned; later ones end the stream.
func stream[T any](ctx context.Context, follow func(context.Context, func([]byte) bool) error) (<-chan T, error) {
	out := make(chan T, 4096)
	first := make(chan error, 1)
	go func() {
		defer close(out)
		started := false
		err := follow(ctx, func(line []byte) bool {
			if !started {
				started = true
				first <- nil
			}
			var v T
			if json.Unmarshal(line, &v) != nil {
				return true
			}
			select {
			case out <- v:
			default: // a slow reader loses records, as the server's do
			}
			return true
		})
		if !started {
			first <- err
		}
	}()
	// The server sends headers at once; a stream with no line yet is up.
	select {
	case err := <-first:
		if err != nil {
			return nil, err
		}
	case <-time.After(200 * time.Millisecond):
	case <-ctx.Done():
	}
	return out, nil
}

// RuntimeTarget drives an in-process runtime (tests, `mount --scenario`).
type RuntimeTarget struct {
	RT *control.Runtime
	// ArrayFunc handles array commands; nil means there is no array.
	ArrayFunc func(ctx context.Context, req ArrayRequest) error
}

var _ Target = RuntimeTarget{}

func (t RuntimeTarget) Status(context.Context) (control.Status, error) { return t.RT.StatusOf(), nil }

func (t RuntimeTarget) Paths(_ context.Context, device string) ([]string, error) {
	return pathsOf(t.RT.StatusOf(), device)
}

func (t RuntimeTarget) InjectFault(ctx context.Context, path string, spec fault.Spec) (int, error) {
	r, err := t.RT.InjectFault(ctx, control.FaultInjectRequest{Path: path, Spec: spec})
	return r.ID, err
}

func (t RuntimeTarget) ClearFault(ctx context.Context, path string, id int) error {
	_, err := t.RT.ClearFault(ctx, control.FaultClearRequest{Path: path, ID: id})
	return err
}

func (t RuntimeTarget) SetPathAdmin(ctx context.Context, path string, on bool) error {
	state := "off"
	if on {
		state = "on"
	}
	_, err := t.RT.PathAdmin(ctx, control.PathAdminRequest{Path: path, State: state})
	return err
}

func (t RuntimeTarget) SetPolicy(_ context.Context, device, psp string, opts map[string]string) error {
	d, err := t.RT.Device(device)
	if err != nil {
		return err
	}
	return d.SetPolicy(psp, opts)
}

func (t RuntimeTarget) Array(ctx context.Context, req ArrayRequest) error {
	if t.ArrayFunc == nil {
		return ErrNoArray
	}
	return t.ArrayFunc(ctx, req)
}

func (t RuntimeTarget) Events(ctx context.Context) (<-chan mpath.Event, error) {
	if t.RT.Events == nil {
		return nil, errors.New("the runtime has no event stream")
	}
	sub := t.RT.Events.Subscribe(4096)
	out := make(chan mpath.Event, 16)
	go func() {
		defer close(out)
		defer sub.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-sub.C:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (t RuntimeTarget) Trace(ctx context.Context, device string) (<-chan nmp.TraceRecord, error) {
	d, err := t.RT.Device(device)
	if err != nil {
		return nil, err
	}
	// Shared with every other reader (`mpathfs trace`): none cuts the
	// others off when it stops.
	tr, release := d.ShareTracer()
	c := tr.Subscribe(1 << 16)
	out := make(chan nmp.TraceRecord, 16)
	go func() {
		defer close(out)
		defer release()
		defer tr.Unsubscribe(c)
		for {
			select {
			case <-ctx.Done():
				return
			case r, ok := <-c:
				if !ok {
					return
				}
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

func (t ClientTarget) Reset(ctx context.Context, kind, path string) error {
	_, err := t.C.Reset(ctx, control.ResetRequest{Kind: kind, Path: path})
	return err
}

func (t ClientTarget) SetDeviceState(ctx context.Context, device, state string) error {
	_, err := t.C.DeviceState(ctx, control.DeviceStateRequest{Device: device, State: state, Reason: "scenario"})
	return err
}

func (t RuntimeTarget) Reset(_ context.Context, kind, path string) error {
	_, err := t.RT.Host.Reset(kind, path)
	return err
}

func (t RuntimeTarget) SetDeviceState(_ context.Context, device, state string) error {
	_, err := t.RT.Host.SetDeviceState(device, state, "scenario")
	return err
}
