// Package control is mpathfs's control API: a Unix socket (mode 0600,
// served to root and the daemon's user only; see socket.go) speaking HTTP
// with JSON bodies, through which the `mpathfs` command and
// scripts read status, switch paths, inject faults, change policies and
// follow the event and trace streams of a running mount. It is its own
// folder because it belongs to no layer: it drives them all.
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
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
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

// Runtime is what a running mount exposes to the control API.
type Runtime struct {
	Mountpoint string
	Started    time.Time
	Events     *mpath.Events

	mu      sync.RWMutex
	devices []*nmp.Device
	faults  map[string]*fault.Backend // by path name
	ext     map[string]http.HandlerFunc
}

// NewRuntime returns an empty runtime.
func NewRuntime(mountpoint string, events *mpath.Events) *Runtime {
	return &Runtime{Mountpoint: mountpoint, Started: time.Now(), Events: events, faults: map[string]*fault.Backend{}, ext: map[string]http.HandlerFunc{}}
}

// AddDevice registers a device and the fault injectors of its paths.
func (r *Runtime) AddDevice(d *nmp.Device, faults map[string]*fault.Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.devices = append(r.devices, d)
	for name, f := range faults {
		r.faults[name] = f
	}
}

// AddFault registers the fault injector of a path added later.
func (r *Runtime) AddFault(path string, f *fault.Backend) {
	r.mu.Lock()
	r.faults[path] = f
	r.mu.Unlock()
}

// Handle adds an endpoint (for plugins the core does not know: arrays,
// scenarios). The pattern is as http.ServeMux takes it.
func (r *Runtime) Handle(pattern string, h http.HandlerFunc) {
	r.mu.Lock()
	r.ext[pattern] = h
	r.mu.Unlock()
}

// Devices returns the devices in order.
func (r *Runtime) Devices() []*nmp.Device {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]*nmp.Device(nil), r.devices...)
}

// Device finds a device by name.
func (r *Runtime) Device(name string) (*nmp.Device, error) {
	for _, d := range r.Devices() {
		if d.Name() == name {
			return d, nil
		}
	}
	names := []string{}
	for _, d := range r.Devices() {
		names = append(names, d.Name())
	}
	return nil, fmt.Errorf("no device %q (devices: %v)", name, names)
}

// FindPath finds a path by name or URI across devices.
func (r *Runtime) FindPath(name string) (*nmp.Device, *mpath.Path, error) {
	for _, d := range r.Devices() {
		if p := d.FindPath(name); p != nil {
			return d, p, nil
		}
	}
	return nil, nil, fmt.Errorf("no path %q: `mpathfs path list` shows the path names", name)
}

// Fault returns a path's fault injector.
func (r *Runtime) Fault(path string) (*fault.Backend, string, error) {
	_, p, err := r.FindPath(path)
	if err != nil {
		return nil, "", err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	f := r.faults[p.Name]
	if f == nil {
		return nil, "", fmt.Errorf("path %s has no fault injector", p.Name)
	}
	return f, p.Name, nil
}

// Status is the JSON of `mpathfs status --json`.
type Status struct {
	Mountpoint string               `json:"mountpoint"`
	Started    time.Time            `json:"started"`
	Devices    []mpath.DeviceStatus `json:"devices"`
}

// FaultInfo is one active fault of one path.
type FaultInfo struct {
	Path string `json:"path"`
	fault.Active
}

// Requests.
type (
	PathAdminRequest struct {
		Path  string `json:"path"`
		State string `json:"state"` // on|off
		Rank  *int   `json:"rank,omitempty"`
	}
	FaultInjectRequest struct {
		Path string     `json:"path"`
		Spec fault.Spec `json:"spec"`
	}
	FaultClearRequest struct {
		Path string `json:"path"`
		ID   int    `json:"id,omitempty"` // 0: every fault of the path
	}
	PolicyRequest struct {
		Device  string            `json:"device"`
		PSP     string            `json:"psp"`
		Options map[string]string `json:"options,omitempty"`
	}
	FaultInjectReply struct {
		Path string `json:"path"`
		ID   int    `json:"id"`
	}
	// PathFenceRequest is the operator's confirmation that nothing sent on
	// a path can land any more (its server is dead, fenced or reset).
	PathFenceRequest struct {
		Path string `json:"path"`
	}
	// PathFenceReply says how many ambiguous ranges the fence resolved and
	// which the device still has (left by other paths).
	PathFenceReply struct {
		Device    string                 `json:"device"`
		Path      string                 `json:"path"`
		Resolved  int                    `json:"resolved"`
		Ambiguous []mpath.AmbiguousRange `json:"ambiguous"`
	}
)

// ErrorReply is the body of every non-2xx reply.
type ErrorReply struct {
	Error string `json:"error"`
}

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

func (s *Server) mux() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/status", s.status)
	m.HandleFunc("POST /v1/path/admin", s.pathAdmin)
	m.HandleFunc("POST /v1/path/fence", s.pathFence)
	m.HandleFunc("POST /v1/fault/inject", s.faultInject)
	m.HandleFunc("POST /v1/fault/clear", s.faultClear)
	m.HandleFunc("GET /v1/fault/list", s.faultList)
	m.HandleFunc("POST /v1/policy", s.policy)
	m.HandleFunc("GET /v1/plugins", s.plugins)
	m.HandleFunc("GET /v1/events", s.events)
	m.HandleFunc("GET /v1/trace", s.trace)
	// Go's profiler, for `go tool pprof` through the socket (see the
	// README's benchmarks section): the socket is 0600, so only the user
	// who mounted can read it.
	m.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	m.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		s.rt.mu.RLock()
		var h http.HandlerFunc
		for pat, fn := range s.rt.ext {
			if pat == req.Method+" "+req.URL.Path {
				h = fn
			}
		}
		s.rt.mu.RUnlock()
		if h == nil {
			replyErr(w, http.StatusNotFound, fmt.Errorf("unknown control endpoint %s %s", req.Method, req.URL.Path))
			return
		}
		h(w, req)
	})
	return m
}

// Reply writes a JSON reply.
func Reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func replyErr(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(ErrorReply{Error: err.Error()})
}

// ReplyError writes an error reply (400: the request was wrong).
func ReplyError(w http.ResponseWriter, err error) { replyErr(w, http.StatusBadRequest, err) }

// Decode reads a JSON request body strictly.
func Decode(req *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, req.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

// StatusOf snapshots the runtime.
func (r *Runtime) StatusOf() Status {
	st := Status{Mountpoint: r.Mountpoint, Started: r.Started, Devices: []mpath.DeviceStatus{}}
	for _, d := range r.Devices() {
		st.Devices = append(st.Devices, d.Status())
	}
	return st
}

func (s *Server) status(w http.ResponseWriter, req *http.Request) {
	Reply(w, s.rt.StatusOf())
}

func (s *Server) pathAdmin(w http.ResponseWriter, req *http.Request) {
	var r PathAdminRequest
	if err := Decode(req, &r); err != nil {
		ReplyError(w, err)
		return
	}
	d, p, err := s.rt.FindPath(r.Path)
	if err != nil {
		ReplyError(w, err)
		return
	}
	if r.Rank != nil {
		if err := d.SetPathRank(p.Name, *r.Rank); err != nil {
			ReplyError(w, err)
			return
		}
	}
	switch r.State {
	case "":
	case "on", "active":
		err = d.SetPathAdmin(p.Name, true)
	case "off", "disabled":
		err = d.SetPathAdmin(p.Name, false)
	default:
		err = fmt.Errorf("path state %q: want on or off", r.State)
	}
	if err != nil {
		ReplyError(w, err)
		return
	}
	Reply(w, p.Status())
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

func ambiguousOf(d *nmp.Device) []mpath.AmbiguousRange {
	if a := d.Ambiguous(); a != nil {
		return a
	}
	return []mpath.AmbiguousRange{}
}

func (s *Server) pathFence(w http.ResponseWriter, req *http.Request) {
	var r PathFenceRequest
	if err := Decode(req, &r); err != nil {
		ReplyError(w, err)
		return
	}
	reply, err := s.rt.FencePath(r.Path)
	if err != nil {
		ReplyError(w, err)
		return
	}
	Reply(w, reply)
}

func (s *Server) faultInject(w http.ResponseWriter, req *http.Request) {
	var r FaultInjectRequest
	if err := Decode(req, &r); err != nil {
		ReplyError(w, err)
		return
	}
	f, name, err := s.rt.Fault(r.Path)
	if err != nil {
		ReplyError(w, err)
		return
	}
	id, err := f.Inject(r.Spec)
	if err != nil {
		ReplyError(w, err)
		return
	}
	if s.rt.Events != nil {
		s.rt.Events.Publish(mpath.Event{Time: time.Now(), Kind: "fault", Path: name, To: "injected #" + strconv.Itoa(id), Reason: r.Spec.String()})
	}
	Reply(w, FaultInjectReply{Path: name, ID: id})
}

func (s *Server) faultClear(w http.ResponseWriter, req *http.Request) {
	var r FaultClearRequest
	if err := Decode(req, &r); err != nil {
		ReplyError(w, err)
		return
	}
	f, name, err := s.rt.Fault(r.Path)
	if err != nil {
		ReplyError(w, err)
		return
	}
	what := "all"
	if r.ID == 0 {
		f.ClearAll()
	} else if err := f.Clear(r.ID); err != nil {
		ReplyError(w, err)
		return
	} else {
		what = "#" + strconv.Itoa(r.ID)
	}
	if s.rt.Events != nil {
		s.rt.Events.Publish(mpath.Event{Time: time.Now(), Kind: "fault", Path: name, To: "cleared " + what})
	}
	Reply(w, map[string]any{"path": name, "cleared": what})
}

// FaultList lists every active fault, by path in name order.
func (r *Runtime) FaultList() []FaultInfo {
	r.mu.RLock()
	names := make([]string, 0, len(r.faults))
	for n := range r.faults {
		names = append(names, n)
	}
	r.mu.RUnlock()
	sort.Strings(names)
	out := []FaultInfo{}
	for _, n := range names {
		r.mu.RLock()
		f := r.faults[n]
		r.mu.RUnlock()
		for _, a := range f.List() {
			out = append(out, FaultInfo{Path: n, Active: a})
		}
	}
	return out
}

func (s *Server) faultList(w http.ResponseWriter, req *http.Request) {
	Reply(w, map[string]any{"faults": s.rt.FaultList()})
}

func (s *Server) policy(w http.ResponseWriter, req *http.Request) {
	var r PolicyRequest
	if err := Decode(req, &r); err != nil {
		ReplyError(w, err)
		return
	}
	d, err := s.rt.Device(r.Device)
	if err != nil {
		ReplyError(w, err)
		return
	}
	if err := d.SetPolicy(r.PSP, r.Options); err != nil {
		ReplyError(w, err)
		return
	}
	Reply(w, d.Status())
}

// Plugins is the JSON of `mpathfs plugins --json`.
type Plugins struct {
	MPPs  []string         `json:"mpps"`
	SATPs []nmp.PluginInfo `json:"satps"`
	PSPs  []nmp.PluginInfo `json:"psps"`
}

func (s *Server) plugins(w http.ResponseWriter, req *http.Request) {
	Reply(w, Plugins{MPPs: mpath.MPPNames(), SATPs: nmp.SATPs(), PSPs: nmp.PSPs()})
}

// events streams events as JSON lines. Query parameters: history=N sends
// the last N events the daemon kept first (oldest first; at most
// mpath.EventHistory); follow=0 ends the stream after them, otherwise
// (the default) new events follow until the client goes away.
func (s *Server) events(w http.ResponseWriter, req *http.Request) {
	if s.rt.Events == nil {
		replyErr(w, http.StatusNotFound, errors.New("no event stream"))
		return
	}
	q := req.URL.Query()
	history := 0
	if h := q.Get("history"); h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 {
			ReplyError(w, fmt.Errorf("history=%q: want a count of events, 0 or more", h))
			return
		}
		history = n
	}
	follow := true
	if f := q.Get("follow"); f != "" {
		b, err := strconv.ParseBool(f)
		if err != nil {
			ReplyError(w, fmt.Errorf("follow=%q: want 1 or 0", f))
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
