package control

import (
	"time"

	"github.com/mpathfs/mpathfs/array"
	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/host"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// The routes of the control API. Every route is registered by Server
// (routes in control.go) and called by Client (client.go) with the
// request and reply types below, declared once for both ends.
const (
	RouteStatus      = "GET /v1/status"      // → Status
	RoutePathAdmin   = "POST /v1/path/admin" // PathAdminRequest → mpath.PathStatus
	RoutePathFence   = "POST /v1/path/fence" // PathFenceRequest → PathFenceReply
	RoutePathAdd     = "POST /v1/path/add"   // PathAddRequest → mpath.PathStatus
	RouteFaultInject = "POST /v1/fault/inject"
	RouteFaultClear  = "POST /v1/fault/clear"
	RouteFaultList   = "GET /v1/fault/list"
	RoutePolicy      = "POST /v1/policy"      // PolicyRequest → mpath.DeviceStatus
	RoutePlugins     = "GET /v1/plugins"      // → Plugins
	RouteEvents      = "GET /v1/events"       // ?history=N&follow=0|1 → mpath.Event lines
	RouteTrace       = "GET /v1/trace"        // ?device=D → nmp.TraceRecord lines
	RouteArrays      = "GET /v1/arrays"       // → ArraysReply
	RouteArray       = "POST /v1/array"       // ArrayRequest → array.Status
	RouteExplain     = "GET /v1/explain"      // ?device=D → nmp.Explanation
	RouteClaimRules  = "GET /v1/claimrules"   // → ClaimRulesReply
	RouteSATPRules   = "GET /v1/satprules"    // → SATPRulesReply
	RouteVerify      = "GET /v1/verify"       // ?device=D → integrity.Report
	RouteAdapters    = "GET /v1/adapters"     // → AdaptersReply
	RouteAdapter     = "POST /v1/adapter"     // AdapterRequest → host.AdapterStatus
	RoutePathRemove  = "POST /v1/path/remove" // PathRemoveRequest → host.PathRemoval
	RoutePR          = "POST /v1/pr"          // PRRequest → PRReply: `mpathfs pr`
)

// Status is the JSON of `mpathfs status --json`.
type Status struct {
	// Host is the mount's host name (`mount --host`).
	Host       string               `json:"host,omitempty"`
	Mountpoint string               `json:"mountpoint"`
	Started    time.Time            `json:"started"`
	Devices    []mpath.DeviceStatus `json:"devices"`
}

// FaultInfo is one active fault of one path.
type FaultInfo = host.FaultInfo

// Requests and replies.
type (
	// PathAdminRequest switches a path on or off and sets its MRU rank.
	PathAdminRequest struct {
		Path  string `json:"path"`
		State string `json:"state"` // on|off
		Rank  *int   `json:"rank,omitempty"`
	}
	// PathAddRequest is the body of POST /v1/path/add: a path joins a
	// running device.
	PathAddRequest struct {
		Device string `json:"device"`
		URI    string `json:"uri"`
		Name   string `json:"name,omitempty"`
	}
	// FaultInjectRequest injects a fault on a path.
	FaultInjectRequest struct {
		Path string     `json:"path"`
		Spec fault.Spec `json:"spec"`
	}
	// FaultInjectReply names the injected fault.
	FaultInjectReply struct {
		Path string `json:"path"`
		ID   int    `json:"id"`
	}
	// FaultClearRequest clears one fault of a path, or all of them.
	FaultClearRequest struct {
		Path string `json:"path"`
		ID   int    `json:"id,omitempty"` // 0: every fault of the path
	}
	// FaultClearReply says what was cleared: "all" or "#ID".
	FaultClearReply struct {
		Cleared string `json:"cleared"`
		Path    string `json:"path"`
	}
	// FaultListReply is every active fault, by path in name order.
	FaultListReply struct {
		Faults []FaultInfo `json:"faults"`
	}
	// PolicyRequest changes a device's PSP and its options, and its
	// failback and queueing policy ("": keep; policy.go).
	PolicyRequest struct {
		Device      string            `json:"device"`
		PSP         string            `json:"psp"`
		Options     map[string]string `json:"options,omitempty"`
		Failback    string            `json:"failback,omitempty"`
		NoPathRetry string            `json:"no_path_retry,omitempty"`
		APDTimeout  string            `json:"apd_timeout,omitempty"`
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
	// ArrayRequest is the body of POST /v1/array, the simulated ALUA
	// array's endpoint: fail or restore a controller, move ownership of
	// the LU to a controller, or set a target port group's access state.
	ArrayRequest struct {
		Array string `json:"array"`
		// Action is controller-fail, controller-restore,
		// transfer-ownership or tpg-state.
		Action     string `json:"action"`
		Controller string `json:"controller,omitempty"`
		TPG        *int   `json:"tpg,omitempty"`
		// State is an ALUA access state (AO, ANO, S, U, O, T; the full
		// or hyphenated names) for tpg-state.
		State string `json:"state,omitempty"`
	}
	// ArraysReply is every simulated array's status, by name.
	ArraysReply struct {
		Arrays map[string]array.Status `json:"arrays"`
	}
	// ClaimRulesReply lists the claim rules of the mount.
	ClaimRulesReply struct {
		Claimrules []mpath.Rule `json:"claimrules"`
	}
	// AdaptersReply lists the adapters (vmhbaN) the paths run through.
	AdaptersReply struct {
		Adapters []host.AdapterStatus `json:"adapters"`
	}
	// AdapterRequest fails, restores or resets an adapter.
	AdapterRequest struct {
		Adapter string `json:"adapter"`
		// Action is fail, restore or reset.
		Action string `json:"action"`
		Reason string `json:"reason,omitempty"`
	}
	// PathRemoveRequest takes a path out of its running device; Force
	// removes the device's last usable path too.
	PathRemoveRequest struct {
		Path  string `json:"path"`
		Force bool   `json:"force,omitempty"`
	}
	// SATPRulesReply lists the SATP rules of the mount.
	SATPRulesReply struct {
		Satprules []nmp.SATPRule `json:"satprules"`
	}
)

// Plugins is the JSON of `mpathfs plugins --json`.
type Plugins struct {
	MPPs  []string         `json:"mpps"`
	SATPs []nmp.PluginInfo `json:"satps"`
	PSPs  []nmp.PluginInfo `json:"psps"`
}

// LocalPlugins lists the plugins built into this program.
func LocalPlugins() Plugins {
	return Plugins{MPPs: mpath.MPPNames(), SATPs: nmp.SATPs(), PSPs: nmp.PSPs()}
}

// ErrorReply is the body of every non-2xx reply: the message, and the code
// of its kind (errors.go) when it has one.
type ErrorReply struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

type (
	// PRRequest is one reservation command on a device. Key is the
	// reservation key of this host (mpathpersist's --param-rk), SAKey the
	// service action key (--param-sark: the new key of a register, the
	// victim's key of a preempt), Type the reservation type by name (WE,
	// EA, WERO, EARO, WEAR, EAAR) or number.
	PRRequest struct {
		Device string `json:"device"`
		Action string `json:"action"`
		Key    uint64 `json:"key,omitempty"`
		SAKey  uint64 `json:"sa_key,omitempty"`
		Type   string `json:"type,omitempty"`
	}
	// PRReply is what the command reported: the keys (read-keys), the
	// reservation (read-reservation), the registrations (read-full-status)
	// or the capabilities (report-capabilities); nothing for the others.
	PRReply struct {
		Device       string                   `json:"device"`
		Action       string                   `json:"action"`
		Generation   uint32                   `json:"generation,omitempty"`
		Keys         []uint64                 `json:"keys,omitempty"`
		Reservation  *backends.PRReservation  `json:"reservation,omitempty"`
		FullStatus   *backends.PRFullStatus   `json:"full_status,omitempty"`
		Capabilities *backends.PRCapabilities `json:"capabilities,omitempty"`
	}
)
