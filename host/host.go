// Package host is the PSA host as a library: it turns path URIs into
// multipath devices and keeps them. Adding a path opens its transport,
// wraps it in a fault injector, reads its identity, runs the claim rules
// and hands the claimed paths to the multipathing plugin (MPP) the rule
// names, through the MPP registry; the devices' paths are checked to lead
// to one store before a device goes live. Paths join and leave live (path
// add, hotplug), URIs are grouped into devices by the WWID they report,
// and Close takes everything down in order.
//
// Consumers bind to the small interfaces declared here — IO (what FUSE
// serves), Admin (what the control API changes) and mpath.Device's status
// — not to a concrete plugin's device.
package host

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/mpathfs/mpathfs/backends/fault"
	"github.com/mpathfs/mpathfs/integrity"
	"github.com/mpathfs/mpathfs/mpath"
	"github.com/mpathfs/mpathfs/nmp"
)

// DefaultOpenTimeout bounds opening one path (an unreachable NBD server).
const DefaultOpenTimeout = 15 * time.Second

// IO is the store's I/O a device serves (fusedev.Device is the same set).
type IO interface {
	Name() string
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64) (int, error)
	Flush(ctx context.Context) error
	Discard(ctx context.Context, off, length int64) error
	WriteZeroes(ctx context.Context, off, length int64) error
}

// Admin is what an operator changes on a running device.
type Admin interface {
	// FindPath finds a path by name or URI (nil if there is none).
	FindPath(name string) *mpath.Path
	SetPathAdmin(name string, on bool) error
	SetPathRank(name string, rank int) error
	SetPolicy(psp string, opts map[string]string) error
	// FencePath confirms a path dead and resolves the ambiguous write
	// ranges it left; it returns how many.
	FencePath(name string) (int, error)
	Ambiguous() []mpath.AmbiguousRange
	// VerifyPath checks that a new path leads to the device's store;
	// AddPath then joins it.
	VerifyPath(ctx context.Context, p *mpath.Path) error
	AddPath(p *mpath.Path) error
	FailPath(name, reason string) error
	RemovePath(name string) error
	Probe(ctx context.Context, name string) error
	// Recheck probes an out-of-service path now and applies the result
	// (hotplug: a uevent on its block device); false if it was in service.
	Recheck(name, why string) (bool, error)
	// UsablePaths is how many paths could carry I/O now.
	UsablePaths() int
	// SetDeviceState detaches (on false) or attaches the device by hand.
	SetDeviceState(on bool, reason string) error
}

// Traced is a device whose I/O can be traced.
type Traced interface {
	SetTracer(t *nmp.Tracer)
	// ShareTracer returns the device's tracer (attaching one while there
	// is none) and a release to call when the reader is done.
	ShareTracer() (t *nmp.Tracer, release func())
	// SetObserver attaches an observer of every completed I/O try
	// (metrics).
	SetObserver(o nmp.Observer)
}

// Device is a device as the host keeps it: I/O and status
// (mpath.Device), administration and tracing.
type Device interface {
	mpath.Device
	Admin
	Traced
}

// Options configure a host.
type Options struct {
	// Events receives path and device events (nil: a host of its own).
	Events *mpath.Events
	// Claims and SATPRules are the rules the host runs (nil: the defaults).
	Claims    *mpath.ClaimRules
	SATPRules *nmp.SATPRules
	// Verify puts an integrity checker between each device and what
	// Serve returns (`mount --verify`).
	Verify bool
	// OpenTimeout bounds opening one path (0: DefaultOpenTimeout).
	OpenTimeout time.Duration
	// Mountpoint is recorded beside the host's locks on its stores, so
	// that a refused host can name it (share.go).
	Mountpoint string
	// ConfigFile is the mount's YAML config: claim-rule and SATP-rule
	// changes are written to its claim_rules and satp_rules ("" : they
	// live in memory for the mount's life). See claiming.go.
	ConfigFile string
	// Sources re-reads the configured devices for `adapter rescan` (nil:
	// the devices Build was given).
	Sources func(ctx context.Context) ([]DeviceConfig, error)
	// Scan are block-device globs ("/dev/disk/by-id/wwn-*", with or
	// without block://): `adapter rescan` and hotplug claim a block device
	// they match that no path leads to yet (scan.go).
	Scan []string
	// Name is the host's name (hostname.go): the default initiator name
	// of its iscsi:// paths. Empty: iscsi:// paths keep their own default.
	Name string
}

// Host keeps the devices of one mount.
type Host struct {
	name        string
	events      *mpath.Events
	claims      *mpath.ClaimRules
	satpRules   *nmp.SATPRules
	verify      bool
	openTimeout time.Duration
	mountpoint  string
	configFile  string
	sources     func(ctx context.Context) ([]DeviceConfig, error)
	scan        []string

	// claimMu serialises the claiming operations (unclaim, run,
	// reclaim, rescan, rule changes) with each other.
	claimMu sync.Mutex

	mu      sync.RWMutex
	members []*member
	faults  map[string]*fault.Backend // by path name
	arrays  map[string]*labArray
	// adapters are the adapters failed by the operator (adapter.go).
	adapters map[string]*adapterFailure
	closers  []func() error // closed after the devices, last first
	stops    []func()       // goroutines of the host (hotplug), stopped first
	masked   []string
	// offline are the paths the host knows that serve no device: masked
	// by a MASK_PATH rule or unclaimed by the operator (claiming.go).
	offline []*OfflinePath
	// built are the device configs Build was given (the rescan source
	// without Sources); onDevice serves a device made after the mount.
	built    []DeviceConfig
	onDevice func(IO) error
	notes    []string
	closed   bool
}

// member is one device of the host.
type member struct {
	dev     Device
	cfg     DeviceConfig
	lun     int
	explain *nmp.Explanation
	oracle  *integrity.Oracle
	next    int // the next adapter number for a path added later
	// share holds the device's locks on its stores (nil: a device
	// adopted from elsewhere takes none).
	share *shareLock
}

// New returns a host without devices.
func New(opts Options) *Host {
	h := &Host{name: opts.Name, events: opts.Events, claims: opts.Claims, satpRules: opts.SATPRules, verify: opts.Verify,
		openTimeout: opts.OpenTimeout, mountpoint: opts.Mountpoint, configFile: opts.ConfigFile, sources: opts.Sources, scan: opts.Scan, faults: map[string]*fault.Backend{}, arrays: map[string]*labArray{}}
	if h.events == nil {
		h.events = &mpath.Events{}
	}
	if h.claims == nil {
		h.claims = mpath.DefaultClaimRules()
	}
	if h.satpRules == nil {
		h.satpRules = nmp.DefaultSATPRules()
	}
	if h.openTimeout <= 0 {
		h.openTimeout = DefaultOpenTimeout
	}
	return h
}

// Events is the host's event stream.
func (h *Host) Events() *mpath.Events { return h.events }

// ClaimRules lists the claim rules the host runs.
func (h *Host) ClaimRules() []mpath.Rule { return h.claims.List() }

// SATPRules lists the SATP rules the host runs.
func (h *Host) SATPRules() []nmp.SATPRule { return h.satpRules.List() }

// Masked says which configured paths the claim rules kept from the NMP.
func (h *Host) Masked() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return append([]string(nil), h.masked...)
}

// Notes say how each device's paths were shown to lead to one store.
func (h *Host) Notes() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return append([]string(nil), h.notes...)
}

// Devices returns the devices in the order they were made.
func (h *Host) Devices() []Device {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]Device, len(h.members))
	for i, m := range h.members {
		out[i] = m.dev
	}
	return out
}

func (h *Host) member(name string) (*member, error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	names := []string{}
	for _, m := range h.members {
		if m.dev.Name() == name {
			return m, nil
		}
		names = append(names, m.dev.Name())
	}
	return nil, errorf(ErrNotFound, "no device %q (devices: %v)", name, names)
}

// Device finds a device by name; an unknown name is ErrNotFound.
func (h *Host) Device(name string) (Device, error) {
	m, err := h.member(name)
	if err != nil {
		return nil, err
	}
	return m.dev, nil
}

// FindPath finds a path by name or URI across devices; an unknown one is
// ErrNotFound.
func (h *Host) FindPath(name string) (Device, *mpath.Path, error) {
	for _, d := range h.Devices() {
		if p := d.FindPath(name); p != nil {
			return d, p, nil
		}
	}
	return nil, nil, errorf(ErrNotFound, "no path %q: `mpathfs path list` shows the path names", name)
}

// Fault returns a path's fault injector and the path's name.
func (h *Host) Fault(path string) (*fault.Backend, string, error) {
	_, p, err := h.FindPath(path)
	if err != nil {
		return nil, "", err
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	f := h.faults[p.Name]
	if f == nil {
		return nil, "", errorf(ErrUnsupported, "path %s has no fault injector", p.Name)
	}
	return f, p.Name, nil
}

// FaultInfo is one active fault of one path.
type FaultInfo struct {
	Path string `json:"path"`
	fault.Active
}

// Faults lists every active fault, by path in name order.
func (h *Host) Faults() []FaultInfo {
	h.mu.RLock()
	names := make([]string, 0, len(h.faults))
	for n := range h.faults {
		names = append(names, n)
	}
	h.mu.RUnlock()
	sort.Strings(names)
	out := []FaultInfo{}
	for _, n := range names {
		h.mu.RLock()
		f := h.faults[n]
		h.mu.RUnlock()
		for _, a := range f.List() {
			out = append(out, FaultInfo{Path: n, Active: a})
		}
	}
	return out
}

// Explain says which claim rule and SATP rule made a device and where
// each of its settings came from.
func (h *Host) Explain(device string) (nmp.Explanation, error) {
	m, err := h.member(device)
	if err != nil {
		return nmp.Explanation{}, err
	}
	h.mu.RLock()
	e := m.explain // reclaim replaces it
	h.mu.RUnlock()
	if e == nil {
		return nmp.Explanation{}, errorf(ErrNotFound, "device %s was made outside the host's claim rules: nothing to explain", device)
	}
	return *e, nil
}

// Serve returns what is served for each device, in order: the device, or
// with Options.Verify the integrity checker in front of it; a device that
// keeps a lock in its array LU behind the fence that refuses writes once
// the lock is lost (sharehost.go).
func (h *Host) Serve() []IO {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]IO, len(h.members))
	for i, m := range h.members {
		out[i] = m.served()
	}
	return out
}

// Verify runs the integrity check of a device (Options.Verify).
func (h *Host) Verify(ctx context.Context, device string) (integrity.Report, error) {
	m, err := h.member(device)
	if err != nil {
		return integrity.Report{}, err
	}
	if m.oracle == nil {
		return integrity.Report{}, errorf(ErrUnsupported, "device %s has no integrity oracle: mount with --verify", device)
	}
	return m.oracle.Check(ctx)
}

// Adopt takes a device made elsewhere (tests, an embedding program) with
// the fault injectors of its paths, by path name.
func (h *Host) Adopt(d Device, faults map[string]*fault.Backend) error {
	return h.adopt(&member{dev: d, cfg: DeviceConfig{Name: d.Name()}}, faults)
}

func (h *Host) adopt(m *member, faults map[string]*fault.Backend) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errorf(ErrUnsupported, "the host is closed")
	}
	for _, o := range h.members {
		if o.dev.Name() == m.dev.Name() {
			return errorf(ErrExists, "two devices named %q", m.dev.Name())
		}
	}
	m.lun = len(h.members)
	for _, p := range m.dev.Paths() {
		m.next = max(m.next, p.Location.Adapter+1)
	}
	if h.verify {
		d := m.dev
		m.oracle = integrity.New(d, integrity.Options{Paths: integrity.PathReaders(d.Paths)})
	}
	h.members = append(h.members, m)
	for name, f := range faults {
		h.faults[name] = f
	}
	return nil
}

// OnClose adds something to close after the devices (a metrics server),
// in the reverse order of adding.
func (h *Host) OnClose(c func() error) {
	h.mu.Lock()
	h.closers = append(h.closers, c)
	h.mu.Unlock()
}

// Close closes every device, then what OnClose added, last first.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	members, closers, stops := h.members, h.closers, h.stops
	h.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	var first error
	for _, m := range members {
		if m.share != nil && m.share.ats != nil {
			// The LU lock is let go through the device's paths, once
			// what the device acknowledged is on the LU.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			m.dev.Flush(ctx)
			cancel()
			if err := m.share.releaseATS(); err != nil && first == nil {
				first = fmt.Errorf("device %s: releasing the LU lock: %v", m.dev.Name(), err)
			}
		}
		if err := m.dev.Close(); err != nil && first == nil {
			first = err
		}
		// The store is let go only once the device is closed: nothing
		// of this host writes to it any more.
		if err := m.share.release(); err != nil && first == nil {
			first = err
		}
	}
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (h *Host) publish(ev mpath.Event) {
	if h.events != nil {
		h.events.Publish(ev)
	}
}

func logf(w io.Writer, format string, a ...any) {
	if w != nil {
		fmt.Fprintf(w, format, a...)
	}
}

var _ Device = (*nmp.Device)(nil)
