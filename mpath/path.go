package mpath

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/ioerr"
)

// PathState is a path's state as ESXi reports it.
type PathState uint32

const (
	StateUnknown PathState = iota
	StateActive
	StateStandby
	StateDisabled
	StateDead
)

var stateNames = [...]string{"unknown", "active", "standby", "disabled", "dead"}

func (s PathState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// ParsePathState parses a state name.
func ParsePathState(s string) (PathState, error) {
	for i, n := range stateNames {
		if n == s {
			return PathState(i), nil
		}
	}
	return StateUnknown, fmt.Errorf("unknown path state %q (want active, standby, disabled, dead or unknown)", s)
}

// StateSummary counts paths by state, in the order of the states
// ("2 active, 1 dead"); "no paths" for none.
func StateSummary(paths []*Path) string {
	var n [len(stateNames)]int
	for _, p := range paths {
		if s := p.State(); int(s) < len(n) {
			n[s]++
		}
	}
	var parts []string
	for _, s := range []PathState{StateActive, StateStandby, StateDisabled, StateDead, StateUnknown} {
		if n[s] > 0 {
			parts = append(parts, strconv.Itoa(n[s])+" "+s.String())
		}
	}
	if len(parts) == 0 {
		return "no paths"
	}
	return strings.Join(parts, ", ")
}

// Location is a path's adapter:channel:target:lun address.
type Location struct {
	Adapter int // the N of vmhbaN
	Channel int
	Target  int
	LUN     int
}

// RuntimeName is the ESXi-style runtime name, e.g. vmhba1:C0:T0:L0.
func (l Location) RuntimeName() string {
	return fmt.Sprintf("vmhba%d:C%d:T%d:L%d", l.Adapter, l.Channel, l.Target, l.LUN)
}

// ParseLocation parses "vmhbaA:CC:TT:LL" (or "A:C:T:L").
func ParseLocation(s string) (Location, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return Location{}, fmt.Errorf("location %q: want vmhbaA:C0:T0:L0", s)
	}
	var nums [4]int
	for i, p := range parts {
		p = strings.TrimPrefix(p, [...]string{"vmhba", "C", "T", "L"}[i])
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return Location{}, fmt.Errorf("location %q: part %d is not a non-negative number", s, i+1)
		}
		nums[i] = n
	}
	return Location{nums[0], nums[1], nums[2], nums[3]}, nil
}

// OpKind is an I/O operation.
type OpKind uint8

const (
	OpRead OpKind = iota
	OpWrite
	OpFlush
	OpDiscard
	OpWriteZeroes
	OpProbe
)

var opNames = [...]string{"read", "write", "flush", "discard", "write-zeroes", "probe"}

func (o OpKind) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Path is one route to a device's store: a backend plus its runtime name,
// state, administrative switch and counters. State changes belong to the
// device's MPP; everything here is safe to read concurrently.
type Path struct {
	Name      string // runtime name (vmhba1:C0:T0:L0) or a user-given name
	URI       string
	Location  Location
	Transport string // file, nbd, block
	Backend   backends.Backend
	Inquiry   backends.Inquiry
	// Quiesce is the path's quiesce time (NVMe's CQT in spirit): the server
	// behind it is known to drop or finish every request within this long
	// after the client gave up on it, so a write that timed out on the
	// path cannot land later than that. 0 (the default): no such promise.
	// Set before the path joins a device; never changed afterwards.
	Quiesce time.Duration

	state atomic.Uint32
	// pdl marks a permanent device loss seen on this path.
	pdl atomic.Bool
	// adminOff is the administrator's "off" switch.
	adminOff atomic.Bool
	// dirty is set by a write acknowledged on this path and cleared by a
	// flush that reached it.
	dirty atomic.Bool

	// Counters.
	Reads, Writes, Flushes, Discards atomic.Uint64
	ReadBytes, WriteBytes            atomic.Uint64
	Errors                           atomic.Uint64
	ErrorsByClass                    [7]atomic.Uint64
	LatencyNs                        atomic.Uint64 // sum of completion latencies
	Completions                      atomic.Uint64
	MaxLatencyNs                     atomic.Uint64
	Inflight                         atomic.Int64
	InflightBytes                    atomic.Int64
	// Rank is the path's MRU rank (higher is preferred).
	Rank atomic.Int32
	// EWMALatencyNs is a moving average of completion latency per 4 KiB,
	// used by the service-time selector.
	EWMALatencyNs atomic.Uint64

	// Since is when the path entered its current state.
	since atomic.Int64
	// Reason is why it did.
	reason atomic.Pointer[string]
}

// State returns the path's state.
func (p *Path) State() PathState { return PathState(p.state.Load()) }

// SetState is for the owning MPP only.
func (p *Path) SetState(s PathState, reason string, now time.Time) PathState {
	old := PathState(p.state.Swap(uint32(s)))
	p.since.Store(now.UnixNano())
	p.reason.Store(&reason)
	return old
}

// StateSince returns when the path entered its state and why.
func (p *Path) StateSince() (time.Time, string) {
	var r string
	if rp := p.reason.Load(); rp != nil {
		r = *rp
	}
	return time.Unix(0, p.since.Load()), r
}

// AdminOff reports whether an administrator switched the path off.
func (p *Path) AdminOff() bool { return p.adminOff.Load() }

// SetAdminOff is for the owning MPP only.
func (p *Path) SetAdminOff(off bool) { p.adminOff.Store(off) }

// PDL reports whether the path saw a permanent device loss.
func (p *Path) PDL() bool { return p.pdl.Load() }

// SetPDL is for the owning MPP only.
func (p *Path) SetPDL(v bool) { p.pdl.Store(v) }

// MarkDirty records that a write was acknowledged on the path.
func (p *Path) MarkDirty() {
	if !p.dirty.Load() {
		p.dirty.Store(true)
	}
}

// TakeDirty clears and returns the dirty flag.
func (p *Path) TakeDirty() bool { return p.dirty.Swap(false) }

// Dirty reports whether writes were acknowledged since the last flush.
func (p *Path) Dirty() bool { return p.dirty.Load() }

// Done records a completed operation on the path.
func (p *Path) Done(op OpKind, n int, lat time.Duration) {
	switch op {
	case OpRead:
		p.Reads.Add(1)
		p.ReadBytes.Add(uint64(n))
	case OpWrite:
		p.Writes.Add(1)
		p.WriteBytes.Add(uint64(n))
	case OpFlush:
		p.Flushes.Add(1)
	case OpDiscard, OpWriteZeroes:
		p.Discards.Add(1)
	}
	ns := uint64(lat)
	p.LatencyNs.Add(ns)
	p.Completions.Add(1)
	for {
		m := p.MaxLatencyNs.Load()
		if ns <= m || p.MaxLatencyNs.CompareAndSwap(m, ns) {
			break
		}
	}
	// EWMA of latency normalised to 4 KiB units, weight 1/8.
	units := uint64(n>>12) + 1
	per := ns / units
	old := p.EWMALatencyNs.Load()
	if old == 0 {
		p.EWMALatencyNs.Store(per)
	} else {
		p.EWMALatencyNs.Store(old - old/8 + per/8)
	}
}

// Failed records an error of a class on the path.
func (p *Path) Failed(c ioerr.Class) {
	p.Errors.Add(1)
	if int(c) < len(p.ErrorsByClass) {
		p.ErrorsByClass[c].Add(1)
	}
}

// PathStatus is a path's state and counters, as status prints them.
type PathStatus struct {
	Name        string            `json:"name"`
	URI         string            `json:"uri"`
	State       string            `json:"state"`
	Admin       string            `json:"admin"`
	Reason      string            `json:"reason,omitempty"`
	Since       time.Time         `json:"since"`
	Transport   string            `json:"transport"`
	Location    string            `json:"location"`
	Preferred   bool              `json:"preferred,omitempty"`
	Rank        int               `json:"rank,omitempty"`
	Group       int               `json:"group"`
	TPG         *int              `json:"tpg,omitempty"`
	ALUAState   string            `json:"alua_state,omitempty"`
	Reads       uint64            `json:"reads"`
	Writes      uint64            `json:"writes"`
	ReadBytes   uint64            `json:"read_bytes"`
	WriteBytes  uint64            `json:"write_bytes"`
	Flushes     uint64            `json:"flushes"`
	Discards    uint64            `json:"discards"`
	Errors      uint64            `json:"errors"`
	ErrorsBy    map[string]uint64 `json:"errors_by_class,omitempty"`
	Inflight    int64             `json:"inflight"`
	AvgLatencyU float64           `json:"avg_latency_us"`
	MaxLatencyU float64           `json:"max_latency_us"`
	PDL         bool              `json:"pdl,omitempty"`
	Quiesce     string            `json:"quiesce,omitempty"`
	HeldDown    bool              `json:"held_down,omitempty"`
	// FailbackHeld: the path returned and waits for failback.
	FailbackHeld bool `json:"failback_held,omitempty"`
	// Hedged reads: the path's recent p99 read latency and hedging
	// threshold; reads on it hedged elsewhere, lost to their hedge, and
	// hedges it won; Slow: demoted to the marginal group for losing.
	ReadP99U        float64 `json:"read_p99_us,omitempty"`
	HedgeThresholdU float64 `json:"hedge_threshold_us,omitempty"`
	Hedged          uint64  `json:"hedged,omitempty"`
	HedgeLost       uint64  `json:"hedge_lost,omitempty"`
	HedgeWon        uint64  `json:"hedge_won,omitempty"`
	Slow            bool    `json:"slow,omitempty"`
	// Marginal: demoted to the marginal group (slow, or a run of
	// retryable errors); I/O goes there only when no other path is usable.
	Marginal bool   `json:"marginal,omitempty"`
	Vendor   string `json:"vendor,omitempty"`
	Model    string `json:"model,omitempty"`
	WWID     string `json:"wwid,omitempty"`

	// What multipath -ll shows per path: dm's path state (active or
	// failed), the checker's (ready, ghost, faulty, delayed, undef) and
	// the SCSI device's (running, offline, transport-offline).
	DMState  string `json:"dm_state"`
	Checker  string `json:"checker"`
	DevState string `json:"dev_state"`
	// What esxcli storage nmp path list shows: Group State (active,
	// active unoptimized, standby, unavailable, dead, disabled), Storage
	// Array Type Path Config and Path Selection Policy Path Config.
	GroupState     string `json:"group_state"`
	SATPPathConfig string `json:"satp_path_config"`
	PSPPathConfig  string `json:"psp_path_config"`
	// Current: the PSP sends I/O to this path now (a working path).
	Current bool `json:"current,omitempty"`
}

// Status snapshots the path.
func (p *Path) Status() PathStatus {
	since, reason := p.StateSince()
	st := PathStatus{
		Name:       p.Name,
		URI:        p.URI,
		State:      p.State().String(),
		Admin:      "on",
		Reason:     reason,
		Since:      since,
		Transport:  p.Transport,
		Location:   p.Location.RuntimeName(),
		Reads:      p.Reads.Load(),
		Writes:     p.Writes.Load(),
		ReadBytes:  p.ReadBytes.Load(),
		WriteBytes: p.WriteBytes.Load(),
		Flushes:    p.Flushes.Load(),
		Discards:   p.Discards.Load(),
		Errors:     p.Errors.Load(),
		Inflight:   p.Inflight.Load(),
		PDL:        p.PDL(),
		Rank:       int(p.Rank.Load()),
		Vendor:     p.Inquiry.Vendor,
		Model:      p.Inquiry.Model,
		WWID:       p.Inquiry.WWID,
	}
	if p.AdminOff() {
		st.Admin = "off"
	}
	if p.Quiesce > 0 {
		st.Quiesce = p.Quiesce.String()
	}
	if n := p.Completions.Load(); n > 0 {
		st.AvgLatencyU = float64(p.LatencyNs.Load()) / float64(n) / 1e3
	}
	st.MaxLatencyU = float64(p.MaxLatencyNs.Load()) / 1e3
	for c := ioerr.ClassPathFailure; c <= ioerr.ClassConflict; c++ {
		if n := p.ErrorsByClass[c].Load(); n > 0 {
			if st.ErrorsBy == nil {
				st.ErrorsBy = map[string]uint64{}
			}
			st.ErrorsBy[c.String()] = n
		}
	}
	return st
}

// AmbiguousRange is a byte range a write-class operation left ambiguous:
// it failed on Path in a way that lets it still land on the store (a
// transport's pending operation, or a timeout with no proof). No write that
// overlaps it is issued until it is resolved.
type AmbiguousRange struct {
	Path       string    `json:"path"`
	Op         string    `json:"op"` // write, discard, write-zeroes
	Offset     int64     `json:"offset"`
	Length     int64     `json:"length"`
	Since      time.Time `json:"since"`
	Age        string    `json:"age"`
	WaitingFor string    `json:"waiting_for"`
	// Expired: older than the device's APD timeout; writes overlapping it
	// fail with EIO until it is resolved.
	Expired bool `json:"expired,omitempty"`
}

// QuiesceParam is the path URI query parameter that sets a path's quiesce
// time (nbd://host/export?quiesce=2s).
const QuiesceParam = "quiesce"

// SplitQuiesce takes the quiesce parameter out of a path URI, so the
// backend's opener never sees it: it returns the URI without it and the
// duration (0 when absent). Other query parameters are kept as written.
func SplitQuiesce(uri string) (string, time.Duration, error) {
	i := strings.IndexByte(uri, '?')
	if i < 0 || !strings.Contains(uri, "://") {
		return uri, 0, nil
	}
	base, query, frag := uri[:i], uri[i+1:], ""
	if j := strings.IndexByte(query, '#'); j >= 0 {
		query, frag = query[:j], query[j:]
	}
	var keep []string
	var q time.Duration
	found := false
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k != QuiesceParam {
			if kv != "" {
				keep = append(keep, kv)
			}
			continue
		}
		if found {
			return "", 0, fmt.Errorf("path URI %q: %s given twice", uri, QuiesceParam)
		}
		found = true
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return "", 0, fmt.Errorf("path URI %q: %s=%q is not a positive duration (e.g. 2s, 500ms)", uri, QuiesceParam, v)
		}
		q = d
	}
	if !found {
		return uri, 0, nil
	}
	out := base
	if len(keep) > 0 {
		out += "?" + strings.Join(keep, "&")
	}
	return out + frag, q, nil
}
