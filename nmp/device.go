package nmp

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mpathfs/mpathfs/backends"
	"github.com/mpathfs/mpathfs/mpath"
)

// Defaults, faithful to ESXi where ESXi has one.
const (
	DefaultIOTimeout     = 5 * time.Second
	DefaultAPDTimeout    = 140 * time.Second
	DefaultCheckInterval = 2 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultFlapThreshold = 3
	DefaultFlapWindow    = 60 * time.Second
	DefaultHoldDown      = 10 * time.Second
	DefaultMaxRetries    = 32
	maxHoldDown          = 10 * time.Minute
)

// Device is a multipath device served by the NMP.
type Device struct {
	name  string
	size  int64
	ident mpath.Identity
	cfg   mpath.DeviceConfig

	events *mpath.Events
	view   atomic.Pointer[View]
	psp    atomic.Pointer[pspBox]
	satp   atomic.Pointer[satpBox] // SetSATP replaces it (satp_swap.go)
	tracer atomic.Pointer[tracerBox]
	obs    atomic.Pointer[observerBox]

	canDiscard, canZero atomic.Bool

	// detached is set while the device is off or dead (state.go).
	detached atomic.Pointer[detachment]

	failovers  atomic.Uint64
	apdEntries atomic.Uint64
	// reinquireReqs counts requests for a background re-inquiry of the path
	// states after a path failure (checker.go, updateSoon).
	reinquireReqs atomic.Int32
	queueDepth    atomic.Int64
	ioSeq         atomic.Uint64

	// hedgeState holds hedged reads' state (hedge.go).
	hedgeState

	// fence holds the ranges failed writes left ambiguous (fence.go).
	fence fencing
	flush flushState // flush.go
	pr    prState    // pr.go

	// mu guards the decider's state (decide.go), which only the owner
	// changes (owner.go), and ident and cfg.
	mu struct {
		sync.Mutex
		dec *decider
	}
	inbox   chan request // the owner's
	timer   *time.Timer  // the path checker's schedule; the owner's
	stopper *stopper     // every goroutine of the device
	closing atomic.Bool

	// drains are the paths RemovePath waits to see idle (admin.go); n is
	// the only thing an I/O reads when none is.
	drains struct {
		mu sync.Mutex
		m  map[*mpath.Path]chan struct{}
		n  atomic.Int32
	}

	// ids remembers each path's identity (identity.go).
	ids identities

	// stuck holds the paths whose last probe outlived its deadline and has
	// not returned yet, with the time it started: such a path gets no
	// second probe (each would hang a goroutine more) and fails every check
	// until the stuck one returns (checker.go).
	stuck struct {
		sync.Mutex
		m map[*mpath.Path]time.Time
	}
}

type pspBox struct{ psp PSP }

var _ mpath.Device = (*Device)(nil)

// NewDevice makes a device from paths that lead to one store. Paths must
// have names; sizes must agree; identities, where paths report one, must
// agree with each other and with cfg.Identity.
func NewDevice(cfg mpath.DeviceConfig, paths []*mpath.Path, events *mpath.Events) (*Device, error) {
	if cfg.Name == "" {
		return nil, errors.New("device has no name")
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("device %s has no paths: give at least one --path", cfg.Name)
	}
	if cfg.APDTimeout < 0 {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, CheckAPDTimeout(cfg.APDTimeout))
	}
	setDefaults(&cfg)
	if _, err := parsePolicy(&cfg); err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, err)
	}
	if err := checkMarginal(&cfg); err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, err)
	}
	if events == nil {
		events = &mpath.Events{}
	}
	d := &Device{name: cfg.Name, cfg: cfg, events: events, stopper: newStopper(), inbox: make(chan request, ownerQueue)}
	d.ident = cfg.Identity
	d.size = paths[0].Backend.Size() - cfg.HiddenTail
	seen := map[string]bool{}
	for _, p := range paths {
		if err := d.admit(p, seen); err != nil {
			return nil, err
		}
	}
	satpName := cfg.SATP
	if satpName == "" {
		satpName = SATPDefaultAA
	}
	satp, err := NewSATP(satpName, cfg.SATPOptions)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, err)
	}
	d.satp.Store(boxSATP(satp))
	d.cfg.SATP = satpName
	pspName := cfg.PSP
	if pspName == "" {
		pspName = satp.DefaultPSP()
	}
	psp, err := NewPSP(pspName, cfg.PSPOptions, paths)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", cfg.Name, err)
	}
	d.cfg.PSP = pspName
	d.psp.Store(&pspBox{psp})
	if err := d.initHedge(); err != nil { // hedge.go
		return nil, err
	}
	now := time.Now()
	for _, p := range paths {
		if p.State() == mpath.StateUnknown {
			p.SetState(mpath.StateUnknown, ReasonUnprobed, now)
		}
	}
	d.view.Store(&View{changed: make(chan struct{})})
	d.mu.dec = newDecider(d.name, &d.cfg, satp, paths)
	d.mu.Lock()
	d.updateCapsLocked()
	d.applyLocked([]action{{kind: actView}}, now)
	d.mu.Unlock()
	d.timer = time.NewTimer(d.cfg.CheckInterval)
	d.stopper.goWork(d.own)
	// The paths start unknown: the first round of the checker judges
	// them before the device is handed out (in parallel, each within the
	// probe timeout; a path whose probe times out is dead), and an SATP
	// that learns path groups from the paths (ALUA) asks them in it, so
	// the first I/O finds its paths judged and grouped.
	d.CheckNow()
	return d, nil
}

func setDefaults(cfg *mpath.DeviceConfig) {
	if cfg.IOTimeout <= 0 {
		cfg.IOTimeout = DefaultIOTimeout
	}
	if cfg.APDTimeout <= 0 {
		cfg.APDTimeout = DefaultAPDTimeout
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = min(DefaultProbeTimeout, cfg.IOTimeout)
	}
	if cfg.FlapThreshold <= 0 {
		cfg.FlapThreshold = DefaultFlapThreshold
	}
	if cfg.FlapWindow <= 0 {
		cfg.FlapWindow = DefaultFlapWindow
	}
	if cfg.HoldDown <= 0 {
		cfg.HoldDown = DefaultHoldDown
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
}

// admit checks that a path leads to this device's store.
func (d *Device) admit(p *mpath.Path, seen map[string]bool) error {
	if p.Name == "" {
		p.Name = p.Location.RuntimeName()
	}
	if seen[p.Name] {
		return fmt.Errorf("device %s: two paths named %s: give each path its own name", d.name, p.Name)
	}
	seen[p.Name] = true
	if s := p.Backend.Size() - d.cfg.HiddenTail; s != d.size {
		return fmt.Errorf("device %s: path %s (%s) has size %d but the device has %d: the paths lead to different stores; fix the path list", d.name, p.Name, p.URI, s, d.size)
	}
	if d.ident.Vendor == "" && d.ident.Model == "" {
		d.ident.Vendor, d.ident.Model = p.Inquiry.Vendor, p.Inquiry.Model
	}
	if w := p.Inquiry.WWID; w != "" {
		if d.ident.WWID == "" {
			d.ident.WWID = w
			d.ident.Vendor, d.ident.Model, d.ident.Serial = p.Inquiry.Vendor, p.Inquiry.Model, p.Inquiry.Serial
		} else if w != d.ident.WWID {
			return fmt.Errorf("device %s: path %s (%s) reports WWID %s but the device is %s: the paths lead to different stores (mixing them destroys data); remove the path or fix the configured wwid (one file through two mounts reports two synthetic WWIDs: assert the device's wwid, which is then checked by label and sample blocks)", d.name, p.Name, p.URI, w, d.ident.WWID)
		}
	}
	d.admitted(p) // identity.go
	return nil
}

func (d *Device) Name() string          { return d.name }
func (d *Device) Size() int64           { return d.size }
func (d *Device) Events() *mpath.Events { return d.events }

// Identity returns the device's identity. A device whose paths reported
// none adopts the first WWID a path added later reports, so it is read
// under the lock.
func (d *Device) Identity() mpath.Identity {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ident
}

// Config returns the device's configuration with defaults filled in.
// SetPolicy changes it, so it is read under the lock.
func (d *Device) Config() mpath.DeviceConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Paths returns the device's paths in claim order.
func (d *Device) Paths() []*mpath.Path {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*mpath.Path(nil), d.mu.dec.paths...)
}

// View returns the current routing snapshot.
func (d *Device) View() *View { return d.view.Load() }

// PSP returns the current path selection plugin.
func (d *Device) PSP() PSP { return d.psp.Load().psp }

// SATP returns the device's storage array type plugin.
func (d *Device) SATP() SATP { return d.satp.Load().satp }

// updateCapsLocked offers discard and write-zeroes only when every path can.
func (d *Device) updateCapsLocked() {
	disc, zero := true, true
	for _, p := range d.mu.dec.paths {
		disc = disc && backends.Can(p.Backend, backends.CapDiscard)
		zero = zero && backends.Can(p.Backend, backends.CapWriteZeroes)
	}
	d.canDiscard.Store(disc)
	d.canZero.Store(zero)
}

// Close stops every goroutine of the device (the owner, the checker, SATP
// activations, fence watchers) and waits for them, fails the writes waiting
// on an ambiguous range, and closes every path's backend. A probe stuck in
// a system call is waited for, after the backends closed, up to the probe
// timeout.
func (d *Device) Close() error {
	if !d.closing.CompareAndSwap(false, true) {
		return nil
	}
	d.tell(event{kind: evClose})
	d.closeFence()
	d.closeHedge() // hedge_slow.go
	d.stopper.stop()
	paths := d.Paths()
	var first error
	for _, p := range paths {
		if err := p.Backend.Close(); err != nil && first == nil {
			first = err
		}
	}
	d.stopper.waitCalls(d.cfg.ProbeTimeout)
	return first
}
