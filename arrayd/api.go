package arrayd

import (
	"fmt"
	"net/http"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/control"
)

// The control API of an array server: the control package's socket
// (control.Listen: mode 0600, SO_PEERCRED checked) with these endpoints.
// GET /v1/arrays and POST /v1/array have the shapes a mount's simulated
// arrays answer, so `mpathfs array status|fail|restore|transfer|set-tpg`
// work against either.
const (
	EndpointServer  = "/v1/array-server"         // GET: Status
	EndpointPort    = "/v1/array-server/port"    // POST PortRequest
	EndpointSession = "/v1/array-server/session" // POST SessionRequest
	EndpointInject  = "/v1/array-server/fault"   // POST Fault → Fault
	EndpointClear   = "/v1/array-server/fault/clear"
	EndpointFaults  = "/v1/array-server/faults" // GET: {"faults": [...]}
)

// ArrayRequest is the body of POST /v1/array, as a mount takes it.
type ArrayRequest = control.ArrayRequest

// PortRequest takes a port offline or online.
type PortRequest struct {
	Port   uint16 `json:"port"`
	Online bool   `json:"online"`
}

// SessionRequest drops an initiator's sessions.
type SessionRequest struct {
	Initiator string `json:"initiator"`
}

// SessionReply says how many connections dropped.
type SessionReply struct {
	Dropped int `json:"dropped"`
}

// ClearRequest removes a fault (ID) or all of them (All).
type ClearRequest struct {
	ID  int  `json:"id,omitempty"`
	All bool `json:"all,omitempty"`
}

// ClearReply says how many faults were removed.
type ClearReply struct {
	Cleared int `json:"cleared"`
}

// ListenControl serves the control API on a Unix socket at path.
func (s *Server) ListenControl(path string) (*control.Server, error) {
	rt := http.NewServeMux()
	rt.HandleFunc("GET "+EndpointServer, func(w http.ResponseWriter, req *http.Request) {
		control.Reply(w, s.Status())
	})
	rt.HandleFunc("GET /v1/arrays", func(w http.ResponseWriter, req *http.Request) {
		control.Reply(w, control.ArraysReply{Arrays: map[string]array.Status{s.cfg.Name: s.arr.Status()}})
	})
	rt.HandleFunc("POST /v1/array", func(w http.ResponseWriter, req *http.Request) {
		var r ArrayRequest
		if err := control.Decode(req, &r); err != nil {
			control.ReplyError(w, err)
			return
		}
		if r.Array != "" && r.Array != s.cfg.Name {
			control.ReplyError(w, fmt.Errorf("no array %q: this server serves array %s", r.Array, s.cfg.Name))
			return
		}
		if err := s.ArrayAction(r.Action, r.Controller, r.TPG, r.State); err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, s.arr.Status())
	})
	rt.HandleFunc("POST "+EndpointPort, func(w http.ResponseWriter, req *http.Request) {
		var r PortRequest
		if err := control.Decode(req, &r); err != nil {
			control.ReplyError(w, err)
			return
		}
		if err := s.SetPortOnline(r.Port, r.Online); err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, s.Portals())
	})
	rt.HandleFunc("POST "+EndpointSession, func(w http.ResponseWriter, req *http.Request) {
		var r SessionRequest
		if err := control.Decode(req, &r); err != nil {
			control.ReplyError(w, err)
			return
		}
		n, err := s.DropSessions(r.Initiator)
		if err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, SessionReply{Dropped: n})
	})
	rt.HandleFunc("POST "+EndpointInject, func(w http.ResponseWriter, req *http.Request) {
		var f Fault
		if err := control.Decode(req, &f); err != nil {
			control.ReplyError(w, err)
			return
		}
		f, err := s.Inject(f)
		if err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, f)
	})
	rt.HandleFunc("POST "+EndpointClear, func(w http.ResponseWriter, req *http.Request) {
		var r ClearRequest
		if err := control.Decode(req, &r); err != nil {
			control.ReplyError(w, err)
			return
		}
		if (r.ID == 0) != r.All {
			control.ReplyError(w, fmt.Errorf("give a fault id or all, not both or neither"))
			return
		}
		n, err := s.Clear(r.ID)
		if err != nil {
			control.ReplyError(w, err)
			return
		}
		control.Reply(w, ClearReply{Cleared: n})
	})
	rt.HandleFunc("GET "+EndpointFaults, func(w http.ResponseWriter, req *http.Request) {
		f := s.Faults()
		if f == nil {
			f = []Fault{}
		}
		control.Reply(w, map[string]any{"faults": f})
	})
	rt.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		control.ReplyError(w, fmt.Errorf("%w %s %s (an array server answers the array commands only)", control.ErrUnknownEndpoint, req.Method, req.URL.Path))
	})
	return control.ListenHandler(path, rt)
}
