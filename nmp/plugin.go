package nmp

import (
	"context"
	"fmt"
	"time"

	"github.com/mpathfs/mpathfs/ioerr"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/plugin"
)

// View is an immutable snapshot of a device's paths, rebuilt on every state
// change and read without locks on the I/O path.
type View struct {
	Gen uint64
	// All is every path in claim order.
	All []*mpath.Path
	// Groups holds the usable paths by priority, best first, as the SATP
	// grouped them (for ALUA: AO, then ANO). Empty groups are left out.
	Groups [][]*mpath.Path
	// GroupOf maps a usable path to its SATP group number.
	GroupOf map[*mpath.Path]int
	// Usable is every usable path, best group first.
	Usable []*mpath.Path
	// Held are the usable paths that returned to service and wait for
	// failback (policy.go); nil when none is.
	Held map[*mpath.Path]bool
	// changed is closed when a newer view replaces this one.
	changed chan struct{}
}

// Best returns the paths of the best non-empty group.
func (v *View) Best() []*mpath.Path {
	if len(v.Groups) == 0 {
		return nil
	}
	return v.Groups[0]
}

// Candidates returns the paths a load-balancing PSP may use: the best
// group, or every usable path when useANO is set.
func (v *View) Candidates(useANO bool) []*mpath.Path {
	if useANO {
		return v.Usable
	}
	return v.Best()
}

// Index returns the position of p in All, or -1.
func (v *View) Index(p *mpath.Path) int {
	for i, q := range v.All {
		if q == p {
			return i
		}
	}
	return -1
}

// IsHeld reports whether p waits for failback: usable, but not drawn
// back to while the path in use is.
func (v *View) IsHeld(p *mpath.Path) bool { return v.Held[p] }

// Changed is closed when the view is replaced.
func (v *View) Changed() <-chan struct{} { return v.changed }

// Reason says why a PSP chose a path; it is recorded in the per-I/O trace.
type Reason uint8

const (
	ReasonNone Reason = iota
	ReasonPreferred
	ReasonFailover
	ReasonMostRecent
	ReasonRank
	ReasonRRTurn
	ReasonRRSwitch
	ReasonLowestQueue
	ReasonServiceTime
	ReasonOnlyPath
	ReasonRetryElsewhere
	ReasonLatencySample
	ReasonLowestLatency
)

var reasonNames = [...]string{"none", "preferred path", "failover: preferred path unusable", "most recently used", "highest rank", "round-robin turn", "round-robin switch", "lowest queue", "lowest service time", "only usable path", "retry on a path this I/O has not failed on", "latency sampling", "lowest latency"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// PSP is a Path Selection Plugin instance serving one device. Select runs
// on every I/O, concurrently, and must not block or allocate.
type PSP interface {
	Name() string
	// Select picks a path from the view for an I/O of n bytes, or nil when
	// no candidate is usable.
	Select(v *View, op mpath.OpKind, n int) (*mpath.Path, Reason)
	// ViewChanged tells the PSP that the set of usable paths changed. It is
	// called with the device's state lock held, never concurrently with itself.
	ViewChanged(v *View)
	// Config prints the device configuration the ESXi way, e.g.
	// {policy=iops,iops=1000,useANO=0; lastPathIndex=1: NumIOsPending=0}.
	Config() string
	// Options returns the options the PSP was made with, normalised.
	Options() map[string]string
}

// PSPFactory makes a PSP for a device from name=value options. Unknown
// options are errors.
type PSPFactory func(opts map[string]string, paths []*mpath.Path) (PSP, error)

// Change is a path state change an SATP asks for.
type Change struct {
	Path   *mpath.Path
	State  mpath.PathState
	Reason string
}

// Verdict is an SATP's judgement of an I/O error.
type Verdict struct {
	Class ioerr.Class
	// State is the path's new state (StateUnknown: leave it).
	State mpath.PathState
	// Retry: try the I/O again (on the path the PSP picks next).
	Retry bool
	// Backoff before the retry.
	Backoff time.Duration
	// Update: ask the SATP to re-inquire the paths' states (unit attention,
	// not ready) before retrying.
	Update bool
	Reason string
	// Event, when set, is published (kind Event, with Reason) for the
	// path: something the host learned that changes no path's state,
	// such as another host moving the LU between controllers.
	Event string
}

// SATP is a Storage Array Type Plugin instance serving one device: it
// judges errors, groups paths and activates inactive ones. Classify, Group
// and Checked are pure: no I/O, no clock, no goroutines.
type SATP interface {
	Name() string
	// DefaultPSP is the PSP the SATP asks for when the user names none.
	DefaultPSP() string
	// Classify judges an error an I/O got on a path.
	Classify(p *mpath.Path, op mpath.OpKind, err error) Verdict
	// Group places a path in a priority group (0 best) and says whether it
	// can carry I/O now. Only active paths are offered.
	Group(p *mpath.Path) (group int, usable bool)
	// Checked turns a path checker's probe result into the state the path
	// should have.
	Checked(p *mpath.Path, probeErr error) (mpath.PathState, string)
	// Config prints the SATP device configuration the ESXi way.
	Config() string
}

// Updater is an SATP that re-inquires path states from the paths (ALUA:
// Report Target Port Groups). The NMP calls it after a Verdict asks for it
// and after path checks, with a deadline.
type Updater interface {
	Update(ctx context.Context, paths []*mpath.Path) ([]Change, error)
}

// Activator is an SATP that can make inactive paths usable (trespass an
// active/passive LU, explicit ALUA's Set Target Port Groups). The NMP calls
// it when no path is usable but some are standby.
type Activator interface {
	Activate(ctx context.Context, paths []*mpath.Path) ([]Change, error)
}

// ActivePassive is an SATP of an active/passive array: only the owning
// controller's paths carry I/O, and an I/O through another controller's
// path may move the LU there (a trespass) — the other hosts' I/O then
// moves it back. Hedged reads are never sent on such a device: a hedge
// goes to another path than the PSP chose, so on an active/passive LU
// every hedge could be a trespass (docs/hedging.md, "Active/passive
// arrays").
type ActivePassive interface {
	ActivePassive()
}

// SATPFactory makes an SATP for a device from name=value options.
type SATPFactory func(opts map[string]string) (SATP, error)

// Plugin descriptions, for listings.
type PluginInfo struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	DefaultPSP  string `json:"default_psp,omitempty"`
}

// A registered plugin: its factory and what listings show.
type registered[F any] struct {
	f    F
	info PluginInfo
}

var (
	psps  = plugin.New[registered[PSPFactory]]("PSP")
	satps = plugin.New[registered[SATPFactory]]("SATP")
)

func infos[F any](r *plugin.Registry[registered[F]]) []PluginInfo {
	out := []PluginInfo{}
	for _, p := range r.Values() {
		out = append(out, p.info)
	}
	return out
}

// RegisterPSP makes a PSP available by name; it panics on nil or a duplicate.
func RegisterPSP(name, description string, f PSPFactory) {
	if f == nil {
		panic("nmp: RegisterPSP of nil for " + name)
	}
	psps.Register(name, registered[PSPFactory]{f, PluginInfo{Name: name, Description: description}})
}

// RegisterSATP makes an SATP available by name; it panics on nil or a duplicate.
func RegisterSATP(name, description, defaultPSP string, f SATPFactory) {
	if f == nil {
		panic("nmp: RegisterSATP of nil for " + name)
	}
	satps.Register(name, registered[SATPFactory]{f, PluginInfo{Name: name, Description: description, DefaultPSP: defaultPSP}})
}

// NewPSP makes a PSP by name.
func NewPSP(name string, opts map[string]string, paths []*mpath.Path) (PSP, error) {
	p, err := psps.Lookup(name)
	if err != nil {
		return nil, err
	}
	return p.f(opts, paths)
}

// NewSATP makes an SATP by name.
func NewSATP(name string, opts map[string]string) (SATP, error) {
	p, err := satps.Lookup(name)
	if err != nil {
		return nil, err
	}
	return p.f(opts)
}

// PSPs lists the registered PSPs.
func PSPs() []PluginInfo { return infos(psps) }

// SATPs lists the registered SATPs with their default PSPs.
func SATPs() []PluginInfo { return infos(satps) }
