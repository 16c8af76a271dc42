// Package control is mpathfs's control API: a Unix socket (mode 0600,
// served to root and the daemon's user only; see socket.go) speaking HTTP
// with JSON bodies, through which the `mpathfs` command and
// scripts read status, switch paths, inject faults, change policies and
// follow the event and trace streams of a running mount. It drives a
// host (package host) and nothing else.
//
// The API is typed: every route is registered here (api.go lists them
// with their request and reply types, declared once for the server and
// the Client), and errors cross the socket with a code (errors.go), so a
// client matches them with errors.Is.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/integrity"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// DefaultSocket is where the control socket lives unless --control or
// MPATHFS_CONTROL say otherwise.
const DefaultSocket = "/run/mpathfs/control.sock"

// SocketPath resolves the control socket: the flag, then MPATHFS_CONTROL,
// then DefaultSocket.
func SocketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("MPATHFS_CONTROL"); env != "" {
		return env
	}
	return DefaultSocket
}

// Runtime is what a running mount exposes to the control API: its host
// (devices, paths, fault injectors, arrays, rules) and event stream.
type Runtime struct {
	Mountpoint string
	Started    time.Time
	Events     *mpath.Events
	Host       *host.Host
}

// NewRuntime returns the runtime of a host (nil: an empty host).
func NewRuntime(mountpoint string, h *host.Host) *Runtime {
	if h == nil {
		h = host.New(host.Options{})
	}
	return &Runtime{Mountpoint: mountpoint, Started: time.Now(), Events: h.Events(), Host: h}
}

// Devices returns the devices in order.
func (r *Runtime) Devices() []host.Device { return r.Host.Devices() }

// Device finds a device by name (ErrNotFound).
func (r *Runtime) Device(name string) (host.Device, error) { return r.Host.Device(name) }

// FindPath finds a path by name or URI across devices (ErrNotFound).
func (r *Runtime) FindPath(name string) (host.Device, *mpath.Path, error) {
	return r.Host.FindPath(name)
}

// Fault returns a path's fault injector and the path's name.
func (r *Runtime) Fault(path string) (*fault.Backend, string, error) { return r.Host.Fault(path) }

// Server serves the control API on a Unix socket.
type Server struct {
	rt    *Runtime
	ln    net.Listener
	srv   *http.Server
	path  string
	id    fileID                                // the socket file Listen created
	owner uint32                                // the daemon's uid: with root, the only one served
	allow atomic.Pointer[func(uid uint32) bool] // tests: replaces the uid check
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops serving and removes the socket (if it is still the one
// Listen created).
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	removeOwn(s.path, s.id)
	return nil
}

// mux registers every route of the API (api.go lists them).
func (s *Server) mux() http.Handler {
	m := http.NewServeMux()
	rt := s.rt
	get(m, RouteStatus, func(*http.Request) (Status, error) { return rt.StatusOf(), nil })
	post(m, RoutePathAdmin, rt.PathAdmin)
	post(m, RoutePathFence, func(_ context.Context, r PathFenceRequest) (PathFenceReply, error) { return rt.FencePath(r.Path) })
	post(m, RoutePathAdd, func(ctx context.Context, r PathAddRequest) (mpath.PathStatus, error) {
		return rt.Host.AddPath(ctx, r.Device, r.URI, r.Name)
	})
	post(m, RoutePathRemove, func(ctx context.Context, r PathRemoveRequest) (host.PathRemoval, error) {
		if r.Path == "" {
			return host.PathRemoval{}, fmt.Errorf("%w: give the path to remove (a name from `mpathfs path list`)", ErrInvalid)
		}
		return rt.Host.RemovePathLive(ctx, r.Path, r.Force)
	})
	get(m, RouteAdapters, func(*http.Request) (AdaptersReply, error) { return AdaptersReply{Adapters: rt.Host.Adapters()}, nil })
	post(m, RouteAdapter, rt.Adapter)
	stateRoutes(m, rt) // states.go: resets, device states
	post(m, RouteFaultInject, rt.InjectFault)
	post(m, RouteFaultClear, rt.ClearFault)
	get(m, RouteFaultList, func(*http.Request) (FaultListReply, error) { return FaultListReply{Faults: rt.FaultList()}, nil })
	post(m, RoutePolicy, func(_ context.Context, r PolicyRequest) (mpath.DeviceStatus, error) {
		d, err := rt.Device(r.Device)
		if err != nil {
			return mpath.DeviceStatus{}, err
		}
		if err := setPolicyKnobs(d, r); err != nil { // policy.go
			return mpath.DeviceStatus{}, err
		}
		if r.PSP != "" || len(r.Options) > 0 || (r.Failback == "" && r.NoPathRetry == "" && r.APDTimeout == "") {
			if err := d.SetPolicy(r.PSP, r.Options); err != nil {
				return mpath.DeviceStatus{}, host.Kinded(ErrInvalid, err)
			}
		}
		return d.Status(), nil
	})
	policyRoutes(m, rt) // policy.go
	get(m, RoutePlugins, func(*http.Request) (Plugins, error) { return LocalPlugins(), nil })
	m.HandleFunc(RouteEvents, s.events)
	m.HandleFunc(RouteTrace, s.trace)
	get(m, RouteArrays, func(*http.Request) (ArraysReply, error) { return ArraysReply{Arrays: rt.Host.Arrays()}, nil })
	post(m, RouteArray, rt.Array)
	post(m, RoutePR, rt.PR)
	get(m, RouteExplain, func(req *http.Request) (nmp.Explanation, error) {
		return rt.Host.Explain(req.URL.Query().Get("device"))
	})
	get(m, RouteClaimRules, func(*http.Request) (ClaimRulesReply, error) {
		return ClaimRulesReply{Claimrules: rt.Host.ClaimRules()}, nil
	})
	get(m, RouteSATPRules, func(*http.Request) (SATPRulesReply, error) {
		return SATPRulesReply{Satprules: rt.Host.SATPRules()}, nil
	})
	s.claimRoutes(m)
	get(m, RouteVerify, func(req *http.Request) (integrity.Report, error) {
		return rt.Host.Verify(req.Context(), req.URL.Query().Get("device"))
	})
	// Go's profiler, for `go tool pprof` through the socket (see the
	// README's benchmarks section): the socket is 0600, so only the user
	// who mounted can read it.
	m.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	// Anything else is no route of this API: a JSON error with its code,
	// not the mux's text page.
	m.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		ReplyError(w, fmt.Errorf("%w %s %s", ErrUnknownEndpoint, req.Method, req.URL.Path))
	})
	return m
}

// get registers a route that answers with a reply of type Rep.
func get[Rep any](m *http.ServeMux, pattern string, fn func(*http.Request) (Rep, error)) {
	m.HandleFunc(pattern, func(w http.ResponseWriter, req *http.Request) {
		rep, err := fn(req)
		if err != nil {
			ReplyError(w, err)
			return
		}
		Reply(w, rep)
	})
}

// post registers a route that takes a request body of type Req and
// answers with a reply of type Rep.
func post[Req, Rep any](m *http.ServeMux, pattern string, fn func(context.Context, Req) (Rep, error)) {
	m.HandleFunc(pattern, func(w http.ResponseWriter, req *http.Request) {
		var r Req
		if err := Decode(req, &r); err != nil {
			ReplyError(w, err)
			return
		}
		rep, err := fn(req.Context(), r)
		if err != nil {
			ReplyError(w, err)
			return
		}
		Reply(w, rep)
	})
}

// Reply writes a JSON reply.
func Reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// ReplyError writes an error reply: the message and the code of its kind,
// with the HTTP status of the kind (400 for an error of no known kind).
func ReplyError(w http.ResponseWriter, err error) {
	code, status := codeOf(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(ErrorReply{Error: err.Error(), Code: code})
}

// Decode reads a JSON request body strictly; a bad body is ErrInvalid.
func Decode(req *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, req.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return host.Kinded(ErrInvalid, fmt.Errorf("bad request body: %w", err))
	}
	return nil
}

// StatusOf snapshots the runtime.
func (r *Runtime) StatusOf() Status {
	st := Status{Host: r.Host.Name(), Mountpoint: r.Mountpoint, Started: r.Started, Devices: []mpath.DeviceStatus{}}
	for _, d := range r.Devices() {
		ds := d.Status()
		if r.Host != nil {
			ds.Sharing, _ = r.Host.Sharing(d.Name())
		}
		st.Devices = append(st.Devices, ds)
	}
	return st
}

// PathAdmin switches a path on or off and sets its MRU rank.
func (r *Runtime) PathAdmin(_ context.Context, req PathAdminRequest) (mpath.PathStatus, error) {
	d, p, err := r.FindPath(req.Path)
	if err != nil {
		return mpath.PathStatus{}, err
	}
	if req.Rank != nil {
		if err := d.SetPathRank(p.Name, *req.Rank); err != nil {
			return mpath.PathStatus{}, host.Kinded(ErrInvalid, err)
		}
	}
	switch req.State {
	case "":
	case "on", "active":
		err = d.SetPathAdmin(p.Name, true)
	case "off", "disabled":
		err = d.SetPathAdmin(p.Name, false)
	default:
		err = host.Kinded(ErrInvalid, fmt.Errorf("path state %q: want on or off", req.State))
	}
	if err != nil {
		return mpath.PathStatus{}, err
	}
	return p.Status(), nil
}

// FencePath resolves every ambiguous write range a path left (see
// nmp.Device.FencePath). A path removed from its device is found by the
// ranges it left.
func (r *Runtime) FencePath(name string) (PathFenceReply, error) {
	d, p, err := r.FindPath(name)
	if err == nil {
		n, err := d.FencePath(p.Name)
		return PathFenceReply{Device: d.Name(), Path: p.Name, Resolved: n, Ambiguous: ambiguousOf(d)}, err
	}
	for _, d := range r.Devices() {
		if n, ferr := d.FencePath(name); ferr == nil {
			return PathFenceReply{Device: d.Name(), Path: name, Resolved: n, Ambiguous: ambiguousOf(d)}, nil
		}
	}
	return PathFenceReply{}, err
}

func ambiguousOf(d host.Device) []mpath.AmbiguousRange {
	if a := d.Ambiguous(); a != nil {
		return a
	}
	return []mpath.AmbiguousRange{}
}

// InjectFault injects a fault on a path and publishes the event.
func (r *Runtime) InjectFault(_ context.Context, req FaultInjectRequest) (FaultInjectReply, error) {
	f, name, err := r.Fault(req.Path)
	if err != nil {
		return FaultInjectReply{}, err
	}
	id, err := f.Inject(req.Spec)
	if err != nil {
		return FaultInjectReply{}, host.Kinded(ErrInvalid, err)
	}
	r.publish(mpath.Event{Time: time.Now(), Kind: "fault", Path: name, To: "injected #" + strconv.Itoa(id), Reason: req.Spec.String()})
	return FaultInjectReply{Path: name, ID: id}, nil
}

// ClearFault clears one fault of a path (ID 0: all of them) and publishes
// the event.
func (r *Runtime) ClearFault(_ context.Context, req FaultClearRequest) (FaultClearReply, error) {
	f, name, err := r.Fault(req.Path)
	if err != nil {
		return FaultClearReply{}, err
	}
	what := "all"
	if req.ID == 0 {
		f.ClearAll()
	} else if err := f.Clear(req.ID); err != nil {
		return FaultClearReply{}, host.Kinded(ErrNotFound, err)
	} else {
		what = "#" + strconv.Itoa(req.ID)
	}
	r.publish(mpath.Event{Time: time.Now(), Kind: "fault", Path: name, To: "cleared " + what})
	return FaultClearReply{Path: name, Cleared: what}, nil
}

// FaultList lists every active fault, by path in name order.
func (r *Runtime) FaultList() []FaultInfo { return r.Host.Faults() }

// Array runs a command on a simulated array.
func (r *Runtime) Array(_ context.Context, req ArrayRequest) (array.Status, error) {
	return r.Host.Array(host.ArrayCommand{Array: req.Array, Action: req.Action, Controller: req.Controller, TPG: req.TPG, State: req.State})
}

// Adapter fails, restores or resets an adapter (vmhbaN).
func (r *Runtime) Adapter(ctx context.Context, req AdapterRequest) (host.AdapterStatus, error) {
	switch req.Action {
	case "fail":
		return r.Host.FailAdapter(req.Adapter, req.Reason)
	case "restore":
		return r.Host.RestoreAdapter(ctx, req.Adapter)
	case "reset":
		return r.Host.ResetAdapter(req.Adapter)
	}
	return host.AdapterStatus{}, host.Kinded(ErrInvalid, fmt.Errorf("adapter action %q: want fail, restore or reset", req.Action))
}

func (r *Runtime) publish(ev mpath.Event) {
	if r.Events != nil {
		r.Events.Publish(ev)
	}
}

// events streams events as JSON lines. Query parameters: history=N sends
// the last N events the daemon kept first (oldest first; at most
// mpath.EventHistory); follow=0 ends the stream after them, otherwise
// (the default) new events follow until the client goes away.
func (s *Server) events(w http.ResponseWriter, req *http.Request) {
	if s.rt.Events == nil {
		ReplyError(w, host.Kinded(ErrUnsupported, errors.New("no event stream")))
		return
	}
	q := req.URL.Query()
	history := 0
	if h := q.Get("history"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 {
			ReplyError(w, host.Kinded(ErrInvalid, fmt.Errorf("history=%q: want a count of events, 0 or more", h)))
			return
		}
		history = n
	}
	follow := true
	if f := q.Get("follow"); f != "" {
		b, err := strconv.ParseBool(f)
		if err != nil {
			ReplyError(w, host.Kinded(ErrInvalid, fmt.Errorf("follow=%q: want 1 or 0", f)))
			return
		}
		follow = b
	}
	if !follow {
		past := s.rt.Events.Recent(history)
		c := make(chan mpath.Event, len(past))
		for _, ev := range past {
			c <- ev
		}
		close(c)
		streamJSON(w, req, c)
		return
	}
	sub, past := s.rt.Events.SubscribeAfter(1024, history)
	defer sub.Close()
	if len(past) == 0 {
		streamJSON(w, req, sub.C)
		return
	}
	// History first, then the subscription (which holds what was
	// published after the history was taken).
	c := make(chan mpath.Event)
	go func() {
		defer close(c)
		for _, ev := range past {
			select {
			case c <- ev:
			case <-req.Context().Done():
				return
			}
		}
		for ev := range sub.C {
			select {
			case c <- ev:
			case <-req.Context().Done():
				return
			}
		}
	}()
	streamJSON(w, req, c)
}

// trace streams a device's per-I/O trace as JSON lines. The stream
// shares the device's tracer with every other reader (attaching an
// asynchronous one while there is none, detached after the last reader
// left), so clients never cut each other off. A slow client misses
// records; the I/O never waits for it.
func (s *Server) trace(w http.ResponseWriter, req *http.Request) {
	d, err := s.rt.Device(req.URL.Query().Get("device"))
	if err != nil {
		ReplyError(w, err)
		return
	}
	t, release := d.ShareTracer()
	defer release()
	c := t.Subscribe(4096)
	defer t.Unsubscribe(c)
	streamJSON(w, req, c)
}

// streamJSON writes each value from c as a JSON line, flushed at once,
// until c closes or the client goes away.
func streamJSON[T any](w http.ResponseWriter, req *http.Request, c <-chan T) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-req.Context().Done():
			return
		case v, ok := <-c:
			if !ok {
				return
			}
			if err := enc.Encode(v); err != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}
