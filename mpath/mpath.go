// Package mpath is the core of mpathfs's Pluggable Storage Architecture:
// devices, paths (runtime name, state, counters), the multipathing plugin
// (MPP) interface and its registry, claim rules, path events and the error
// taxonomy. It knows nothing of FUSE or of concrete plugins.
package mpath

import (
	"context"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/plugin"
)

// Identity is what makes two paths lead to the same store.
type Identity struct {
	WWID   string `json:"wwid,omitempty"`
	Vendor string `json:"vendor,omitempty"`
	Model  string `json:"model,omitempty"`
	Serial string `json:"serial,omitempty"`
}

// Device is a multipath device as its MPP serves it: the store's I/O
// interface plus administration. *nmp.Device is the NMP's.
type Device interface {
	Name() string
	Size() int64
	Identity() Identity
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	Flush(ctx context.Context) error
	Discard(ctx context.Context, off, length int64) error
	WriteZeroes(ctx context.Context, off, length int64) error
	Paths() []*Path
	Status() DeviceStatus
	Close() error
}

// DeviceStatus is a device's topology, as `mpathfs status --json` prints it.
type DeviceStatus struct {
	Name       string       `json:"name"`
	Size       int64        `json:"size"`
	WWID       string       `json:"wwid,omitempty"`
	Vendor     string       `json:"vendor,omitempty"`
	Model      string       `json:"model,omitempty"`
	MPP        string       `json:"mpp"`
	SATP       string       `json:"satp"`
	SATPConfig string       `json:"satp_config"`
	PSP        string       `json:"psp"`
	PSPConfig  string       `json:"psp_config"`
	APD        bool         `json:"apd"`
	APDSince   *time.Time   `json:"apd_since,omitempty"`
	Options    DeviceOpts   `json:"options"`
	Paths      []PathStatus `json:"paths"`
	Failovers  uint64       `json:"failovers"`
	APDEntries uint64       `json:"apd_entries"`
	QueueDepth int64        `json:"queue_depth"`
	// HedgedReads counts reads sent again on another path after outliving
	// their threshold; HedgeWins, those whose second answer came first.
	HedgedReads uint64 `json:"hedged_reads"`
	HedgeWins   uint64 `json:"hedge_wins"`
	// ReservationConflicts counts I/Os that met RESERVATION CONFLICT
	// (another host holds a reservation): not path failures.
	ReservationConflicts uint64 `json:"reservation_conflicts"`
	// PRKey is the reservation key this host registered through the
	// device, as hex (empty: none).
	PRKey string `json:"pr_key,omitempty"`
	// Ambiguous are the write ranges no write may overlap yet (fencing).
	Ambiguous []AmbiguousRange `json:"ambiguous,omitempty"`
	// Sharing is how the device shares its store with other hosts
	// (exclusive or multi-writer, and the holders); the host fills it.
	Sharing *Sharing `json:"sharing,omitempty"`

	// State is the device's state as esxcli storage core device list
	// shows it: on, off (detached by hand) or dead (detached: every path
	// in permanent device loss); why and since when it is not on.
	State       string     `json:"state"`
	StateReason string     `json:"state_reason,omitempty"`
	StateSince  *time.Time `json:"state_since,omitempty"`
	// HWHandler is multipath -ll's hwhandler: "1 alua" for ALUA, "1 ap"
	// for the active/passive SATP's trespass, "0" when none.
	HWHandler string `json:"hwhandler"`
	// Groups are the path groups as multipath -ll shows them, in order.
	Groups []PathGroup `json:"groups"`
	// WorkingPaths are the paths the PSP sends I/O to now (esxcli storage
	// nmp device list's Working Paths).
	WorkingPaths []string `json:"working_paths"`
	// IOsPending and BytesPending are the I/Os and bytes in flight on
	// the device's paths (RR's NumIOsPending, numBytesPending).
	IOsPending   int64 `json:"ios_pending"`
	BytesPending int64 `json:"bytes_pending"`
}

// PathGroup is one path group as multipath -ll shows it.
type PathGroup struct {
	// Group is the SATP's group number; -1 holds the paths no group
	// can use now (dead, standby, switched off).
	Group int `json:"group"`
	// Policy is the group's path selector: the PSP and its config.
	Policy string `json:"policy"`
	// Prio is dm's priority of the group (ALUA: 50 active/optimized, 10
	// active/non-optimized, 1 standby, 0 unavailable; 1 without ALUA).
	Prio int `json:"prio"`
	// Status is dm's: active (the group I/O goes to), enabled (usable,
	// not used now) or disabled (no path of it usable).
	Status string   `json:"status"`
	Paths  []string `json:"paths"`
}

// DeviceOpts are the engine's timing knobs, as status prints them.
type DeviceOpts struct {
	IOTimeout     string `json:"io_timeout"`
	APDTimeout    string `json:"apd_timeout"`
	CheckInterval string `json:"check_interval"`
	FlapThreshold int    `json:"flap_threshold"`
	FlapWindow    string `json:"flap_window"`
	HoldDown      string `json:"hold_down"`
	// Failback and queueing policy (dm-multipath's failback and
	// no_path_retry; queueing off after `mpathfs queue off`).
	Failback    string `json:"failback"`
	NoPathRetry string `json:"no_path_retry,omitempty"`
	Queueing    string `json:"queueing"`
	// Hedged reads (on/off) and their threshold knobs.
	HedgeReads      string  `json:"hedge_reads,omitempty"`
	HedgeMultiplier float64 `json:"hedge_multiplier,omitempty"`
	HedgeFloor      string  `json:"hedge_floor,omitempty"`
	HedgeCeiling    string  `json:"hedge_ceiling,omitempty"`
}

// Event is a change worth telling: a path changed state, a device entered
// or left All-Paths-Down, a policy changed, a fault was injected.
type Event struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"` // path-state, apd-enter, apd-exit, policy, fault, path-added, path-removed, adapter-failed, adapter-restored, adapter-reset, lock-taken, lock-refused, lock-none, lock-lost, lock-heartbeat-failed, lock-heartbeat-ok
	Device string    `json:"device"`
	Path   string    `json:"path,omitempty"`
	// Adapter names the adapter (vmhbaN) of an adapter-failed,
	// adapter-restored or adapter-reset event.
	Adapter string `json:"adapter,omitempty"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// EventHistory is how many recent events Events keeps for late readers
// (`mpathfs events` shows them before it follows new ones).
const EventHistory = 1024

// Events fans events out to subscribers and keeps the last EventHistory
// events in a ring. A slow subscriber loses events rather than stalling
// I/O; each subscription counts what it lost.
type Events struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	ring []Event // allocated once, at the first Publish; len EventHistory
	next int     // where the next event goes
	kept int     // how many of ring hold events (at most EventHistory)
}

// Subscription receives events on C until Close.
type Subscription struct {
	C       chan Event
	e       *Events
	dropped uint64
}

// Subscribe returns a subscription with a buffer of n events.
func (e *Events) Subscribe(n int) *Subscription {
	s, _ := e.SubscribeAfter(n, 0)
	return s
}

// SubscribeAfter returns the last `history` events kept (oldest first; at
// most EventHistory) and a subscription with a buffer of n events that
// receives every event published after them: no event is in both, none
// falls between.
func (e *Events) SubscribeAfter(n, history int) (*Subscription, []Event) {
	s := &Subscription{C: make(chan Event, n), e: e}
	e.mu.Lock()
	past := e.recentLocked(history)
	if e.subs == nil {
		e.subs = map[*Subscription]struct{}{}
	}
	e.subs[s] = struct{}{}
	e.mu.Unlock()
	return s, past
}

// Recent returns the last n events kept, oldest first (at most
// EventHistory; fewer if fewer were published).
func (e *Events) Recent(n int) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recentLocked(n)
}

func (e *Events) recentLocked(n int) []Event {
	if n > e.kept {
		n = e.kept
	}
	if n <= 0 {
		return nil
	}
	out := make([]Event, n)
	start := e.next - n
	if start < 0 {
		start += len(e.ring)
	}
	k := copy(out, e.ring[start:])
	if k < n {
		copy(out[k:], e.ring[:n-k])
	}
	return out
}

// Close ends the subscription; C is closed.
func (s *Subscription) Close() {
	s.e.mu.Lock()
	if _, ok := s.e.subs[s]; ok {
		delete(s.e.subs, s)
		close(s.C)
	}
	s.e.mu.Unlock()
}

// Dropped is how many events the subscriber lost.
func (s *Subscription) Dropped() uint64 {
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	return s.dropped
}

// Publish keeps the event in the ring and sends it to every subscriber
// without blocking.
func (e *Events) Publish(ev Event) {
	e.mu.Lock()
	if e.ring == nil {
		e.ring = make([]Event, EventHistory)
	}
	e.ring[e.next] = ev
	e.next = (e.next + 1) % len(e.ring)
	if e.kept < len(e.ring) {
		e.kept++
	}
	for s := range e.subs {
		select {
		case s.C <- ev:
		default:
			s.dropped++
		}
	}
	e.mu.Unlock()
}

// MPP is a multipathing plugin: it takes the paths claim rules gave it and
// serves them as devices.
type MPP interface {
	Name() string
	// NewDevice claims the paths and returns the device they form.
	NewDevice(cfg DeviceConfig, paths []*Path, events *Events) (Device, error)
}

// DeviceConfig is what a device is made from, independent of the plugin.
type DeviceConfig struct {
	Name     string
	Identity Identity
	// HiddenTail is how many bytes at the end of the paths' store the
	// device does not serve (the lock sector of an array LU): the device's
	// size is the paths' less this.
	HiddenTail int64
	// Plugin options, as name=value (SATP, PSP and their options, timing).
	SATP        string
	SATPOptions map[string]string
	PSP         string
	PSPOptions  map[string]string
	// Timing; zero means the plugin's default.
	IOTimeout     time.Duration
	APDTimeout    time.Duration
	CheckInterval time.Duration
	ProbeTimeout  time.Duration
	FlapThreshold int
	FlapWindow    time.Duration
	HoldDown      time.Duration
	MaxRetries    int
	// Failback is immediate, manual, followover or N (seconds);
	// NoPathRetry is queue, fail or N (checker intervals). "" is the
	// plugin's default.
	Failback    string
	NoPathRetry string
	// MarginalErrors retryable errors on a path within MarginalWindow
	// demote it to the marginal group (dm's marginal_pathgroups, ESXi's
	// action_OnRetryErrors); 0 is off.
	MarginalErrors int
	MarginalWindow time.Duration
	// Hedged reads: HedgeReads is "on", "off" or "" (the default, on); a
	// read outstanding longer than HedgeMultiplier × its path's recent p99
	// read latency, kept within [HedgeFloor, HedgeCeiling], is sent again
	// on another path. HedgeSlowLosses reads lost to their hedges within
	// 10 s mark a path slow. Zero means the plugin's default.
	HedgeReads      string
	HedgeMultiplier float64
	HedgeFloor      time.Duration
	HedgeCeiling    time.Duration
	HedgeSlowLosses int
}

var mpps = plugin.New[MPP]("multipathing plugin")

// RegisterMPP makes a plugin available by name. It panics on nil or a duplicate.
func RegisterMPP(p MPP) {
	if p == nil {
		panic("mpath: RegisterMPP of nil")
	}
	mpps.Register(p.Name(), p)
}

// LookupMPP returns a registered plugin.
func LookupMPP(name string) (MPP, error) { return mpps.Lookup(name) }

// MPPNames lists the registered plugins, sorted.
func MPPNames() []string { return mpps.Names() }
